"""``sensor_msgs/CameraInfo`` -> :class:`CameraModel`, and image undistortion.

Supported ``distortion_model`` values and their ``d`` lengths (OpenCV coefficient order):

- ``plumb_bob``: 5 (k1, k2, p1, p2, k3)
- ``rational_polynomial``: 8 (k1, k2, p1, p2, k3, k4, k5, k6)
- ``equidistant``: 4 (k1, k2, k3, k4), the OpenCV fisheye model
- ``""`` (unset) or ``none``: only with no or all-zero coefficients; stored as ``"none"``.

An empty ``d`` means "no distortion" for every model. Binning and a region of interest
are not supported (K would describe another pixel grid); such messages are rejected.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from loger_ros.conversions._fields import as_float_vector, as_int, as_str, get_field
from loger_ros.errors import ConversionError

__all__ = ["DISTORTION_MODELS", "CameraModel", "Undistorter", "camera_info_to_camera"]

DISTORTION_MODELS: dict[str, int] = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Pinhole intrinsics plus distortion of one camera (OpenCV convention, pixels).

    Attributes:
        K: ``(3, 3)`` float64 intrinsic matrix of the raw (distorted) image.
        D: ``(n,)`` float64 distortion coefficients (length per model, see module doc).
        distortion_model: ``"plumb_bob"``, ``"rational_polynomial"``, ``"equidistant"`` or ``"none"``.
        width: image width in pixels.
        height: image height in pixels.
        P: ``(3, 4)`` float64 projection matrix of the rectified image, or None when all zero.
    """

    K: np.ndarray
    D: np.ndarray
    distortion_model: str
    width: int
    height: int
    P: np.ndarray | None = None

    @property
    def has_distortion(self) -> bool:
        """True when any distortion coefficient is non-zero."""
        return bool(np.any(self.D != 0.0))


def _validate_k(k: np.ndarray) -> np.ndarray:
    matrix = k.reshape(3, 3)
    if not (matrix[0, 0] > 0 and matrix[1, 1] > 0):
        raise ConversionError(
            f"CameraInfo.k has fx={matrix[0, 0]}, fy={matrix[1, 1]}; focal lengths must be > 0",
            field="CameraInfo.k",
            value=k.tolist(),
        )
    if not np.allclose(matrix[2], (0.0, 0.0, 1.0)):
        raise ConversionError(
            f"CameraInfo.k last row {matrix[2].tolist()} must be [0, 0, 1]", field="CameraInfo.k", value=k.tolist()
        )
    return matrix.copy()


def _validate_distortion(model: str, d: np.ndarray) -> tuple[str, np.ndarray]:
    if model in ("", "none"):
        if np.any(d != 0.0):
            raise ConversionError(
                f"CameraInfo.distortion_model {model!r} is unset but CameraInfo.d {d.tolist()} is non-zero",
                field="CameraInfo.distortion_model",
                value=model,
            )
        return "none", np.zeros(0)
    if model not in DISTORTION_MODELS:
        raise ConversionError(
            f"CameraInfo.distortion_model {model!r} is not supported (supported: {', '.join(DISTORTION_MODELS)})",
            field="CameraInfo.distortion_model",
            value=model,
        )
    expected = DISTORTION_MODELS[model]
    if d.size == 0:
        return model, np.zeros(expected)
    if d.size != expected:
        raise ConversionError(
            f"CameraInfo.d has {d.size} values, expected {expected} for distortion_model {model!r}",
            field="CameraInfo.d",
            value=d.size,
        )
    return model, d.copy()


def _reject_binning_and_roi(msg: Any, width: int, height: int) -> None:
    for name in ("binning_x", "binning_y"):
        value = as_int(getattr(msg, name, 0), f"CameraInfo.{name}", minimum=0)
        if value > 1:
            raise ConversionError(
                f"CameraInfo.{name} {value} is not supported (only 0 or 1)", field=f"CameraInfo.{name}", value=value
            )
    roi = getattr(msg, "roi", None)
    if roi is None:
        return
    names = ("x_offset", "y_offset", "width", "height")
    box = tuple(as_int(getattr(roi, name, 0), f"CameraInfo.roi.{name}", minimum=0) for name in names)
    if box not in ((0, 0, 0, 0), (0, 0, width, height)):
        raise ConversionError(
            f"CameraInfo.roi (x_offset, y_offset, width, height) {box} is not supported (only full image)",
            field="CameraInfo.roi",
            value=box,
        )


