"""Async windows of the streaming reconstructor (`StreamConfig.async_windows`): completed windows
go to a worker thread (`WindowWorker`) in window order — enqueue the forward, settle memory and
alignment, then build outputs while the device computes the next window — and provisional passes
run on the caller's thread against the last committed window (`CommittedView`), on a high-priority
CUDA stream where there is one.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from loger_core.model.fast_paths import eager_regions
from loger_core.model.prediction import WindowPrediction

from .frames import BufferedFrame, CommittedView
from .results import FrameResult
from .window_prediction import finish_camera, usable

# The reconstructor's logger: the messages keep their logger name.
log = logging.getLogger("loger_core.stream.reconstructor")

__all__ = ["AsyncWindows"]


@dataclass
class _Job:
    """A completed window for the worker: `frames` in window order, the first `head` of them shared
    with the window before; `final` for the sequence's last (possibly partial) window."""

    frames: list[BufferedFrame]
    head: int
    final: bool
    # The frames' (n, h, w, 3) uint8 images stacked in pinned memory by the caller's thread (CUDA),
    # so the worker's gap between two windows holds no host copy.
    rgb: Optional[torch.Tensor] = None


@dataclass
class _Queued:
    """A window whose forward is queued on the device (worker side)."""

    job: _Job
    frames: list[BufferedFrame]
    head: int
    pred: Optional[WindowPrediction]
    new_state: Any
    rgb: Optional[torch.Tensor]
    t0: float


@dataclass
class _Emit:
    """Arguments of one `_emit_start` call, made on the worker after the next window is queued."""

    frames: list[BufferedFrame]
    pred: WindowPrediction
    rgb: torch.Tensor
    start: int
    window_index: int
    provisional: bool


