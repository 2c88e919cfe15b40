"""Timestamps: ``builtin_interfaces/Time`` <-> int nanoseconds, and ``std_msgs/Header``."""
from __future__ import annotations

from typing import Any

from loger_ros.conversions._fields import as_int, as_str, get_field
from loger_ros.conversions.factory import MessageFactory
from loger_ros.errors import ConversionError

__all__ = ["make_header", "make_time", "ns_to_stamp_fields", "stamp_to_ns", "validate_frame_id"]

_NS_PER_S = 1_000_000_000
# builtin_interfaces/Time.sec is int32; negative times are rejected because rclpy rejects them.
_MAX_SEC = 2**31 - 1


def stamp_to_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (fields ``sec``, ``nanosec``) -> int nanoseconds."""
    sec = as_int(get_field(stamp, "Time", "sec"), "Time.sec")
    nanosec = as_int(get_field(stamp, "Time", "nanosec"), "Time.nanosec", minimum=0, maximum=_NS_PER_S - 1)
    return sec * _NS_PER_S + nanosec


def ns_to_stamp_fields(stamp_ns: int) -> tuple[int, int]:
    """int nanoseconds -> ``(sec, nanosec)`` with ``0 <= nanosec < 1e9``."""
    ns = as_int(stamp_ns, "stamp_ns", minimum=0, maximum=_MAX_SEC * _NS_PER_S + _NS_PER_S - 1)
    sec, nanosec = divmod(ns, _NS_PER_S)
    return sec, nanosec


def make_time(factory: MessageFactory, stamp_ns: int) -> Any:
    """``builtin_interfaces/msg/Time`` for int nanoseconds."""
    sec, nanosec = ns_to_stamp_fields(stamp_ns)
    return factory.make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec)


def validate_frame_id(frame_id: Any, field: str = "frame_id") -> str:
    """A frame id must be a non-empty string (tf2 rejects empty frame ids)."""
    frame_id = as_str(frame_id, field)
    if not frame_id:
        raise ConversionError(f"{field} '' must be a non-empty frame name", field=field, value=frame_id)
    return frame_id


def make_header(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    """``std_msgs/msg/Header`` (ROS 2 layout: stamp, frame_id)."""
    frame_id = validate_frame_id(frame_id, "Header.frame_id")
    return factory.make("std_msgs/msg/Header", stamp=make_time(factory, stamp_ns), frame_id=frame_id)
