"""Error types of the loger_ros package (ROS-free, importable anywhere)."""
from __future__ import annotations

from typing import Any

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A ROS message or array could not be converted.

    Raised for every unsupported or malformed input of :mod:`loger_ros.conversions`.
    The message names the offending field and its value, e.g.
    ``"Image.encoding 'rgb16' is not supported (supported: ...)"``.

    Attributes:
        field: dotted field name such as ``"Image.step"`` (``None`` when not about one field).
        value: the offending value (``None`` when not applicable).
    """

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
