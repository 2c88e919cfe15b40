"""Lossless mode without ROS: the back-pressure policy (pause at the high-water mark, resume at the
low-water mark), the queue that grows instead of dropping, and the pipeline that drives the policy
from its queue depth, maps every frame, and maps the queued frames on shutdown. The rosbag2 side is
tested in a real graph by test/ros/test_ros_lossless_replay.py."""
from __future__ import annotations

import threading
import time

import pytest

from loger_core.pipeline import CoreError, DropOldestQueue
from loger_core.pipeline.backpressure import PAUSE, RESUME, BackPressure
from loger_ros.params import NodeParams, ParamsError
from test_node_core import FakeStream, image_msg, make_core, stamp


# ------------------------------------------------------------------ policy
def test_policy_pauses_at_high_water_and_resumes_at_low_water_once_per_crossing():
    policy = BackPressure(high_water=4, low_water=1)
    actions = [policy.update(d) for d in (0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4)]
    assert actions == [None, None, None, None, PAUSE, None, None, None, None, None, None, RESUME, None,
                       None, None, None, PAUSE]
    assert (policy.pauses, policy.resumes, policy.paused, policy.max_depth) == (2, 1, True, 6)


def test_policy_marks_for_a_queue_size():
    p = BackPressure.for_queue(32)
    assert (p.high_water, p.low_water) == (16, 8)
    p = BackPressure.for_queue(3)
    assert (p.high_water, p.low_water) == (1, 0)
    p = BackPressure.for_queue(1)
    assert (p.high_water, p.low_water) == (1, 0)
    for bad in (0, -1, True, 2.0):
        with pytest.raises(CoreError):
            BackPressure.for_queue(bad)
    with pytest.raises(CoreError, match="low_water < high_water"):
        BackPressure(3, 3)


def test_a_failed_request_is_asked_again_by_the_next_update():
    policy = BackPressure(high_water=2, low_water=0)
    assert policy.update(2) == PAUSE
    policy.failed(PAUSE)  # no player yet
    assert not policy.paused
    assert policy.update(3) == PAUSE  # still above the mark: asked again
    assert policy.update(0) == RESUME
    policy.failed(RESUME)
    assert policy.paused and policy.update(0) == RESUME  # an empty queue keeps asking
    assert policy.failures == 2
    # A late failure of an action the state has moved past changes nothing.
    assert policy.update(2) == PAUSE and policy.update(0) == RESUME
    policy.failed(PAUSE)
    assert not policy.paused and policy.update(1) is None
    with pytest.raises(CoreError):
        policy.failed("stop")


