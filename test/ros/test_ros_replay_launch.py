"""launch/replay.launch.py with a real `ros2 bag play --clock`: playback waits for the node to be
ready, so the bag's first frame gets a pose; the player exits cleanly (no `--delay 0.0`)."""
from __future__ import annotations

import re
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the ROS 2 integration tests need a sourced "
                            "ROS 2 with this package built (bash scripts/test_ros.sh)")

from loger_core.io.trajectory import read_tum  # noqa: E402
from loger_core.synthetic import SynthConfig, render_frames  # noqa: E402
from loger_core.synthetic.rosbag_writer import write_rosbag  # noqa: E402
from ros_graph import Launched  # noqa: E402


@pytest.mark.parametrize("start_delay", [None, "0.0"], ids=["default_delay", "no_delay"])
def test_replay_launch_maps_the_first_frame(ros_ready, tmp_path, start_delay):
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=96, width=160, height=120,
                                       fps=30.0, seed=11), device="cpu")
    bag = write_rosbag(tmp_path / "bag", frames, storage="mcap")
    out = tmp_path / "out"
    args = {"bag": str(bag), "rviz": "false", "device": "cpu", "output_dir": str(out)}
    if start_delay is not None:
        args["start_delay"] = start_delay
    launched = Launched("replay.launch.py", args, tmp_path / "replay.log")
    try:
        launched.wait_for(r"\[bag_play-\d+\]: process has finished cleanly", 180.0)
        launched.wait_for(r"loger_node ready", 1.0)
        # Let the node work through what it queued, then Ctrl-C (the map is saved on the way out).
        time.sleep(8.0)
    finally:
        launched.close()
    text = launched.text()
    assert text.index("loger_node ready") < text.index("[bag_play-"), "playback started before the node was ready"
    assert "invalid positive_float value" not in text
    traj = read_tum(out / "trajectory.tum")
    assert len(traj) > 0
    if start_delay is None:  # with no delay, the first message may go out before discovery completes
        assert int(traj.stamps_ns[0]) == frames[0].stamp_ns, "the bag's first frame got no pose"
    dropped = re.findall(r"dropped_queue_full = (\d+)", text)
    first = int(traj.stamps_ns[0]) == frames[0].stamp_ns
    print(f"\nreplay.launch.py ({start_delay or 'default'} delay): {len(traj)} poses for {len(frames)} frames, "
          f"first frame posed: {first}; queue drops logged: {dropped[-1] if dropped else 0}")
