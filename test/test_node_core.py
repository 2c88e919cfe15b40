"""The ROS-free node core: queue, drops, frame bookkeeping, odom continuity, scale wiring, TF choice."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from loger_core.io.trajectory import read_tum
from loger_core.mapping.voxel_map import load_ply
from loger_core.stream import FrameResult, StreamInputError, StreamStats
from loger_core.stream.scale import ScaleEstimate
from loger_ros.conversions import matrix_from_pose, matrix_from_transform, rosbags_factory
from loger_core.pipeline import CameraMount, CoreError, DropOldestQueue, PoseTracker, invert
from loger_ros.inputs import resolve_image_transport
from loger_ros.mapping_core import MappingCore
from loger_ros.params import NodeParams

F = rosbags_factory("ros2_humble")
T0 = 1_700_000_000_000_000_000
DT = 100_000_000  # 10 Hz


# ------------------------------------------------------------------ helpers
def stamp(i: int) -> int:
    return T0 + i * DT


def header(stamp_ns: int, frame: str = "camera_optical_frame"):
    time_msg = F.make("builtin_interfaces/msg/Time", sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return F.make("std_msgs/msg/Header", stamp=time_msg, frame_id=frame)


def image_msg(i: int, stamp_ns: int | None = None, encoding: str = "rgb8", w: int = 16, h: int = 12):
    rgb = np.full((h, w, 3), (i * 20) % 256, dtype=np.uint8)
    return F.make("sensor_msgs/msg/Image", header=header(stamp(i) if stamp_ns is None else stamp_ns), height=h,
                  width=w, encoding=encoding, is_bigendian=0, step=w * 3, data=rgb.reshape(-1))


def compressed_msg(i: int, data: bytes | None = None):
    if data is None:
        ok, buf = cv2.imencode(".jpg", np.full((12, 16, 3), 100, np.uint8))
        data = buf.tobytes()
    return F.make("sensor_msgs/msg/CompressedImage", header=header(stamp(i)), format="jpeg",
                  data=np.frombuffer(data, np.uint8).copy())


def camera_info_msg(k=(10.0, 0, 8, 0, 10.0, 6, 0, 0, 1), w=16, h=12, d=(0.0,) * 5):
    roi = F.make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return F.make("sensor_msgs/msg/CameraInfo", header=header(T0), height=h, width=w, distortion_model="plumb_bob",
                  d=np.array(d, float), k=np.array(k, float), r=np.eye(3).reshape(-1),
                  p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def depth_msg(stamp_ns: int, mm: int, w=16, h=12):
    data = np.full((h, w), mm, dtype="<u2")
    return F.make("sensor_msgs/msg/Image", header=header(stamp_ns), height=h, width=w, encoding="16UC1",
                  is_bigendian=0, step=w * 2, data=data.view(np.uint8).reshape(-1))


def pose_matrix(x=0.0, y=0.0, z=0.0, yaw_deg=0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
    T[:3, 3] = (x, y, z)
    return T


def odometry_msg(stamp_ns: int, T: np.ndarray):
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    pose = F.make("geometry_msgs/msg/Pose",
                  position=F.make("geometry_msgs/msg/Point", x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                  orientation=F.make("geometry_msgs/msg/Quaternion", x=q[0], y=q[1], z=q[2], w=q[3]))
    zero = F.make("geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)
    return F.make("nav_msgs/msg/Odometry", header=header(stamp_ns, "odom"), child_frame_id="base_link",
                  pose=F.make("geometry_msgs/msg/PoseWithCovariance", pose=pose, covariance=np.zeros(36)),
                  twist=F.make("geometry_msgs/msg/TwistWithCovariance",
                               twist=F.make("geometry_msgs/msg/Twist", linear=zero, angular=zero),
                               covariance=np.zeros(36)))


class ListLogger:
    """Collects log lines by level (the core's logger interface: one string per call)."""

    def __init__(self):
        self.lines: dict[str, list[str]] = {"debug": [], "info": [], "warning": [], "error": []}

    def __getattr__(self, level):
        return self.lines[level].append


class FakeStream:
    """Honours StreamingReconstructor's contract: windows of `window` frames sharing `overlap`,
    a provisional result for the newest frame of an incomplete window, committed results for a
    window's frames but its last `overlap`, which come with the next window or flush().

    Camera poses move `step` units along x per frame index, times the current scale (which
    becomes `scale_after_commit` at the first commit, as a metric scale estimate would);
    provisional poses drift by `provisional_bias` along y per frame since the window start (the
    commit removes that drift)."""

    def __init__(self, window=4, overlap=1, provisional_bias=0.05, reject=(), fail=(), delay_s=0.0,
                 step=0.1, scale_after_commit=None):
        self.window, self.overlap, self.bias = window, overlap, provisional_bias
        self.step, self.scale, self.scale_after_commit = step, 1.0, scale_after_commit
        self.reject, self.fail, self.delay_s = set(reject), set(fail), delay_s
        self.pushed: list[dict] = []
        self.stats = StreamStats()
        self.device = "cpu"
        self.resets = 0
        self._start()

    def _start(self):
        self.buffer, self.head, self.next_index, self.finished = [], 0, 0, False

    @property
    def buffered_frames(self):
        return len(self.buffer)

    def scale_estimate(self):
        return ScaleEstimate(1.0, 0.0, 0, "none", True)

    def result(self, frame, provisional):
        index, stamp_ns, rgb = frame
        drift = self.bias * (index - self.buffer[0][0]) if provisional else 0.0
        T = pose_matrix(x=self.step * index * self.scale, y=drift)
        points = np.array([[0.1 * index, 0.0, 1.0], [0.1 * index, 0.5, 2.0], [0.1 * index, -0.5, 3.0]], np.float32)
        colors = np.repeat(rgb[:1, 0], 3, axis=0)
        return FrameResult(
            index=index, stamp_ns=stamp_ns, T_world_cam=T, depth=np.ones((2, 2), np.float32),
            confidence=np.full((2, 2), 0.9, np.float32), valid=np.ones((2, 2), bool), points=points,
            colors=colors, point_confidence=np.full(3, 0.9, np.float32), K=np.eye(3), K_model=np.eye(3),
            image_size=(rgb.shape[1], rgb.shape[0]), model_size=(2, 2), scale=1.0, scale_std=0.0,
            scale_valid=True, window_index=0, provisional=provisional)

    def push(self, image, stamp_ns, K=None, depth=None, odom=None, provisional=True):
        if self.finished:
            raise StreamInputError("push() after flush()")
        if stamp_ns in self.reject:
            raise StreamInputError(f"image at {stamp_ns} refused (fake)")
        self.pushed.append({"stamp": stamp_ns, "K": K, "depth": depth, "odom": odom, "shape": image.shape,
                            "provisional": provisional})
        if stamp_ns in self.fail:
            raise RuntimeError("CUDA out of memory (fake)")
        time.sleep(self.delay_s)
        self.buffer.append((self.next_index, stamp_ns, image))
        self.next_index += 1
        if len(self.buffer) == self.window:
            keep = self.window - self.overlap
            if self.scale_after_commit is not None:
                self.scale = self.scale_after_commit
            out = [self.result(f, False) for f in self.buffer[:keep]]
            self.buffer, self.head = self.buffer[keep:], self.overlap
            return out
        return [self.result(self.buffer[-1], True)]

    def flush(self):
        out = [self.result(f, False) for f in self.buffer]
        self.buffer, self.finished = [], True
        return out

    def reset(self):
        self.resets += 1
        self._start()


def make_core(stream=None, lookup=None, logger=None, clock=None, **overrides):
    # The node core's own behaviour, without the geometric back end (its tests: test_backend_pipeline.py).
    params = NodeParams(**{"allow_synthetic_weights": True, "queue_size": 64, "window_size": 4, "provisional_budget": 1.0,
                           "overlap_size": 1, "voxel_size": 0.01, "backend_enabled": False, **overrides})
    kwargs = {"monotonic_ns": clock} if clock is not None else {}
    core = MappingCore(params, F, reconstructor=stream or FakeStream(), lookup=lookup,
                       logger=logger or ListLogger(), **kwargs)
    return core


def feed(core, messages, compressed=False):
    pubs = []
    for msg in messages:
        core.on_image(msg, compressed)
        pubs += core.process_all()
    return pubs


def channels(pubs):
    return [p.channel for p in pubs]


def tf_pairs(pubs):
    return [(t.header.frame_id, t.child_frame_id) for p in pubs if p.channel == "tf" for t in p.msg.transforms]


# ------------------------------------------------------------------ queue
def test_queue_drops_the_oldest_and_counts():
    q = DropOldestQueue(3)
    evicted = [q.put(i) for i in range(5)]
    assert evicted == [None, None, None, 0, 1]
    assert (q.dropped, q.high_water, len(q)) == (2, 3, 3)
    assert [q.get(), q.get(), q.get(), q.get()] == [2, 3, 4, None]
    with pytest.raises(CoreError, match="maxsize 0"):
        DropOldestQueue(0)


def test_queue_get_waits_for_a_put_and_close_wakes_waiters():
    q = DropOldestQueue(2)
    got = []
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=5.0)))
    waiter.start()
    time.sleep(0.05)
    q.put("frame")
    waiter.join(2.0)
    assert got == ["frame"]
    waiter = threading.Thread(target=lambda: got.append(q.get(timeout=None)))
    waiter.start()
    time.sleep(0.05)
    q.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and got[-1] is None