def camera_info_to_camera(msg: Any) -> CameraModel:
    """Validate a ``sensor_msgs/CameraInfo`` and return its :class:`CameraModel`."""
    width = as_int(get_field(msg, "CameraInfo", "width"), "CameraInfo.width", minimum=1)
    height = as_int(get_field(msg, "CameraInfo", "height"), "CameraInfo.height", minimum=1)
    k = as_float_vector(get_field(msg, "CameraInfo", "k"), "CameraInfo.k", length=9)
    d = as_float_vector(get_field(msg, "CameraInfo", "d"), "CameraInfo.d")
    p = as_float_vector(get_field(msg, "CameraInfo", "p"), "CameraInfo.p", length=12)
    model = as_str(get_field(msg, "CameraInfo", "distortion_model"), "CameraInfo.distortion_model")
    _reject_binning_and_roi(msg, width, height)
    model, coefficients = _validate_distortion(model, d)
    return CameraModel(
        K=_validate_k(k),
        D=coefficients,
        distortion_model=model,
        width=width,
        height=height,
        P=None if not np.any(p) else p.reshape(3, 4).copy(),
    )


class Undistorter:
    """Removes lens distortion from images of one camera (maps computed once).

    Args:
        camera: the camera model; ``plumb_bob`` / ``rational_polynomial`` use OpenCV's pinhole
            model, ``equidistant`` uses ``cv2.fisheye``.
        balance: 0 keeps only valid pixels (zoomed in, no black border), 1 keeps every source
            pixel (black border); OpenCV's ``alpha`` / fisheye ``balance``.

    Attributes:
        K: ``(3, 3)`` float64 intrinsics of the undistorted images (equal to ``camera.K`` when
            the camera has no distortion).
    """

    def __init__(self, camera: CameraModel, *, balance: float = 0.0) -> None:
        if not 0.0 <= balance <= 1.0:
            raise ConversionError(f"balance {balance!r} must be in [0, 1]", field="balance", value=balance)
        self.camera = camera
        size = (camera.width, camera.height)
        self._maps: tuple[np.ndarray, np.ndarray] | None = None
        if not camera.has_distortion:
            self.K = camera.K.copy()
            return
        if camera.distortion_model == "equidistant":
            fisheye_d = camera.D.reshape(4, 1)
            self.K = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                camera.K, fisheye_d, size, np.eye(3), balance=balance
            )
            self._maps = cv2.fisheye.initUndistortRectifyMap(
                camera.K, fisheye_d, np.eye(3), self.K, size, cv2.CV_32FC1
            )
        else:
            self.K, _ = cv2.getOptimalNewCameraMatrix(camera.K, camera.D, size, balance, size)
            self._maps = cv2.initUndistortRectifyMap(camera.K, camera.D, np.eye(3), self.K, size, cv2.CV_32FC1)
        self.K = np.asarray(self.K, dtype=np.float64)

    def _check_shape(self, image: np.ndarray) -> None:
        expected = (self.camera.height, self.camera.width)
        if image.ndim not in (2, 3) or image.shape[:2] != expected:
            raise ConversionError(
                f"image.shape {image.shape} does not match CameraInfo height x width {expected}",
                field="image.shape",
                value=image.shape,
            )

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Undistort an image ``(H, W)`` or ``(H, W, C)`` (e.g. RGB uint8); bilinear, black border."""
        self._check_shape(image)
        if self._maps is None:
            return image.copy()
        return cv2.remap(image, *self._maps, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def undistort_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Undistort a depth map ``(H, W)`` float32; nearest neighbour (no mixed depths), NaN border."""
        self._check_shape(depth_m)
        if self._maps is None:
            return depth_m.copy()
        return cv2.remap(
            depth_m, *self._maps, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=np.nan
        )
