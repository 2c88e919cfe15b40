"""What the pipeline takes in: decoded camera frames (numpy) and the decoder that makes them.

The pipeline queues opaque payloads (a ROS message in the node, a :class:`FrameInput` when a
ROS-free caller feeds numpy frames) and decodes each on its inference thread through a
:class:`FrameDecoder`: decoding costs nothing on the callback that queues the frame. The ROS
side's decoder (``loger_ros.inputs.InputDecoder``) turns messages into :class:`DecodedImage`;
:class:`NumpyDecoder` passes :class:`FrameInput` records through.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np

from loger_core.pipeline.errors import CoreError

__all__ = ["DecodedImage", "FrameDecoder", "FrameInput", "NumpyDecoder"]


@dataclass
class DecodedImage:
    """A decoded camera frame.

    rgb: ``(H, W, 3)`` uint8 RGB (undistorted when a distorted camera model is in use).
    K: ``(3, 3)`` float64 intrinsics of ``rgb`` or None when no usable camera model.
    undistorter: the one applied (None when none), so registered depth can follow.
    """

    stamp_ns: int
    frame_id: str
    rgb: np.ndarray
    K: Optional[np.ndarray]
    undistorter: Optional[Any]
    camera_info_mismatch: bool = False


@dataclass
class FrameInput:
    """A numpy camera frame for :meth:`MappingPipeline.on_frame` (ROS-free callers).

    depth: ``(H, W)`` float32 metres registered to ``rgb`` (scale source 'depth') or None;
    T_odom_base: the external odometry's pose of the base at ``stamp_ns`` (scale source
    'odometry') or None.
    """

    stamp_ns: int
    rgb: np.ndarray
    K: Optional[np.ndarray] = None
    frame_id: str = ""
    depth: Optional[np.ndarray] = None
    T_odom_base: Optional[np.ndarray] = None


class FrameDecoder(Protocol):
    """Turns a queued payload into a :class:`DecodedImage` and pairs side inputs with it.

    ``errors``: the exception types that mean "bad input" (a counted drop, not a bug).
    ``camera``: the camera model in use (``width``/``height``) or None.
    """

    errors: tuple[type[BaseException], ...]
    camera: Any

    def decode_image(self, payload: Any, compressed: bool) -> DecodedImage: ...

    def depth_for(self, image: DecodedImage) -> Optional[np.ndarray]: ...

    def odometry_for(self, stamp_ns: int) -> Optional[np.ndarray]: ...


class NumpyDecoder:
    """The decoder for :class:`FrameInput` payloads (side inputs travel with the frame)."""

    errors: tuple[type[BaseException], ...] = (CoreError,)
    camera = None

    def __init__(self) -> None:
        self._side: dict[int, FrameInput] = {}

    def decode_image(self, payload: FrameInput, compressed: bool = False) -> DecodedImage:
        rgb = np.asarray(payload.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise CoreError(f"frame at {payload.stamp_ns} ns: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        self._side = {int(payload.stamp_ns): payload}
        K = None if payload.K is None else np.asarray(payload.K, dtype=np.float64)
        return DecodedImage(int(payload.stamp_ns), payload.frame_id, rgb, K, None)

    def depth_for(self, image: DecodedImage) -> Optional[np.ndarray]:
        frame = self._side.get(image.stamp_ns)
        return None if frame is None or frame.depth is None else np.asarray(frame.depth, dtype=np.float32)

    def odometry_for(self, stamp_ns: int) -> Optional[np.ndarray]:
        frame = self._side.get(stamp_ns)
        return None if frame is None or frame.T_odom_base is None else np.asarray(frame.T_odom_base, np.float64)
