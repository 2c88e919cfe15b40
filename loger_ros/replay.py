"""``loger-replay``: run the mapping node's core on a recorded bag, without a ROS install.

Reads rosbag2 (sqlite3, mcap) and ROS 1 bags through ``rosbags``, feeds the camera images
(raw or compressed, picked automatically unless ``--topic``), CameraInfo, optional depth and
``/tf_static`` to the same :class:`~loger_ros.mapping_core.MappingCore` the node runs, synchronously (no
frame is dropped for speed), and writes to the output folder:

- ``rosbag/``: a rosbag2 (mcap) with the original camera topic(s), ``/tf``, ``/tf_static`` and the
  node's outputs (``/loger/odom``, ``/loger/path``, ``/loger/cloud``,
  ``/loger/map``, ``/loger/grid``, ``/diagnostics``), so ``ros2 bag play`` + RViz (``rviz/loger.rviz``)
  shows the result;
- ``trajectory.tum`` (committed base_link poses in the map frame), ``map.ply``, ``trajectory.png``;
- with the occupancy grid on (``grid_enabled``): ``map.pgm`` + ``map.yaml`` (nav2_map_server) and ``grid.png``;
- ``metrics.json`` when the bag carries ground truth (ATE/RPE/scale drift of the camera poses);
- ``summary.json`` (counters, frames/s, latencies);
- with ``--session-out PATH``: the mapping session at the end of the bag, taken before the last
  incomplete window is committed, so that ``--resume PATH`` on the next bag (or on the same bag,
  whose frames the session already has are skipped) continues the map exactly.

Ctrl-C stops reading, commits what is in the network's window, and still closes the bag and
writes the other outputs (files are replaced atomically, so none is ever torn).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from loger_core.eval.metrics import EvalError, evaluate
from loger_core.mapping.grid import render_grid_png
from loger_core.io.trajectory import Trajectory
from loger_core.model.selection import MODEL_CHOICES
from loger_core.eval.plotting import plot_top_view
from loger_ros.replay_args import build_arg_parser
from loger_ros.conversions import ConversionError, RosbagsFactory, matrix_from_pose, matrix_from_transform
from loger_core.pipeline.pose_tracker import invert
from loger_ros.inputs import header_of
from loger_ros.mapping_core import MappingCore
from loger_ros.publications import Publication
from loger_ros.publications import CHANNEL_TYPES
from loger_ros.params import DIAGNOSTICS_TOPIC, NODE_NAME, OUTPUT_TOPICS, NodeParams, ParamsError, load_params_yaml

__all__ = [
    "ReplayError",
    "ReplayOptions",
    "ReplaySummary",
    "SelectedTopics",
    "StaticTfTree",
    "camera_mount_matrix",
    "discover_bags",
    "main",
    "output_topic_names",
    "resolve_bag_path",
    "run_replay",
    "select_topics",
]

log = logging.getLogger("loger_ros.replay")

T_IMAGE = "sensor_msgs/msg/Image"
T_COMPRESSED = "sensor_msgs/msg/CompressedImage"
T_INFO = "sensor_msgs/msg/CameraInfo"
T_TF = "tf2_msgs/msg/TFMessage"
GT_TYPES = ("geometry_msgs/msg/PoseStamped", "nav_msgs/msg/Odometry", "geometry_msgs/msg/TransformStamped",
            "nav_msgs/msg/Path")
_GT_NAME = re.compile(r"ground_?truth|groundtruth|(^|/)gt(/|_|$)", re.IGNORECASE)
_DEPTH_NAME = re.compile(r"depth", re.IGNORECASE)
ROSBAG2_STORAGE_SUFFIXES = (".mcap", ".db3")


class ReplayError(ValueError):
    """A bag that cannot be replayed (missing, unreadable, no or ambiguous image topic) or bad options."""


# ====================================================================== bag discovery
def resolve_bag_path(path: Path | str) -> Path:
    """The path ``rosbags`` opens for ``path``: a rosbag2 directory (with metadata.yaml) or a ROS 1 ``.bag``.

    A rosbag2 storage file (``.mcap``/``.db3``) resolves to its directory when metadata.yaml is beside it.
    """
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"bag {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "metadata.yaml").is_file():
            return path
        raise ReplayError(f"bag directory {str(path)!r} has no metadata.yaml (not a rosbag2 recording)")
    if path.suffix == ".bag":
        return path
    if path.suffix in ROSBAG2_STORAGE_SUFFIXES:
        if (path.parent / "metadata.yaml").is_file():
            return path.parent
        raise ReplayError(
            f"rosbag2 storage file {str(path)!r} has no metadata.yaml beside it; rosbags reads rosbag2 "
            "directories (recreate the metadata with `ros2 bag reindex <directory>`)")
    raise ReplayError(f"{str(path)!r} is not a bag (expected a rosbag2 directory, .mcap, .db3 or ROS 1 .bag)")


def discover_bags(root: Path | str) -> list[Path]:
    """Every bag under ``root``: rosbag2 directories, ROS 1 ``.bag`` files and storage files
    (``.mcap``/``.db3``) that are not inside a rosbag2 directory (those fail to open with a clear error)."""
    root = Path(root)
    if not root.is_dir():
        return []
    dirs = sorted({p.parent for p in root.rglob("metadata.yaml")})
    found: list[Path] = list(dirs)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(d in path.parents for d in dirs):
            continue
        if path.suffix == ".bag" or path.suffix in ROSBAG2_STORAGE_SUFFIXES:
            found.append(path)
    return found


# ====================================================================== topics
@dataclass
class SelectedTopics:
    """Topics replay reads; None = not used."""

    image: str
    compressed: bool
    camera_info: Optional[str]
    depth: Optional[str]
    ground_truth: Optional[str]
    gt_type: Optional[str]
    tf_static: Optional[str]


def _types(connections: Iterable[Any]) -> dict[str, str]:
    return {c.topic: c.msgtype for c in connections}


def _pick_image(types: dict[str, str], topic: Optional[str]) -> tuple[str, bool]:
    if topic:
        if topic not in types:
            raise ReplayError(f"--topic {topic!r} is not in the bag (image topics: {_image_topics(types) or 'none'})")
        if types[topic] not in (T_IMAGE, T_COMPRESSED):
            raise ReplayError(f"--topic {topic!r} has type {types[topic]}, not {T_IMAGE} or {T_COMPRESSED}")
        return topic, types[topic] == T_COMPRESSED
    candidates = [t for t in _image_topics(types) if not _DEPTH_NAME.search(t)]
    if not candidates:
        raise ReplayError(f"the bag has no camera image topic ({T_IMAGE} or {T_COMPRESSED}); topics: "
                          f"{sorted(types) or 'none'}")
    # image_transport publishes the same stream as <topic> and <topic>/compressed: one camera.
    cameras = {t.removesuffix("/compressed") for t in candidates}
    if len(cameras) > 1:
        raise ReplayError(f"the bag has several camera image topics {candidates}; choose one with --topic")
    raw = [t for t in candidates if types[t] == T_IMAGE]
    chosen = raw[0] if raw else candidates[0]
    return chosen, types[chosen] == T_COMPRESSED


def _image_topics(types: dict[str, str]) -> list[str]:
    return sorted(t for t, ty in types.items() if ty in (T_IMAGE, T_COMPRESSED))


def _pick_by_type(types: dict[str, str], wanted: Optional[str], msgtypes: Sequence[str], option: str,
                  auto: Callable[[list[str]], Optional[str]]) -> Optional[str]:
    if wanted in (None, "", "none"):
        return None
    if wanted == "auto":
        return auto(sorted(t for t, ty in types.items() if ty in msgtypes))
    if wanted not in types:
        raise ReplayError(f"{option} {wanted!r} is not in the bag")
    if types[wanted] not in msgtypes:
        raise ReplayError(f"{option} {wanted!r} has type {types[wanted]}, expected one of {list(msgtypes)}")
    return wanted


def select_topics(connections: Iterable[Any], topic: Optional[str] = None, camera_info: Optional[str] = "auto",
                  depth: Optional[str] = "none", ground_truth: Optional[str] = "auto") -> SelectedTopics:
    """Choose the topics of a bag (see the CLI help of the same options)."""
    types = _types(connections)
    image, compressed = _pick_image(types, topic)
    namespace = image.removesuffix("/compressed").rsplit("/", 1)[0]

    def auto_info(found: list[str]) -> Optional[str]:
        same_ns = [t for t in found if t.rsplit("/", 1)[0] == namespace]
        return (same_ns or found or [None])[0] if len(same_ns) == 1 or len(found) == 1 else None

    def auto_depth(found: list[str]) -> Optional[str]:
        named = [t for t in found if _DEPTH_NAME.search(t) and not t.endswith("/compressed")]
        return named[0] if len(named) == 1 else None

    def auto_gt(found: list[str]) -> Optional[str]:
        named = [t for t in found if _GT_NAME.search(t)]
        # Per-stamp poses beat a Path (which may be a single message at the end).
        named.sort(key=lambda t: (types[t] == "nav_msgs/msg/Path", t))
        return named[0] if named else None

    info = _pick_by_type(types, camera_info, (T_INFO,), "--camera-info-topic", auto_info)
    depth_topic = _pick_by_type(types, depth, (T_IMAGE,), "--depth-topic", auto_depth)
    gt = _pick_by_type(types, ground_truth, GT_TYPES, "--gt-topic", auto_gt)
    tf_static = "/tf_static" if types.get("/tf_static") == T_TF else None
    return SelectedTopics(image, compressed, info, depth_topic, gt, types.get(gt) if gt else None, tf_static)


# ====================================================================== static TF
class StaticTfTree:
    """Transforms from ``/tf_static``; :meth:`lookup` composes them along the tree (any direction)."""

    def __init__(self) -> None:
        self._edges: dict[tuple[str, str], np.ndarray] = {}  # (parent, child) -> T_parent_child

    def add(self, msg: Any) -> int:
        """Add every transform of a TFMessage; returns how many were valid."""
        added = 0
        for ts in getattr(msg, "transforms", []):
            try:
                parent, child = ts.header.frame_id.lstrip("/"), ts.child_frame_id.lstrip("/")
                self._edges[(parent, child)] = matrix_from_transform(ts.transform)
                added += 1
            except (ConversionError, AttributeError) as err:
                log.warning(f"ignoring an invalid /tf_static transform: {err}")
        return added

    def lookup(self, target: str, source: str, stamp_ns: Optional[int] = None) -> Optional[np.ndarray]:
        """``T_target_source`` or None when the frames are not connected."""
        graph: dict[str, list[tuple[str, np.ndarray]]] = {}
        for (parent, child), T in self._edges.items():
            graph.setdefault(parent, []).append((child, T))
            graph.setdefault(child, []).append((parent, invert(T)))
        best = {target: np.eye(4)}  # T_target_frame
        frontier = [target]
        while frontier:
            frame = frontier.pop()
            for other, T_frame_other in graph.get(frame, []):
                if other not in best:
                    best[other] = best[frame] @ T_frame_other
                    frontier.append(other)
        return best.get(source)


# The fixed rotation camera_link (REP-103 body: x forward, y left, z up) -> optical frame (z forward,
# x right, y down), as launch/loger.launch.py publishes it.
_T_LINK_OPTICAL = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def camera_mount_matrix(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """``T_base_cam (4, 4)`` of a camera mounted at ``x, y, z`` (m) with body ``roll, pitch, yaw`` (rad)
    in base_frame, the optical frame rotated from the body axes as the launch file's camera_* arguments do."""
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()
    T[:3, 3] = (x, y, z)
    return T @ _T_LINK_OPTICAL