def test_image_transport_resolution():
    assert resolve_image_transport("auto", "/cam/image_raw", ["sensor_msgs/msg/CompressedImage"]) == "compressed"
    assert resolve_image_transport("auto", "/cam/image_raw/compressed", ["sensor_msgs/msg/Image"]) == "raw"
    assert resolve_image_transport("auto", "/cam/image_raw/compressed", None) == "compressed"
    assert resolve_image_transport("auto", "/cam/image_raw", []) == "raw"
    assert resolve_image_transport("compressed", "/cam/image_raw", ["sensor_msgs/msg/Image"]) == "compressed"
    with pytest.raises(CoreError, match="image_transport 'theora'"):
        resolve_image_transport("theora", "/cam", None)


# ------------------------------------------------------------------ camera mount
def test_camera_mount_from_tf_and_identity_fallback_warned_once():
    mount_T = pose_matrix(x=0.2, z=0.5, yaw_deg=30)
    log = ListLogger()
    mount = CameraMount("base_link", lambda target, source, stamp: mount_T if source == "cam" else None, log)
    assert np.allclose(mount.current("cam"), mount_T) and mount.source == "tf"
    assert np.allclose(mount.freeze("cam"), mount_T) and not log.lines["warning"]

    log = ListLogger()
    mount = CameraMount("base_link", lambda *a: None, log)
    for _ in range(3):
        assert np.allclose(mount.freeze("cam"), np.eye(4))
    assert mount.source == "identity_fallback"
    assert len(log.lines["warning"]) == 1 and "base_link <- 'cam'" in log.lines["warning"][0]

    log = ListLogger()
    bad = np.full((4, 4), np.nan)
    mount = CameraMount("base_link", lambda *a: bad, log)
    assert np.allclose(mount.freeze("cam"), np.eye(4)) and mount.source == "identity_fallback"
    assert any("NaN" in line for line in log.lines["warning"])
    assert CameraMount("cam", None, ListLogger()).freeze("cam") is not None


