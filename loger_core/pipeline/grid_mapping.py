"""The node's 2D occupancy grid for Nav2: fed by committed frames, published as ``~/grid``.

:class:`GridMapping` wraps a :class:`~loger_core.mapping.occupancy_grid.OccupancyGrid2D` for the mapping
thread: :class:`~loger_core.pipeline.map_fusion.MapFusion` hands it every committed frame it fuses
(map-frame points, camera centre and the frame's ``T_map_base``), so the grid costs nothing on
the inference thread and its update cost is that of the new window only. Heights are measured
in the ``base_frame`` of the frame that saw the points (``grid_ground_z`` = the ground's z
there), which is why the camera mount from TF matters: without it ``base_frame`` is the camera
optical frame (z forward) and the grid is not meaningful (the core warns once).

The grid is published (``nav_msgs/OccupancyGrid`` in ``map_frame``, transient local) every
``grid_publish_period_s`` when it changed, and written as ``map.pgm`` + ``map.yaml``
(``nav2_map_server`` format) beside ``map.ply`` on ``~/save_map`` and at shutdown.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from loger_core.mapping.floor_grid import FloorGridBuilder
from loger_core.mapping.grid_files import write_map_server
from loger_core.mapping.occupancy_grid import GridConfig, GridSnapshot, OccupancyGrid2D, UpdateStats, heights_above_ground
from loger_core.pipeline.records import Emitter

__all__ = ["FloorGridFeed", "GridMapping"]


class GridMapping:
    """Thread-safe occupancy grid with change tracking (see the module docstring).

    Args:
        config: grid settings (``NodeParams.grid_config()``).
        builder: message builder.
        map_frame: frame of the grid message.
        period_s: publication period in seconds of the node clock.
    """

    def __init__(self, config: GridConfig, builder: Emitter, map_frame: str, period_s: float) -> None:
        self.grid = OccupancyGrid2D(config)
        self.config = config
        self.builder = builder
        self.map_frame = map_frame
        self.period_s = float(period_s)
        self._lock = threading.Lock()
        self._version = 0
        self._published_version = 0
        self._last_ns: Optional[int] = None
        self.window_stats = UpdateStats()  # of the last window (summed over its frames)
        self.window_ms = 0.0
        self.frames = 0

    # ------------------------------------------------------------------ input
    def insert_window(self, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> UpdateStats:
        """Add a committed window: ``(points (N, 3) map frame, camera centre (3,) map frame,
        T_map_base (4, 4))`` per frame. Returns the window's summed :class:`UpdateStats`."""
        total = UpdateStats()
        t0 = time.perf_counter()
        ground_z = self.config.ground_z
        for points, centre, T_map_base in frames:
            heights = heights_above_ground(points, T_map_base, ground_z)
            camera_height = float(heights_above_ground(np.asarray(centre, np.float64).reshape(1, 3), T_map_base,
                                                       ground_z)[0])
            with self._lock:
                total.add(self.grid.insert(np.asarray(points)[:, :2], heights, np.asarray(centre)[:2], camera_height))
                self._version += 1
                self.frames += 1
        self.window_stats = total
        self.window_ms = (time.perf_counter() - t0) * 1e3
        return total

    def clear(self) -> None:
        with self._lock:
            self.grid.clear()
            self._version += 1
            self.frames = 0

    def diagnostics(self) -> dict[str, Any]:
        """Diagnostics keys: grid size, known cells, the last window's update cost."""
        with self._lock:
            known = self.grid.known_cells()
            rows, cols = self.grid.storage_shape
        return {"grid_known_cells": known, "grid_storage_cells": rows * cols, "grid_frames": self.frames,
                "grid_last_window_cells_touched": self.window_stats.cells_touched,
                "grid_last_window_ms": self.window_ms}

    # ------------------------------------------------------------------ output
    def snapshot(self) -> GridSnapshot:
        with self._lock:
            return self.grid.snapshot()

    def publication(self, stamp_ns: int, force: bool = False) -> Optional[Any]:
        """The grid message; None when unchanged since the last one (unless ``force``)."""
        with self._lock:
            if not force and self._version == self._published_version:
                return None
            snap = self.grid.snapshot()
            self._published_version = self._version
        return self.builder.grid(int(stamp_ns), self.map_frame, snap.data, snap.resolution, snap.origin,
                                 self.config.ground_z)

    def periodic(self, now_ns: int) -> list:
        """The grid when ``period_s`` of the node clock passed since the last one and it changed."""
        if self._last_ns is not None and now_ns < self._last_ns:
            self._last_ns = now_ns  # the clock went back (a looped bag): restart the period
        if self._last_ns is not None and now_ns - self._last_ns < int(self.period_s * 1e9):
            return []
        self._last_ns = now_ns
        pub = self.publication(now_ns)
        return [pub] if pub is not None else []

    def save(self, directory: Any) -> Optional[tuple[Path, Path]]:
        """Write ``map.pgm`` + ``map.yaml`` into ``directory``; None (nothing written) while the grid is empty."""
        snap = self.snapshot()
        if snap.width == 0:
            return None
        return write_map_server(Path(directory), snap)


class FloorGridFeed:
    """Feeds a :class:`~loger_core.mapping.floor_grid.FloorGridBuilder` (inputs without TF: "up" from the
    floor under the cameras) from :class:`~loger_core.pipeline.map_fusion.MapFusion`, as
    :class:`GridMapping` feeds the node's grid. Frames are ``(points (N, 3) map frame, camera
    centre, T_map_base)`` with the base being the camera (``T_map_base = T_map_cam``)."""

    def __init__(self, builder: FloorGridBuilder) -> None:
        self.builder = builder

    def insert_window(self, frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        for points, _centre, T_map_cam in frames:
            self.builder.add(points, T_map_cam)

    def clear(self) -> None:
        """Start the grid again (a back-end correction re-fuses every frame)."""
        b = self.builder
        self.builder = type(b)(b.grid.config, b.min_frames, b.max_buffered)
