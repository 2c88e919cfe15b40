"""What the core asks the ROS layer to publish: plain :class:`Publication` records.

The core builds finished messages through a :class:`~loger_ros.conversions.MessageFactory`
(rclpy messages in the node, rosbags messages in replay and tests), so ``node.py`` only maps
a channel to its publisher and calls ``publish``; replay writes the same messages to a bag.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from loger_ros.conversions.markers import loop_closure_markers
from loger_ros.conversions import (
    CovarianceModel,
    MessageFactory,
    RosbagsFactory,
    make_header,
    make_time,
    occupancy_grid_from_array,
    odometry_from_poses,
    path_from_poses,
    pointcloud2_from_points,
    transform_stamped_from_matrix,
)
from loger_core.pipeline.errors import CoreError

__all__ = ["CHANNELS", "CHANNEL_TYPES", "DIAGNOSTIC_LEVELS", "MessageBuilder", "Publication"]

# channel -> ROS message type. 'tf'/'tf_static' go to the TF broadcasters, the rest to publishers.
CHANNEL_TYPES: dict[str, str] = {
    "odom": "nav_msgs/msg/Odometry",
    "path": "nav_msgs/msg/Path",
    "cloud": "sensor_msgs/msg/PointCloud2",
    "map": "sensor_msgs/msg/PointCloud2",
    "grid": "nav_msgs/msg/OccupancyGrid",
    "tf": "tf2_msgs/msg/TFMessage",
    "tf_static": "tf2_msgs/msg/TFMessage",
    "diagnostics": "diagnostic_msgs/msg/DiagnosticArray",
    "loop_closures": "visualization_msgs/msg/MarkerArray",
}
CHANNELS: tuple[str, ...] = tuple(CHANNEL_TYPES)
DIAGNOSTIC_LEVELS = {"OK": 0, "WARN": 1, "ERROR": 2, "STALE": 3}


@dataclass(frozen=True)
class Publication:
    """One message for one channel (see :data:`CHANNEL_TYPES`); ``stamp_ns`` is its header stamp."""

    channel: str
    msg: Any
    stamp_ns: int

    def __post_init__(self) -> None:
        if self.channel not in CHANNEL_TYPES:
            raise CoreError(f"Publication.channel {self.channel!r} must be one of {list(CHANNELS)}")


class MessageBuilder:
    """Builds the node's messages with one factory."""

    def __init__(self, factory: MessageFactory, covariance: Optional[CovarianceModel] = None) -> None:
        self.factory = factory
        self.covariance = covariance or CovarianceModel()

    def odometry(self, stamp_ns: int, frame_id: str, child_frame_id: str, T: np.ndarray,
                 T_prev: Optional[np.ndarray] = None, dt_s: Optional[float] = None,
                 confidence: Optional[float] = None) -> Publication:
        """``nav_msgs/Odometry`` of ``T = T_frame_child (4, 4)``; twist from ``T_prev`` ``dt_s`` earlier."""
        msg = odometry_from_poses(self.factory, stamp_ns, frame_id, child_frame_id, T, T_prev, dt_s,
                                  confidence, self.covariance)
        return Publication("odom", msg, stamp_ns)

    def transforms(self, items: Iterable[tuple[int, str, str, np.ndarray]], static: bool = False) -> Optional[Publication]:
        """``tf2_msgs/TFMessage`` of ``(stamp_ns, parent, child, T_parent_child)`` items; None when empty."""
        items = list(items)
        if not items:
            return None
        stamped = [transform_stamped_from_matrix(self.factory, s, parent, child, T) for s, parent, child, T in items]
        msg = self.factory.make("tf2_msgs/msg/TFMessage", transforms=stamped)
        return Publication("tf_static" if static else "tf", msg, max(int(t[0]) for t in items))

    def path(self, stamp_ns: int, frame_id: str, stamps_ns: Sequence[int], poses: np.ndarray) -> Publication:
        """``nav_msgs/Path`` of ``poses (N, 4, 4)`` in ``frame_id``."""
        return Publication("path", path_from_poses(self.factory, stamp_ns, frame_id, stamps_ns, poses), stamp_ns)

    def cloud(self, channel: str, stamp_ns: int, frame_id: str, points: np.ndarray,
              colors: Optional[np.ndarray] = None, confidence: Optional[np.ndarray] = None) -> Publication:
        """``sensor_msgs/PointCloud2`` (x, y, z, rgb, confidence) for channel 'cloud' or 'map'."""
        if channel not in ("cloud", "map"):
            raise CoreError(f"cloud channel {channel!r} must be 'cloud' or 'map'")
        header = make_header(self.factory, stamp_ns, frame_id)
        return Publication(channel, pointcloud2_from_points(self.factory, header, points, colors, confidence), stamp_ns)

    def grid(self, stamp_ns: int, frame_id: str, data: np.ndarray, resolution: float,
             origin_xy: tuple[float, float], origin_z: float = 0.0) -> Publication:
        """``nav_msgs/OccupancyGrid`` of ``data (H, W)`` (0 / 100 / -1, row 0 = lowest y) in ``frame_id``."""
        msg = occupancy_grid_from_array(self.factory, stamp_ns, frame_id, data, resolution, origin_xy, origin_z)
        return Publication("grid", msg, stamp_ns)

    def loop_closures(self, stamp_ns: int, frame_id: str, segments: np.ndarray) -> Publication:
        """``visualization_msgs/MarkerArray``: a line per closed loop, ``segments (N, 2, 3)`` in ``frame_id``."""
        return Publication("loop_closures", loop_closure_markers(self.factory, stamp_ns, frame_id, segments), stamp_ns)

    def diagnostics(self, stamp_ns: int, name: str, hardware_id: str, level: str, message: str,
                    values: Mapping[str, Any]) -> Publication:
        """``diagnostic_msgs/DiagnosticArray`` with one status; values are stringified (floats to 4 digits)."""
        if level not in DIAGNOSTIC_LEVELS:
            raise CoreError(f"diagnostic level {level!r} must be one of {list(DIAGNOSTIC_LEVELS)}")
        f = self.factory
        pairs = [f.make("diagnostic_msgs/msg/KeyValue", key=str(k), value=_text(v)) for k, v in values.items()]
        status = f.make(
            "diagnostic_msgs/msg/DiagnosticStatus",
            level=self._byte(DIAGNOSTIC_LEVELS[level]),
            name=name,
            message=message,
            hardware_id=hardware_id,
            values=pairs,
        )
        # Diagnostics refer to no coordinate frame: empty frame_id, as diagnostic_updater sends.
        header = f.make("std_msgs/msg/Header", stamp=make_time(f, stamp_ns), frame_id="")
        msg = f.make("diagnostic_msgs/msg/DiagnosticArray", header=header, status=[status])
        return Publication("diagnostics", msg, stamp_ns)

    def _byte(self, value: int) -> Any:
        # A ROS 'byte' field is an int in rosbags but a length-1 bytes object in rclpy.
        return value if isinstance(self.factory, RosbagsFactory) else bytes([value])


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
