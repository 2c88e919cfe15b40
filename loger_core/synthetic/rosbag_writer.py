"""Write frames to ROS bags with the ``rosbags`` library (no ROS install needed).

Formats: rosbag2 with ``mcap`` or ``sqlite3`` storage (ROS 2 Humble message
definitions) and ROS 1 ``.bag`` (Noetic definitions). Per frame, all with the frame's
stamp as header stamp and as bag receive time, in this order:

* ``/tf`` ``tf2_msgs/msg/TFMessage``: ``world_frame -> camera_frame`` (= ``T_world_cam``), or, when
  the writer is given the camera mount ``T_base_cam``, ``world_frame -> base_frame``
  (``T_world_cam @ inv(T_base_cam)``: a frame has one parent in TF);
* camera info ``sensor_msgs/msg/CameraInfo`` (``plumb_bob``, zero distortion, K, R = I,
  P = [K | 0]);
* the image: ``sensor_msgs/msg/Image`` (``rgb8`` or ``bgr8``) or
  ``sensor_msgs/msg/CompressedImage`` (``jpeg``) on ``topics.compressed_topic``;
* optional depth ``sensor_msgs/msg/Image``: ``16UC1`` millimetres (0 = no depth) or
  ``32FC1`` metres (+inf = no hit, as REP 118 prescribes for "too far");
* ground-truth ``geometry_msgs/msg/PoseStamped`` in ``world_frame``.

With a camera mount, one ``/tf_static`` message ``base_frame -> camera_frame`` comes before the
first frame, stamped with it (rosbag2: offered with the transient-local, keep-last-1 QoS of a
static broadcaster; ROS 1: latched). This is what ``loger-replay`` and the node read as the
mount, so the occupancy grid's heights are measured along ``base_frame``'s z (up).
At the end, one ``nav_msgs/msg/Path`` with every pose, stamped with the last frame.
Images and camera info carry ``header.frame_id = camera_frame``; poses ``world_frame``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

import cv2
import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from scipy.spatial.transform import Rotation

from loger_core.io.frames import depth_to_mm

from .config import DEPTH_ENCODINGS, IMAGE_ENCODINGS, STORAGES, SynthError

__all__ = ["BagTopics", "RosbagWriter", "write_rosbag", "STORAGES", "IMAGE_ENCODINGS", "DEPTH_ENCODINGS"]

PathLike = Union[str, "os.PathLike[str]"]

# Noetic's store lacks tf2_msgs; this is the upstream definition (md5 94810edd...).
_TF_MSG_ROS1 = "geometry_msgs/TransformStamped[] transforms"


@dataclass
class BagTopics:
    """Topic and frame names.

    ``compressed_image`` (jpeg) defaults to ``image + '/compressed'`` (image_transport's
    naming) when left ``None``.
    """

    image: str = "/camera/image_raw"
    compressed_image: Optional[str] = None
    camera_info: str = "/camera/camera_info"
    depth: str = "/camera/depth/image_raw"
    gt_path: str = "/ground_truth/path"
    gt_pose: str = "/ground_truth/pose"
    tf: str = "/tf"
    tf_static: str = "/tf_static"
    world_frame: str = "map"
    camera_frame: str = "camera_optical_frame"
    base_frame: str = "base_link"

    @property
    def compressed_topic(self) -> str:
        return self.compressed_image or f"{self.image.rstrip('/')}/compressed"

    def validate(self) -> None:
        for name in ("image", "camera_info", "depth", "gt_path", "gt_pose", "tf", "tf_static"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.startswith("/") or len(value) < 2:
                raise SynthError(f"BagTopics.{name} must be an absolute topic name like '/a/b', got {value!r}")
        if self.compressed_image is not None and (
            not isinstance(self.compressed_image, str) or not self.compressed_image.startswith("/")
        ):
            raise SynthError(
                f"BagTopics.compressed_image must be an absolute topic name, got {self.compressed_image!r}"
            )
        for name in ("world_frame", "camera_frame", "base_frame"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or value.startswith("/"):
                raise SynthError(f"BagTopics.{name} must be a non-empty frame id without leading '/', got {value!r}")
        if self.world_frame == self.camera_frame:
            raise SynthError(f"BagTopics.world_frame and camera_frame must differ, both are {self.world_frame!r}")
        if self.base_frame in (self.world_frame, self.camera_frame):
            raise SynthError(f"BagTopics.base_frame {self.base_frame!r} must differ from world_frame and camera_frame")


_T_IMAGE = "sensor_msgs/msg/Image"
_T_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_T_INFO = "sensor_msgs/msg/CameraInfo"
_T_TF = "tf2_msgs/msg/TFMessage"
_T_POSE = "geometry_msgs/msg/PoseStamped"
_T_PATH = "nav_msgs/msg/Path"


def _static_qos():
    """A tf2 static broadcaster's offered QoS: late subscribers (and bag players) still get the mount."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, zero, zero,
                QosLiveliness.AUTOMATIC, zero, False)]


