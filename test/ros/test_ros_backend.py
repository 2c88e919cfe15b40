"""The geometric back end in a real ROS 2 graph: replay.launch.py plays a synthetic car drive that
laps its block (400 frames, the loop case of the README's back-end table) and the node, back end on
(the default), closes the loop: ``~/loop_closures`` carries the loop as a LINE_LIST in the map
frame, diagnostics count keyframes and loops, the corrections go into ``map -> odom`` while
``odom -> base_link`` stays continuous (no jump where the map frame moved)."""
from __future__ import annotations


import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the ROS 2 integration tests need a sourced "
                            "ROS 2 with this package built (bash scripts/test_ros.sh)")

from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from loger_core.io.trajectory import read_tum  # noqa: E402
from loger_core.synthetic import SynthConfig, render_frames  # noqa: E402
from loger_core.synthetic.rosbag_writer import BagTopics, write_rosbag  # noqa: E402
from loger_ros.conversions import matrix_from_transform  # noqa: E402
from ros_graph import LATCHED, Client, Launched, mapping_status_values, stamp_ns, wait_until_drained  # noqa: E402


def _status_values(client: Client) -> list[dict]:
    return mapping_status_values(client)


def _edge(client: Client, parent: str, child: str) -> list[tuple[int, np.ndarray]]:
    """(stamp ns, matrix) of every ``parent -> child`` the node broadcast, in arrival order."""
    return [(stamp_ns(t.header.stamp), matrix_from_transform(t.transform)) for msg in client.messages("tf")
            for t in msg.transforms if t.header.frame_id == parent and t.child_frame_id == child]


def test_backend_closes_a_loop_publishes_it_and_corrects_map_to_odom(ros_ready, tmp_path):
    # The car laps its block (about 130 m) in about 360 frames, then drives on past its start.
    frames = render_frames(SynthConfig(scene="loop", trajectory="car", frames=400, width=320, height=240, fps=10,
                                       seed=5003), device="cpu")
    # The ground truth goes to its own TF topic: on /tf it would give base_link a second parent.
    bag = write_rosbag(tmp_path / "bag", frames, storage="mcap", topics=BagTopics(tf="/ground_truth/tf"))
    params = tmp_path / "offline.yaml"
    # The back end inline and tracking every frame: what offline replay uses (outputs independent of
    # timing); lossless replay lets the player wait for it.
    # shutdown_timeout_s: the last window and the final correction (the whole map fused again from the
    # keyframes) get time on a busy machine.
    params.write_text("loger:\n  ros__parameters:\n    backend_threaded: false\n    backend_max_queue: 0\n"
                      "    shutdown_timeout_s: 60.0\n")
    out = tmp_path / "out"
    launched = Launched("replay.launch.py", {"bag": str(bag), "rviz": "false", "device": "cpu", "rate": "4.0",
                                             "output_dir": str(out), "params_file": str(params),
                                             "sigterm_timeout": "90"},
                        tmp_path / "backend.log")
    client = Client("loger_test_backend")
    markers: list = []
    client.node.create_subscription(MarkerArray, "/loger/loop_closures", markers.append, LATCHED)
    try:
        launched.wait_for(r"loger_node ready", 180.0)
        launched.wait_for(r"\[bag_play-\d+\]: process has finished cleanly", 900.0)
        client.wait_until(lambda: bool(markers), 60.0, "a ~/loop_closures MarkerArray")
        # Diagnostics run on the steady clock: they keep coming after the bag (and /clock) ended.
        client.wait_until(lambda: any(int(v.get("backend_loop_closures", 0)) >= 1 for v in _status_values(client)),
                          30.0, "diagnostics that count the closed loop")
        wait_until_drained(client, len(frames), 120.0)
    finally:
        client.close()
        launched.close()

    # -- the loop as markers: one LINE_LIST in the map frame, a pair of camera centres per closure.
    last = markers[-1].markers
    assert len(last) == 1 and last[0].header.frame_id == "map" and last[0].type == Marker.LINE_LIST
    assert last[0].action == Marker.ADD and len(last[0].points) >= 2 and len(last[0].points) % 2 == 0
    loops_marked = len(last[0].points) // 2

    # -- diagnostics count keyframes and the closed loops.
    values = _status_values(client)
    assert values, "no diagnostics"
    keyframes = max(int(v.get("backend_keyframes", 0)) for v in values)
    loops = max(int(v.get("backend_loop_closures", 0)) for v in values)
    assert keyframes >= 20 and loops >= 1, values[-1]

    # -- TF: corrections move map -> odom; odom -> base_link, the network's own path, never jumps.
    map_odom = _edge(client, "map", "odom")
    odom_base = sorted(_edge(client, "odom", "base_link"), key=lambda e: e[0])
    assert map_odom and len(odom_base) > 100
    moves = [np.linalg.norm(b[:3, 3] - a[:3, 3]) for (_, a), (_, b) in zip(map_odom, map_odom[1:])]
    assert max(moves, default=0.0) > 0.0, "map -> odom never changed: no correction reached TF"
    assert all(tb > ta for (ta, _), (tb, _) in zip(odom_base, odom_base[1:])), "a stamp published twice"
    steps = np.array([np.linalg.norm(b[:3, 3] - a[:3, 3]) for (_, a), (_, b) in zip(odom_base, odom_base[1:])])
    # Had a correction of size c gone into odom -> base_link, one odometry step would be about c. The
    # loop's correction is larger than any step the network's own odometry makes (the bundled demo
    # model's provisional poses are noisy, so a step can be a few times the typical one), and the
    # odometry steps into and out of the stamp where map -> odom took it are small.
    biggest = int(np.argmax(moves))
    at = {t: i for i, (t, _) in enumerate(odom_base)}[map_odom[biggest + 1][0]]
    around = steps[max(0, at - 1):at + 1]
    assert moves[biggest] > steps.max(), (moves[biggest], steps.max())
    assert around.max() < 0.5 * moves[biggest], (around, moves[biggest])

    traj = read_tum(out / "trajectory.tum")
    assert len(traj) == len(frames)  # lossless replay: every frame has a pose
    print(f"\nback end over the 400-frame loop drive: {keyframes} keyframes, {loops} loop closure(s) "
          f"({loops_marked} marked), map -> odom moved up to {max(moves):.3f} (network units) in "
          f"{len(map_odom)} broadcasts; odom -> base_link step max {steps.max():.3f}, median {np.median(steps):.3f}, "
          f"{around.max():.3f} where map -> odom moved most")
