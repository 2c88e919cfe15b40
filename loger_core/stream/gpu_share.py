"""Gives the provisional passes the GPU ahead of committed windows, at block boundaries.

With async windows a committed window (about 0.35 s of GPU work for the full model on an H100) and
the provisional passes (35-75 ms each as CUDA graphs, `bench/pass_cost.py`) share one GPU. Stream
priorities alone leave a pass waiting behind the window: a pass is a chain of thousands of small
dependent kernels, each of which waits for multiprocessors to come free from the window's large
kernels, and the window's Python thread, launching far ahead of the GPU, competes with the pass's
thread for the interpreter.

`GpuShare` makes the sharing explicit and cooperative:

- the thread that computes windows runs inside `bulk()`; at every yield point (the forward
  pre-hook of each transformer block and TTT layer, see `install_yield_points`) it records a CUDA
  event and, once more than `lookahead` blocks are queued on the device, waits for the oldest one,
  so the device never holds more than a few blocks of window work that a pass would have to wait
  behind;
- while a pass runs inside `urgent()`, the bulk thread stops at its next yield point (releasing the
  interpreter) until the pass is done, or at most `max_hold_s` per stop: windows are delayed by
  the passes' time, never starved.

Same kernels, same results: only the order in which the host launches them changes. Measured on an
H100 (`bench/node_latency.py`, full `loger`, 30 fps, passes of 3 anchors + the newest frames): with a
pass every 2 frames the odometry latency p50 was 118 ms on against 689 ms off, every frame 78 / 87 ms;
the passes' own wall time stayed 105-182 ms either way, i.e. mostly their own device time (hence
`provisional_anchors`).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
from torch import nn

__all__ = ["GpuShare", "GpuShareStats", "install_yield_points", "yield_point"]

_local = threading.local()


@dataclass
class GpuShareStats:
    """holds: times the bulk thread stopped for a pass; held_s: its total time stopped;
    hold_timeouts: stops that ended at `max_hold_s` with a pass still running; yield_points:
    yield points passed on the bulk thread."""

    holds: int = 0
    held_s: float = 0.0
    hold_timeouts: int = 0
    yield_points: int = 0


class GpuShare:
    """Cooperative sharing of one device between a bulk thread and urgent work on other threads.

    device: the device whose queue the bulk thread bounds (CUDA); on any other device only the
        stops for urgent work apply.
    lookahead: blocks of bulk work the host may have queued on the device ahead of the GPU.
    max_hold_s: the longest one stop of the bulk thread for urgent work.
    """

    def __init__(self, device: torch.device, lookahead: int = 2, max_hold_s: float = 0.25) -> None:
        if lookahead < 1:
            raise ValueError(f"lookahead must be >= 1, got {lookahead}")
        self.device = torch.device(device)
        self.lookahead = int(lookahead)
        self.max_hold_s = float(max_hold_s)
        self.stats = GpuShareStats()
        # False while there is no urgent work to make room for (no provisional passes): yield
        # points then cost nothing and the bulk thread launches as far ahead as it likes.
        self.active = True
        self._cond = threading.Condition()
        self._urgent = 0
        self._paused = False  # the bulk thread waits at a yield point
        self._queued: deque = deque()

    # ------------------------------------------------------------ urgent side
    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Within it, the bulk thread launches nothing new (after its current block)."""
        with self._cond:
            self._urgent += 1
        try:
            yield
        finally:
            with self._cond:
                self._urgent -= 1
                self._cond.notify_all()

    @property
    def urgent_pending(self) -> bool:
        return self._urgent > 0

    def wait_bulk_paused(self, timeout_s: float) -> bool:
        """Inside `urgent()`: waits up to `timeout_s` until the bulk thread stops at a yield point
        (between two blocks: it launches, allocates and compiles nothing until `urgent()` ends).
        True when it has stopped."""
        with self._cond:
            return self._cond.wait_for(lambda: self._paused, timeout_s)

    # ------------------------------------------------------------ bulk side
    @contextmanager
    def bulk(self) -> Iterator["GpuShare"]:
        """Makes the calling thread this share's bulk thread: `yield_point()` calls on it (the
        model's block hooks) bound its queue and stop for urgent work."""
        previous = getattr(_local, "share", None)
        _local.share = self
        try:
            yield self
        finally:
            _local.share = previous
            self._queued.clear()

    def checkpoint(self) -> None:
        """A yield point of the bulk thread (between two blocks of its work)."""
        if not self.active or (self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
            return  # nothing to make room for; or a CUDA graph is being captured (no waits allowed)
        self.stats.yield_points += 1
        if self.device.type == "cuda":
            # A blocking-sync event: the wait sleeps instead of spinning a core the host needs.
            event = torch.cuda.Event(blocking=True)
            event.record()
            self._queued.append(event)
            if len(self._queued) > self.lookahead:
                self._queued.popleft().synchronize()
        if self._urgent:
            t0 = time.perf_counter()
            with self._cond:
                self._paused = True
                self._cond.notify_all()
                done = self._cond.wait_for(lambda: self._urgent == 0, self.max_hold_s)
                self._paused = False
            self.stats.holds += 1
            self.stats.held_s += time.perf_counter() - t0
            if not done:
                self.stats.hold_timeouts += 1


def yield_point() -> None:
    """Called between blocks of work: a no-op unless this thread runs inside a `GpuShare.bulk()`."""
    share: Optional[GpuShare] = getattr(_local, "share", None)
    if share is not None:
        share.checkpoint()


def _hook(module: nn.Module, args) -> None:
    yield_point()


def install_yield_points(model: nn.Module) -> int:
    """Adds a yield point before every transformer block and TTT layer of `model` (forward
    pre-hooks, outside any compiled region; a no-op on threads outside `bulk()`). Idempotent;
    returns how many modules carry one."""
    from loger_core.model.layers import Block
    from loger_core.model.ttt import FastWeightSwiGLU

    count = 0
    for module in model.modules():
        if isinstance(module, (Block, FastWeightSwiGLU)):
            if not getattr(module, "_loger_yield_point", False):
                module.register_forward_pre_hook(_hook)
                module._loger_yield_point = True
            count += 1
    return count
