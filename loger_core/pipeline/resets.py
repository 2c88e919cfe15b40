"""Reset handling of the mapping pipeline: a requested reset (run by the inference thread before
its next frame), the restart after an inference error left a full window, and what a reset
publishes (cleared path, map and grid when ``reset_clears_map``).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["PipelineResets"]

Publication = Any  # what the emitter returns (see loger_core.pipeline.core)


class PipelineResets:
    """Mixin of :class:`~loger_core.pipeline.core.MappingPipeline`: requesting and applying resets.
    Uses its reconstructor, tracker, fusion, mapper, grid, builder, counters and ``_lock``."""

    def request_reset(self) -> str:
        """Ask the inference thread to restart the reconstruction before its next frame."""
        self._reset_requested.set()
        what = "network memory, map and path" if self.params.reset_clears_map else "network memory (map kept)"
        return f"reset of the {what} scheduled before the next frame"

    def _apply_reset(self, clear_map: Optional[bool] = None) -> list[Publication]:
        clear_map = self.params.reset_clears_map if clear_map is None else clear_map
        # Windows of the old world still running on the worker are mapped before the world restarts.
        pending = self.reconstructor.reset() or []
        early = self._safe_handle(pending) if pending else []
        self.tracker.restart_world()
        consumer = self.mapper.consumer
        if consumer is not None and hasattr(consumer, "reset"):
            consumer.reset(keep_map=not clear_map)  # the back end starts again in the new world
        self.mapper.correction = np.eye(4)
        self._finished = False
        pubs: list[Publication] = []
        with self._lock:
            self.counters.resets += 1
            if clear_map:
                self.fusion.clear()
                self.mapper.clear()
        self.log.info(f"reconstruction reset ({'map and path cleared' if clear_map else 'map kept'})")
        pubs += early
        if clear_map and self._last_stamp is not None:
            pubs.append(self.builder.path(self._last_stamp, self.params.map_frame, [], np.zeros((0, 4, 4))))
            cleared = self.fusion.publication(self._last_stamp, force=True)
            if cleared is not None:
                pubs.append(cleared)
            if self.grid is not None:
                pubs.append(self.grid.publication(self._last_stamp, force=True))
        return pubs

    def _recover_after_error(self) -> list[Publication]:
        # An exception inside a window pass can leave the reconstructor holding a full window it
        # will never run; restarting the network memory is the only way forward then.
        buffered = getattr(self.reconstructor, "buffered_frames", 0)
        if buffered >= self.window_size:
            self.log.warning("the streaming core is stuck with a full window after the error: restarting its memory")
            return self._apply_reset(clear_map=False)
        return []