def _with_mount(tree: StaticTfTree, base_frame: str, T_base_cam: np.ndarray):
    """A lookup that answers ``base_frame <- camera`` with the given mount when /tf_static does not."""
    def lookup(target: str, source: str, stamp_ns: Optional[int] = None) -> Optional[np.ndarray]:
        found = tree.lookup(target, source, stamp_ns)
        if found is None and target == base_frame and source != base_frame:
            return T_base_cam.copy()
        return found
    return lookup


# ====================================================================== output bag
def output_topic_names(node_name: str = NODE_NAME) -> dict[str, str]:
    """channel -> topic in the output bag: the node's resolved names (``~/odom`` -> ``/loger/odom``)."""
    names = {channel: f"/{node_name}/{topic.removeprefix('~/')}" for channel, topic in OUTPUT_TOPICS.items()}
    names.update(tf="/tf", tf_static="/tf_static", diagnostics=DIAGNOSTICS_TOPIC)
    return names


def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]


class OutputBag:
    """rosbag2 (mcap) writer: copies input connections and writes the core's publications."""

    def __init__(self, path: Path, typestore: Any) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        self.path = path
        self.typestore = typestore
        # Version 8 stores QoS profiles as a YAML string, which Humble's rosbag2 can still parse (v9 cannot).
        self._writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self._topics = output_topic_names()
        self.counts: dict[str, int] = {}
        self.closed = False

    def _connection(self, topic: str, msgtype: str, source: Any = None) -> Any:
        if topic in self._connections:
            return self._connections[topic]
        latched = _latched_qos() if topic in (self._topics["map"], self._topics["grid"], "/tf_static") else ()
        if source is not None and source.msgdef.data and source.digest:
            conn = self._writer.add_connection(topic, msgtype, msgdef=source.msgdef.data, rihs01=source.digest,
                                               offered_qos_profiles=latched)
        else:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.typestore, offered_qos_profiles=latched)
        self._connections[topic] = conn
        return conn

    def copy_raw(self, source_connection: Any, time_ns: int, rawdata: bytes) -> None:
        """A rosbag2 CDR message, written unchanged with its original definition."""
        conn = self._connection(source_connection.topic, source_connection.msgtype, source_connection)
        self._write(conn, time_ns, rawdata)

    def write_message(self, topic: str, msgtype: str, time_ns: int, msg: Any) -> None:
        conn = self._connection(topic, msgtype)
        self._write(conn, time_ns, bytes(self.typestore.serialize_cdr(msg, msgtype)))

    def write(self, pub: Publication, time_ns: int) -> None:
        self.write_message(self._topics[pub.channel], CHANNEL_TYPES[pub.channel], time_ns, pub.msg)

    def _write(self, conn: Any, time_ns: int, data: bytes) -> None:
        self._writer.write(conn, int(time_ns), data)
        self.counts[conn.topic] = self.counts.get(conn.topic, 0) + 1

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()


