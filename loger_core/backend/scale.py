"""Monocular scale along the keyframe chain: each step's length from the ratio to the previous step
(the shared keyframe's points triangulated by both) fused with the network's depth (a 1D Kalman
filter in log scale: the chain is precise step to step, the network stops it drifting over the run)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["ScaleChain", "log_ratio_stats"]


def log_ratio_stats(num: np.ndarray, den: np.ndarray, min_count: int = 8) -> Optional[tuple[float, float]]:
    """(median, standard error) of log(num / den) over the finite positive pairs, or None with fewer
    than ``min_count``; the standard error comes from the median absolute deviation (robust to outliers)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    ok = np.isfinite(num) & np.isfinite(den) & (num > 0) & (den > 0)
    if int(ok.sum()) < min_count:
        return None
    lr = np.log(num[ok] / den[ok])
    med = float(np.median(lr))
    mad = 1.4826 * float(np.median(np.abs(lr - med)))
    return med, mad / math.sqrt(lr.size)


@dataclass
class ScaleChain:
    """Log-scale filter over consecutive steps.

    ``update(ratio, network)`` takes the measured log ratio of this step to the previous one
    (value, sigma) and the network's log step length (value, sigma), either may be None, and returns
    the step length in map units.
    """

    chain_floor: float = 0.01  # the smallest sigma a ratio is trusted with
    network_sigma: float = 0.5
    log_s: Optional[float] = None
    var: float = 0.0
    steps: int = 0
    ratio_used: int = 0
    network_used: int = 0

    def update(self, ratio: Optional[tuple[float, float]], network: Optional[tuple[float, float]]) -> float:
        if ratio is not None and not all(math.isfinite(v) for v in ratio):
            ratio = None
        if network is not None and not all(math.isfinite(v) for v in network):
            network = None
        if self.log_s is not None and ratio is not None:
            self.log_s = self.log_s + ratio[0]
            self.var = self.var + max(ratio[1], self.chain_floor) ** 2
            self.ratio_used += 1
        elif self.log_s is not None:
            # No shared points: the step length is unknown apart from the network.
            self.var = self.var + 1.0
        if network is not None:
            r = max(network[1], self.network_sigma) ** 2  # the caller may pass a larger sigma
            if self.log_s is None:
                self.log_s, self.var = network[0], r
            else:
                gain = self.var / (self.var + r)
                self.log_s = self.log_s + gain * (network[0] - self.log_s)
                self.var = (1.0 - gain) * self.var
            self.network_used += 1
        if self.log_s is None:
            self.log_s, self.var = 0.0, 1.0
        self.steps += 1
        return math.exp(self.log_s)

    def reset(self, log_s: float, sigma: float) -> float:
        """Take a step length measured directly (log, sigma) as the new state; returns it."""
        self.log_s, self.var = float(log_s), float(sigma) ** 2
        self.steps += 1
        self.network_used += 1
        return math.exp(self.log_s)

    def state(self) -> dict:
        return {"log_s": self.log_s, "var": self.var, "steps": self.steps, "ratio_used": self.ratio_used,
                "network_used": self.network_used}

    def restore(self, state: dict) -> None:
        self.log_s = state["log_s"]
        self.var = float(state["var"])
        self.steps = int(state["steps"])
        self.ratio_used = int(state["ratio_used"])
        self.network_used = int(state["network_used"])
