"""Two-view geometry between keyframes: essential matrix by RANSAC, the relative pose it implies,
and the inliers triangulated at unit baseline (their depths carry the step's scale)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

__all__ = ["TwoView", "bearing", "depth_after", "estimate_two_view", "normalize"]


@dataclass
class TwoView:
    """The relative pose of camera b to camera a from matched keypoints.

    R, t: x_b = R @ x_a + t (``T_b_a``), with |t| = 1 (the essential matrix has no scale).
    pairs: (M, 2) int64 inlier index pairs (into a's keypoints, into b's).
    depth_a, depth_b: (M,) float64 z-depths of the inliers in cameras a and b at |t| = 1 (positive).
    parallax_deg: median angle between the inliers' rays once the rotation is taken out.
    inlier_ratio: inliers / matches tried.
    """

    R: np.ndarray
    t: np.ndarray
    pairs: np.ndarray
    depth_a: np.ndarray
    depth_b: np.ndarray
    parallax_deg: float
    inlier_ratio: float

    @property
    def inliers(self) -> int:
        return int(self.pairs.shape[0])

    def T_b_a(self, scale: float) -> np.ndarray:
        """(4, 4) float64 pose of a in b with the translation scaled to ``scale``."""
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t * scale
        return T


def normalize(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N, 2) float64 normalised image coordinates of pixels ``uv`` under intrinsics ``K`` (no distortion)."""
    K = np.asarray(K, np.float64)
    return np.column_stack([(uv[:, 0] - K[0, 2]) / K[0, 0], (uv[:, 1] - K[1, 2]) / K[1, 1]])


def depth_after(uv: np.ndarray, z: np.ndarray, K: np.ndarray, T_b_a: np.ndarray) -> np.ndarray:
    """(N,) z-depths in camera b of pixels ``uv`` (N, 2) of camera a lifted to depth ``z`` (N,)
    and moved by ``T_b_a`` (4, 4)."""
    xa = normalize(uv, K)
    X = np.column_stack([xa * np.asarray(z, np.float64)[:, None], z])
    return (X @ T_b_a[:3, :3].T + T_b_a[:3, 3])[:, 2]


def bearing(xn: np.ndarray) -> np.ndarray:
    """(N, 3) unit rays of normalised coordinates (N, 2)."""
    v = np.column_stack([xn, np.ones(len(xn))])
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def estimate_two_view(uv_a: np.ndarray, uv_b: np.ndarray, K_a: np.ndarray, K_b: np.ndarray, pairs: np.ndarray,
                      ransac_px: float = 1.0, min_inliers: int = 30) -> Optional[TwoView]:
    """The essential-matrix relative pose from ``pairs`` of keypoints ``uv_a`` (N, 2) / ``uv_b``, or
    None when fewer than ``min_inliers`` matches agree (too few matches, no texture, no motion)."""
    if len(pairs) < max(min_inliers, 8):
        return None
    xa = normalize(uv_a[pairs[:, 0]], K_a)
    xb = normalize(uv_b[pairs[:, 1]], K_b)
    f = 0.25 * (K_a[0, 0] + K_a[1, 1] + K_b[0, 0] + K_b[1, 1])
    # USAC_ACCURATE refits E on its inliers (plain RANSAC keeps its best 5-point sample: 0.1-0.5 deg
    # and 1-5 deg of direction error on an easy scene, and that error goes into the scale chain).
    E, mask = cv2.findEssentialMat(xa, xb, np.eye(3), method=cv2.USAC_ACCURATE, prob=0.999, threshold=ransac_px / f)
    if E is None or mask is None:
        return None
    if E.shape[0] > 3:  # several solutions: the first is RANSAC's best
        E = E[:3]
    mask = mask.ravel().astype(np.uint8)
    if int(mask.sum()) < min_inliers:
        return None
    # distanceThresh: points farther than this (in baselines) are dropped from the cheirality vote
    # and come back as zeros; a generous value keeps distant points (a car's road ahead).
    n, R, t, mask2, X = cv2.recoverPose(E, xa, xb, np.eye(3), distanceThresh=1e4, mask=mask.copy())
    good = mask2.ravel() > 0
    if int(good.sum()) < min_inliers:
        return None
    Xa = X[:3, good] / X[3, good]
    t = t.ravel() / max(np.linalg.norm(t), 1e-12)
    Xb = R @ Xa + t[:, None]
    ok = (Xa[2] > 0) & (Xb[2] > 0) & np.all(np.isfinite(Xa), axis=0)
    idx = np.flatnonzero(good)[ok]
    if idx.size < min_inliers:
        return None
    ra = bearing(xa[idx]) @ R.T
    rb = bearing(xb[idx])
    parallax = np.degrees(np.arccos(np.clip(np.sum(ra * rb, axis=1), -1.0, 1.0)))
    return TwoView(R=R, t=t, pairs=pairs[idx], depth_a=Xa[2, ok].astype(np.float64), depth_b=Xb[2, ok].astype(np.float64),
                   parallax_deg=float(np.median(parallax)), inlier_ratio=float(idx.size / len(pairs)))


def relative_rotation_only(uv_a: np.ndarray, uv_b: np.ndarray, K_a: np.ndarray, K_b: np.ndarray,
                           pairs: np.ndarray, min_inliers: int = 30) -> Optional[np.ndarray]:
    """Rotation R (x_b = R x_a) when the cameras barely moved (essential matrix degenerate): the
    best rotation aligning the matched rays (Kabsch), or None with too few matches."""
    if len(pairs) < min_inliers:
        return None
    ra = bearing(normalize(uv_a[pairs[:, 0]], K_a))
    rb = bearing(normalize(uv_b[pairs[:, 1]], K_b))
    U, _, Vt = np.linalg.svd(rb.T @ ra)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


@dataclass
class PnPPose:
    """Camera b's pose from keyframe a's points (a's network depth) and b's keypoints.

    R, t: x_b = R @ x_a + t, in the units of the depth; pairs: (M, 2) inlier index pairs.
    """

    R: np.ndarray
    t: np.ndarray
    pairs: np.ndarray

    @property
    def inliers(self) -> int:
        return int(self.pairs.shape[0])


def estimate_pnp(uv_a: np.ndarray, depth_a: np.ndarray, K_a: np.ndarray, uv_b: np.ndarray, K_b: np.ndarray,
                 pairs: np.ndarray, ransac_px: float = 2.0, min_inliers: int = 30) -> Optional[PnPPose]:
    """PnP by RANSAC of camera b against a's keypoints lifted by a's depth ``depth_a`` (N,) (NaN =
    none), or None with fewer than ``min_inliers`` agreeing."""
    z = depth_a[pairs[:, 0]]
    ok = np.isfinite(z) & (z > 0)
    if int(ok.sum()) < max(min_inliers, 6):
        return None
    p = pairs[ok]
    xa = normalize(uv_a[p[:, 0]], K_a)
    X = np.column_stack([xa * z[ok, None], z[ok]]).astype(np.float64)
    uv = uv_b[p[:, 1]].astype(np.float64)
    good, rvec, tvec, inl = cv2.solvePnPRansac(X, uv, np.asarray(K_b, np.float64), None, iterationsCount=200,
                                               reprojectionError=ransac_px, confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    if not good or inl is None or len(inl) < min_inliers:
        return None
    inl = inl.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(X[inl], uv[inl], np.asarray(K_b, np.float64), None, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return PnPPose(R=R, t=tvec.ravel(), pairs=p[inl])