# ====================================================================== replay
@dataclass
class ReplayOptions:
    """What to replay and where to write (see ``loger-replay --help``)."""

    bag: Path
    out_dir: Path
    params: NodeParams
    topic: Optional[str] = None
    camera_info_topic: Optional[str] = "auto"
    depth_topic: Optional[str] = "none"
    gt_topic: Optional[str] = "auto"
    max_frames: Optional[int] = None
    write_bag: bool = True
    overwrite: bool = False
    progress: bool = True
    resume: Optional[Path] = None
    session_out: Optional[Path] = None
    camera_mount: Optional[tuple[float, float, float, float, float, float]] = None


@dataclass
class ReplaySummary:
    """What a replay did; ``outputs`` maps output names to paths (str)."""

    bag: str
    topics: dict
    frames_read: int = 0
    frames_processed: int = 0
    frames_in_session: int = 0
    poses: int = 0
    map_points: int = 0
    interrupted: bool = False
    read_error: Optional[str] = None
    wall_s: float = 0.0
    frames_per_s: float = 0.0
    latency_ms: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    metrics: Optional[dict] = None
    bag_message_counts: dict = field(default_factory=dict)
    camera_mount: str = ""
    camera_mount_T_base_cam: Optional[list] = None  # (4, 4) as used, when the mount came from TF