class AsyncWindows:
    """Mixin of `StreamingReconstructor`: the async-window path. Uses the reconstructor's `config`,
    `stats`, `device`, `_worker`, `_buffer` / `_head`, `_state`, `_aligner`, `_pending`, `_view`,
    `_broken` / `_good_tail`, `_errors`, the CUDA streams / graphs / GPU share, `_forward`, the
    provisional scheduling (`ProvisionalScheduling`) and the output methods (`OutputAssembly`)."""

    def _push_async(self, allow_provisional: bool) -> list[FrameResult]:
        """push() with async_windows: a completed window goes to the worker; provisional passes run
        here against the last committed window while it computes."""
        cfg = self.config
        every = cfg.provisional_every
        provisional: list[FrameResult] = []
        new = self._buffer[self._head :]
        if len(self._buffer) >= cfg.window_size:
            # The frames since the last provisional pass get a pose now, not when the window is in.
            if self._provisional_due(True, allow_provisional):
                provisional = self._provisional_async(new[-every:])
            self._submit(final=False)
        elif self._provisional_due(bool(every) and len(new) % every == 0, allow_provisional):
            provisional = self._provisional_async(new[-every:])
        return self._worker.drain() + provisional

    def _submit(self, final: bool) -> None:
        job = _Job(self._buffer, self._head, final, self._stack(self._buffer) if self._buffer else None)
        overlap = self.config.overlap_size
        if final or overlap == 0:
            self._buffer, self._head = [], 0
        else:
            # As if the window will be usable; the worker re-heads the next one if it is not.
            self._buffer, self._head = list(job.frames[-overlap:]), overlap
        self._worker.submit(job)

    def _provisional_async(self, newest: list[BufferedFrame]) -> list[FrameResult]:
        """The provisional pass of `_provisional_pass` against the last committed window (which
        may be older than the frames at the head of the buffer while a window is in flight), on
        the high-priority stream. A failure is logged and loses nothing: the frames stay buffered."""
        t0 = time.perf_counter()
        try:
            view = self._view
            anchors = view.anchors[: self._anchor_count(len(view.anchors))]
            if not anchors:
                anchors = [self._first_frame] if view.state is None else self._buffer[:1]
            if newest and anchors[0] is newest[0]:
                frames, emit_from = list(newest), 0  # the map's first frame is among the newest
            else:
                frames, emit_from = anchors + list(newest), len(anchors)
            stream = torch.cuda.stream(self._prov_stream) if self._prov_stream is not None else nullcontext()
            urgent = self._share.urgent() if self._share is not None else nullcontext()
            with urgent, stream:
                pred = rgb = None
                if self._graphs is not None and self._graphs.usable_for(view.state):
                    rgb = self._device_images(frames)
                    # A first capture only while no window computes (its allocations stay apart).
                    pred = self._graphs.run(rgb, view.state, capture_allowed=self._capture_allowed,
                                            anchor_frames=emit_from or None)
                if pred is None:
                    # Eager blocks: the worker thread may be compiling a window shape at this moment.
                    with eager_regions():
                        pred, _, rgb = self._forward(frames, view.state, commit=False, rgb=rgb,
                                                     anchor_frames=emit_from or None)
                self.stats.provisional_runs += 1
                if not usable(pred):
                    self.stats.provisional_dropped_nonfinite += 1
                    return []
                aligned = view.aligner.peek(pred)
                return self._emit(frames[emit_from:], aligned, rgb, emit_from, view.aligner.window_index,
                                  provisional=True)
        except Exception as err:  # noqa: BLE001 - the committed window still gives these frames poses
            msg = f"provisional pass failed ({type(err).__name__}: {err}); the frames wait for their window"
            log.warning(msg)
            self._errors.append(msg)
            return []
        finally:
            self._spend_provisional(t0)

    def _capture_allowed(self) -> bool:
        """Whether a provisional pass may capture its CUDA graph now: while no window computes, or
        while the window worker is stopped between two blocks for this pass (`pass_priority`; a
        camera that never pauses keeps the worker busy, and its passes would never get a graph)."""
        if not self._worker.busy:
            return True
        return self._share is not None and self._share.wait_bulk_paused(0.1)

    @contextmanager
    def _worker_context(self, commit_stream) -> Iterator[None]:
        """The window worker thread's context: its CUDA stream and its side of the GPU share."""
        with ExitStack() as stack:
            if commit_stream is not None:
                stack.enter_context(torch.cuda.stream(commit_stream))
            if self._share is not None:
                stack.enter_context(self._share.bulk())
            yield

    # Worker stages (window_worker.WindowWorker), all on the worker thread, in window order.
    def _w_enqueue(self, job: _Job) -> _Queued:
        frames, head = job.frames, job.head
        if self._broken:
            # The window before was dropped: go on from the last good window's shared frames, as the
            # synchronous path keeps them at the head of its buffer.
            frames, head = self._good_tail + frames[head:], len(self._good_tail)
        t0 = time.perf_counter()
        if len(frames) <= head:  # a final job with no new frame: only the pending tail is left
            return _Queued(job, frames, head, None, None, None, t0)
        # With no provisional pass to make room for, a full window replays its CUDA graph (one
        # launch instead of thousands from this thread); with passes it runs block by block, so
        # that it can stop for them (`gpu_share`). Raw camera output: the camera head's SVD waits
        # for the device, and this stage must return as soon as the window is queued, so that the
        # previous window's outputs are built while the device computes this one (`WindowWorker`).
        full = len(frames) == self.config.window_size
        graphs = self._window_graphs if self.config.provisional_every == 0 and full else None
        pred, new_state, rgb = self._forward(frames, self._state, commit=True, rgb=None if self._broken else job.rgb,
                                             graphs=graphs, raw_camera=True)
        return _Queued(job, frames, head, pred, new_state, rgb, t0)

    def _w_settle(self, q: _Queued) -> tuple[Optional[float], list[_Emit], Any]:
        """Accepts the window's memory and alignment; its outputs are only described here and made
        in `_w_finish`, after the worker queued the next window's forward, so the device does not
        wait on them between two windows."""
        settled = self._settle(q)
        event = None
        if self._out_stream is not None:
            # Marks the window's forward and alignment on the worker's stream; the outputs' stream
            # waits for this, not for the next window queued behind it.
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        return settled[0], settled[1], event

    def _settle(self, q: _Queued) -> tuple[Optional[float], list[_Emit]]:
        cfg = self.config
        if q.pred is None:
            return None, self._pending_outputs()
        self.stats.windows_run += 1
        pred = finish_camera(q.pred)
        if not usable(pred):
            lost = q.frames[q.head :]
            self.stats.windows_dropped_nonfinite += 1
            self.stats.frames_dropped_nonfinite += len(lost)
            log.warning("window of frames %d..%d gave non-finite poses/points: dropped (%d frames), memory kept",
                        q.frames[0].index, q.frames[-1].index, len(lost))
            self._broken = True
            return q.t0, (self._pending_outputs() if q.job.final else [])
        self._state = q.new_state
        self._broken = False
        aligned = self._aligner.align(pred)
        window_index = self._aligner.window_index - 1
        n, overlap, final = len(q.frames), cfg.overlap_size, q.job.final
        keep = n if (final or overlap == 0) else n - overlap
        outs = [_Emit(q.frames[:keep], aligned, q.rgb, 0, window_index, False)]
        tail: list[BufferedFrame] = []
        if final or overlap == 0:
            self._pending = None
        else:
            tail = q.frames[n - overlap :]
            self._pending = (tail, aligned.frames(n - overlap), q.rgb[n - overlap :], window_index)
            if cfg.provisional_every > 0:
                outs.append(_Emit(tail, aligned, q.rgb, n - overlap, window_index, True))
        self._good_tail = list(tail)
        self._view = CommittedView(self._state, self._aligner.snapshot(), list(tail))
        self.stats.state_bytes = self.state_nbytes()
        return q.t0, outs

    def _w_finish(self, settled: tuple[Optional[float], list[_Emit], Any]) -> list[FrameResult]:
        t0, emits, event = settled
        context = nullcontext()
        if event is not None:
            self._out_stream.wait_event(event)
            context = torch.cuda.stream(self._out_stream)
        with context:
            outs = [self._emit_start(e.frames, e.pred, e.rgb, e.start, e.window_index, e.provisional) for e in emits]
        # The window's tensors (made on the worker's stream) stay referenced until these copies are
        # waited for, so the allocator cannot hand their memory to the next window meanwhile.
        results = [r for o in outs for r in self._emit_finish(o)]
        if t0 is not None:
            self.stats.last_window_s = time.perf_counter() - t0
            self.stats.commit_s_total += self.stats.last_window_s
        return results

    def _w_error(self, job: _Job, err: BaseException) -> list[FrameResult]:
        # As the synchronous path: the window's new frames are lost, the memory and alignment of
        # the last good window are kept, and the stream goes on.
        lost = max(len(job.frames) - job.head, 0)
        self.stats.windows_failed_error += 1
        self.stats.frames_dropped_error += lost
        self._broken = True
        first = job.frames[0].index if job.frames else -1
        last = job.frames[-1].index if job.frames else -1
        msg = f"window of frames {first}..{last} failed ({type(err).__name__}: {err}): its {lost} new frame(s) are dropped"
        log.error(msg)
        self._errors.append(msg)
        if job.final:
            return [r for e in self._pending_outputs() for r in self._emit(e.frames, e.pred, e.rgb, e.start,
                                                                          e.window_index, e.provisional)]
        return []

    def _pending_outputs(self) -> list[_Emit]:
        if self._pending is None:
            return []
        frames, pred, rgb, window_index = self._pending
        self._pending = None
        return [_Emit(frames, pred, rgb, 0, window_index, False)]