# ------------------------------------------------------------------ pose tracker (REP-105)
def test_tracker_anchors_base_link_at_the_map_origin():
    mount = pose_matrix(x=0.3, z=0.8, yaw_deg=-90)
    tracker = PoseTracker("odom_to_base")
    first = pose_matrix(x=5.0, y=-2.0, yaw_deg=40)  # any world origin
    tracker.anchor(first, mount)
    update = tracker.update([(1, first, True)], mount)
    assert np.allclose(update.new[0].T_map_base, np.eye(4))
    assert np.allclose(update.new[0].T_map_cam, mount)
    assert np.allclose(update.new[0].T_odom_base, np.eye(4))


def test_tracker_keeps_odom_continuous_and_puts_corrections_into_map_to_odom():
    tracker = PoseTracker("odom_to_base")
    I = np.eye(4)
    tracker.anchor(I, I)
    provisional = {s: pose_matrix(x=0.1 * s, y=0.05 * s) for s in (1, 2, 3)}  # drifting provisional poses
    published = {}
    for s in (1, 2, 3):
        update = tracker.update([(s, provisional[s], True)], I)
        assert [p.stamp_ns for p in update.new] == [s]
        published[s] = update.new[0].T_odom_base
    # The committed window revises 1..3 (no y drift) and already contains frame 4.
    committed = {s: pose_matrix(x=0.1 * s) for s in (1, 2, 3, 4)}
    update = tracker.update([(s, committed[s], False) for s in (1, 2, 3, 4)], I)
    assert [p.stamp_ns for p in update.revised] == [1, 2, 3] and [p.stamp_ns for p in update.new] == [4]
    assert update.map_odom_changed
    # Published odometry is never rewritten ...
    for pose in update.revised:
        assert np.allclose(pose.T_odom_base, published[pose.stamp_ns])
    # ... the correction is map -> odom, anchored at the newest revised stamp ...
    assert np.allclose(update.T_map_odom @ published[3], committed[3])
    # ... and odom continues from stamp 3 with the committed relative motion (no jump).
    odom4 = update.new[0].T_odom_base
    assert np.allclose(invert(published[3]) @ odom4, invert(committed[3]) @ committed[4])
    assert np.allclose(update.T_map_odom @ odom4, update.new[0].T_map_base)


def test_tracker_map_to_odom_uses_the_external_odometry():
    tracker = PoseTracker("map_to_odom")
    I = np.eye(4)
    tracker.anchor(I, I)
    external = {7: pose_matrix(x=1.0, y=1.0, yaw_deg=90)}
    update = tracker.update([(7, pose_matrix(x=0.5), True)], I, external.get)
    assert np.allclose(update.T_map_odom @ external[7], pose_matrix(x=0.5))
    assert tracker.update([(8, pose_matrix(x=0.6), True)], I, external.get).map_odom_changed is False


def test_tracker_restart_continues_the_map_frame():
    tracker = PoseTracker("odom_to_base")
    I = np.eye(4)
    tracker.anchor(I, I)
    tracker.update([(1, pose_matrix(x=2.0, yaw_deg=45), False)], I)
    tracker.restart_world()
    assert not tracker.anchored
    new_world_first = pose_matrix(y=7.0)
    tracker.anchor(new_world_first, I)
    update = tracker.update([(2, new_world_first, False)], I)
    assert np.allclose(update.new[0].T_map_cam, pose_matrix(x=2.0, yaw_deg=45))
    with pytest.raises(CoreError, match="tf_mode 'bad'"):
        PoseTracker("bad")


# ------------------------------------------------------------------ MappingCore with the fake stream
def test_core_publishes_odometry_tf_path_cloud_and_maps_committed_frames():
    stream = FakeStream(window=4, overlap=1)
    core = make_core(stream)
    pubs_per_frame = [feed(core, [image_msg(i)]) for i in range(6)]
    assert channels(pubs_per_frame[0]) == ["odom", "tf"]  # provisional: odometry at once
    assert channels(pubs_per_frame[3]) == ["cloud", "path"]  # window complete: committed 0..2
    assert tf_pairs(pubs_per_frame[1]) == [("odom", "base_link"), ("map", "odom")]
    odom = pubs_per_frame[1][0].msg
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert odom.twist.twist.linear.x == pytest.approx(0.1 / (DT * 1e-9), rel=1e-6)  # 0.1 m per 0.1 s
    final = core.flush()
    assert "map" in channels(final)
    traj = core.trajectory()
    assert list(traj.stamps_ns) == [stamp(i) for i in range(6)]
    path = [p for p in final if p.channel == "path"][-1].msg
    assert len(path.poses) == 6 and path.header.frame_id == "map"
    assert len(core.fusion) == 6 * 3  # three points per frame, 1 cm voxels
    assert core.counters.committed == 6 and core.counters.dropped_total == 0
    # Odometry of every frame but the window-completing one (3) went out at once.
    assert core.counters.odom_published == 5 and core.counters.odometry_skipped == 1