def _ros2_store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


class _Normaliser:
    """Deserialises bag messages into ROS 2 (Humble) messages; ROS 1 ones are migrated field by field."""

    def __init__(self, reader: Any, store: Any) -> None:
        from rosbags.convert.converter import migrate_message

        self._reader, self._store, self._migrate = reader, store, migrate_message
        self._cache: dict = {}
        self.ros1 = not reader.is2

    def __call__(self, conn: Any, rawdata: bytes) -> Any:
        msg = self._reader.deserialize(rawdata, conn.msgtype)
        if self.ros1:
            msg = self._migrate(self._reader.typestore, self._store, conn.msgtype, conn.msgtype, self._cache, msg)
        return msg


def _ground_truth(msg: Any, msgtype: str) -> list[tuple[int, np.ndarray]]:
    if msgtype == "nav_msgs/msg/Path":
        return [(header_of(p, "PoseStamped")[0], matrix_from_pose(p.pose)) for p in msg.poses]
    stamp = header_of(msg, msgtype.rsplit("/", 1)[1])[0]
    if msgtype == "geometry_msgs/msg/PoseStamped":
        return [(stamp, matrix_from_pose(msg.pose))]
    if msgtype == "nav_msgs/msg/Odometry":
        return [(stamp, matrix_from_pose(msg.pose.pose))]
    return [(stamp, matrix_from_transform(msg.transform))]


