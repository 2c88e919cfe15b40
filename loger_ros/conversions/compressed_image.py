"""``sensor_msgs/CompressedImage`` (jpeg, png) -> RGB numpy.

``format`` is matched the way image_transport writes it: plain ``"jpeg"``/``"png"`` or
``"<encoding>; jpeg compressed <encoding>"``. An empty format is allowed when the data
starts with a JPEG or PNG signature. ``compressedDepth`` is not supported.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from loger_ros.conversions._fields import as_byte_buffer, as_str, get_field
from loger_ros.errors import ConversionError

__all__ = ["COMPRESSED_FORMATS", "compressed_to_rgb"]

COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def _declared_codec(format_string: str, data: np.ndarray) -> str:
    lowered = format_string.lower()
    if "compresseddepth" in lowered:
        raise ConversionError(
            f"CompressedImage.format {format_string!r} is not supported (compressedDepth; supported: jpeg, png)",
            field="CompressedImage.format",
            value=format_string,
        )
    if "jpeg" in lowered or "jpg" in lowered:
        return "jpeg"
    if "png" in lowered:
        return "png"
    if not lowered.strip():
        head = data[:8].tobytes()
        for codec, signature in _SIGNATURES.items():
            if head.startswith(signature):
                return codec
        raise ConversionError(
            f"CompressedImage.format '' is empty and CompressedImage.data starts with {head[:4]!r}, "
            "neither a jpeg nor a png signature",
            field="CompressedImage.format",
            value=format_string,
        )
    raise ConversionError(
        f"CompressedImage.format {format_string!r} is not supported (supported: {', '.join(COMPRESSED_FORMATS)})",
        field="CompressedImage.format",
        value=format_string,
    )


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` -> RGB ``(H, W, 3)`` uint8.

    Grey images are replicated to three channels, alpha is dropped and 16-bit PNGs are
    reduced to their high byte (as ``mono16`` in :func:`image_to_rgb`).
    """
    format_string = as_str(get_field(msg, "CompressedImage", "format"), "CompressedImage.format")
    data = as_byte_buffer(get_field(msg, "CompressedImage", "data"), "CompressedImage.data")
    if data.size == 0:
        raise ConversionError("CompressedImage.data is empty (0 bytes)", field="CompressedImage.data", value=0)
    codec = _declared_codec(format_string, data)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ConversionError(
            f"CompressedImage.data could not be decoded as {codec} (corrupt, {data.size} bytes)",
            field="CompressedImage.data",
            value=data.size,
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
