"""What the pipeline hands out: one :class:`Emitter` call per output, ROS-free.

The pipeline never builds a ROS message. Wherever it has something to publish (odometry, TF,
the path, a cloud, the map, the grid, diagnostics) it calls its emitter with numpy arrays and
frame names, and passes on whatever the emitter returns. The ROS side's emitter
(``loger_ros.publications.MessageBuilder``) returns finished messages wrapped in a
``Publication``; :class:`RecordEmitter` returns plain :class:`OutputRecord` dataclasses (tests,
tools without ROS). Channels: :data:`CHANNELS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Protocol, Sequence

import numpy as np

__all__ = ["CHANNELS", "Emitter", "OutputRecord", "RecordEmitter"]

# 'tf'/'tf_static' are transforms, the rest one topic each (see loger_ros.publications.CHANNEL_TYPES).
CHANNELS: tuple[str, ...] = ("odom", "path", "cloud", "map", "grid", "tf", "tf_static", "diagnostics")


class Emitter(Protocol):
    """Makes one output record per call; every method returns the record (``.channel``, ``.stamp_ns``)."""

    def odometry(self, stamp_ns: int, frame_id: str, child_frame_id: str, T: np.ndarray,
                 T_prev: Optional[np.ndarray] = None, dt_s: Optional[float] = None,
                 confidence: Optional[float] = None) -> Any: ...

    def transforms(self, items: Iterable[tuple[int, str, str, np.ndarray]], static: bool = False) -> Optional[Any]: ...

    def path(self, stamp_ns: int, frame_id: str, stamps_ns: Sequence[int], poses: np.ndarray) -> Any: ...

    def cloud(self, channel: str, stamp_ns: int, frame_id: str, points: np.ndarray,
              colors: Optional[np.ndarray] = None, confidence: Optional[np.ndarray] = None) -> Any: ...

    def grid(self, stamp_ns: int, frame_id: str, data: np.ndarray, resolution: float,
             origin_xy: tuple[float, float], origin_z: float = 0.0) -> Any: ...

    def loop_closures(self, stamp_ns: int, frame_id: str, segments: np.ndarray) -> Any: ...

    def diagnostics(self, stamp_ns: int, name: str, hardware_id: str, level: str, message: str,
                    values: Mapping[str, Any]) -> Any: ...


@dataclass(frozen=True)
class OutputRecord:
    """One output of the pipeline without ROS: ``channel`` (:data:`CHANNELS`), header stamp, fields."""

    channel: str
    stamp_ns: int
    fields: dict = field(default_factory=dict)


class RecordEmitter:
    """An :class:`Emitter` that returns :class:`OutputRecord` s holding the arguments."""

    def odometry(self, stamp_ns, frame_id, child_frame_id, T, T_prev=None, dt_s=None, confidence=None):
        return OutputRecord("odom", int(stamp_ns), dict(frame_id=frame_id, child_frame_id=child_frame_id, T=T,
                                                        T_prev=T_prev, dt_s=dt_s, confidence=confidence))

    def transforms(self, items, static=False):
        items = list(items)
        if not items:
            return None
        return OutputRecord("tf_static" if static else "tf", max(int(t[0]) for t in items), dict(items=items))

    def path(self, stamp_ns, frame_id, stamps_ns, poses):
        return OutputRecord("path", int(stamp_ns), dict(frame_id=frame_id, stamps_ns=list(stamps_ns), poses=poses))

    def cloud(self, channel, stamp_ns, frame_id, points, colors=None, confidence=None):
        return OutputRecord(channel, int(stamp_ns), dict(frame_id=frame_id, points=points, colors=colors,
                                                         confidence=confidence))

    def loop_closures(self, stamp_ns, frame_id, segments):
        return OutputRecord("loop_closures", int(stamp_ns), dict(frame_id=frame_id, segments=np.asarray(segments)))

    def grid(self, stamp_ns, frame_id, data, resolution, origin_xy, origin_z=0.0):
        return OutputRecord("grid", int(stamp_ns), dict(frame_id=frame_id, data=data, resolution=resolution,
                                                        origin_xy=origin_xy, origin_z=origin_z))

    def diagnostics(self, stamp_ns, name, hardware_id, level, message, values):
        return OutputRecord("diagnostics", int(stamp_ns), dict(name=name, hardware_id=hardware_id, level=level,
                                                               message=message, values=dict(values)))