def test_core_odometry_has_no_jump_when_a_commit_changes_the_estimate():
    # The first commit rescales the world by 1.5 (a metric scale estimate arriving): every pose
    # far from the origin moves. Odometry must keep stepping by the per-frame motion, with the
    # correction going into map -> odom.
    stream = FakeStream(window=4, overlap=1, provisional_bias=0.0, step=1.0, scale_after_commit=1.5)
    core = make_core(stream)
    pubs = feed(core, [image_msg(i) for i in range(9)]) + core.flush()
    odom = [p.msg for p in pubs if p.channel == "odom"]
    index = np.array([(o.header.stamp.sec * 10**9 + o.header.stamp.nanosec - T0) // DT for o in odom])
    xs = np.array([o.pose.pose.position.x for o in odom])
    steps = np.diff(xs) / np.diff(index)
    assert np.all(steps > 1.0 - 1e-9) and np.all(steps < 1.5 + 1e-9), steps
    assert steps[-1] == pytest.approx(1.5)
    map_odom = [t.transform.translation.x for p in pubs if p.channel == "tf"
                for t in p.msg.transforms if t.child_frame_id == "odom"]
    assert map_odom[0] == 0.0 and map_odom[-1] == pytest.approx(1.0)  # 1.5 * 2 - 2 at the revised frame 2
    # A naive odom (the map pose itself) would have jumped from 2.0 to 1.5 * 4 = 6.0 at frame 4.
    assert xs[list(index).index(4)] == pytest.approx(5.0)


def test_path_message_is_bounded_but_the_trajectory_keeps_every_pose():
    core = make_core(path_max_poses=3)
    pubs = feed(core, [image_msg(i) for i in range(7)]) + core.flush()
    path = [p.msg for p in pubs if p.channel == "path"][-1]
    assert [ps.header.stamp.nanosec for ps in path.poses] == [stamp(i) % 10**9 for i in (4, 5, 6)]
    assert len(core.trajectory()) == 7


def test_core_queue_full_drops_the_oldest_frames():
    core = make_core(queue_size=2)
    for i in range(5):
        core.on_image(image_msg(i))
    core.process_all()
    assert core.counters.dropped["queue_full"] == 3
    assert [p["stamp"] for p in core.reconstructor.pushed] == [stamp(3), stamp(4)]
    diag = core.diagnostics(stamp(5)).msg.status[0]
    assert diag.level == 1 and "3 frame(s) dropped" in diag.message
    values = {kv.key: kv.value for kv in diag.values}
    assert values["dropped_queue_full"] == "3" and values["frames_received"] == "5"


def test_low_latency_passes_wait_while_frames_are_queued():
    """Catching up comes first: a frame with frames queued behind it is pushed without a low-latency
    pass (a pass would delay them and, with a full queue, drop camera frames); the last one is
    pushed with it, and no frame is dropped."""
    core = make_core(queue_size=8)
    for i in range(5):
        core.on_image(image_msg(i))
    core.process_all()
    assert [p["provisional"] for p in core.reconstructor.pushed] == [False, False, False, False, True]
    core.on_image(image_msg(5))
    core.process_all()
    assert core.reconstructor.pushed[-1]["provisional"] is True
    assert core.counters.dropped_total == 0


def test_callbacks_never_block_while_inference_runs():
    stream = FakeStream(delay_s=0.3)
    core = make_core(stream, queue_size=2)
    received = []
    core.start(received.append, lambda: 0)
    try:
        durations = []
        for i in range(4):
            t = time.perf_counter()
            core.on_image(image_msg(i))
            durations.append(time.perf_counter() - t)
        assert max(durations) < 0.05  # the worker sleeps 0.3 s per frame; the callback does not wait
        deadline = time.time() + 10
        while core.counters.processed + core.counters.dropped["queue_full"] < 4 and time.time() < deadline:
            time.sleep(0.02)
    finally:
        assert core.stop(5.0)
    assert core.counters.dropped["queue_full"] >= 1
    assert any(p.channel == "odom" for p in received)


def test_malformed_raw_images_are_dropped_on_arrival_not_queued():
    """A malformed frame is reported when it arrives, even while inference is behind and the queue is
    full: it neither waits to be displaced unseen nor displaces a good frame."""
    log = ListLogger()
    core = make_core(FakeStream(window=3, overlap=1), logger=log, queue_size=2)
    core.on_image(image_msg(0))
    core.on_image(image_msg(1))  # the queue is full; nothing has been processed
    truncated = image_msg(2)
    truncated.data = truncated.data[:-5]
    core.on_image(truncated)
    core.on_image(image_msg(3, encoding="32FC4"))
    assert core.counters.dropped["decode"] == 2 and core.counters.dropped["queue_full"] == 0
    assert len(core.queue) == 2
    warnings = "\n".join(log.lines["warning"])
    assert "dropped an undecodable image" in warnings and "Image.data has" in warnings and "32FC4" in warnings


def test_bad_inputs_are_logged_drops_and_lose_no_map_data():
    log = ListLogger()
    core = make_core(FakeStream(window=3, overlap=1), logger=log)
    feed(core, [image_msg(i) for i in range(5)])
    before = len(core.fusion)
    assert before > 0
    bad_encoding = image_msg(5, encoding="rgb16")
    corrupt_jpeg = compressed_msg(6, data=b"\xff\xd8\xff" + b"\x00" * 50)
    out_of_order = image_msg(7, stamp_ns=stamp(1))
    no_header = SimpleNamespace(height=12, width=16, encoding="rgb8", is_bigendian=0, step=48, data=b"\0" * 576)
    feed(core, [bad_encoding, out_of_order, no_header])
    feed(core, [corrupt_jpeg], compressed=True)
    nan_info = camera_info_msg(k=(np.nan, 0, 8, 0, 10, 6, 0, 0, 1))
    core.on_camera_info(nan_info)
    nan_odometry = odometry_msg(stamp(7), np.eye(4))
    nan_odometry.pose.pose.position.x = float("nan")
    core.on_odometry(nan_odometry)
    assert len(core.fusion) == before
    assert core.counters.dropped["decode"] == 3 and core.counters.dropped["out_of_order"] == 1
    assert core.counters.invalid_camera_info == 1 and core.counters.invalid_odometry == 1
    warnings = "\n".join(log.lines["warning"])
    assert "Image.encoding 'rgb16' is not supported" in warnings
    assert "could not be decoded as jpeg" in warnings
    assert f"stamp {stamp(1)} ns is not after the previous frame's {stamp(4)} ns" in warnings
    assert "CameraInfo.k" in warnings
    feed(core, [image_msg(i) for i in range(8, 12)])
    core.flush()
    assert len(core.fusion) > before
    assert list(core.trajectory().stamps_ns) == [stamp(i) for i in (0, 1, 2, 3, 4, 8, 9, 10, 11)]


def test_refused_frames_and_inference_errors_are_drops_and_the_node_continues():
    log = ListLogger()
    stream = FakeStream(window=3, overlap=1, reject={stamp(1)}, fail={stamp(2)})
    core = make_core(stream, logger=log)
    feed(core, [image_msg(i) for i in range(6)])
    core.flush()
    assert core.counters.dropped["rejected"] == 1 and core.counters.dropped["inference_error"] == 1
    assert any("CUDA out of memory" in line for line in log.lines["error"])
    assert list(core.trajectory().stamps_ns) == [stamp(i) for i in (0, 3, 4, 5)]
    assert core.diagnostics(stamp(6)).msg.status[0].level == 2  # ERROR after an inference failure


def test_a_malformed_pose_from_the_network_costs_its_messages_not_the_node():
    stream = FakeStream(window=3, overlap=1)
    good_result = stream.result

    def result(frame, provisional):
        r = good_result(frame, provisional)
        if frame[0] == 1:
            r.T_world_cam[:3, :3] *= 2.0  # a scaled "rotation"
        return r

    stream.result = result
    log = ListLogger()
    core = make_core(stream, logger=log)
    feed(core, [image_msg(i) for i in range(5)])
    assert core.counters.result_errors == 2  # its provisional and its committed result
    assert any("rotation block is not a rotation" in line for line in log.lines["error"])
    assert core.counters.processed == 5 and core.counters.odom_published == 2  # frames 0 and 3
    assert 1 * DT + T0 not in list(core.trajectory().stamps_ns) and len(core.trajectory()) == 3


def test_camera_info_is_used_and_a_size_mismatch_is_warned():
    core = make_core()
    core.on_camera_info(camera_info_msg())
    feed(core, [image_msg(0)])
    assert np.allclose(core.reconstructor.pushed[0]["K"], np.array([[10, 0, 8], [0, 10, 6], [0, 0, 1.0]]))
    core.on_camera_info(camera_info_msg(w=32, h=24))
    feed(core, [image_msg(1)])
    assert core.reconstructor.pushed[1]["K"] is None and core.counters.camera_info_mismatch == 1


def test_depth_scale_source_pairs_depth_images_by_stamp():
    core = make_core(depth_topic="/depth", sync_tolerance_s=0.02)
    core.on_depth(depth_msg(stamp(0) + 5_000_000, 1500))  # 5 ms off: paired
    core.on_depth(depth_msg(stamp(1) + 60_000_000, 2500))  # 60 ms off: not paired
    feed(core, [image_msg(0), image_msg(1)])
    first, second = core.reconstructor.pushed
    assert first["depth"].shape == (12, 16) and np.allclose(first["depth"], 1.5)
    assert second["depth"] is None and first["odom"] is None


def test_odometry_scale_source_passes_the_camera_pose_in_the_odometry_frame():
    mount = pose_matrix(x=0.1, z=0.4)
    core = make_core(odometry_topic="/wheel_odom", lookup=lambda t, s, st: mount if st is None else None)
    wheel = pose_matrix(x=3.0, y=1.0, yaw_deg=90)
    core.on_odometry(odometry_msg(stamp(0), wheel))
    feed(core, [image_msg(0)])
    assert np.allclose(core.reconstructor.pushed[0]["odom"], wheel @ mount)


def test_base_link_poses_use_the_camera_mount_from_tf():
    mount = pose_matrix(x=0.2, z=0.6, yaw_deg=-90)
    core = make_core(lookup=lambda target, source, st: mount if (target, source) == ("base_link", "cam") else None,
                     camera_frame="cam")
    pubs = feed(core, [image_msg(i) for i in range(4)]) + core.flush()
    first = [p.msg for p in pubs if p.channel == "odom"][0]
    assert np.allclose(matrix_from_pose(first.pose.pose), np.eye(4))
    base, cam = core.trajectory("base"), core.trajectory("camera")
    assert np.allclose(cam.poses[0], mount)
    assert np.allclose(cam.poses, base.poses @ mount)
    assert core.mount.source == "tf"


def test_tf_mode_map_to_odom_publishes_only_map_to_odom_from_the_external_odometry():
    external = pose_matrix(x=10.0, yaw_deg=30)
    core = make_core(tf_mode="map_to_odom", lookup=lambda target, source, st: external if st else None)
    pubs = feed(core, [image_msg(0), image_msg(1)])
    assert tf_pairs(pubs) == [("map", "odom"), ("map", "odom")]
    odom = [p.msg for p in pubs if p.channel == "odom"]
    assert odom[0].header.frame_id == "map"
    T_map_odom = matrix_from_transform([p for p in pubs if p.channel == "tf"][-1].msg.transforms[0].transform)
    assert np.allclose(T_map_odom @ external, matrix_from_pose(odom[-1].pose.pose), atol=1e-9)
    silent = make_core(publish_tf=False)
    assert "tf" not in channels(feed(silent, [image_msg(i) for i in range(5)]) + silent.flush())


def test_reset_keeps_or_clears_the_map():
    core = make_core(FakeStream(window=3, overlap=1))
    feed(core, [image_msg(i) for i in range(4)])
    mapped = len(core.fusion)
    assert "scheduled" in core.request_reset()
    feed(core, [image_msg(4)])
    assert core.reconstructor.resets == 1 and len(core.fusion) == mapped and core.counters.resets == 1
    clearing = make_core(FakeStream(window=3, overlap=1), reset_clears_map=True)
    feed(clearing, [image_msg(i) for i in range(4)])
    clearing.request_reset()
    pubs = feed(clearing, [image_msg(4)])
    assert len(clearing.fusion) == 0 and len(clearing.trajectory()) == 0
    assert {"map", "path"} <= set(channels(pubs))


def test_save_map_writes_a_ply_and_a_tum_that_load(tmp_path):
    core = make_core()
    feed(core, [image_msg(i) for i in range(5)])
    core.flush()
    saved = core.save_map(str(tmp_path / "out"))
    points, colors, conf = load_ply(saved.map_ply)
    assert len(points) == len(core.fusion) == saved.points and conf is not None
    traj = read_tum(saved.trajectory_tum)
    assert len(traj) == 5 and np.array_equal(traj.stamps_ns, core.trajectory().stamps_ns)


def test_latency_is_measured_from_the_callback_to_the_odometry():
    now = [0]
    core = make_core(clock=lambda: now[0])
    for i in range(3):
        now[0] = i * 1_000_000_000
        core.on_image(image_msg(i))
        now[0] += 40_000_000  # inference takes 40 ms
        core.process_all()
    summary = core.latency.summary()
    assert summary.count == 3 and summary.mean_ms == pytest.approx(40.0)


def test_worker_thread_publishes_the_map_periodically():
    core = make_core(map_publish_period_s=0.01)
    received = []
    clock = [0]
    core.start(received.append, lambda: clock[0])
    try:
        for i in range(5):
            core.on_image(image_msg(i))
            clock[0] += 20_000_000
        deadline = time.time() + 10
        while not any(p.channel == "map" for p in received) and time.time() < deadline:
            clock[0] += 20_000_000
            time.sleep(0.02)
    finally:
        assert core.stop(5.0)
    maps = [p for p in received if p.channel == "map"]
    assert maps and maps[-1].msg.width > 0 and maps[-1].msg.header.frame_id == "map"


def test_map_fusion_runs_off_the_inference_thread_and_loses_nothing(tmp_path):
    core = make_core(FakeStream(window=3, overlap=1))
    fast_insert = core.fusion.map.insert

    def slow_insert(*args, **kwargs):
        time.sleep(0.1)  # fusing a full-resolution frame costs tens of ms
        return fast_insert(*args, **kwargs)

    core.fusion.map.insert = slow_insert
    received = []
    core.start(received.append, lambda: 0)
    try:
        for i in range(7):
            core.on_image(image_msg(i))
        deadline = time.time() + 10
        # `processed` counts a frame before its results are handled (published, committed) on the
        # same thread: wait for the handling too, not just the count.
        while (core.counters.processed < 7 or core.counters.committed < 6) and time.time() < deadline:
            time.sleep(0.005)
        # Every frame's odometry is out while the mapper still works through the committed windows.
        assert core.counters.odom_published == 4 and core.counters.committed == 6
        assert len(core.fusion) < 3 * 6
        saved = core.save_map(str(tmp_path))  # waits for the queued windows
        assert saved.points == 3 * 6
    finally:
        assert core.stop(10.0)
    core.flush()
    assert len(core.fusion) == 3 * 7 and core.fusion.backlog() == 0
    assert sum(p.channel == "cloud" for p in received) == 3


def test_real_tiny_model_streams_provisional_then_committed_poses():
    torch = pytest.importorskip("torch")
    from loger_core.model import build_model
    from loger_core.model.synthetic_weights import fill_deterministic_
    from loger_core.stream import StreamingReconstructor

    params = NodeParams(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28,
                        input_height=28, window_size=4, overlap_size=1, provisional_every=1, queue_size=16,
                        provisional_budget=1.0)
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()
    stream = StreamingReconstructor(params.stream_config(), model=model)
    core = MappingCore(params, F, reconstructor=stream, logger=ListLogger())
    rng = np.random.default_rng(0)
    pubs = []
    for i in range(6):
        rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        msg = F.make("sensor_msgs/msg/Image", header=header(stamp(i)), height=24, width=32, encoding="rgb8",
                     is_bigendian=0, step=96, data=rgb.reshape(-1))
        pubs.append(feed(core, [msg]))
    assert channels(pubs[0]) == ["odom", "tf"]
    assert "path" in channels(pubs[3])
    core.flush()
    assert len(core.trajectory()) == 6 and len(core.fusion) > 0
    assert torch.is_tensor(next(model.parameters()))
    values = core.diagnostics_values()  # what an integrator reads when odometry is sparse
    assert values["stream_provisional_runs"] == stream.stats.provisional_runs > 0
    assert values["stream_provisional_deferred"] == 0 and values["map_device"] == "cpu"


# ------------------------------------------------------------------ model selection in diagnostics
def test_diagnostics_warn_while_the_bundled_demo_model_runs():
    log = ListLogger()
    core = make_core(logger=log, allow_synthetic_weights=False)  # no checkpoint: the bundled small weights
    assert core.selection.bundled
    assert any("BUNDLED DEMO MODEL" in line for line in log.lines["warning"])
    status = core.diagnostics(stamp(0)).msg.status[0]
    assert status.level == 1 and "bundled demo model" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["model"] == "small" and "bundled demo weights" in values["weights"]
    # An explicit checkpoint: no warning, OK.
    log = ListLogger()
    core = make_core(logger=log, allow_synthetic_weights=False, checkpoint_path="/w/latest.pt", model_config="loger")
    assert not log.lines["warning"]
    status = core.diagnostics(stamp(0)).msg.status[0]
    assert status.level == 0 and status.message == "mapping"


# ------------------------------------------------------------------ shutdown
@pytest.mark.parametrize("partial_window, committed", [("finish", 8), ("drop", 6)])
def test_shutdown_drops_the_queue_and_finishes_or_drops_the_partial_window(tmp_path, partial_window, committed):
    core = make_core(FakeStream(window=4, overlap=1), output_dir=str(tmp_path))
    feed(core, [image_msg(i) for i in range(8)])  # frames 0-5 committed, 6-7 in the incomplete window
    for i in range(8, 13):
        core.on_image(image_msg(i))  # queued, not processed
    assert core.stop_intake() == 5
    core.on_image(image_msg(13))  # arrives during shutdown
    assert len(core.queue) == 0
    pubs = core.finish(partial_window)
    assert core.counters.dropped["shutdown"] == 6
    stamps = list(core.trajectory().stamps_ns)
    assert stamps == [stamp(i) for i in range(committed)]
    assert pubs[-1].channel == "map" and pubs[-1].msg.width == len(core.fusion) == 3 * committed
    saved = core.save_map()
    assert saved.poses == committed and read_tum(saved.trajectory_tum).stamps_ns.tolist() == stamps
    assert len(load_ply(saved.map_ply)[0]) == 3 * committed
    assert core.finish(partial_window) == []  # idempotent
    with pytest.raises(CoreError, match="'finish' or 'drop'"):
        make_core().finish("keep")


def test_shutdown_under_load_is_bounded_and_saves_the_map(tmp_path):
    """The node's shutdown sequence with the worker threads busy and a full queue: it takes about one
    window pass, not the time to work through the queue (which is dropped)."""
    stream = FakeStream(window=4, overlap=1, delay_s=0.2)
    core = make_core(stream, queue_size=32, output_dir=str(tmp_path))
    received = []
    core.start(received.append, lambda: 0)
    for i in range(40):
        core.on_image(image_msg(i))
    time.sleep(1.1)  # about 5 frames processed, the rest queued
    t0 = time.perf_counter()
    queued = core.stop_intake()
    assert core.stop(5.0)
    core.finish("finish")
    saved = core.save_map()
    elapsed = time.perf_counter() - t0
    assert queued >= 20 and elapsed < 1.0  # working through the queue would take > 4 s
    processed = core.counters.processed
    assert saved.poses == processed >= 4 and saved.points == 3 * processed
    assert core.counters.dropped["shutdown"] + core.counters.dropped["queue_full"] + processed == 40


def test_map_ply_is_written_without_open3d_and_read_back_by_it(tmp_path):
    from loger_core.pipeline.outputs import write_ply_atomic

    rng = np.random.default_rng(3)
    points = rng.normal(size=(500, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    conf = rng.uniform(size=500).astype(np.float32)
    path = write_ply_atomic(tmp_path / "map.ply", points, colors, conf)
    got_points, got_colors, got_conf = load_ply(path)  # open3d reads it
    np.testing.assert_array_equal(got_points, points)
    np.testing.assert_array_equal(got_colors, colors)
    np.testing.assert_array_equal(got_conf, conf)
    empty = write_ply_atomic(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0))
    assert len(load_ply(empty)[0]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.ply", "map.ply"]  # no temporary left
    with pytest.raises(CoreError, match="map arrays disagree"):
        write_ply_atomic(tmp_path / "bad.ply", points, colors[:3], conf)


def test_async_windows_in_the_threaded_node_core_commit_every_frame_and_count_window_errors():
    """async_windows 'on' (the CUDA default) on the CPU: the inference thread keeps taking frames while
    windows run on the reconstructor's worker; every frame is committed and mapped, and a window that
    fails on the worker is a counted, logged drop of its new frames."""
    pytest.importorskip("torch")
    from loger_core.model import build_model
    from loger_core.model.synthetic_weights import fill_deterministic_
    from loger_core.stream import StreamingReconstructor

    model = fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()
    real = model.forward_window
    calls = {"commit": 0}

    class FailsThirdWindow:
        cfg = model.cfg

        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            if commit:
                calls["commit"] += 1
                if calls["commit"] == 3:
                    raise RuntimeError("CUDA out of memory (simulated)")
            return real(images, state, options, commit=commit)

        def init_state(self):
            return model.init_state()

    params = NodeParams(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28,
                        input_height=28, window_size=4, overlap_size=1, provisional_every=1, queue_size=64,
                        async_windows="on", confidence_percentile=0.0, provisional_budget=1.0)
    stream = StreamingReconstructor(params.stream_config(), model=FailsThirdWindow())
    log = ListLogger()
    core = MappingCore(params, F, reconstructor=stream, logger=log)
    rng = np.random.default_rng(0)
    received = []
    core.start(received.append, lambda: 0)
    n = 14  # windows [0,4) [3,7) [6,10) fails -> frames 7..9 lost, [6 + ...]
    try:
        for i in range(n):
            rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            core.on_image(F.make("sensor_msgs/msg/Image", header=header(stamp(i)), height=24, width=32,
                                 encoding="rgb8", is_bigendian=0, step=96, data=rgb.reshape(-1)))
            time.sleep(0.02)
        deadline = time.time() + 20
        while core.counters.processed < n and time.time() < deadline:
            time.sleep(0.01)
    finally:
        assert core.stop(10.0)
    core.flush()
    stream.close()
    traj = core.trajectory()
    assert core.counters.processed == n
    assert core.counters.dropped["inference_error"] == 1 and any("out of memory" in m for m in log.lines["error"])
    lost = {7, 8, 9}
    assert list(traj.stamps_ns) == [stamp(i) for i in range(n) if i not in lost]
    assert core.counters.committed == n - len(lost)
    assert len(core.fusion) > 0
    # Provisional poses ran meanwhile; a frame that found others queued behind it had its pass
    # deferred (the node catches up first), so on a loaded machine not every frame gets one.
    assert stream.stats.provisional_runs > 0
    assert core.counters.odom_published + stream.stats.provisional_deferred >= n - len(lost)


# ------------------------------------------------------------------ input watchdog
def test_diagnostics_warn_when_no_image_arrives_and_name_the_topic():
    """A camera that never publishes (or a topic not remapped) and a camera that stops: /diagnostics
    turns WARN after input_timeout_s naming the topic, logged once per period; images flowing again
    clear it; an inactive node (lifecycle) expects none."""
    t = [0]
    log = ListLogger()
    core = make_core(logger=log, clock=lambda: t[0], input_timeout_s=2.0, image_topic="/front/image_raw",
                     checkpoint_path="/w/latest.pt", model_config="loger", allow_synthetic_weights=False)

    def status():
        return core.diagnostics(stamp(0)).msg.status[0]

    assert core.input_silence() is None  # not watching before start / activation
    core.watch_input(True)
    t[0] = int(1.5e9)
    assert status().level == 0
    t[0] = int(2.5e9)
    s = status()
    assert s.level == 1 and "no image received on /front/image_raw" in s.message and "remapping" in s.message
    assert any("/front/image_raw" in line for line in log.lines["warning"])
    core.on_image(image_msg(0))
    core.process_all()
    t[0] = int(3.0e9)
    s = status()
    assert "no image" not in s.message  # (WARN remains for the camera mount: no TF lookup here)
    values = {kv.key: kv.value for kv in s.values}
    assert float(values["last_image_age_s"]) == pytest.approx(0.5)
    t[0] = int(5.6e9)
    s = status()
    assert s.level == 1 and "for 3.1 s" in s.message and "stopped" in s.message
    core.watch_input(False)  # deactivated
    t[0] = int(60e9)
    assert "no image" not in status().message and core.input_silence() is None
    core.watch_input(True)  # activated again: the timeout counts from now
    t[0] = int(61e9)
    assert core.input_silence() is None
    t[0] = int(63e9)
    assert "since the node was activated" in core.input_silence()


def test_the_input_watchdog_can_be_switched_off():
    t = [0]
    core = make_core(clock=lambda: t[0], input_timeout_s=0.0)
    core.watch_input(True)
    t[0] = int(1e12)
    assert core.input_silence() is None