def _trajectory_from(samples: dict[int, np.ndarray]) -> Trajectory:
    stamps = np.array(sorted(samples), dtype=np.int64)
    return Trajectory(stamps, np.stack([samples[s] for s in stamps]) if len(stamps) else np.zeros((0, 4, 4)))


def _prepare_out_dir(options: ReplayOptions) -> Path:
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bag_dir = out / "rosbag"
    if bag_dir.exists() and options.write_bag:
        if not options.overwrite:
            raise ReplayError(f"output bag {str(bag_dir)!r} already exists; pass --overwrite to replace it")
        shutil.rmtree(bag_dir)
    return bag_dir


def run_replay(options: ReplayOptions, reconstructor: Any = None,
               on_frame: Optional[Callable[[int], None]] = None,
               model_loader: Optional[Callable[[Any], Any]] = None) -> ReplaySummary:
    """Replay ``options.bag`` (see module docstring). ``on_frame(n)`` is called after each image (tests).

    ``model_loader(stream_config) -> model`` supplies the network when no ``reconstructor`` is given
    (``loger-batch`` passes a per-process cache); default: loaded from the parameters for this bag.

    Raises ReplayError when the bag cannot be opened or has no usable image topic. A read error in the
    middle of the bag stops the replay; the outputs of what was read are still written and the error is
    reported in ``ReplaySummary.read_error``.
    """
    from rosbags.highlevel import AnyReader

    bag_path = resolve_bag_path(options.bag)
    store = _ros2_store()
    params = options.params
    if options.resume is not None:
        params = NodeParams.from_mapping({**params.to_dict(), "resume_session": str(options.resume)})
    if params.tf_mode != "odom_to_base":
        log.warning("replay has no external odometry in TF: using tf_mode 'odom_to_base'")
        params = NodeParams.from_mapping({**params.to_dict(), "tf_mode": "odom_to_base"})
    try:
        reader = AnyReader([bag_path], default_typestore=store)
        reader.open()
    except Exception as err:  # rosbags raises several error types for broken files
        raise ReplayError(f"cannot open bag {str(bag_path)!r}: {err}") from None
    try:
        topics = select_topics(reader.connections, options.topic, options.camera_info_topic,
                               options.depth_topic, options.gt_topic)
        params = NodeParams.from_mapping({
            **params.to_dict(), "image_topic": topics.image, "camera_info_topic": topics.camera_info or "",
            "depth_topic": topics.depth or "", "queue_size": max(params.queue_size, 1),
            # No live camera to keep up with: every low-latency pass runs, so a replay's output
            # does not depend on how fast this machine is.
            "provisional_budget": 1.0})
        bag_dir = _prepare_out_dir(options)
        owned = None
        if reconstructor is None and model_loader is not None:
            from loger_core.stream import StreamingReconstructor

            stream_config = params.stream_config()
            reconstructor = owned = StreamingReconstructor(stream_config, model=model_loader(stream_config))
        try:
            return _replay(options, params, reader, topics, store, bag_dir, reconstructor, on_frame)
        finally:
            # A process that replays many bags (loger-batch) must not keep each one's worker
            # thread, and the sequence state it references, alive.
            if owned is not None:
                owned.close()
    finally:
        reader.close()


