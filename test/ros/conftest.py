"""Fixtures of the ROS 2 integration tests (test/ros). Every test module here skips, with the reason,
when rclpy is not importable (CI without ROS); with ROS sourced they need this package built in the
sourced workspace (scripts/test_ros.sh does both)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

@pytest.fixture(scope="session")
def ros_ready() -> None:
    """Fails (does not skip) when ROS is sourced but `ros2 launch loger_ros` cannot work."""
    assert shutil.which("ros2"), "rclpy imports but the ros2 command is not on PATH"
    found = subprocess.run(["ros2", "pkg", "prefix", "loger_ros"], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, f"loger_ros is not built in the sourced workspace: {found.stderr.strip()}"


@pytest.fixture(scope="session")
def camera_frames():
    """24 rendered 320x240 frames of a synthetic room (cycled by the camera streams)."""
    from loger_core.synthetic import SynthConfig, render_frames

    return render_frames(SynthConfig(scene="room", trajectory="handheld", frames=24, width=320, height=240,
                                     fps=10.0, seed=7), device="cpu")
