"""Field access and validation shared by the readers (private).

Readers accept any object with the ROS field names (rclpy messages, rosbags
typestore messages, ``types.SimpleNamespace``), so every field is fetched and
type-checked here rather than trusted.
"""
from __future__ import annotations

import array
from typing import Any

import numpy as np

from loger_ros.errors import ConversionError


def get_field(msg: Any, type_name: str, name: str) -> Any:
    """Return ``msg.<name>`` or raise ConversionError naming ``<type_name>.<name>``."""
    try:
        return getattr(msg, name)
    except AttributeError:
        raise ConversionError(
            f"{type_name}.{name} is missing (message of type {type(msg).__name__!r})",
            field=f"{type_name}.{name}",
        ) from None


def as_int(value: Any, field: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Validate an integer field (Python or numpy integer, bool rejected) within bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConversionError(f"{field} {value!r} is not an integer", field=field, value=value)
    result = int(value)
    if minimum is not None and result < minimum:
        raise ConversionError(f"{field} {result} must be >= {minimum}", field=field, value=result)
    if maximum is not None and result > maximum:
        raise ConversionError(f"{field} {result} must be <= {maximum}", field=field, value=result)
    return result


def as_str(value: Any, field: str) -> str:
    """Validate a string field."""
    if not isinstance(value, str):
        raise ConversionError(f"{field} {value!r} is not a string", field=field, value=value)
    return value


def as_flag(value: Any, field: str) -> bool:
    """Validate a 0/1 (or bool) flag such as ``is_bigendian``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise ConversionError(f"{field} {value!r} must be 0 or 1", field=field, value=value)


def as_byte_buffer(data: Any, field: str) -> np.ndarray:
    """View a ``uint8[]`` field as a 1-D uint8 array (no copy where the input allows).

    Accepts bytes, bytearray, memoryview, ``array.array('B'|'b')``, a numpy uint8/int8
    array (rosbags) or a list/tuple of ints in [0, 255].
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, array.array):
        if data.typecode not in ("B", "b"):
            raise ConversionError(
                f"{field} is array.array of typecode {data.typecode!r}, expected 'B'", field=field, value=data.typecode
            )
        return np.frombuffer(data, dtype=np.uint8)
    if isinstance(data, np.ndarray):
        if data.dtype not in (np.uint8, np.int8):
            raise ConversionError(f"{field} has dtype {data.dtype}, expected uint8", field=field, value=str(data.dtype))
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, (list, tuple)):
        try:
            values = np.asarray(data, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            raise ConversionError(f"{field} is a sequence that is not all integers", field=field) from None
        if values.size and (values.min() < 0 or values.max() > 255):
            bad = int(values[(values < 0) | (values > 255)][0])
            raise ConversionError(f"{field} contains {bad}, outside the byte range [0, 255]", field=field, value=bad)
        return values.astype(np.uint8)
    raise ConversionError(
        f"{field} of type {type(data).__name__} is not a byte buffer (bytes, array.array, list or numpy uint8)",
        field=field,
        value=type(data).__name__,
    )


def as_float_vector(value: Any, field: str, *, length: int | None = None) -> np.ndarray:
    """Validate a ``float64[]`` field as a finite 1-D float64 array (optionally of fixed length)."""
    try:
        vector = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConversionError(f"{field} {value!r} is not a sequence of numbers", field=field, value=value) from None
    if length is not None and vector.size != length:
        raise ConversionError(f"{field} has {vector.size} values, expected {length}", field=field, value=vector.size)
    if not np.all(np.isfinite(vector)):
        raise ConversionError(f"{field} {vector.tolist()} contains NaN or infinity", field=field, value=vector.tolist())
    return vector