def _replay(options: ReplayOptions, params: NodeParams, reader: Any, topics: SelectedTopics, store: Any,
            bag_dir: Path, reconstructor: Any, on_frame: Optional[Callable[[int], None]]) -> ReplaySummary:
    from tqdm import tqdm

    tf_tree = StaticTfTree()
    lookup = tf_tree.lookup
    if options.camera_mount is not None:
        lookup = _with_mount(tf_tree, params.base_frame, camera_mount_matrix(*options.camera_mount))
    core = MappingCore(params, RosbagsFactory(store), reconstructor=reconstructor, lookup=lookup, logger=log)
    if options.resume is not None and core.sessions.resume_error is not None:
        raise ReplayError(f"--resume: {core.sessions.resume_error}")
    # Frames the resumed session already has (the same bag replayed again) are skipped, not dropped.
    resumed_until = core._last_stamp if core.sessions.resumed_from is not None else None
    normalise = _Normaliser(reader, store)
    summary = ReplaySummary(bag=str(options.bag), topics=asdict(topics))
    gt_samples: dict[int, np.ndarray] = {}
    wanted = {t for t in (topics.image, topics.camera_info, topics.depth, topics.ground_truth, topics.tf_static) if t}
    copied = {t for t in (topics.image, topics.camera_info, topics.depth, topics.tf_static) if t}
    connections = [c for c in reader.connections if c.topic in wanted]
    n_images = sum(c.msgcount for c in connections if c.topic == topics.image)
    if options.max_frames is not None:
        n_images = min(n_images, options.max_frames)
    out = OutputBag(bag_dir, store) if options.write_bag else None
    bar = tqdm(total=n_images, unit="frame", desc="loger-replay", disable=not options.progress, dynamic_ncols=True)
    last_time = 0
    next_diag = None
    t0 = time.perf_counter()

    def emit(pubs: list[Publication], time_ns: int) -> None:
        if out is not None:
            for pub in pubs:
                out.write(pub, time_ns)

    try:
        try:
            for conn, time_ns, rawdata in reader.messages(connections=connections):
                last_time = time_ns
                try:
                    msg = normalise(conn, rawdata)
                except Exception as err:  # one undecodable message: log it, keep replaying
                    log.warning(f"skipping an undecodable message on {conn.topic}: {err}")
                    continue
                if out is not None and conn.topic in copied:
                    if reader.is2:
                        out.copy_raw(conn, time_ns, rawdata)
                    else:
                        out.write_message(conn.topic, conn.msgtype, time_ns, msg)
                if conn.topic == topics.image:
                    if resumed_until is not None and _image_stamp(msg, topics.compressed) <= resumed_until:
                        summary.frames_in_session += 1
                        continue
                    core.on_image(msg, topics.compressed)
                    emit(core.process_all(), time_ns)
                    summary.frames_read += 1
                    bar.update(1)
                    bar.set_postfix(poses=core.counters.committed, odom=core.counters.odom_published, refresh=False)
                    if on_frame is not None:
                        on_frame(summary.frames_read)
                elif conn.topic == topics.camera_info:
                    core.on_camera_info(msg)
                elif conn.topic == topics.depth:
                    core.on_depth(msg)
                elif conn.topic == topics.tf_static:
                    tf_tree.add(msg)
                elif conn.topic == topics.ground_truth:
                    try:
                        gt_samples.update(_ground_truth(msg, conn.msgtype))
                    except (ConversionError, AttributeError) as err:
                        log.warning(f"ignoring an invalid ground-truth message: {err}")
                emit(core.periodic(time_ns), time_ns)
                if next_diag is None or time_ns >= next_diag:
                    emit([core.diagnostics(time_ns)], time_ns)
                    next_diag = time_ns + int(params.diagnostics_period_s * 1e9)
                if options.max_frames is not None and summary.frames_read >= options.max_frames:
                    break
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted: finishing the window and writing the outputs")
        except Exception as err:  # a truncated or corrupt bag: keep what was read
            summary.read_error = f"reading {options.bag} failed after {summary.frames_read} frames: {err}"
            log.error(summary.read_error)
        if options.session_out is not None:
            pubs, saved = core.save_session(str(options.session_out), reason="end of replay")
            emit(pubs, last_time)
            if saved is not None:
                summary.outputs["session"] = str(saved.path)
        try:
            emit(core.flush(), last_time)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted again: skipping the last window")
        finally:
            bar.close()
    finally:
        if out is not None:
            out.close()
            summary.bag_message_counts = dict(out.counts)
    summary.wall_s = time.perf_counter() - t0
    summary.camera_mount = core.mount.source
    if core.mount.frozen and core.mount.source == "tf":
        summary.camera_mount_T_base_cam = core.mount.current(core.mount.camera_frame).tolist()
    _write_outputs(options.out_dir, core, summary, gt_samples, out)
    return summary


