"""The stream's frame records shared by the reconstructor and its session state: a buffered
input frame (:class:`BufferedFrame`) and the committed view a provisional pass reads
(:class:`CommittedView`). Their own module, so that ``reconstructor`` and ``session_state`` do
not import each other.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from loger_core.model.windowing import WindowAligner

from .preprocess import ImageGeometry, PreparedImage

__all__ = ["BufferedFrame", "CommittedView"]


@dataclass
class BufferedFrame:
    """A buffered frame. prepared: its `PreparedImage` (rgb (h, w, 3) uint8 at model resolution and
    geometry), or a future of it while a preprocessing thread resizes it; depth: (h, w) float32
    metres or None; odom: (3,) float64 or None; K: original-size K or None."""

    index: int
    stamp_ns: int
    prepared: Any
    K: Optional[np.ndarray]
    depth: Optional[np.ndarray]
    odom: Optional[np.ndarray]

    def ready(self) -> PreparedImage:
        if isinstance(self.prepared, Future):
            self.prepared = self.prepared.result()
        return self.prepared

    @property
    def rgb(self) -> np.ndarray:
        return self.ready().rgb

    @property
    def geometry(self) -> ImageGeometry:
        return self.ready().geometry



@dataclass
class CommittedView:
    """What a provisional pass needs of the last committed window, replaced as one object so that
    the caller's thread always reads a consistent set: the memory after it, a snapshot of the
    aligner, its last `overlap` frames (the anchors; empty before the first window)."""

    state: Any
    aligner: WindowAligner
    anchors: list[BufferedFrame]
