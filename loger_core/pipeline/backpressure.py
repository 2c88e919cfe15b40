"""Back-pressure on a source that can wait (a rosbag2 player): hysteresis on the input queue's depth.

Live, a full input queue drops its oldest frame: the newest frame is the one worth mapping and a
camera cannot be asked to wait. Replaying a bag every frame is wanted and the player can be paused,
so in lossless mode the pipeline never drops a queued frame and this policy tells the caller when to
pause the source (the queue reached ``high_water`` frames) and when to resume it (the queue drained to
``low_water``). Why two marks: one threshold would pause and resume the player on every frame around
it; the gap lets the queue drain a batch between toggles. Why ``high_water`` well below the queue
size: a pause takes effect a service round trip later, and the frames already on their way in that
time still have to fit (the lossless queue grows past its size rather than drop one, but a bounded
queue is the point).

Pure logic, no ROS: the node turns the actions into rosbag2 ``~/pause`` / ``~/resume`` calls.
"""
from __future__ import annotations

import threading
from typing import Optional

from loger_core.pipeline.errors import CoreError

__all__ = ["BackPressure", "PAUSE", "RESUME"]

PAUSE = "pause"
RESUME = "resume"


class BackPressure:
    """Pause at ``high_water`` queued frames, resume at ``low_water`` (``0 <= low_water < high_water``).

    :meth:`update` is called with the queue's depth after every put and every get (from the
    callback and the inference threads: it is thread-safe) and returns the action to take, at most
    once per crossing. A request that failed (no player, service error) is reported with
    :meth:`failed`, which rolls the state back so that the next :meth:`update` asks again.

    Attributes:
        paused: whether the source is (asked to be) paused now.
        pauses / resumes: actions returned so far (failed ones included).
        failures: requests reported failed.
        max_depth: the largest depth seen (what the pause latency costs in queue room).
    """

    def __init__(self, high_water: int, low_water: int) -> None:
        for name, value in (("high_water", high_water), ("low_water", low_water)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise CoreError(f"{name} {value!r} must be an integer")
        if not 0 <= low_water < high_water:
            raise CoreError(f"need 0 <= low_water < high_water, got low_water {low_water}, high_water {high_water}")
        self.high_water = high_water
        self.low_water = low_water
        self.paused = False
        self.pauses = 0
        self.resumes = 0
        self.failures = 0
        self.max_depth = 0
        self._lock = threading.Lock()

    @classmethod
    def for_queue(cls, queue_size: int) -> "BackPressure":
        """Marks for a queue of ``queue_size`` frames: pause at half of it, resume at a quarter.

        Half leaves the other half for the frames in flight while the pause request travels (at
        30 fps and a few ms per round trip, one or two); resuming at a quarter rather than at empty
        keeps the inference thread fed while the player starts again.
        """
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise CoreError(f"queue_size {queue_size!r} must be an integer >= 1")
        high = max(1, queue_size // 2)
        return cls(high, min(queue_size // 4, high - 1))

    def update(self, depth: int) -> Optional[str]:
        """The action for a queue of ``depth`` frames: :data:`PAUSE`, :data:`RESUME` or None."""
        with self._lock:
            self.max_depth = max(self.max_depth, depth)
            if not self.paused and depth >= self.high_water:
                self.paused = True
                self.pauses += 1
                return PAUSE
            if self.paused and depth <= self.low_water:
                self.paused = False
                self.resumes += 1
                return RESUME
            return None

    def failed(self, action: str) -> None:
        """``action`` did not reach the source: forget it, so that the next :meth:`update` that
        still calls for it returns it again (a failed pause is retried while the queue is above
        ``high_water``; a failed resume while it is at or below ``low_water``)."""
        if action not in (PAUSE, RESUME):
            raise CoreError(f"unknown back-pressure action {action!r}")
        with self._lock:
            self.failures += 1
            # Only roll back when the state is still the one the action set (a later action may
            # already have moved it on).
            if action == PAUSE and self.paused:
                self.paused = False
            elif action == RESUME and not self.paused:
                self.paused = True

    def stats(self) -> dict:
        """Counters for diagnostics."""
        with self._lock:
            return {"paused": self.paused, "pauses": self.pauses, "resumes": self.resumes,
                    "failures": self.failures, "max_depth": self.max_depth}