def _write_outputs(out_dir: Path, core: MappingCore, summary: ReplaySummary, gt_samples: dict,
                   out: Optional[OutputBag]) -> None:
    out_dir = Path(out_dir)
    saved = core.save_map(str(out_dir))
    c = core.counters
    summary.frames_processed = c.processed
    summary.poses = saved.poses
    summary.map_points = saved.points
    summary.frames_per_s = summary.frames_read / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.latency_ms = core.latency.summary().to_dict()
    summary.counters = {k: v for k, v in asdict(c).items()}
    summary.outputs = {**summary.outputs, "map": str(saved.map_ply), "trajectory": str(saved.trajectory_tum)}
    if out is not None:
        summary.outputs["rosbag"] = str(out.path)
    if saved.grid_yaml is not None:
        summary.outputs.update(grid_yaml=str(saved.grid_yaml), grid_pgm=str(saved.grid_pgm))
    if core.grid is not None:
        base = core.trajectory("base")
        png = render_grid_png(out_dir / "grid.png", core.grid.snapshot(), base.poses[:, :2, 3] if len(base) else None,
                              title=f"loger-replay: {Path(summary.bag).name}")
        summary.outputs["grid_png"] = str(png)
    est_cam = core.trajectory("camera")
    points, colors, _ = core.map_snapshot()
    gt = _trajectory_from(gt_samples) if gt_samples else None
    plot_est, plot_points, plot_gt = est_cam, points, None
    # With the mount from TF, base_frame's z axis is the robot's up: the plot needs no guess.
    base = core.trajectory("base") if core.mount.source == "tf" else None
    plot_up = base.poses[:, :3, 2].mean(axis=0) if base is not None and len(base) else None
    if gt is not None and len(est_cam):
        try:
            summary.metrics = evaluate(est_cam, gt)
        except EvalError as err:
            log.warning(f"ground truth present but not comparable: {err}")
        if summary.metrics is not None:
            metrics_path = out_dir / "metrics.json"
            metrics_path.write_text(json.dumps(summary.metrics, indent=2))
            summary.outputs["metrics"] = str(metrics_path)
            T_align = np.asarray(summary.metrics["ate"]["T_align"], dtype=np.float64)
            plot_est = est_cam.poses[:, :3, 3] @ T_align[:3, :3].T + T_align[:3, 3]
            plot_points = points @ T_align[:3, :3].T.astype(np.float32) + T_align[:3, 3].astype(np.float32)
            plot_gt = gt
            plot_up = T_align[:3, :3] @ plot_up if plot_up is not None else None
    if len(est_cam):
        png = out_dir / "trajectory.png"
        plot_top_view(png, plot_est, plot_gt, plot_points if len(plot_points) else None,
                      colors if len(plot_points) else None, title=f"loger-replay: {Path(summary.bag).name}", up=plot_up)
        summary.outputs["plot"] = str(png)
    summary_path = out_dir / "summary.json"
    summary.outputs["summary"] = str(summary_path)
    summary_path.write_text(json.dumps(asdict(summary), indent=2, default=_json_default))