def _typestore(ros1: bool):
    if not ros1:
        return get_typestore(Stores.ROS2_HUMBLE)
    store = get_typestore(Stores.ROS1_NOETIC)
    store.register(get_types_from_msg(_TF_MSG_ROS1, _T_TF))
    return store


class RosbagWriter:
    """Streams frames into a bag; call :meth:`close` (or use ``with``).

    Frames need ``rgb (H, W, 3) uint8``, ``K (3, 3)``, ``T_world_cam (4, 4)``,
    ``stamp_ns`` and, with ``with_depth``, ``depth (H, W)`` metres.

    Args:
        out_path: bag to create (rosbag2: a directory; ros1: a file). Must not exist.
        storage: ``'mcap'``, ``'sqlite3'`` (rosbag2) or ``'ros1'``.
        image_encoding: ``'rgb8'``, ``'bgr8'`` (raw Image) or ``'jpeg'`` (CompressedImage).
        with_depth: also write the depth image.
        depth_encoding: ``'16UC1'`` (mm) or ``'32FC1'`` (m).
        topics: topic and frame names.
        jpeg_quality: 1..100 for ``'jpeg'``.
        T_base_cam: the camera mount ``(4, 4)`` in ``topics.base_frame`` (e.g.
            :func:`loger_core.synthetic.trajectories.camera_mount`); None = no ``/tf_static`` and
            ``/tf`` gives the camera pose directly (replaying such a bag warns that the grid is
            not meaningful).
    """

    def __init__(
        self,
        out_path: PathLike,
        storage: str = "mcap",
        image_encoding: str = "rgb8",
        with_depth: bool = False,
        depth_encoding: str = "16UC1",
        topics: Optional[BagTopics] = None,
        jpeg_quality: int = 90,
        T_base_cam: Optional[np.ndarray] = None,
    ) -> None:
        if storage not in STORAGES:
            raise SynthError(f"storage must be one of {STORAGES}, got {storage!r}")
        if image_encoding not in IMAGE_ENCODINGS:
            raise SynthError(f"image_encoding must be one of {IMAGE_ENCODINGS}, got {image_encoding!r}")
        if depth_encoding not in DEPTH_ENCODINGS:
            raise SynthError(f"depth_encoding must be one of {DEPTH_ENCODINGS}, got {depth_encoding!r}")
        if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
            raise SynthError(f"jpeg_quality must be an integer in [1, 100], got {jpeg_quality!r}")
        self.topics = topics if topics is not None else BagTopics()
        if not isinstance(self.topics, BagTopics):
            raise SynthError(f"topics must be a BagTopics, got {type(self.topics).__name__}")
        self.topics.validate()
        self.T_base_cam = None
        if T_base_cam is not None:
            M = np.asarray(T_base_cam, dtype=np.float64)
            if (M.shape != (4, 4) or not np.all(np.isfinite(M)) or not np.allclose(M[3], [0, 0, 0, 1])
                    or not np.allclose(M[:3, :3] @ M[:3, :3].T, np.eye(3), atol=1e-6) or np.linalg.det(M[:3, :3]) < 0):
                raise SynthError("T_base_cam must be a finite (4, 4) rigid transform")
            self.T_base_cam = M
        self.path = Path(out_path)
        if self.path.exists():
            raise SynthError(f"bag path {str(self.path)!r} already exists; refusing to overwrite")
        self.storage = storage
        self.image_encoding = image_encoding
        self.with_depth = bool(with_depth)
        self.depth_encoding = depth_encoding
        self.jpeg_quality = jpeg_quality
        self.ros1 = storage == "ros1"
        self.store = _typestore(self.ros1)
        self._serialize = self.store.serialize_ros1 if self.ros1 else self.store.serialize_cdr
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.ros1:
            self._writer = Writer1(self.path)
        else:
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self._writer = Writer2(self.path, version=Writer2.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        t = self.topics
        conn = self._connection
        self._c_tf = conn(t.tf, _T_TF)
        self._c_tf_static = None
        if self.T_base_cam is not None:
            if self.ros1:
                self._c_tf_static = self._writer.add_connection(t.tf_static, _T_TF, typestore=self.store, latching=1)
            else:
                self._c_tf_static = self._writer.add_connection(t.tf_static, _T_TF, typestore=self.store,
                                                                offered_qos_profiles=_static_qos())
        self._c_info = conn(t.camera_info, _T_INFO)
        if image_encoding == "jpeg":
            self._c_image = conn(t.compressed_topic, _T_COMPRESSED)
        else:
            self._c_image = conn(t.image, _T_IMAGE)
        self._c_depth = conn(t.depth, _T_IMAGE) if self.with_depth else None
        self._c_pose = conn(t.gt_pose, _T_POSE)
        self._c_path = conn(t.gt_path, _T_PATH)
        self._path_poses: list = []
        self._last_stamp: Optional[int] = None
        self._count = 0
        self._closed = False

    def _connection(self, topic: str, msgtype: str):
        return self._writer.add_connection(topic, msgtype, typestore=self.store)

    # ------------------------------------------------------------ messages
    def _msg(self, name: str, **fields):
        return self.store.types[name](**fields)

    def _header(self, stamp_ns: int, frame_id: str):
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        stamp = self._msg("builtin_interfaces/msg/Time", sec=sec, nanosec=nsec)
        if self.ros1:
            return self._msg("std_msgs/msg/Header", seq=self._count, stamp=stamp, frame_id=frame_id)
        return self._msg("std_msgs/msg/Header", stamp=stamp, frame_id=frame_id)

    def _image(self, header, data: np.ndarray, encoding: str):
        h, w = data.shape[:2]
        raw = np.ascontiguousarray(data)
        return self._msg(
            _T_IMAGE,
            header=header,
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=int(raw.strides[0]),
            data=raw.view(np.uint8).reshape(-1),
        )

    def _camera_info(self, header, K: np.ndarray, width: int, height: int):
        K = np.asarray(K, dtype=np.float64)
        P = np.hstack([K, np.zeros((3, 1))])
        roi = self._msg(
            "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        dist = {"D" if self.ros1 else "d": np.zeros(5)}
        mats = {
            ("K" if self.ros1 else "k"): K.reshape(-1),
            ("R" if self.ros1 else "r"): np.eye(3).reshape(-1),
            ("P" if self.ros1 else "p"): P.reshape(-1),
        }
        return self._msg(
            _T_INFO,
            header=header,
            height=int(height),
            width=int(width),
            distortion_model="plumb_bob",
            binning_x=0,
            binning_y=0,
            roi=roi,
            **dist,
            **mats,
        )

    def _pose_parts(self, T: np.ndarray):
        q = Rotation.from_matrix(T[:3, :3]).as_quat()  # x, y, z, w
        if q[3] < 0:
            q = -q
        quat = self._msg("geometry_msgs/msg/Quaternion", x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
        return T[:3, 3].astype(float), quat

    def _pose_stamped(self, stamp_ns: int, T: np.ndarray):
        p, quat = self._pose_parts(T)
        point = self._msg("geometry_msgs/msg/Point", x=p[0], y=p[1], z=p[2])
        pose = self._msg("geometry_msgs/msg/Pose", position=point, orientation=quat)
        return self._msg(_T_POSE, header=self._header(stamp_ns, self.topics.world_frame), pose=pose)

    def _tf(self, stamp_ns: int, T: np.ndarray, parent: Optional[str] = None, child: Optional[str] = None):
        p, quat = self._pose_parts(T)
        vec = self._msg("geometry_msgs/msg/Vector3", x=p[0], y=p[1], z=p[2])
        tr = self._msg("geometry_msgs/msg/Transform", translation=vec, rotation=quat)
        ts = self._msg(
            "geometry_msgs/msg/TransformStamped",
            header=self._header(stamp_ns, parent or self.topics.world_frame),
            child_frame_id=child or self.topics.camera_frame,
            transform=tr,
        )
        return self._msg(_T_TF, transforms=[ts])

    def _write(self, conn, stamp_ns: int, msg, msgtype: str) -> None:
        self._writer.write(conn, int(stamp_ns), bytes(self._serialize(msg, msgtype)))

    # ---------------------------------------------------------------- API
    def add(self, frame) -> None:
        if self._closed:
            raise SynthError("RosbagWriter is closed")
        i = self._count
        rgb = np.asarray(frame.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise SynthError(f"frame {i}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        T = np.asarray(frame.T_world_cam, dtype=np.float64)
        K = np.asarray(frame.K, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise SynthError(f"frame {i}: T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
        if K.shape != (3, 3):
            raise SynthError(f"frame {i}: K must be (3, 3), got shape {K.shape}")
        stamp = int(frame.stamp_ns)
        if stamp < 0:
            raise SynthError(f"frame {i}: stamp_ns must be >= 0, got {stamp}")
        if self._last_stamp is not None and stamp <= self._last_stamp:
            raise SynthError(f"frame {i}: stamp_ns {stamp} is not after the previous {self._last_stamp}")
        h, w = rgb.shape[:2]
        cam = self.topics.camera_frame
        if self.T_base_cam is None:
            self._write(self._c_tf, stamp, self._tf(stamp, T), _T_TF)
        else:
            if self._count == 0:
                static = self._tf(stamp, self.T_base_cam, self.topics.base_frame, cam)
                self._write(self._c_tf_static, stamp, static, _T_TF)
            T_world_base = T @ np.linalg.inv(self.T_base_cam)
            self._write(self._c_tf, stamp, self._tf(stamp, T_world_base, child=self.topics.base_frame), _T_TF)
        self._write(self._c_info, stamp, self._camera_info(self._header(stamp, cam), K, w, h), _T_INFO)
        if self.image_encoding == "jpeg":
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise SynthError(f"frame {i}: JPEG encoding failed")
            msg = self._msg(
                _T_COMPRESSED, header=self._header(stamp, cam), format="rgb8; jpeg compressed bgr8",
                data=buf.reshape(-1).astype(np.uint8),
            )
            self._write(self._c_image, stamp, msg, _T_COMPRESSED)
        else:
            data = rgb if self.image_encoding == "rgb8" else rgb[..., ::-1]
            msg = self._image(self._header(stamp, cam), data, self.image_encoding)
            self._write(self._c_image, stamp, msg, _T_IMAGE)
        if self.with_depth:
            depth = getattr(frame, "depth", None)
            if depth is None:
                raise SynthError(f"frame {i}: with_depth=True but the frame has no depth")
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != (h, w):
                raise SynthError(f"frame {i}: depth shape {depth.shape} != image shape {(h, w)}")
            data = depth_to_mm(depth).astype("<u2") if self.depth_encoding == "16UC1" else depth.astype("<f4")
            msg = self._image(self._header(stamp, cam), data, self.depth_encoding)
            self._write(self._c_depth, stamp, msg, _T_IMAGE)
        self._write(self._c_pose, stamp, self._pose_stamped(stamp, T), _T_POSE)
        self._path_poses.append((stamp, T))
        self._last_stamp = stamp
        self._count += 1

    def close(self) -> Path:
        """Write the ground-truth path message and finish the bag; returns its path."""
        if self._closed:
            return self.path
        self._closed = True
        try:
            if self._path_poses:
                last = self._path_poses[-1][0]
                poses = [self._pose_stamped(s, T) for s, T in self._path_poses]
                msg = self._msg(_T_PATH, header=self._header(last, self.topics.world_frame), poses=poses)
                self._write(self._c_path, last, msg, _T_PATH)
        finally:
            self._writer.close()
        return self.path

    def __enter__(self) -> "RosbagWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def write_rosbag(
    out_path: PathLike,
    frames: Iterable,
    storage: str = "mcap",
    image_encoding: str = "rgb8",
    with_depth: bool = False,
    depth_encoding: str = "16UC1",
    topics: BagTopics = BagTopics(),
    jpeg_quality: int = 90,
    T_base_cam: Optional[np.ndarray] = None,
) -> Path:
    """Write ``frames`` (streamed) to a bag; see :class:`RosbagWriter`. Returns the bag path."""
    with RosbagWriter(out_path, storage, image_encoding, with_depth, depth_encoding, topics, jpeg_quality,
                      T_base_cam) as w:
        for frame in frames:
            w.add(frame)
    return w.path
