"""Helpers of the ROS 2 integration tests: launch a launch file as a real process (its own process
group, so that a test can press Ctrl-C), and a client node in the test process that publishes a
camera and records everything the mapping node publishes.

Imported only by test modules that already skipped when rclpy is missing.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import rclpy
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry, Path as PathMsg
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

NODE_LOG_PREFIX = "[loger_node-"
LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _default_signals() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored, and an ignored signal
    # stays ignored across exec: give the launch process (and its children) the default handlers.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Launched:
    """``ros2 launch loger_ros <file> name:=value ...`` in its own session and process group."""

    def __init__(self, launch_file: str, arguments: dict, log_path: Path) -> None:
        self.log_path = Path(log_path)
        # Each launch gets its own ROS log folder: the node's log file survives a launch that dies.
        self.ros_log_dir = self.log_path.with_suffix(".roslog")
        env = {**os.environ, "ROS_LOG_DIR": str(self.ros_log_dir)}
        self.cmd = ["ros2", "launch", "loger_ros", launch_file, *[f"{k}:={v}" for k, v in arguments.items()]]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_default_signals, start_new_session=True, env=env)
        self.exit_s: Optional[float] = None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not in the launch output within {timeout_s} s "
                             f"(exit code {self.proc.poll()}):\n{self.text()[-6000:]}")

    def node_pid(self, executable: str = "loger_node") -> int:
        return int(self.wait_for(rf"\[{executable}-\d+\]: process started with pid \[(\d+)\]", 10.0).group(1))

    def node_log_text(self) -> str:
        """The node's own ROS log file(s) (rclpy writes them beside launch.log, named after the
        interpreter: python3_<pid>_*.log, or python3.12_... where the entry point names the version)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.ros_log_dir.rglob("python3*_*.log")))

    def signal_group(self, sig: int, timeout_s: float = 60.0) -> float:
        """Send ``sig`` to the whole process group (what a terminal does on Ctrl-C); seconds to exit."""
        t0 = time.monotonic()
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout_s)
        finally:
            self.exit_s = time.monotonic() - t0
        return self.exit_s

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.signal_group(signal.SIGINT, 40.0)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


def stamp_msg(stamp_ns: int) -> TimeMsg:
    return TimeMsg(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)


def stamp_ns(msg_stamp) -> int:
    return msg_stamp.sec * 10**9 + msg_stamp.nanosec


def image_msg(rgb: np.ndarray, stamp: int, encoding: str = "rgb8", frame_id: str = "camera_optical_frame") -> Image:
    """An Image of ``rgb`` in ``encoding`` (rgb8, bgr8, mono8)."""
    if encoding == "rgb8":
        pixels = rgb
    elif encoding == "bgr8":
        pixels = rgb[:, :, ::-1]
    elif encoding == "mono8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(encoding)
    pixels = np.ascontiguousarray(pixels)
    h, w = pixels.shape[:2]
    return Image(header=Header(stamp=stamp_msg(stamp), frame_id=frame_id), height=h, width=w, encoding=encoding,
                 is_bigendian=0, step=pixels.strides[0], data=pixels.tobytes())


def jpeg_msg(rgb: np.ndarray, stamp: int, frame_id: str = "camera_optical_frame") -> CompressedImage:
    ok, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return CompressedImage(header=Header(stamp=stamp_msg(stamp), frame_id=frame_id), format="jpeg",
                           data=buf.tobytes())


def camera_info_msg(K: np.ndarray, w: int, h: int, stamp: int, frame_id: str = "camera_optical_frame") -> CameraInfo:
    info = CameraInfo(header=Header(stamp=stamp_msg(stamp), frame_id=frame_id), width=w, height=h,
                      distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [float(v) for v in np.asarray(K, float).reshape(-1)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:3, :3] = K
    info.p = [float(v) for v in P.reshape(-1)]
    return info


@dataclass
class Received:
    """What the client node heard, with the monotonic receive time of each message."""

    odom: list = field(default_factory=list)  # (receive monotonic s, Odometry)
    path: list = field(default_factory=list)
    cloud: list = field(default_factory=list)
    tf: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)