def _image_stamp(msg: Any, compressed: bool) -> int:
    try:
        return header_of(msg, "CompressedImage" if compressed else "Image")[0]
    except ConversionError:
        return 1 << 62  # undecodable: let the core count it


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


# ====================================================================== CLI
def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    if ":=" not in text:
        raise ReplayError(f"-p {text!r} must look like name:=value")
    name, value = text.split(":=", 1)
    try:
        return name.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return name.strip(), value


def _default_params_file() -> Optional[Path]:
    candidates = [Path(__file__).resolve().parents[1] / "config" / "loger.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("loger_ros")) / "config" / "loger.yaml")
    except Exception:  # not in a ROS environment
        pass
    return next((c for c in candidates if c.is_file()), None)


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    overrides = dict(_parse_override(t) for t in args.param)
    for name, value in (("model_config", args.model), ("checkpoint_path", args.checkpoint),
                        ("device", args.device), ("dtype", args.dtype)):
        if value is not None:
            overrides[name] = value
    if args.synthetic_weights:
        overrides["allow_synthetic_weights"] = True
    if args.backend is not None:
        overrides["backend_enabled"] = args.backend == "on"
    # Offline default unless given with -p: no latency to save, so every frame's odometry comes
    # from its committed window (in order, none skipped). Input size and window follow the model
    # (parameters left at 0), as in the node.
    overrides.setdefault("provisional_every", 0)
    # Offline: the back end tracks every frame, however far behind it falls.
    overrides.setdefault("backend_max_queue", 0)
    params_file = args.params or _default_params_file()
    if params_file is not None:
        params = load_params_yaml(params_file, overrides=overrides)
    else:
        params = NodeParams.from_mapping(overrides)
    out = args.out if args.out is not None else Path.cwd() / f"{Path(args.bag).name.removesuffix('.bag')}_loger"
    mount = None
    if args.camera_mount is not None:
        try:
            mount = tuple(float(v) for v in args.camera_mount.split(","))
        except ValueError:
            mount = ()
        if len(mount) != 6 or not all(np.isfinite(mount)):
            raise ReplayError(f"--camera-mount {args.camera_mount!r} must be six numbers X,Y,Z,ROLL,PITCH,YAW")
    return ReplayOptions(
        bag=args.bag, out_dir=out, params=params, topic=args.topic, camera_info_topic=args.camera_info_topic,
        depth_topic=args.depth_topic, gt_topic=args.gt_topic, max_frames=args.max_frames,
        write_bag=not args.no_bag, overwrite=args.overwrite, progress=not args.no_progress, resume=args.resume,
        session_out=args.session_out, camera_mount=mount)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``loger-replay``; exit 0 on success, 1 on a read error, 2 on bad input, 130 on Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = build_arg_parser().parse_args(argv)
    try:
        options = options_from_args(args)
        options.params.stream_config()  # fail early on a missing checkpoint
        summary = run_replay(options)
    except (ReplayError, ParamsError) as err:
        print(f"loger-replay: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loger-replay: interrupted before any output was written", file=sys.stderr)
        return 130
    print(f"loger-replay: {summary.frames_read} frames, {summary.poses} poses, {summary.map_points} map points, "
          f"{summary.frames_per_s:.2f} frames/s -> {options.out_dir}")
    if summary.metrics is not None:
        print(f"loger-replay: ATE rmse {summary.metrics['ate']['rmse']:.4f} m (sim3)")
    if summary.read_error:
        print(f"loger-replay: {summary.read_error}", file=sys.stderr)
        return 1
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