def test_policy_is_consistent_under_concurrent_updates():
    """The callback thread (puts) and the inference thread (gets) both update: every pause is
    followed by a resume before the next pause, whatever the interleaving."""
    policy = BackPressure(high_water=8, low_water=2)
    actions: list = []
    lock = threading.Lock()

    def run(depths):
        for d in depths:
            a = policy.update(d)
            if a is not None:
                with lock:
                    actions.append(a)

    threads = [threading.Thread(target=run, args=([(i * 7 + k) % 12 for i in range(2000)],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert actions and all(a != b for a, b in zip(actions, actions[1:]))  # alternating
    assert policy.pauses == actions.count(PAUSE) and policy.resumes == actions.count(RESUME)


# ------------------------------------------------------------------ queue
def test_lossless_queue_grows_instead_of_dropping():
    q = DropOldestQueue(3, lossless=True)
    assert [q.put(i) for i in range(5)] == [None] * 5
    assert (len(q), q.dropped, q.overflows, q.high_water) == (5, 0, 2, 5)
    assert [q.get() for _ in range(5)] == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ params
def test_lossless_parameters():
    assert NodeParams().lossless is False  # a live camera drops the oldest frame
    assert NodeParams().lossless_player == "/rosbag2_player"
    assert NodeParams(lossless=True, lossless_player="/robot1/player").lossless_player == "/robot1/player"
    for bad in ("", "rosbag2_player", "/bad name", "/a//b"):
        with pytest.raises(ParamsError, match="lossless_player"):
            NodeParams(lossless_player=bad)


# ------------------------------------------------------------------ pipeline
def test_core_in_lossless_mode_pauses_the_source_instead_of_dropping():
    core = make_core(queue_size=8, lossless=True)
    assert core.backpressure is not None and (core.backpressure.high_water, core.backpressure.low_water) == (4, 2)
    asked: list = []
    core.set_flow_control(asked.append)
    for i in range(12):  # the source goes on a little after the pause (frames in flight)
        core.on_image(image_msg(i))
    assert asked == [PAUSE] and len(core.queue) == 12 and core.counters.dropped_total == 0
    for _ in range(9):
        core.process_next(0.0)
    assert asked == [PAUSE] and len(core.queue) == 3
    core.process_next(0.0)  # 2 left: the low-water mark
    assert asked == [PAUSE, RESUME]
    core.process_all()
    assert [p["stamp"] for p in core.reconstructor.pushed] == [stamp(i) for i in range(12)]
    values = core.diagnostics_values()
    assert values["lossless_pauses"] == 1 and values["lossless_resumes"] == 1 and values["lossless_max_depth"] == 12
    assert values["dropped_queue_full"] == 0


def test_core_without_lossless_has_no_flow_control():
    core = make_core(queue_size=2)
    assert core.backpressure is None
    with pytest.raises(CoreError, match="lossless"):
        core.set_flow_control(lambda action: None)


def test_a_failing_sink_does_not_break_the_frame_path():
    core = make_core(queue_size=4, lossless=True)

    def sink(action):
        raise RuntimeError("no player")

    core.set_flow_control(sink)
    for i in range(6):
        core.on_image(image_msg(i))  # never raises
    assert core.backpressure.failures >= 1 and not core.backpressure.paused
    assert len(core.queue) == 6 and core.counters.dropped_total == 0
    assert any("could not pause the source" in line for line in core.log.lines["warning"])
    assert any("lossless: 5 frames waiting (queue_size 4)" in line for line in core.log.lines["warning"])


def test_a_paused_source_is_not_reported_as_a_silent_camera():
    clock = {"ns": 0}
    core = make_core(queue_size=4, lossless=True, input_timeout_s=1.0, clock=lambda: clock["ns"])
    core.set_flow_control(lambda action: None)
    core.watch_input(True)
    for i in range(2):
        core.on_image(image_msg(i))
    assert core.backpressure.paused
    clock["ns"] += 5 * 10**9
    assert core.input_silence() is None  # the node paused the player itself
    core.process_all()  # drains: resumed
    assert not core.backpressure.paused and "no image" in core.input_silence()


def test_lossless_shutdown_maps_the_queued_frames(tmp_path):
    """The node's lossless shutdown: intake closed, the queued frames mapped, then the window finished."""
    stream = FakeStream(window=4, overlap=1, delay_s=0.02)
    core = make_core(stream, queue_size=32, lossless=True, output_dir=str(tmp_path))
    asked: list = []
    core.set_flow_control(asked.append)
    core.start(lambda pub: None, lambda: 0)
    for i in range(40):
        core.on_image(image_msg(i))
    assert core.stop_intake(keep_queued=True) == 0
    core.on_image(image_msg(40))  # after the shutdown request: dropped, not queued
    assert core.wait_drained(10.0)
    assert core.stop(5.0)
    core.finish("finish")
    assert core.save_map().poses == 40
    assert core.counters.dropped_total == 1 and core.counters.dropped["shutdown"] == 1
    # The source is left alone once shutting down (no resume for a player that is going away).
    assert asked.count(PAUSE) == 1 and asked.count(RESUME) == 0


def test_wait_drained_does_not_wait_without_an_inference_thread():
    core = make_core(queue_size=4, lossless=True)
    core.on_image(image_msg(0))
    t0 = time.perf_counter()
    assert not core.wait_drained(5.0)
    assert time.perf_counter() - t0 < 1.0
