"""Pluggable metric-scale sources.

The reconstruction lives in the model's scale. A scale source turns per-frame measurements into
one factor `s` (metres per model unit) that the reconstructor applies to every output of a frame
alike: the translation of `T_world_cam`, the depth map and the world points (a similarity about
the world origin, so geometry and trajectory stay consistent).

Estimates are robust: each measuring frame gives one log-ratio sample; the estimate is the median
of the last `history` samples, its uncertainty the median's standard error from their MAD
(1.2533 * 1.4826 * MAD / sqrt(n)). Memory is bounded by `history`.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import ScaleConfig

_MAD_TO_SIGMA = 1.4826
_MEDIAN_EFFICIENCY = 1.2533


@dataclass(frozen=True)
class ScaleEstimate:
    """scale: metres per model unit (1.0 until a measurement arrives). std: its 1-sigma
    uncertainty (0 for 'none'/'fixed', inf while unknown). samples: measurements used.
    valid: False while a measuring source has no measurement yet (model scale is used)."""

    scale: float
    std: float
    samples: int
    source: str
    valid: bool
    frozen: bool = False


@dataclass
class ScaleObservation:
    """What one committed frame offers a scale source (all in the model's aligned world scale).

    pred_depth: (h, w) float32 predicted z-depth; trusted: (h, w) bool confident & finite pixels;
    sensor_depth: (h, w) float32 metres at model resolution or None;
    position: (3,) predicted camera centre; odom_position: (3,) external odometry position or None.
    """

    pred_depth: np.ndarray
    trusted: np.ndarray
    position: np.ndarray
    sensor_depth: Optional[np.ndarray] = None
    odom_position: Optional[np.ndarray] = None


class ScaleSource:
    """Base: model scale (factor 1, exact)."""

    name = "none"

    def __init__(self, cfg: ScaleConfig) -> None:
        self.cfg = cfg

    def observe(self, obs: ScaleObservation) -> None:
        """Takes one committed frame's measurement (a no-op for non-measuring sources)."""

    def estimate(self) -> ScaleEstimate:
        return ScaleEstimate(1.0, 0.0, 0, self.name, True)

    def reset(self) -> None:
        """Forgets all measurements (a new map)."""

    def state_dict(self) -> dict:
        """The measurements so far, JSON-able (mapping sessions)."""
        return {"source": self.name}

    def load_state_dict(self, state: dict) -> None:
        """Restores `state_dict()` of a source of the same kind."""
        if state.get("source") != self.name:
            raise ValueError(f"scale state of source {state.get('source')!r} cannot be loaded into {self.name!r}")


class FixedScale(ScaleSource):
    name = "fixed"

    def estimate(self) -> ScaleEstimate:
        return ScaleEstimate(float(self.cfg.factor), 0.0, 0, self.name, True)


class _RobustRatio(ScaleSource):
    """Median of recent log-ratio samples."""

    def __init__(self, cfg: ScaleConfig) -> None:
        super().__init__(cfg)
        self._log: deque[float] = deque(maxlen=cfg.history)
        self._single_sigma = math.inf  # within-sample spread, for the one-sample case
        self._taken = 0
        self._frozen: Optional[ScaleEstimate] = None

    def reset(self) -> None:
        self._log.clear()
        self._single_sigma = math.inf
        self._taken = 0
        self._frozen = None

    def state_dict(self) -> dict:
        frozen = None if self._frozen is None else [self._frozen.scale, self._frozen.std, self._frozen.samples]
        return {"source": self.name, "log": list(self._log), "single_sigma": self._single_sigma, "taken": self._taken,
                "frozen": frozen}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._log = deque((float(v) for v in state["log"]), maxlen=self.cfg.history)
        self._single_sigma = float(state["single_sigma"])
        self._taken = int(state["taken"])
        f = state["frozen"]
        self._frozen = None if f is None else ScaleEstimate(float(f[0]), float(f[1]), int(f[2]), self.name, True, True)

    def _add(self, log_ratio: float, sigma: float = math.inf) -> None:
        if self._frozen is not None or not math.isfinite(log_ratio):
            return
        self._log.append(log_ratio)
        self._single_sigma = sigma
        self._taken += 1
        if self.cfg.freeze_after and self._taken >= self.cfg.freeze_after:
            est = self.estimate()
            self._frozen = ScaleEstimate(est.scale, est.std, est.samples, self.name, True, frozen=True)

    def estimate(self) -> ScaleEstimate:
        if self._frozen is not None:
            return self._frozen
        n = len(self._log)
        if n == 0:
            return ScaleEstimate(1.0, math.inf, 0, self.name, False)
        logs = np.fromiter(self._log, dtype=np.float64, count=n)
        med = float(np.median(logs))
        if n == 1:
            sigma_log = self._single_sigma
        else:
            mad = float(np.median(np.abs(logs - med)))
            sigma_log = _MEDIAN_EFFICIENCY * _MAD_TO_SIGMA * mad / math.sqrt(n)
        scale = math.exp(med)
        return ScaleEstimate(scale, scale * sigma_log, self._taken, self.name, True)


class DepthRatioScale(_RobustRatio):
    """Metric depth images: per frame, the median of sensor / predicted depth over pixels that are
    valid in both (finite, positive, sensor depth inside `depth_range_m`, prediction trusted)."""

    name = "depth"

    def observe(self, obs: ScaleObservation) -> None:
        if obs.sensor_depth is None:
            return
        lo, hi = self.cfg.depth_range_m
        sensor, pred = obs.sensor_depth, obs.pred_depth
        with np.errstate(invalid="ignore"):
            valid = obs.trusted & np.isfinite(sensor) & (sensor > lo) & (sensor < hi) & np.isfinite(pred) & (pred > 0)
        n = int(np.count_nonzero(valid))
        if n < self.cfg.min_valid_pixels:
            return
        logs = np.log(sensor[valid].astype(np.float64)) - np.log(pred[valid].astype(np.float64))
        med = float(np.median(logs))
        mad = float(np.median(np.abs(logs - med)))
        self._add(med, _MEDIAN_EFFICIENCY * _MAD_TO_SIGMA * mad / math.sqrt(n))


class OdometryScale(_RobustRatio):
    """External odometry: ratio of the odometry's displacement to the predicted camera
    displacement between anchor frames at least `min_displacement_m` apart (odometry metres)."""

    name = "odometry"

    def __init__(self, cfg: ScaleConfig) -> None:
        super().__init__(cfg)
        self._anchor: Optional[tuple[np.ndarray, np.ndarray]] = None

    def reset(self) -> None:
        super().reset()
        self._anchor = None

    def state_dict(self) -> dict:
        anchor = None if self._anchor is None else [self._anchor[0].tolist(), self._anchor[1].tolist()]
        return {**super().state_dict(), "anchor": anchor}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        a = state["anchor"]
        self._anchor = None if a is None else (np.asarray(a[0], dtype=np.float64), np.asarray(a[1], dtype=np.float64))

    def observe(self, obs: ScaleObservation) -> None:
        if obs.odom_position is None or not np.all(np.isfinite(obs.position)):
            return
        odom = np.asarray(obs.odom_position, dtype=np.float64)
        model = np.asarray(obs.position, dtype=np.float64)
        if self._anchor is None:
            self._anchor = (odom, model)
            return
        d_odom = float(np.linalg.norm(odom - self._anchor[0]))
        if d_odom < self.cfg.min_displacement_m:
            return
        d_model = float(np.linalg.norm(model - self._anchor[1]))
        self._anchor = (odom, model)
        if d_model > 1e-12:
            self._add(math.log(d_odom / d_model))


_SOURCES = {"none": ScaleSource, "fixed": FixedScale, "depth": DepthRatioScale, "odometry": OdometryScale}


def make_scale_source(cfg: ScaleConfig) -> ScaleSource:
    return _SOURCES[cfg.source](cfg)
