"""A worker thread that runs completed windows in order, pipelined in three stages.

The caller (`StreamingReconstructor.push`) hands over a window and goes on taking frames and
running provisional passes; the worker runs, for each window in order:

    enqueue(job)    -> queues the window's forward on the device (returns before it finishes)
    settle(queued)  -> waits for it, accepts the memory, aligns, queues the outputs' copies
    finish(settled) -> waits for the copies and builds the host-side results

When the next window is already waiting, its forward is queued between `settle` and `finish`
of the one before, so the device computes window k+1 while the host builds window k's results
(the next forward needs window k's memory, which `settle` decides; nothing is speculative).
With `overlap=False` (a device whose forward runs inside `enqueue`, the CPU) `finish` comes first.
A stage that raises hands the window to `on_error`, whose results (e.g. a pending tail) are
delivered like any others; the worker goes on with the next window.

Back-pressure: at most one window waits behind the one being computed; `submit` blocks beyond.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["WindowStages", "WindowWorker"]

_STOP = object()
_FAILED = object()


@dataclass
class WindowStages:
    """The reconstructor's callbacks, all run on the worker thread (see the module docstring)."""

    enqueue: Callable[[Any], Any]
    settle: Callable[[Any], Any]
    finish: Callable[[Any], list]
    on_error: Callable[[Any, BaseException], list]


class WindowWorker:
    """Runs submitted jobs through `stages` on one daemon thread, in submission order.

    context: entered by the worker thread around all its work (e.g. its CUDA stream).
    """

    def __init__(self, stages: WindowStages, context: Callable[[], AbstractContextManager] = nullcontext,
                 name: str = "loger-windows", overlap: bool = True) -> None:
        # overlap: queue the next window before finishing this one. Only worth it where `enqueue`
        # returns before the forward is done (CUDA); where it computes the whole window (CPU), it
        # would hold this window's results back by one window.
        self.overlap = overlap
        self.stages = stages
        self._context = context
        self._name = name
        self._jobs: "queue.Queue[Any]" = queue.Queue(maxsize=1)
        self._ready: deque = deque()
        self._idle = threading.Condition()
        self._inflight = 0
        self._thread: Optional[threading.Thread] = None

    # ---------------------------------------------------------------- caller side
    def submit(self, job: Any) -> None:
        """Queues `job`; blocks while one job already waits behind the running one."""
        with self._idle:
            self._inflight += 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def drain(self) -> list:
        """Every result delivered so far, in window order (removes them)."""
        out: list = []
        while True:
            try:
                out.extend(self._ready.popleft())
            except IndexError:
                return out

    @property
    def busy(self) -> bool:
        """A submitted job has not finished yet."""
        with self._idle:
            return self._inflight > 0

    def wait_idle(self, timeout_s: Optional[float] = None) -> bool:
        """Blocks until every submitted job finished; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout_s)

    def close(self, timeout_s: Optional[float] = None) -> None:
        """Finishes the queued jobs and ends the thread."""
        if self._thread is not None and self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout_s)
        self._thread = None

    # ---------------------------------------------------------------- worker side
    def _run(self) -> None:
        with self._context():
            current = None  # (job, queued forward) of the next window to settle
            while True:
                if current is None:
                    job = self._jobs.get()
                    if job is _STOP:
                        return
                    current = self._enqueue(job)
                    continue
                job, queued = current
                current = None
                settled = self._guard(job, self.stages.settle, queued)
                if not self.overlap:
                    self._finish(job, settled)
                stop = False
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    nxt = None
                if nxt is _STOP:
                    stop = True
                elif nxt is not None:
                    # The device starts on the next window while this one's results are built.
                    current = self._enqueue(nxt)
                if self.overlap:
                    self._finish(job, settled)
                if stop:
                    return

    def _finish(self, job: Any, settled: Any) -> None:
        if settled is not _FAILED:
            results = self._guard(job, self.stages.finish, settled)
            if results is not _FAILED:
                self._deliver(job, results)

    def _enqueue(self, job: Any):
        queued = self._guard(job, self.stages.enqueue, job)
        return None if queued is _FAILED else (job, queued)

    def _guard(self, job: Any, stage: Callable[[Any], Any], arg: Any) -> Any:
        try:
            return stage(arg)
        except BaseException as err:  # noqa: BLE001 - reported through on_error, the worker goes on
            try:
                results = self.stages.on_error(job, err)
            except BaseException:  # noqa: BLE001
                results = []
            self._deliver(job, results)
            return _FAILED

    def _deliver(self, job: Any, results: list) -> None:
        if results:
            self._ready.append(results)
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()
