"""Reading bags for ``loger-replay`` and ``loger-batch``: finding them, choosing their topics,
the static TF tree, and decoding their messages into ROS 2 (Humble) messages (ROS 1 bags migrated).

No ROS install needed (``rosbags``); imported without torch, so ``loger-batch`` can list its inputs
cheaply."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from loger_core.io.trajectory import Trajectory
from loger_core.pipeline.pose_tracker import invert
from loger_ros.conversions import ConversionError, matrix_from_pose, matrix_from_transform
from loger_ros.inputs import header_of

__all__ = [
    "GT_TYPES",
    "ROSBAG2_STORAGE_SUFFIXES",
    "BagNormaliser",
    "ReplayError",
    "SelectedTopics",
    "StaticTfTree",
    "camera_mount_matrix",
    "discover_bags",
    "ground_truth_samples",
    "image_stamp",
    "resolve_bag_path",
    "ros2_store",
    "select_topics",
    "trajectory_from_samples",
    "with_mount",
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


def with_mount(tree: StaticTfTree, base_frame: str, T_base_cam: np.ndarray):
    """A lookup that answers ``base_frame <- camera`` with the given mount when /tf_static does not."""
    def lookup(target: str, source: str, stamp_ns: Optional[int] = None) -> Optional[np.ndarray]:
        found = tree.lookup(target, source, stamp_ns)
        if found is None and target == base_frame and source != base_frame:
            return T_base_cam.copy()
        return found
    return lookup




def ros2_store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


class BagNormaliser:
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


def ground_truth_samples(msg: Any, msgtype: str) -> list[tuple[int, np.ndarray]]:
    if msgtype == "nav_msgs/msg/Path":
        return [(header_of(p, "PoseStamped")[0], matrix_from_pose(p.pose)) for p in msg.poses]
    stamp = header_of(msg, msgtype.rsplit("/", 1)[1])[0]
    if msgtype == "geometry_msgs/msg/PoseStamped":
        return [(stamp, matrix_from_pose(msg.pose))]
    if msgtype == "nav_msgs/msg/Odometry":
        return [(stamp, matrix_from_pose(msg.pose.pose))]
    return [(stamp, matrix_from_transform(msg.transform))]


def trajectory_from_samples(samples: dict[int, np.ndarray]) -> Trajectory:
    stamps = np.array(sorted(samples), dtype=np.int64)
    return Trajectory(stamps, np.stack([samples[s] for s in stamps]) if len(stamps) else np.zeros((0, 4, 4)))



def image_stamp(msg: Any, compressed: bool) -> int:
    try:
        return header_of(msg, "CompressedImage" if compressed else "Image")[0]
    except ConversionError:
        return 1 << 62  # undecodable: let the core count it

