"""Rates and latencies for diagnostics and benchmarks (bounded memory, thread-safe), and a
throttled logger for repeated warnings."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["LatencySummary", "LatencyStats", "RateMeter", "ThrottledLog", "gpu_memory_mb"]


class RateMeter:
    """Events per second over the last ``window_s`` seconds of a monotonic clock (ns)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 10_000) -> None:
        self.window_ns = int(window_s * 1e9)
        self._times: deque[int] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now_ns: int) -> None:
        with self._lock:
            self._times.append(int(now_ns))
            self.total += 1

    def rate(self, now_ns: int) -> float:
        """Events/s: (events in the window - 1) / (newest - oldest); 0 with fewer than two events."""
        with self._lock:
            while self._times and self._times[0] < now_ns - self.window_ns:
                self._times.popleft()
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) * 1e9 / span if span > 0 else 0.0


@dataclass
class LatencySummary:
    """Latency statistics in milliseconds over the kept samples (NaN when none)."""

    count: int
    last_ms: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float

    def to_dict(self) -> dict:
        return asdict(self)


class LatencyStats:
    """The last ``max_samples`` latencies (ns in, ms out)."""

    def __init__(self, max_samples: int = 2000) -> None:
        self._samples: deque[float] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, latency_ns: int) -> None:
        with self._lock:
            self._samples.append(latency_ns / 1e6)
            self.total += 1

    def samples_ms(self) -> np.ndarray:
        with self._lock:
            return np.array(self._samples, dtype=np.float64)

    def summary(self) -> LatencySummary:
        values = self.samples_ms()
        if values.size == 0:
            nan = float("nan")
            return LatencySummary(0, nan, nan, nan, nan, nan)
        return LatencySummary(
            count=int(values.size),
            last_ms=float(values[-1]),
            mean_ms=float(values.mean()),
            p50_ms=float(np.percentile(values, 50)),
            p95_ms=float(np.percentile(values, 95)),
            max_ms=float(values.max()),
        )


def gpu_memory_mb(device: Optional[str]) -> tuple[float, float]:
    """``(allocated, reserved)`` MiB of torch's CUDA allocator on ``device``; (0, 0) off CUDA."""
    try:
        import torch
    except ImportError:  # the node may run without torch on a machine only replaying results
        return 0.0, 0.0
    if device is None or not str(device).startswith("cuda") or not torch.cuda.is_available():
        return 0.0, 0.0
    dev = torch.device(device)
    return torch.cuda.memory_allocated(dev) / 2**20, torch.cuda.memory_reserved(dev) / 2**20


class ThrottledLog:
    """Logs each key at most once per period (repeated drops would flood the log)."""

    def __init__(self, logger: Any, period_s: float, clock: Callable[[], int]) -> None:
        self._log, self._period_ns, self._clock = logger, int(period_s * 1e9), clock
        self._last: dict[str, int] = {}

    def __call__(self, level: str, key: str, text: str) -> None:
        now = self._clock()
        if key in self._last and now - self._last[key] < self._period_ns:
            return
        self._last[key] = now
        getattr(self._log, level)(text)
