"""A bounded, thread-safe FIFO that drops its OLDEST item when full (or, lossless, never drops).

Why drop-oldest: a mapping node must always work on the newest camera frame; when
inference falls behind, stale frames are the ones worth losing. ``put`` never blocks,
so ROS callbacks that feed the queue never stall the executor.

Lossless (replaying a bag, where every frame is wanted): ``put`` still never blocks, but a full
queue grows instead of evicting; the caller bounds it by pausing the source
(:class:`~loger_core.pipeline.backpressure.BackPressure`).
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Generic, Optional, TypeVar

from loger_core.pipeline.errors import CoreError

__all__ = ["DropOldestQueue"]

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """FIFO of at most ``maxsize`` items.

    Attributes:
        dropped: items evicted because the queue was full (total since creation).
        high_water: the largest length reached.
        lossless: never evict; ``put`` on a full queue appends beyond ``maxsize``.
        overflows: puts that found a lossless queue full (each grew it past ``maxsize``).
    """

    def __init__(self, maxsize: int, lossless: bool = False) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise CoreError(f"queue maxsize {maxsize!r} must be an integer >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.high_water = 0
        self.lossless = bool(lossless)
        self.overflows = 0

    def put(self, item: T) -> Optional[T]:
        """Append ``item``; returns the evicted oldest item when the queue was full, else None
        (always None when lossless)."""
        with self._cond:
            evicted = None
            if len(self._items) >= self.maxsize:
                if self.lossless:
                    self.overflows += 1
                else:
                    evicted = self._items.popleft()
                    self.dropped += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()
            return evicted

    def get(self, timeout: Optional[float] = 0.0) -> Optional[T]:
        """Oldest item, waiting up to ``timeout`` seconds (None = forever); None when empty or closed."""
        with self._cond:
            if not self._items and not self._closed and (timeout is None or timeout > 0):
                self._cond.wait_for(lambda: self._items or self._closed, timeout)
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        """Wake every waiting ``get`` (they return what is left, then None)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Remove every waiting item (not counted as dropped); returns how many."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