class Client:
    """A node in the test process: camera publishers, subscribers to every output, spun on a thread."""

    def __init__(self, name: str = "loger_test_client", image_topic: str = "/camera/image_raw",
                 compressed: bool = False, use_sim_time: bool = False, prefix: str = "/loger") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        params = [Parameter("use_sim_time", value=True)] if use_sim_time else []
        self.node = Node(name, context=self.context, parameter_overrides=params)
        n = self.node
        self.lock = threading.Lock()
        self.rx = Received()
        self.image_pub = n.create_publisher(CompressedImage if compressed else Image, image_topic,
                                            qos_profile_sensor_data)
        self.info_pub = n.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.clock_pub = n.create_publisher(Clock, "/clock", 10)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", 100)
        n.create_subscription(Odometry, f"{prefix}/odom", self._keep("odom"), 100)
        n.create_subscription(PathMsg, f"{prefix}/path", self._keep("path"), 10)
        n.create_subscription(PointCloud2, f"{prefix}/cloud", self._keep("cloud"), 10)
        n.create_subscription(TFMessage, "/tf", self._keep("tf"), 100)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._keep("diagnostics"), 50)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._spin.start()

    def publish_camera_mount(self, base: str = "base_link", camera: str = "camera_optical_frame") -> None:
        """The camera mount on /tf_static, what launch's ``publish_camera_tf`` does with tf2_ros's
        static_transform_publisher (a C++ package; this publishes it from Python): optical axes
        (z forward, x right, y down) on a body 0.1 m forward, 0.2 m up."""
        from geometry_msgs.msg import TransformStamped
        from tf2_ros import StaticTransformBroadcaster

        self._static = StaticTransformBroadcaster(self.node)
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = base, camera
        t.header.stamp = self.node.get_clock().now().to_msg()
        t.transform.translation.x, t.transform.translation.z = 0.1, 0.2
        # R_base_optical = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]] as a quaternion (x, y, z, w).
        t.transform.rotation.x, t.transform.rotation.y = -0.5, 0.5
        t.transform.rotation.z, t.transform.rotation.w = -0.5, 0.5
        self._static.sendTransform(t)

    def _spin_loop(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us
                return

    def _keep(self, name: str) -> Callable:
        def callback(msg) -> None:
            with self.lock:
                getattr(self.rx, name).append((time.monotonic(), msg))
        return callback

    def messages(self, name: str) -> list:
        with self.lock:
            return [m for _, m in getattr(self.rx, name)]

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")

    def wait_for_subscriber(self, timeout_s: float = 60.0) -> None:
        self.wait_until(lambda: self.image_pub.get_subscription_count() > 0, timeout_s, "the node's image subscription")

    def call(self, srv_type, name: str, timeout_s: float = 30.0, request=None):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
        future = client.call_async(request if request is not None else srv_type.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.done(), f"service {name} did not answer in {timeout_s} s"
        self.node.destroy_client(client)
        return future.result()

    def latched_map(self, timeout_s: float = 30.0) -> PointCloud2:
        """Subscribe now (a late subscriber) and return the first ~/map message delivered."""
        return self.latched("/loger/map", PointCloud2, timeout_s)

    def latched_grid(self, timeout_s: float = 30.0) -> OccupancyGrid:
        """Subscribe now (a late subscriber) and return the first ~/grid message delivered."""
        return self.latched("/loger/grid", OccupancyGrid, timeout_s)

    def latched(self, topic: str, msg_type: type, timeout_s: float = 30.0):
        got: list = []
        sub = self.node.create_subscription(msg_type, topic, got.append, LATCHED)
        try:
            self.wait_until(lambda: bool(got), timeout_s, f"the latched {topic}")
        finally:
            self.node.destroy_subscription(sub)
        return got[0]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spin.join(2.0)


class CameraStream:
    """Publishes frames (cycling through ``frames``) at ``fps`` on a thread; stamps from ``clock_ns``."""

    def __init__(self, client: Client, frames: list, fps: float, encodings=("rgb8",), compressed: bool = False,
                 clock_ns: Callable[[], int] = time.time_ns, before_publish: Optional[Callable[[int], None]] = None):
        self.client, self.frames, self.period = client, frames, 1.0 / fps
        self.encodings, self.compressed, self.clock_ns = encodings, compressed, clock_ns
        self.before_publish = before_publish
        self.sent: list[int] = []  # stamps
        self.sent_monotonic: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def publish_one(self, i: int) -> int:
        frame = self.frames[i % len(self.frames)]
        stamp = self.clock_ns()
        if self.before_publish is not None:
            self.before_publish(stamp)
        h, w = frame.rgb.shape[:2]
        self.client.info_pub.publish(camera_info_msg(frame.K, w, h, stamp))
        if self.compressed:
            msg = jpeg_msg(frame.rgb, stamp)
        else:
            msg = image_msg(frame.rgb, stamp, self.encodings[i % len(self.encodings)])
        self.sent_monotonic[stamp] = time.monotonic()
        self.client.image_pub.publish(msg)
        self.sent.append(stamp)
        return stamp

    def run(self, count: int) -> list[int]:
        """Publish ``count`` frames at the rate, blocking."""
        t0 = time.monotonic()
        for i in range(count):
            if self._stop.is_set():
                break
            self.publish_one(len(self.sent))
            delay = t0 + (i + 1) * self.period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return list(self.sent)

    def start(self, count: int = 10**9) -> None:
        self._thread = threading.Thread(target=self.run, args=(count,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


def mapping_status_values(client: Client) -> list[dict]:
    """The values of every ``loger_node: mapping`` diagnostics status heard, oldest first."""
    return [{kv.key: kv.value for kv in s.values} for msg in client.messages("diagnostics") for s in msg.status
            if s.name == "loger_node: mapping"]


def wait_until_drained(client: Client, frames: int, timeout_s: float) -> dict:
    """Wait for diagnostics saying the node has taken all ``frames`` it received and its queue is
    empty (diagnostics run on the steady clock, so they come after a bag and its /clock ended)."""
    def drained() -> bool:
        values = mapping_status_values(client)
        return bool(values) and int(values[-1]["frames_processed"]) >= frames and values[-1]["queue_depth"] == "0"

    client.wait_until(drained, timeout_s, f"diagnostics with {frames} frames processed and an empty queue")
    return mapping_status_values(client)[-1]


def tf_edges(client: Client) -> dict:
    """(parent, child) -> list of stamps (ns) the node broadcast on /tf."""
    edges: dict = defaultdict(list)
    for msg in client.messages("tf"):
        for t in msg.transforms:
            edges[(t.header.frame_id, t.child_frame_id)].append(stamp_ns(t.header.stamp))
    return edges
