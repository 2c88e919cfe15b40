"""``nav_msgs/OccupancyGrid`` <-> numpy (values 0 free, 100 occupied, -1 unknown).

The message's ``data`` is row-major, row 0 at the grid origin (lowest y), x along a row; the
origin pose is the outer corner of cell (0, 0) in ``header.frame_id``. rosbags wants ``int8[]``
as an ``np.ndarray`` of int8; rclpy takes ``array.array('b')`` without per-element checks.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import numpy as np

from loger_ros.conversions._fields import get_field
from loger_ros.conversions.factory import MessageFactory, RosbagsFactory
from loger_ros.conversions.geometry import make_pose, matrix_from_pose
from loger_ros.conversions.stamps import make_header, make_time, stamp_to_ns
from loger_ros.errors import ConversionError

__all__ = ["OccupancyGridArrays", "occupancy_grid_from_array", "occupancy_grid_to_array"]

_VALID = (-1, 0, 100)


@dataclass
class OccupancyGridArrays:
    """A decoded grid: ``data (H, W) int8`` (row 0 = origin row), ``T_frame_origin (4, 4)``."""

    data: np.ndarray
    resolution: float
    T_frame_origin: np.ndarray
    frame_id: str
    stamp_ns: int


def _int8_array(factory: MessageFactory, data: np.ndarray) -> Any:
    flat = np.ascontiguousarray(data, dtype=np.int8).reshape(-1)
    if isinstance(factory, RosbagsFactory):
        return flat.copy()
    return array.array("b", flat.tobytes())


def occupancy_grid_from_array(factory: MessageFactory, stamp_ns: int, frame_id: str, data: np.ndarray,
                              resolution: float, origin_xy: tuple[float, float], origin_z: float = 0.0) -> Any:
    """``nav_msgs/msg/OccupancyGrid`` from ``data (H, W)`` int (row 0 = lowest y), axis-aligned with
    ``frame_id``; ``origin_xy`` is the outer corner of cell (0, 0), ``origin_z`` the grid's height.

    Raises ConversionError for a non-2D array, values other than -1/0/100 or a bad resolution.
    """
    grid = np.asarray(data)
    if grid.ndim != 2:
        raise ConversionError(f"occupancy data must be 2-D (H, W), got shape {grid.shape}", field="data",
                              value=grid.shape)
    if grid.size and not np.isin(grid, _VALID).all():
        bad = np.unique(grid[~np.isin(grid, _VALID)])[:5].tolist()
        raise ConversionError(f"occupancy values must be -1, 0 or 100; found {bad}", field="data", value=bad)
    if not (np.isfinite(resolution) and resolution > 0):
        raise ConversionError(f"resolution {resolution!r} must be > 0", field="resolution", value=resolution)
    T = np.eye(4)
    T[0, 3], T[1, 3], T[2, 3] = float(origin_xy[0]), float(origin_xy[1]), float(origin_z)
    info = factory.make(
        "nav_msgs/msg/MapMetaData",
        map_load_time=make_time(factory, stamp_ns),
        resolution=float(resolution),
        width=int(grid.shape[1]),
        height=int(grid.shape[0]),
        origin=make_pose(factory, T, "OccupancyGrid origin"),
    )
    return factory.make("nav_msgs/msg/OccupancyGrid", header=make_header(factory, stamp_ns, frame_id), info=info,
                        data=_int8_array(factory, grid))


def occupancy_grid_to_array(msg: Any) -> OccupancyGridArrays:
    """Decode an OccupancyGrid (rclpy or rosbags); raises ConversionError when data and size disagree."""
    info = get_field(msg, "OccupancyGrid", "info")
    width, height = int(get_field(info, "MapMetaData", "width")), int(get_field(info, "MapMetaData", "height"))
    raw = get_field(msg, "OccupancyGrid", "data")
    data = np.frombuffer(raw, dtype=np.int8) if isinstance(raw, (bytes, bytearray, array.array)) else np.asarray(raw)
    data = data.astype(np.int8, copy=False)
    if data.size != width * height:
        raise ConversionError(f"OccupancyGrid has {data.size} cells but width x height = {width} x {height}",
                              field="data", value=data.size)
    header = get_field(msg, "OccupancyGrid", "header")
    return OccupancyGridArrays(
        data=data.reshape(height, width),
        resolution=float(get_field(info, "MapMetaData", "resolution")),
        T_frame_origin=matrix_from_pose(get_field(info, "MapMetaData", "origin")),
        frame_id=str(get_field(header, "Header", "frame_id")),
        stamp_ns=stamp_to_ns(get_field(header, "Header", "stamp")),
    )
