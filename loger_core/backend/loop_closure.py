"""Loop closure: retrieval of older keyframes by place descriptor, geometric verification (matches +
essential matrix with strict inlier thresholds, scale from the old keyframe's depth), and a
consistency check over consecutive keyframes before any closure reaches the graph. A wrong closure
bends the whole map, so every stage rejects rather than guesses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from loger_core.backend.config import BackendConfig
from loger_core.backend.features import Features, match_features
from loger_core.backend.keyframes import Keyframe
from loger_core.backend.scale import log_ratio_stats
from loger_core.backend.two_view import depth_after, estimate_pnp, estimate_two_view

__all__ = ["LoopCandidate", "verify_loop", "consistent", "rotation_angle_deg"]


@dataclass
class LoopCandidate:
    """A verified loop between an old keyframe ``old`` and the new one ``new``.

    T_old_new: (4, 4) float64 the new keyframe's pose in the old one's frame, translation in the
    old keyframe's map units; scale: the Sim(3) scale of the new keyframe's units in the old one's.
    correction: (4, 4) the implied world pose of ``new`` times the inverse of its current estimate
    (how much the loop would move it); inliers / inlier_ratio of the verification; similarity of retrieval.
    """

    old: int
    new: int
    T_old_new: np.ndarray
    scale: float
    correction: np.ndarray
    inliers: int
    inlier_ratio: float
    similarity: float


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))


def verify_loop(cfg: BackendConfig, old: Keyframe, new_feats: Features, new_K: np.ndarray, new_q: float,
                new_depth: Optional[np.ndarray] = None) -> Optional[tuple[np.ndarray, float, int, float]]:
    """(T_old_new, scale, inliers, inlier_ratio) when ``new_feats`` match keyframe ``old`` well
    enough, else None. The translation's length comes from the old keyframe's network depth at the
    inliers (map units through its ``q``)."""
    pairs = match_features(old.place, new_feats, cfg.ratio)
    if len(pairs) < cfg.loop_min_inliers:
        return None
    tv = estimate_two_view(old.place.uv, new_feats.uv, old.K, new_K, pairs, cfg.ransac_px, cfg.loop_min_inliers)
    if tv is None or tv.inliers < cfg.loop_min_inliers:
        return None
    ratio = tv.inliers / max(len(pairs), 1)
    if ratio < cfg.loop_min_inlier_ratio:
        return None
    pnp = estimate_pnp(old.place.uv, old.depth_place, old.K, new_feats.uv, new_K, pairs, cfg.pnp_px,
                       cfg.loop_min_inliers)
    if pnp is not None and pnp.inliers >= cfg.pnp_min_inlier_fraction * tv.inliers:
        # As for odometry steps: where the old keyframe's network depth explains the matches, PnP
        # against it is the more precise relative pose (the essential matrix was 3 deg off on a
        # revisit one lane over).
        T_new_old = np.eye(4)
        T_new_old[:3, :3] = pnp.R
        T_new_old[:3, 3] = pnp.t * old.q
        pts_pairs = pnp.pairs
        z_old = old.depth_place[pts_pairs[:, 0]].astype(np.float64) * old.q
        z_in_new = depth_after(old.place.uv[pts_pairs[:, 0]], z_old, old.K, T_new_old)
    else:
        net = log_ratio_stats(old.depth_place[tv.pairs[:, 0]], tv.depth_a)
        if net is None:
            return None
        s_old = float(np.exp(net[0])) * old.q  # step length in the old keyframe's map units
        T_new_old = tv.T_b_a(s_old)
        pts_pairs = tv.pairs
        z_in_new = tv.depth_b * s_old
    T_old_new = np.linalg.inv(T_new_old)
    scale = 1.0
    if new_depth is not None:
        # The new keyframe's own map units against the old one's: the same points' depths.
        z_new = log_ratio_stats(z_in_new, new_depth[pts_pairs[:, 1]].astype(np.float64) * new_q)
        if z_new is not None:
            scale = float(np.exp(z_new[0]))
    return T_old_new, scale, tv.inliers, ratio


def consistent(a: LoopCandidate, b: LoopCandidate, span: float, max_deg: float, max_frac: float) -> bool:
    """Two loops agree when the corrections they imply differ by less than ``max_deg`` and
    ``max_frac`` of the loop's span (map units)."""
    D = np.linalg.inv(a.correction) @ b.correction
    return rotation_angle_deg(D) <= max_deg and float(np.linalg.norm(a.correction[:3, 3] - b.correction[:3, 3])) <= max_frac * max(span, 1e-9)
