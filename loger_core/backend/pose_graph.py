"""Keyframe pose graph on GTSAM: Sim(3) nodes when the scale is unobserved (monocular drift includes
scale), SE(3) when it is metric; iSAM2 so each keyframe costs the part of the graph it touches, not
the whole history."""
from __future__ import annotations

import math
from typing import Optional

import gtsam
import numpy as np

__all__ = ["PoseGraph"]


def _rot_sigma(deg: float) -> float:
    return math.radians(deg)


def _orthonormal(R: np.ndarray) -> np.ndarray:
    """The rotation nearest to ``R`` (SVD): poses chained in float32 drift off SO(3), and GTSAM
    takes a matrix as given."""
    U, _, Vt = np.linalg.svd(np.asarray(R, np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


class PoseGraph:
    """Keyframe poses ``T_world_kf`` (4x4; with Sim(3), ``S_world_kf`` maps keyframe-frame points as
    ``s R p + t``) under between-factors.

    Factors take a measured relative transform ``T_a_b`` (b's pose in a, b's points into a) with
    rotation sigma (degrees) and translation sigma (map units); Sim(3) factors add a log-scale sigma.
    """

    def __init__(self, metric: bool, robust_kernel: str = "cauchy", robust_k: float = 1.0) -> None:
        self.metric = metric
        self.robust_kernel = robust_kernel
        self.robust_k = robust_k
        self.isam = self._new_isam()
        # Everything ever added, for a batch re-solve if the incremental one fails.
        self._all_graph = gtsam.NonlinearFactorGraph()
        self._all_values = gtsam.Values()
        self.batch_resolves = 0
        # What was added, in order (sessions rebuild the graph from it): ("node", key, T, anchor) and
        # ("between", a, b, T, rot_deg, trans, scale, log_scale_sigma, loop).
        self.records: list[tuple] = []
        self._graph = gtsam.NonlinearFactorGraph()
        self._values = gtsam.Values()
        self._estimate: Optional[gtsam.Values] = None
        self.nodes = 0
        self.factors = 0
        self.loop_factors = 0

    @staticmethod
    def _new_isam() -> gtsam.ISAM2:
        params = gtsam.ISAM2Params()
        # QR: long chains of precise steps (millimetre sigmas on centimetre steps) make the Cholesky
        # factorisation report an indeterminate system that QR solves (seen on a 400-frame drive).
        params.setFactorization("QR")
        params.setRelinearizeThreshold(0.01)
        params.relinearizeSkip = 1
        return gtsam.ISAM2(params)

    # -- value conversion ------------------------------------------------------------------
    def _value(self, T: np.ndarray, s: float = 1.0):
        if not (np.all(np.isfinite(T)) and math.isfinite(s) and s > 0):
            raise ValueError("pose graph: non-finite transform or scale")
        R = gtsam.Rot3(_orthonormal(T[:3, :3]))
        t = np.asarray(T[:3, 3], np.float64)
        if self.metric:
            return gtsam.Pose3(R, t)
        # GTSAM's Similarity3(R, t, s) maps p to s (R p + t) (its matrix is [R t; 0 1/s]); ours is
        # s R p + t: the translation goes in divided by the scale.
        return gtsam.Similarity3(R, t / float(s), float(s))

    def _noise(self, rot_deg: float, trans: float, log_scale: float, robust: bool):
        sig = [_rot_sigma(rot_deg)] * 3 + [trans] * 3 + ([] if self.metric else [log_scale])
        model = gtsam.noiseModel.Diagonal.Sigmas(np.asarray(sig, np.float64))
        if not robust or self.robust_kernel == "none":
            return model
        kernel = (gtsam.noiseModel.mEstimator.Cauchy.Create(self.robust_k) if self.robust_kernel == "cauchy"
                  else gtsam.noiseModel.mEstimator.Huber.Create(self.robust_k))
        return gtsam.noiseModel.Robust.Create(kernel, model)

    # -- building ---------------------------------------------------------------------------
    def add_node(self, key: int, T_world_kf: np.ndarray, anchor: bool = False) -> None:
        """A keyframe node with its initial pose; ``anchor`` fixes the gauge (the first keyframe)."""
        value = self._value(T_world_kf)
        self._values.insert(key, value)
        self._all_values.insert(key, value)
        self.records.append(("node", int(key), np.array(T_world_kf, np.float64), bool(anchor)))
        if anchor:
            noise = self._noise(1e-2, 1e-3, 1e-3, robust=False)
            prior = (gtsam.PriorFactorPose3 if self.metric else gtsam.PriorFactorSimilarity3)(key, self._value(T_world_kf), noise)
            self._graph.add(prior)
            self._all_graph.add(prior)
            self.factors += 1
        self.nodes += 1

    def add_keyframe(self, key: int, T_world_kf: np.ndarray,
                     factors: list[tuple[int, np.ndarray, float, float, float]]) -> None:
        """A node with its between-factors ``(from_key, T_from_key, rot_deg, trans, log_scale_sigma)``,
        checked before anything is added (a bad value raises ValueError and leaves the graph as it was)."""
        value = self._value(T_world_kf)
        for a, T, rot, trans, ls in factors:
            self._value(T)
            for v in (rot, trans, ls):
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"pose graph: sigma {v!r} of a factor into {key} must be finite and > 0")
        del value
        self.add_node(key, T_world_kf)
        for a, T, rot, trans, ls in factors:
            self.add_between(a, key, T, rot, trans, log_scale_sigma=ls)

    def add_between(self, a: int, b: int, T_a_b: np.ndarray, rot_deg: float, trans: float,
                    scale: float = 1.0, log_scale_sigma: float = 1e-3, loop: bool = False) -> None:
        """Raises ValueError (nothing added) for a non-finite transform or a sigma that is not > 0."""
        for name, v in (("rotation sigma", rot_deg), ("translation sigma", trans), ("scale sigma", log_scale_sigma)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"pose graph: {name} {v!r} between {a} and {b} must be finite and > 0")
        factor_type = gtsam.BetweenFactorPose3 if self.metric else gtsam.BetweenFactorSimilarity3
        meas = self._value(T_a_b, scale)
        factor = factor_type(a, b, meas, self._noise(rot_deg, trans, log_scale_sigma, robust=loop))
        self.records.append(("between", int(a), int(b), np.array(T_a_b, np.float64), float(rot_deg), float(trans),
                             float(scale), float(log_scale_sigma), bool(loop)))
        self._graph.add(factor)
        self._all_graph.add(factor)
        self.factors += 1
        self.loop_factors += int(loop)

    def optimize(self, iterations: int = 1) -> None:
        """Hand the new nodes and factors to iSAM2; extra iterations after a loop closure let it
        relinearise the part the loop moved."""
        try:
            self.isam.update(self._graph, self._values)
            for _ in range(max(0, iterations - 1)):
                self.isam.update()
            self._estimate = self.isam.calculateEstimate()
        except RuntimeError:
            # The incremental solver gave up (ill-conditioned update): solve the whole graph in batch
            # from the last estimate and start a fresh iSAM2 on it; the result is the same optimum.
            initial = gtsam.Values(self._all_values)
            if self._estimate is not None:
                for key in self._estimate.keys():
                    initial.update(key, self._estimate.atSimilarity3(key) if not self.metric else self._estimate.atPose3(key))
            result = gtsam.LevenbergMarquardtOptimizer(self._all_graph, initial).optimize()
            self._estimate = result
            self.batch_resolves += 1
            self.isam = self._new_isam()
            try:
                self.isam.update(self._all_graph, result)
            except RuntimeError:
                # Even a fresh start fails: keep the batch solution; the next update starts over.
                self.isam = self._new_isam()
        finally:
            self._graph = gtsam.NonlinearFactorGraph()
            self._values = gtsam.Values()

    def finalize(self) -> None:
        """Solve the whole graph in batch to convergence from the current estimate (the end of a
        run): the optimum no longer depends on the order iSAM2 saw the factors in, so a run resumed
        from a session ends where an uninterrupted one does."""
        if self._estimate is None or self.nodes == 0:
            return
        if self._graph.size() or self._values.size():
            self.optimize()
        params = gtsam.LevenbergMarquardtParams()
        params.setRelativeErrorTol(1e-12)
        params.setAbsoluteErrorTol(1e-12)
        params.setMaxIterations(100)
        self._estimate = gtsam.LevenbergMarquardtOptimizer(self._all_graph, self._estimate, params).optimize()

    def optimize_from(self, estimate: dict[int, tuple[np.ndarray, float]]) -> None:
        """Optimise what was added (a restored session) starting from a saved ``estimate``
        (key -> (T_world_kf, scale)) instead of the nodes' first values."""
        for key, (T, s) in estimate.items():
            if self._values.exists(key):
                self._values.update(key, self._value(T, s))
        self.optimize()

    # -- reading ----------------------------------------------------------------------------
    def pose(self, key: int) -> tuple[np.ndarray, float]:
        """(T_world_kf (4, 4) float64, scale) of an optimised keyframe."""
        if self._estimate is None or not self._estimate.exists(key):
            raise KeyError(key)
        if self.metric:
            return np.asarray(self._estimate.atPose3(key).matrix(), np.float64), 1.0
        S = self._estimate.atSimilarity3(key)
        T = np.eye(4)
        T[:3, :3] = np.asarray(S.rotation().matrix())
        T[:3, 3] = float(S.scale()) * np.asarray(S.translation()).ravel()  # see _value
        return T, float(S.scale())

    def has(self, key: int) -> bool:
        return self._estimate is not None and self._estimate.exists(key)
