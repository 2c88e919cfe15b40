"""The managed node (``lifecycle:=true``: loger_lifecycle_node) in a real ROS 2 graph: it maps only
between activate and deactivate, keeps its map across a deactivate, refuses a bad configure and can
be configured again after a parameter was set right, warms the model up inside configure, takes only
live parameter changes while configured, and saves the map on cleanup. Bundled small model on the CPU."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the ROS 2 integration tests need a sourced "
                            "ROS 2 with this package built (bash scripts/test_ros.sh)")

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from loger_core.io.trajectory import read_tum  # noqa: E402
from loger_core.mapping.voxel_map import load_ply  # noqa: E402
from ros_graph import CameraStream, Client, Launched, stamp_ns  # noqa: E402

STARTUP_S = 120.0


def _call(client: Client, srv_type, name: str, request, timeout_s: float):
    # One client per service for the whole test: a client made just before its request can lose the
    # response while the server has not yet matched it.
    clients = client.__dict__.setdefault("_lifecycle_clients", {})
    if name not in clients:
        clients[name] = client.node.create_client(srv_type, name)
        assert clients[name].wait_for_service(timeout_sec=30.0), f"service {name} not available"
        time.sleep(0.5)
    future = clients[name].call_async(request)
    deadline = time.monotonic() + timeout_s
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), f"service {name} did not answer in {timeout_s} s"
    return future.result()


def _set_param(client: Client, name: str, value):
    request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
    return _call(client, SetParameters, "/loger/set_parameters", request, 30.0).results[0]


def _state(client: Client) -> str:
    return _call(client, GetState, "/loger/get_state", GetState.Request(), 30.0).current_state.label


def _transition(client: Client, transition_id: int, timeout_s: float = STARTUP_S) -> bool:
    request = ChangeState.Request()
    request.transition.id = transition_id
    return _call(client, ChangeState, "/loger/change_state", request, timeout_s).success


def test_managed_node_maps_between_activate_and_deactivate_and_saves_on_cleanup(ros_ready, tmp_path, camera_frames):
    out = tmp_path / "managed_out"
    # A checkpoint that does not exist: the first configure must fail and leave the node unconfigured.
    launched = Launched("loger.launch.py", {"device": "cpu", "output_dir": str(out), "lifecycle": "true",
                                            "checkpoint": str(tmp_path / "missing.safetensors")},
                        tmp_path / "managed.log")
    client = Client("loger_test_lifecycle")
    client.publish_camera_mount()
    try:
        launched.wait_for(r"\[loger_lifecycle_node-\d+\]: process started", 30.0)
        assert _state(client) == "unconfigured"
        assert client.image_pub.get_subscription_count() == 0  # nothing subscribed before activate
        assert not _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == "unconfigured"
        assert re.search(r"configure failed: .*missing\.safetensors", launched.text()), launched.text()[-3000:]

        # Unconfigured, any parameter can be set right (here: back to the bundled model), then configure.
        assert _set_param(client, "checkpoint_path", "").successful
        assert _set_param(client, "warm_up", "on").successful  # 'auto' is on only on CUDA
        assert _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == "inactive" and client.image_pub.get_subscription_count() == 0
        # The warm-up ran inside configure, before anything was subscribed.
        text = launched.text()
        warm = re.search(r"warm-up done in [\d.]+ s: 4 windows", text)
        assert warm and warm.start() < text.index("configured: model loaded"), text[-3000:]
        assert _transition(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == "active"
        launched.wait_for(r"loger_node ready", 30.0)
        client.wait_for_subscriber()
        camera = CameraStream(client, camera_frames, fps=10.0)
        camera.run(40)
        client.wait_until(lambda: len(client.messages("odom")) >= 20, 60.0, "odometry while active")
        # Configured: only the live parameters change; the others are refused with the reason.
        refused = _set_param(client, "window_size", 8)
        assert not refused.successful and "only read at start-up" in refused.reason, refused.reason
        assert _set_param(client, "provisional_every", 2).successful

        assert _transition(client, Transition.TRANSITION_DEACTIVATE)
        client.wait_until(lambda: client.image_pub.get_subscription_count() == 0, 10.0, "the inputs unsubscribed")
        time.sleep(3.0)  # frames already queued are still processed
        before = len(client.messages("odom"))
        camera.run(15)
        time.sleep(3.0)
        assert len(client.messages("odom")) == before  # inactive: frames are not taken

        assert _transition(client, Transition.TRANSITION_ACTIVATE)  # goes on in the same map
        client.wait_for_subscriber()
        sent = camera.run(40)
        client.wait_until(lambda: len(client.messages("odom")) >= before + 20, 60.0, "odometry after re-activate")
        mapped = {stamp_ns(o.header.stamp) for o in client.messages("odom")}
        assert not mapped & set(sent[40:55])  # the frames published while inactive were never taken
        assert mapped & set(sent[55:])

        assert _transition(client, Transition.TRANSITION_DEACTIVATE)
        assert _transition(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == "unconfigured"
        found = launched.wait_for(r"saved (\d+) map points to \S+, (\d+) poses", 60.0)
        points, poses = int(found.group(1)), int(found.group(2))
        assert points > 0 and poses >= 60
        assert len(load_ply(out / "map.ply")[0]) == points and len(read_tum(out / "trajectory.tum")) == poses
    finally:
        client.close()
        launched.close()
    text = launched.text()
    assert "escalating to 'SIGTERM'" not in text and "escalating to 'SIGKILL'" not in text, text[-4000:]
    assert re.search(r"\[loger_lifecycle_node-\d+\]: process has finished cleanly", text), text[-4000:]
