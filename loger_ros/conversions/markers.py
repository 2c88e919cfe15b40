"""``visualization_msgs/MarkerArray`` of the back end's loop closures (RViz draws them as lines)."""
from __future__ import annotations

from typing import Any

import numpy as np

from loger_ros.conversions.factory import MessageFactory
from loger_ros.conversions.stamps import make_header
from loger_ros.errors import ConversionError

__all__ = ["LOOP_MARKER_NS", "loop_closure_markers"]

LOOP_MARKER_NS = "loop_closures"
_LINE_LIST, _ADD, _DELETEALL = 5, 0, 3  # visualization_msgs/Marker constants


def loop_closure_markers(factory: MessageFactory, stamp_ns: int, frame_id: str, segments: Any) -> Any:
    """One LINE_LIST marker joining the two camera centres of each closed loop.

    segments: (N, 2, 3) float positions in ``frame_id``; N = 0 clears the markers (DELETEALL).
    """
    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 3) if np.size(segments) else np.zeros((0, 2, 3))
    if not np.all(np.isfinite(seg)):
        raise ConversionError("loop closure segments must be finite", field="segments")
    header = make_header(factory, stamp_ns, frame_id)
    points = [factory.make("geometry_msgs/msg/Point", x=float(p[0]), y=float(p[1]), z=float(p[2]))
              for p in seg.reshape(-1, 3)]
    identity = factory.make("geometry_msgs/msg/Pose",
                            position=factory.make("geometry_msgs/msg/Point", x=0.0, y=0.0, z=0.0),
                            orientation=factory.make("geometry_msgs/msg/Quaternion", x=0.0, y=0.0, z=0.0, w=1.0))
    basic = dict(header=header, ns=LOOP_MARKER_NS, id=0, type=_LINE_LIST, action=_ADD if len(seg) else _DELETEALL,
                 pose=identity, scale=factory.make("geometry_msgs/msg/Vector3", x=0.05, y=0.0, z=0.0),
                 color=factory.make("std_msgs/msg/ColorRGBA", r=1.0, g=0.2, b=0.8, a=1.0),
                 lifetime=factory.make("builtin_interfaces/msg/Duration", sec=0, nanosec=0), frame_locked=False,
                 points=points, colors=[], text="", mesh_resource="", mesh_use_embedded_materials=False)
    try:
        # Jazzy's Marker has texture and mesh fields (rosbags' typestore wants every field) ...
        empty = factory.uint8_array(np.zeros(0, np.uint8))
        blank = factory.make("std_msgs/msg/Header", stamp=factory.make("builtin_interfaces/msg/Time", sec=0, nanosec=0),
                             frame_id="")
        marker = factory.make("visualization_msgs/msg/Marker", **basic, texture_resource="", uv_coordinates=[],
                              texture=factory.make("sensor_msgs/msg/CompressedImage", header=blank, format="", data=empty),
                              mesh_file=factory.make("visualization_msgs/msg/MeshFile", filename="", data=empty))
    except (ConversionError, TypeError, AttributeError, KeyError):
        # ... Humble's has not.
        marker = factory.make("visualization_msgs/msg/Marker", **basic)
    return factory.make("visualization_msgs/msg/MarkerArray", markers=[marker])
