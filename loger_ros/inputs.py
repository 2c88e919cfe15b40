"""ROS messages -> numpy inputs of the streaming core (images, intrinsics, depth, odometry).

Works on any object with the ROS field names (rclpy messages on a robot, rosbags messages in
replay and tests) through :mod:`loger_ros.conversions`. Every malformed message raises
:class:`~loger_ros.errors.ConversionError` (or :class:`CoreError`) naming the field; the
caller turns that into a logged, counted drop.

Side inputs are paired with an image by stamp: the nearest depth image / odometry sample
within ``sync_tolerance_ns``. They arrive on other callbacks, so the buffers are locked.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

import numpy as np

from loger_ros.conversions import (
    CameraModel,
    ConversionError,
    Undistorter,
    camera_info_to_camera,
    compressed_to_rgb,
    image_to_depth_m,
    image_to_rgb,
    matrix_from_pose,
    stamp_to_ns,
)
from loger_core.pipeline.errors import CoreError
from loger_core.pipeline.inputs import DecodedImage

__all__ = ["DecodedImage", "InputDecoder", "header_of", "resolve_image_transport"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


def resolve_image_transport(setting: str, topic: str, advertised: Optional[list[str]] = None) -> str:
    """'raw' or 'compressed' for parameter ``image_transport`` = ``setting``.

    ``advertised``: the types currently advertised on ``topic`` (``pkg/msg/Name``; None or empty
    when unknown). 'auto' prefers the advertised type, else the name: ``.../compressed`` ->
    compressed (image_transport's naming), otherwise raw.
    """
    if setting in ("raw", "compressed"):
        return setting
    if setting != "auto":
        raise CoreError(f"image_transport {setting!r} must be 'auto', 'raw' or 'compressed'")
    types = {t.replace("/msg/", "/") for t in (advertised or [])}
    if "sensor_msgs/CompressedImage" in types and "sensor_msgs/Image" not in types:
        return "compressed"
    if "sensor_msgs/Image" in types:
        return "raw"
    return "compressed" if topic.rstrip("/").endswith("/compressed") else "raw"


def get_field(msg: Any, type_name: str, name: str) -> Any:
    """``msg.<name>`` or ConversionError naming ``<type_name>.<name>``."""
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ConversionError(
            f"{type_name}.{name} is missing (message of type {type(msg).__name__!r})", field=f"{type_name}.{name}"
        ) from None


def header_of(msg: Any, type_name: str) -> tuple[int, str]:
    """``(stamp_ns, frame_id)`` of a stamped message."""
    header = get_field(msg, type_name, "header")
    stamp = stamp_to_ns(get_field(header, "Header", "stamp"))
    frame_id = get_field(header, "Header", "frame_id")
    if not isinstance(frame_id, str):
        raise ConversionError(f"{type_name}.header.frame_id {frame_id!r} is not a string", field="Header.frame_id")
    return stamp, frame_id


class InputDecoder:
    """Holds the latest CameraInfo and the depth/odometry buffers; decodes images (the ROS
    :class:`~loger_core.pipeline.inputs.FrameDecoder` of the mapping pipeline)."""

    errors: tuple[type[BaseException], ...] = (ConversionError, CoreError)

    def __init__(self, undistort: bool = True, sync_tolerance_ns: int = 20_000_000, buffer_len: int = 64) -> None:
        self.undistort = undistort
        self.sync_tolerance_ns = int(sync_tolerance_ns)
        self._lock = threading.Lock()
        self._camera: Optional[CameraModel] = None
        self._undistorter: Optional[Undistorter] = None
        self._depth: deque[tuple[int, Any]] = deque(maxlen=buffer_len)
        self._odom: deque[tuple[int, np.ndarray]] = deque(maxlen=4 * buffer_len)

    # ------------------------------------------------------------ side inputs
    @property
    def camera(self) -> Optional[CameraModel]:
        return self._camera

    def set_camera_info(self, msg: Any) -> CameraModel:
        """Validate and keep a CameraInfo (the previous one stays in use when this raises)."""
        camera = camera_info_to_camera(msg)
        with self._lock:
            same = self._camera is not None and _same_camera(self._camera, camera)
            if not same:
                self._camera = camera
                self._undistorter = None
        return camera

    def add_depth(self, msg: Any) -> int:
        """Buffer a depth image (decoded lazily when an image pairs with it); returns its stamp."""
        stamp, _ = header_of(msg, "Image")
        with self._lock:
            self._depth.append((stamp, msg))
        return stamp

    def add_odometry(self, msg: Any) -> int:
        """Buffer an external nav_msgs/Odometry pose ``T_odom_base``; returns its stamp."""
        stamp, _ = header_of(msg, "Odometry")
        pose = get_field(get_field(msg, "Odometry", "pose"), "PoseWithCovariance", "pose")
        T = matrix_from_pose(pose)
        with self._lock:
            self._odom.append((stamp, T))
        return stamp

    def _nearest(self, buffer: deque, stamp_ns: int) -> Optional[Any]:
        with self._lock:
            best = min(buffer, key=lambda item: abs(item[0] - stamp_ns), default=None)
        if best is None or abs(best[0] - stamp_ns) > self.sync_tolerance_ns:
            return None
        return best[1]

    def depth_for(self, image: DecodedImage) -> Optional[np.ndarray]:
        """``(H, W)`` float32 metres paired with ``image`` (NaN = invalid), or None when none is near in time."""
        msg = self._nearest(self._depth, image.stamp_ns)
        if msg is None:
            return None
        depth = image_to_depth_m(msg)
        if depth.shape != image.rgb.shape[:2]:
            raise CoreError(
                f"depth image size {depth.shape[1]}x{depth.shape[0]} differs from the colour image "
                f"{image.rgb.shape[1]}x{image.rgb.shape[0]} (the depth must be registered to the colour camera)"
            )
        if image.undistorter is not None:
            depth = image.undistorter.undistort_depth(depth)
        return depth

    def odometry_for(self, stamp_ns: int) -> Optional[np.ndarray]:
        """External ``T_odom_base (4, 4)`` nearest to ``stamp_ns`` within the tolerance, else None."""
        T = self._nearest(self._odom, stamp_ns)
        return None if T is None else T.copy()

    # ------------------------------------------------------------------ images
    def decode_image(self, msg: Any, compressed: bool) -> DecodedImage:
        """Decode a sensor_msgs/Image or CompressedImage into :class:`DecodedImage`."""
        type_name = "CompressedImage" if compressed else "Image"
        stamp, frame_id = header_of(msg, type_name)
        rgb = compressed_to_rgb(msg) if compressed else image_to_rgb(msg)
        with self._lock:
            camera = self._camera
        if camera is None:
            return DecodedImage(stamp, frame_id, rgb, None, None)
        if (camera.height, camera.width) != rgb.shape[:2]:
            return DecodedImage(stamp, frame_id, rgb, None, None, camera_info_mismatch=True)
        undistorter = None
        K = camera.K.copy()
        if self.undistort and camera.has_distortion:
            with self._lock:
                if self._undistorter is None or self._undistorter.camera is not camera:
                    self._undistorter = Undistorter(camera)
                undistorter = self._undistorter
            rgb = undistorter(rgb)
            K = undistorter.K.copy()
        return DecodedImage(stamp, frame_id, rgb, K, undistorter)


def _same_camera(a: CameraModel, b: CameraModel) -> bool:
    return (
        a.width == b.width and a.height == b.height and a.distortion_model == b.distortion_model
        and np.array_equal(a.K, b.K) and np.array_equal(a.D, b.D)
    )
