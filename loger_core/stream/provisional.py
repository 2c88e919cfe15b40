"""Provisional passes of the streaming reconstructor (synchronous path): when one is due
(`provisional_every`, deferred by the caller, `provisional_budget`), and the uncommitted pass over
anchor frames plus the newest frames that gives them a pose before their window commits.
"""
from __future__ import annotations

import time

from .results import FrameResult
from .window_prediction import usable

__all__ = ["ProvisionalScheduling"]


class ProvisionalScheduling:
    """Mixin of `StreamingReconstructor`: scheduling and running provisional passes. Uses the
    reconstructor's `config`, `stats`, `_buffer` / `_head`, `_aligner`, `_state`, `_prov_owed`,
    `_prov_next_s`, `_forward` and `_emit`."""

    def _provisional_due(self, scheduled: bool, caller_allows: bool) -> bool:
        """Whether a provisional pass runs now: one is scheduled (or was deferred by the caller),
        the caller allows it, and the budget is not spent."""
        if not self.config.provisional_every or not (scheduled or self._prov_owed):
            return False
        if not caller_allows:
            if scheduled:
                self.stats.provisional_deferred += 1
            self._prov_owed = True
            return False
        self._prov_owed = False
        return self._provisional_allowed()

    def _provisional_allowed(self) -> bool:
        """A provisional pass is due; False (and counted) while `provisional_budget` is spent."""
        if time.perf_counter() >= self._prov_next_s:
            return True
        self.stats.provisional_skipped_budget += 1
        return False

    def _spend_provisional(self, t0: float) -> None:
        now = time.perf_counter()
        cost, budget = now - t0, self.config.provisional_budget
        self.stats.provisional_s_total += cost
        self._prov_next_s = now + cost * (1.0 - budget) / budget

    def _provisional(self) -> list[FrameResult]:
        """An uncommitted pass over anchor frames plus the `provisional_every` newest frames, not
        the whole partial window, so its cost is bounded and does not grow as the window fills.
        The anchors are the frames shared with the last committed window (they carry the alignment
        into the map), or in a map's first window its first frame (the world origin). Returns
        results for the newest frames (and for the first frame while it is among them)."""
        t0 = time.perf_counter()
        try:
            return self._provisional_pass()
        finally:
            self._spend_provisional(t0)

    def _anchor_count(self, available: int) -> int:
        """How many of `available` anchor frames a provisional pass carries (`provisional_anchors`)."""
        wanted = self.config.provisional_anchors
        return min(wanted, available) if wanted > 0 else available

    def _provisional_pass(self) -> list[FrameResult]:
        buffer, head = self._buffer, self._head
        anchor = self._anchor_count(head) if head else 1
        first_new = max(head or 1, len(buffer) - self.config.provisional_every)
        frames = buffer[:anchor] + buffer[first_new:]
        emit_from = 0 if head == 0 and len(buffer) <= self.config.provisional_every else anchor
        # forward_window applies a due TTT reset to provisional passes too.
        pred, _, rgb = self._forward(frames, self._state, commit=False, anchor_frames=emit_from or None)
        self.stats.provisional_runs += 1
        if not usable(pred):
            self.stats.provisional_dropped_nonfinite += 1
            return []
        # The real aligner must see only committed windows.
        aligned = self._aligner.peek(pred)
        return self._emit(frames[emit_from:], aligned, rgb, emit_from, self._aligner.window_index, provisional=True)
