"""Message construction behind one small interface, so writers serve rclpy and rosbags alike.

The writers in this package never import a message class; they ask a factory:

- :class:`RosbagsFactory` builds rosbags typestore dataclasses (tests, offline replay).
  Those require every field and want ``uint8[]`` as ``np.ndarray`` of uint8.
- :class:`RclpyFactory` builds rclpy messages on a robot (``sensor_msgs.msg`` etc. are
  imported lazily, on first use). rclpy wants ``uint8[]`` as ``array.array('B')``.

Type names are ``"pkg/msg/Name"`` (``"pkg/Name"`` is accepted too).
"""
from __future__ import annotations

import array
import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np

from loger_ros.errors import ConversionError

__all__ = ["MessageFactory", "RclpyFactory", "RosbagsFactory", "rosbags_factory", "split_type_name"]


def split_type_name(type_name: str) -> tuple[str, str]:
    """``"sensor_msgs/msg/Image"`` or ``"sensor_msgs/Image"`` -> ``("sensor_msgs", "Image")``."""
    parts = type_name.split("/") if isinstance(type_name, str) else []
    if len(parts) == 3 and parts[1] == "msg" and all(parts):
        return parts[0], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    raise ConversionError(
        f"message type name {type_name!r} is not of the form 'pkg/msg/Name'", field="type_name", value=type_name
    )


@runtime_checkable
class MessageFactory(Protocol):
    """Builds ROS messages by type name; see the module docstring."""

    def make(self, type_name: str, **fields: Any) -> Any:
        """Return a new message of ``type_name`` with the given fields."""

    def uint8_array(self, data: np.ndarray) -> Any:
        """Return ``data`` (any shape, uint8) flattened into this backend's ``uint8[]`` value."""


class RosbagsFactory:
    """Factory over a rosbags typestore (e.g. ``get_typestore(Stores.ROS2_JAZZY)``)."""

    def __init__(self, typestore: Any) -> None:
        self.typestore = typestore

    def make(self, type_name: str, **fields: Any) -> Any:
        package, name = split_type_name(type_name)
        canonical = f"{package}/msg/{name}"
        try:
            message_class = self.typestore.types[canonical]
        except KeyError:
            raise ConversionError(
                f"message type {type_name!r} is not in the rosbags typestore", field="type_name", value=type_name
            ) from None
        return message_class(**fields)

    def uint8_array(self, data: np.ndarray) -> np.ndarray:
        # Always a copy: the message must not alias a caller's buffer that may be reused.
        return np.array(data, dtype=np.uint8, copy=True).reshape(-1)


class RclpyFactory:
    """Factory for rclpy messages; only usable where the ROS 2 Python message packages exist."""

    def __init__(self) -> None:
        self._classes: dict[str, type] = {}

    def make(self, type_name: str, **fields: Any) -> Any:
        package, name = split_type_name(type_name)
        key = f"{package}/msg/{name}"
        if key not in self._classes:
            module = importlib.import_module(f"{package}.msg")
            self._classes[key] = getattr(module, name)
        return self._classes[key](**fields)

    def uint8_array(self, data: np.ndarray) -> array.array:
        # array.array('B') is the zero-validation fast path of rclpy's uint8[] setter.
        return array.array("B", np.ascontiguousarray(data, dtype=np.uint8).tobytes())


def rosbags_factory(store: str = "ros2_humble") -> RosbagsFactory:
    """RosbagsFactory for a named store (``"ros2_humble"``, ``"ros2_jazzy"``, any ``Stores`` value).

    rosbags is imported here, not at module import, because a robot may not have it.
    """
    from rosbags.typesys import Stores, get_typestore

    try:
        stores = Stores(store) if isinstance(store, str) else store
    except ValueError:
        names = ", ".join(s.value for s in Stores)
        raise ConversionError(
            f"rosbags store {store!r} is unknown (known: {names})", field="store", value=store
        ) from None
    return RosbagsFactory(get_typestore(stores))
