"""``sensor_msgs/Image`` -> numpy: colour (RGB uint8) and depth (metres float32).

Colour encodings (``image_to_rgb``), case-insensitive:

- ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped), ``mono8`` (grey replicated).
- ``8UC1`` = mono8; ``8UC3`` / ``8UC4`` carry no channel order, they are read as BGR / BGRA
  because drivers that publish them almost always send an OpenCV ``cv::Mat`` (BGR).
- ``mono16``: the high byte, ``v >> 8`` (fixed full-range 16 -> 8 bit mapping, no
  per-image stretching, so brightness is comparable across frames).
- ``uyvy`` (alias ``yuv422``, ROS's name for UYVY) and ``yuyv`` (alias ``yuv422_yuy2``):
  OpenCV's YUV 4:2:2 -> RGB conversion (BT.601, video range); width must be even.
- ``bayer_rggb8``, ``bayer_bggr8``, ``bayer_gbrg8``, ``bayer_grbg8``: OpenCV bilinear
  demosaicing; height and width must be >= 2.

Depth encodings (``image_to_depth_m``, REP 118): ``16UC1`` in millimetres and ``32FC1``
in metres. Invalid depths (0, negative, NaN, +-inf) become NaN.

``step`` padding and ``is_bigendian`` (16/32-bit encodings) are honoured. ``data`` may be
bytes, array.array('B'), a list of ints or a numpy uint8 array, and must hold exactly
``step * height`` bytes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from loger_ros.conversions._fields import as_byte_buffer, as_flag, as_int, as_str, get_field
from loger_ros.errors import ConversionError

__all__ = ["DEPTH_ENCODINGS", "RGB_ENCODINGS", "image_to_depth_m", "image_to_rgb"]


@dataclass(frozen=True)
class _Layout:
    channels: int
    dtype: str  # numpy kind+size without byte order: "u1", "u2", "f4"

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * np.dtype(self.dtype).itemsize


# OpenCV names Bayer patterns by the 2x2 block starting at the second row and column,
# so a ROS "rggb" sensor is OpenCV's "BG" (the old names exist in every OpenCV 4/5).
_BAYER_CODES = {
    "bayer_rggb8": cv2.COLOR_BayerBG2RGB,
    "bayer_bggr8": cv2.COLOR_BayerRG2RGB,
    "bayer_gbrg8": cv2.COLOR_BayerGR2RGB,
    "bayer_grbg8": cv2.COLOR_BayerGB2RGB,
}
_YUV_CODES = {
    "uyvy": cv2.COLOR_YUV2RGB_UYVY,
    "yuv422": cv2.COLOR_YUV2RGB_UYVY,
    "yuyv": cv2.COLOR_YUV2RGB_YUYV,
    "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
}
_RGB_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(3, "u1"),
    "bgr8": _Layout(3, "u1"),
    "8uc3": _Layout(3, "u1"),
    "rgba8": _Layout(4, "u1"),
    "bgra8": _Layout(4, "u1"),
    "8uc4": _Layout(4, "u1"),
    "mono8": _Layout(1, "u1"),
    "8uc1": _Layout(1, "u1"),
    "mono16": _Layout(1, "u2"),
    **{name: _Layout(2, "u1") for name in _YUV_CODES},
    **{name: _Layout(1, "u1") for name in _BAYER_CODES},
}
_DEPTH_LAYOUTS: dict[str, _Layout] = {"16uc1": _Layout(1, "u2"), "32fc1": _Layout(1, "f4")}

RGB_ENCODINGS: tuple[str, ...] = (
    "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "8UC1", "8UC3", "8UC4",
    "uyvy", "yuv422", "yuyv", "yuv422_yuy2",
    "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8",
)  # fmt: skip
DEPTH_ENCODINGS: tuple[str, ...] = ("16UC1", "32FC1")


def check_image(msg: Any) -> None:
    """Raises ConversionError where `image_to_rgb` would on the message's layout (encoding,
    sizes, step, data length), without touching the pixels: cheap enough for a subscription
    callback, so a malformed frame is reported when it arrives, not displaced from a full queue."""
    _check_layout(msg, _RGB_LAYOUTS, RGB_ENCODINGS)


def _read_pixels(msg: Any, layouts: dict[str, _Layout], supported: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """Validate an Image and return (lower-case encoding, pixels (H, W, C) native-endian, read-only view)."""
    key, layout, height, width, step, big_endian, data = _check_layout(msg, layouts, supported)
    row_bytes = width * layout.bytes_per_pixel
    rows = data.reshape(height, step)[:, :row_bytes]
    dtype = np.dtype(layout.dtype).newbyteorder(">" if big_endian else "<")
    pixels = np.ascontiguousarray(rows).view(dtype).reshape(height, width, layout.channels)
    return key, pixels.astype(dtype.newbyteorder("="), copy=False)


def _check_layout(msg: Any, layouts: dict[str, _Layout], supported: tuple[str, ...]):
    encoding = as_str(get_field(msg, "Image", "encoding"), "Image.encoding")
    key = encoding.lower()
    if key not in layouts:
        hint = ""
        if key in _DEPTH_LAYOUTS:
            hint = "; it is a depth encoding, use image_to_depth_m"
        elif key in _RGB_LAYOUTS:
            hint = "; it is a colour encoding, use image_to_rgb"
        raise ConversionError(
            f"Image.encoding {encoding!r} is not supported (supported: {', '.join(supported)}){hint}",
            field="Image.encoding",
            value=encoding,
        )
    layout = layouts[key]
    height = as_int(get_field(msg, "Image", "height"), "Image.height", minimum=1)
    width = as_int(get_field(msg, "Image", "width"), "Image.width", minimum=1)
    step = as_int(get_field(msg, "Image", "step"), "Image.step", minimum=0)
    big_endian = as_flag(get_field(msg, "Image", "is_bigendian"), "Image.is_bigendian")
    data = as_byte_buffer(get_field(msg, "Image", "data"), "Image.data")

    row_bytes = width * layout.bytes_per_pixel
    if step < row_bytes:
        raise ConversionError(
            f"Image.step {step} < width*bytes_per_pixel {row_bytes} (width {width}, encoding {encoding!r})",
            field="Image.step",
            value=step,
        )
    if data.size != step * height:
        raise ConversionError(
            f"Image.data has {data.size} bytes, expected step*height = {step * height}",
            field="Image.data",
            value=data.size,
        )
    return key, layout, height, width, step, big_endian, data


def image_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` (colour encodings, see module doc) -> RGB ``(H, W, 3)`` uint8, a new array."""
    key, pixels = _read_pixels(msg, _RGB_LAYOUTS, RGB_ENCODINGS)
    height, width = pixels.shape[:2]
    if key in ("rgb8", "rgba8"):
        rgb = pixels[:, :, :3]
    elif key in ("bgr8", "8uc3", "bgra8", "8uc4"):
        rgb = pixels[:, :, 2::-1]
    elif key in ("mono8", "8uc1"):
        rgb = np.repeat(pixels, 3, axis=2)
    elif key == "mono16":
        rgb = np.repeat((pixels >> 8).astype(np.uint8), 3, axis=2)
    elif key in _YUV_CODES:
        if width % 2:
            raise ConversionError(
                f"Image.width {width} must be even for YUV 4:2:2 encoding {msg.encoding!r}",
                field="Image.width",
                value=width,
            )
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels), _YUV_CODES[key])
    else:  # Bayer
        if height < 2 or width < 2:
            raise ConversionError(
                f"Image.height x width {height}x{width} is too small for Bayer encoding {msg.encoding!r} (min 2x2)",
                field="Image.height",
                value=(height, width),
            )
        rgb = cv2.cvtColor(np.ascontiguousarray(pixels[:, :, 0]), _BAYER_CODES[key])
    return np.array(rgb, dtype=np.uint8, order="C", copy=True)


def image_to_depth_m(msg: Any) -> np.ndarray:
    """``sensor_msgs/Image`` 16UC1 (mm) or 32FC1 (m) -> depth ``(H, W)`` float32 metres, invalid = NaN."""
    key, pixels = _read_pixels(msg, _DEPTH_LAYOUTS, DEPTH_ENCODINGS)
    if key == "16uc1":
        depth = pixels[:, :, 0].astype(np.float32) * np.float32(0.001)
    else:
        depth = pixels[:, :, 0].astype(np.float32, copy=True)
    depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth
