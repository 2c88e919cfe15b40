"""Map outputs of the mapping pipeline: the periodic map / grid records, the committed trajectory
(T_map_base or T_map_cam), a map snapshot (points (M, 3) in the map frame) and the saved files
(``map.ply``, ``trajectory.tum``, with the grid ``map.pgm`` + ``map.yaml``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from loger_core.io.trajectory import Trajectory
from loger_core.pipeline.errors import CoreError
from loger_core.pipeline.outputs import SavedOutputs, save_map_and_trajectory

__all__ = ["MapOutputs"]

Publication = Any  # what the emitter returns (see loger_core.pipeline.core)


class MapOutputs:
    """Mixin of :class:`~loger_core.pipeline.core.MappingPipeline`: map, grid and trajectory out.
    Uses its params, fusion, grid and mapper."""

    def periodic(self, now_ns: int) -> list[Publication]:
        """The map when ``map_publish_period_s`` of the node clock (``now_ns``) has passed, the grid when
        ``grid_publish_period_s`` has (synchronous use)."""
        pubs = self.fusion.periodic(now_ns, self.params.map_publish_period_s)
        return pubs + (self.grid.periodic(now_ns) if self.grid is not None else [])

    def trajectory(self, body: str = "base") -> Trajectory:
        """Committed poses in the map frame: ``body`` 'base' (T_map_base) or 'camera' (T_map_cam)."""
        if body not in ("base", "camera"):
            raise CoreError(f"trajectory body {body!r} must be 'base' or 'camera'")
        return self.mapper.trajectory(body)

    def map_snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``points (M, 3) float32`` (map frame), ``colors (M, 3) uint8``, ``confidence (M,) float32``."""
        return self.fusion.snapshot()

    def save_map(self, directory: Optional[str] = None) -> SavedOutputs:
        """Write ``map.ply`` and ``trajectory.tum`` (base_link in the map frame) to ``directory``
        (default ``output_dir``), and with the grid on ``map.pgm`` + ``map.yaml`` (nav2_map_server;
        not while the grid is empty). The map is copied under the lock and written outside it."""
        if self.fusion.threaded:
            self.fusion.wait_idle()  # committed windows still queued for fusion belong in the saved map
        points, colors, conf = self.map_snapshot()
        trajectory = self.trajectory("base")
        target = directory if directory is not None else self.params.resolved_output_dir
        saved = save_map_and_trajectory(target, points, colors, conf, trajectory)
        if self.grid is not None:
            written = self.grid.save(saved.map_ply.parent)
            if written is not None:
                saved.grid_pgm, saved.grid_yaml = written
        return saved
