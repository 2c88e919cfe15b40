"""The 2D occupancy grid's names in one place (compatibility: the import path before issue 26's
split). The code lives by job in ``occupancy_grid`` (the log-odds grid, :class:`GridConfig`,
:class:`GridSnapshot`), ``floor_grid`` (:class:`FloorGridBuilder`, the floor-plane fit) and
``grid_files`` (``nav2_map_server`` files, PNG rendering); new code imports from those.
"""
from __future__ import annotations

from .floor_grid import FloorGridBuilder, estimate_ground_frame
from .grid_files import (
    MAP_SERVER_FREE_THRESH, MAP_SERVER_OCCUPIED_THRESH, PGM_FREE, PGM_OCCUPIED, PGM_UNKNOWN, pgm_image, render_grid_png,
    write_map_server,
)
from .occupancy_grid import (
    FREE, OCCUPIED, UNKNOWN, GridConfig, GridError, GridSnapshot, OccupancyGrid2D, UpdateStats, heights_above_ground,
)

__all__ = [
    "FREE",
    "FloorGridBuilder",
    "GridConfig",
    "GridError",
    "GridSnapshot",
    "MAP_SERVER_FREE_THRESH",
    "MAP_SERVER_OCCUPIED_THRESH",
    "OCCUPIED",
    "OccupancyGrid2D",
    "PGM_FREE",
    "PGM_OCCUPIED",
    "PGM_UNKNOWN",
    "UNKNOWN",
    "UpdateStats",
    "estimate_ground_frame",
    "heights_above_ground",
    "pgm_image",
    "render_grid_png",
    "write_map_server",
]
