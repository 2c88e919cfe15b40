"""Warm-up of the mapping pipeline: runs the stream's model over throwaway frames before the first
camera frame (``params.warm_up``; 'auto': on CUDA), so compiling and graph capture cost no live
frame.
"""
from __future__ import annotations

from typing import Optional

from loger_core.stream import StreamingReconstructor, WarmUpReport, warm_up, warm_up_wanted

__all__ = ["PipelineWarmUp"]


class PipelineWarmUp:
    """Mixin of :class:`~loger_core.pipeline.core.MappingPipeline`: its :meth:`warm_up`."""

    def warm_up(self) -> Optional[WarmUpReport]:
        """Runs the stream's model over throwaway frames when ``params.warm_up`` asks for it ('auto':
        on CUDA), before any camera frame, so that compiling and graph capture do not cost live
        frames. A failure is logged and the node starts anyway (its first windows then compile
        live). Returns the report, or None when nothing ran."""
        rec = self.reconstructor
        if not isinstance(rec, StreamingReconstructor) or not warm_up_wanted(self.params.warm_up, rec.device):
            return None
        self.log.info("warm-up: running the model over throwaway frames before the first camera frame")
        try:
            # Without a fixed network size the camera's decides it: assume the configured camera size.
            size = None if rec.config.resolution is not None else (self.params.warm_up_image_width,
                                                                   self.params.warm_up_image_height)
            report = warm_up(rec.config, rec.model, image_size=size)
        except Exception as err:  # e.g. out of memory: the node is still useful without it
            self.log.warning(f"warm-up failed ({err!r}); the first windows will compile while frames arrive")
            return None
        self.warm_up_report = report
        self.log.info(f"warm-up done in {report.seconds:.1f} s: {report.windows} windows, {report.provisional_passes} "
                      f"provisional passes, {report.window_graph_replays} CUDA-graph replays")
        return report
