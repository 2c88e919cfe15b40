"""Trajectory accuracy metrics: association, Umeyama alignment, ATE, RPE, scale drift.

All poses are camera-to-world ``T_world_cam (N, 4, 4) float64``; stamps are int ns.
Alignment always maps the *estimate* into the ground-truth frame,
``p_gt ~= s * R @ p_est + t``, so reported errors are in ground-truth units (metres).

Definitions
-----------
* **Association** (:func:`associate`): one-to-one matching of estimate and ground-truth
  stamps with ``|t_est - t_gt| <= max_dt_ns``; candidate pairs are accepted greedily in
  order of increasing time difference, as in the TUM RGB-D benchmark's ``associate.py``.
* **Umeyama alignment** (:func:`umeyama`): closed-form least-squares similarity (or rigid)
  transform between two point sets, S. Umeyama, "Least-squares estimation of
  transformation parameters between two point patterns", IEEE TPAMI 13(4), 1991.
* **ATE** (:func:`compute_ate`): statistics of ``||s R p_est_i + t - p_gt_i||`` over the
  matched frames after alignment ('sim3', 'se3' or 'none').
* **RPE** (:func:`compute_rpe`): for frame pairs ``(i, i + delta)`` the error transform
  ``E_i = (Q_i^-1 Q_{i+delta})^-1 (P_i^-1 P_{i+delta})`` (Q ground truth, P estimate with
  its translations multiplied by the alignment scale); translation error ``||trans(E_i)||``
  and rotation error ``angle(rot(E_i))`` in degrees.
* **Scale drift** (:func:`compute_scale_drift`): see that function's docstring.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Union

import numpy as np

from loger_core.io.trajectory import Trajectory

__all__ = [
    "EvalError",
    "ALIGN_MODES",
    "ATEResult",
    "RPEResult",
    "ScaleDriftResult",
    "associate",
    "associate_trajectories",
    "umeyama",
    "compute_ate",
    "compute_rpe",
    "compute_scale_drift",
    "evaluate",
]

ALIGN_MODES = ("sim3", "se3", "none")
DEFAULT_MAX_DT_NS = 20_000_000  # 20 ms: below one frame period at 30 Hz, like TUM's default
# Umeyama needs three non-collinear-in-general points to fix a rotation; with fewer the
# metrics are not meaningful.
MIN_MATCHED = 3

PosesLike = Union[Trajectory, np.ndarray]


class EvalError(ValueError):
    """Invalid evaluation input: shapes, alignment mode, too few matches, degenerate data."""


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf
    return value


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _finite_or_none(obj.item())
    return _finite_or_none(obj)


@dataclass
class ATEResult:
    """Absolute trajectory error of translations after alignment (metres).

    ``scale`` and ``T_align`` describe the estimate->GT similarity: ``T_align (4, 4)``
    is ``[[s R, t], [0, 1]]`` and maps estimate positions into the GT frame.
    """

    rmse: float
    mean: float
    median: float
    std: float
    min: float
    max: float
    scale: float
    T_align: np.ndarray
    n: int
    align: str

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class RPEResult:
    """Relative pose error over frame pairs ``(i, i + delta_frames)``.

    Translation statistics in metres (GT units), rotation statistics in degrees;
    ``n`` is the number of pairs, ``scale`` the factor applied to estimate translations.
    """

    delta_frames: int
    trans_rmse: float
    trans_mean: float
    trans_median: float
    trans_max: float
    rot_rmse_deg: float
    rot_mean_deg: float
    rot_median_deg: float
    rot_max_deg: float
    n: int
    scale: float

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


@dataclass
class ScaleDriftResult:
    """Per-segment Sim(3) scales and their spread; see :func:`compute_scale_drift`."""

    segment_frames: int
    segment_scales: list = field(default_factory=list)
    ratio_last_first: float = float("nan")
    ratio_max_min: float = float("nan")
    log_scale_std: float = float("nan")
    n_segments: int = 0
    n_skipped: int = 0

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


def _stats(errors: np.ndarray) -> dict:
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mean": float(np.mean(errors)),
        "median": float(np.median(errors)),
        "std": float(np.std(errors)),
        "min": float(np.min(errors)),
        "max": float(np.max(errors)),
    }


def _as_poses(x: PosesLike, name: str) -> np.ndarray:
    arr = np.asarray(x.poses if isinstance(x, Trajectory) else x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise EvalError(f"{name} must be (N, 4, 4) poses, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise EvalError(f"{name} contains non-finite values")
    return arr


def _as_pair(est: PosesLike, gt: PosesLike) -> tuple[np.ndarray, np.ndarray]:
    p_est, p_gt = _as_poses(est, "est"), _as_poses(gt, "gt")
    if len(p_est) != len(p_gt):
        raise EvalError(
            f"est and gt must be associated (same length), got {len(p_est)} and {len(p_gt)}; "
            "use associate_trajectories() first"
        )
    if len(p_est) < MIN_MATCHED:
        raise EvalError(f"need at least {MIN_MATCHED} matched poses, got {len(p_est)}")
    return p_est, p_gt


def _check_align(align: str) -> None:
    if align not in ALIGN_MODES:
        raise EvalError(f"align must be one of {ALIGN_MODES}, got {align!r}")


# --------------------------------------------------------------------------- association


def associate(stamps_est: np.ndarray, stamps_gt: np.ndarray, max_dt_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Match two stamp lists one-to-one within ``max_dt_ns``.

    Candidates are all pairs with ``|t_est - t_gt| <= max_dt_ns`` (found per estimate
    stamp by binary search in the sorted GT stamps, so the cost is
    ``O((N + M) log M + K log K)`` for ``K`` candidates); they are accepted greedily by
    increasing time difference, each stamp used at most once (TUM ``associate.py``
    semantics). Ties break by estimate index, then GT index.

    Args:
        stamps_est: ``(N,) int`` ns, any order.
        stamps_gt: ``(M,) int`` ns, any order.
        max_dt_ns: tolerance in ns, ``>= 0``.

    Returns:
        ``(idx_est, idx_gt)``: ``(K,) int64`` indices into the inputs, ordered by
        increasing estimate stamp.
    """
    if max_dt_ns < 0:
        raise EvalError(f"max_dt_ns must be >= 0, got {max_dt_ns}")
    s_est = np.asarray(stamps_est).astype(np.int64, copy=False).reshape(-1)
    s_gt = np.asarray(stamps_gt).astype(np.int64, copy=False).reshape(-1)
    order_gt = np.argsort(s_gt, kind="stable")
    sorted_gt = s_gt[order_gt]
    lo = np.searchsorted(sorted_gt, s_est - max_dt_ns, side="left")
    hi = np.searchsorted(sorted_gt, s_est + max_dt_ns, side="right")
    counts = hi - lo
    cand_est = np.repeat(np.arange(len(s_est)), counts)
    # Position of each candidate inside its [lo, hi) window, built without a Python loop.
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cand_gt = order_gt[np.repeat(lo, counts) + offsets]
    diff = np.abs(s_est[cand_est] - s_gt[cand_gt])
    order = np.lexsort((cand_gt, cand_est, diff))
    used_est = np.zeros(len(s_est), dtype=bool)
    used_gt = np.zeros(len(s_gt), dtype=bool)
    pairs_est, pairs_gt = [], []
    for k in order:
        i, j = cand_est[k], cand_gt[k]
        if not used_est[i] and not used_gt[j]:
            used_est[i] = used_gt[j] = True
            pairs_est.append(i)
            pairs_gt.append(j)
    idx_est = np.asarray(pairs_est, dtype=np.int64)
    idx_gt = np.asarray(pairs_gt, dtype=np.int64)
    by_time = np.lexsort((idx_est, s_est[idx_est])) if len(idx_est) else idx_est
    return idx_est[by_time], idx_gt[by_time]


def associate_trajectories(
    est: Trajectory, gt: Trajectory, max_dt_ns: int = DEFAULT_MAX_DT_NS
) -> tuple[Trajectory, Trajectory]:
    """Return the matched sub-trajectories (same length, ordered by estimate stamp)."""
    idx_est, idx_gt = associate(est.stamps_ns, gt.stamps_ns, max_dt_ns)
    return (
        Trajectory(est.stamps_ns[idx_est], est.poses[idx_est]),
        Trajectory(gt.stamps_ns[idx_gt], gt.poses[idx_gt]),
    )


# --------------------------------------------------------------------------- alignment


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares ``(s, R, t)`` minimising ``sum_i ||dst_i - (s R src_i + t)||^2``.

    Follows Umeyama (1991): SVD of the cross-covariance ``Sigma = U D V^T``; the sign
    matrix ``S = diag(1, 1, det(U) det(V))`` forces a proper rotation ``R = U S V^T``;
    ``s = trace(D S) / var(src)`` and ``t = mean(dst) - s R mean(src)``.

    Args:
        src: ``(N, 3)`` points to be mapped (estimate).
        dst: ``(N, 3)`` target points (ground truth).
        with_scale: estimate ``s`` (Sim(3)); otherwise ``s = 1`` (SE(3)).

    Returns:
        ``(s, R (3, 3), t (3,))`` as float / float64 arrays.

    Raises:
        EvalError: shape mismatch, fewer than 3 points, or (with scale) all source
            points identical so the scale is undefined.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise EvalError(f"umeyama needs two (N, 3) arrays, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    if n < MIN_MATCHED:
        raise EvalError(f"umeyama needs at least {MIN_MATCHED} points, got {n}")
    mu_src, mu_dst = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - mu_src, dst - mu_dst
    var_src = float(np.mean(np.sum(src_c**2, axis=1)))
    sigma = dst_c.T @ src_c / n
    u, d, vt = np.linalg.svd(sigma)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rot = (u * sign) @ vt
    if with_scale:
        # Relative threshold: a point cloud this tight carries no scale information.
        if var_src <= 1e-24 * max(1.0, float(np.mean(np.sum(src**2, axis=1)))):
            raise EvalError("umeyama: source points are all identical; scale is undefined")
        scale = float(np.dot(d, sign) / var_src)
    else:
        scale = 1.0
    trans = mu_dst - scale * rot @ mu_src
    return scale, rot, trans


def _sim3_matrix(s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = s * rot
    T[:3, 3] = t
    return T


def _align(p_est: np.ndarray, p_gt: np.ndarray, align: str) -> tuple[float, np.ndarray, np.ndarray]:
    _check_align(align)
    if align == "none":
        return 1.0, np.eye(3), np.zeros(3)
    return umeyama(p_est[:, :3, 3], p_gt[:, :3, 3], with_scale=(align == "sim3"))


# --------------------------------------------------------------------------- metrics


def compute_ate(est: PosesLike, gt: PosesLike, align: str = "sim3") -> ATEResult:
    """ATE of associated poses ``est``/``gt`` (``(N, 4, 4)`` arrays or Trajectories).

    Args:
        align: 'sim3' (rotation, translation, scale — for monocular / scale-free
            estimates), 'se3' (rotation, translation) or 'none'.
    """
    p_est, p_gt = _as_pair(est, gt)
    s, rot, t = _align(p_est, p_gt, align)
    aligned = s * p_est[:, :3, 3] @ rot.T + t
    errors = np.linalg.norm(aligned - p_gt[:, :3, 3], axis=1)
    return ATEResult(**_stats(errors), scale=s, T_align=_sim3_matrix(s, rot, t), n=len(errors), align=align)


def _rotation_angle(rots: np.ndarray) -> np.ndarray:
    """Angles (rad) of ``(K, 3, 3)`` rotations; atan2 form stays accurate near 0 and pi."""
    cos = (np.trace(rots, axis1=1, axis2=2) - 1.0) / 2.0
    axis = np.stack(
        [rots[:, 2, 1] - rots[:, 1, 2], rots[:, 0, 2] - rots[:, 2, 0], rots[:, 1, 0] - rots[:, 0, 1]], axis=1
    )
    sin = np.linalg.norm(axis, axis=1) / 2.0
    return np.arctan2(sin, cos)


def _invert_rigid(T: np.ndarray) -> np.ndarray:
    inv = np.zeros_like(T)
    rt = np.transpose(T[:, :3, :3], (0, 2, 1))
    inv[:, :3, :3] = rt
    inv[:, :3, 3] = -np.einsum("nij,nj->ni", rt, T[:, :3, 3])
    inv[:, 3, 3] = 1.0
    return inv


def compute_rpe(est: PosesLike, gt: PosesLike, delta_frames: int = 1, scale: float = 1.0) -> RPEResult:
    """RPE over all overlapping pairs ``(i, i + delta_frames)`` of associated poses.

    Args:
        est, gt: associated ``(N, 4, 4)`` poses (or Trajectories) of equal length.
        delta_frames: frame distance of each pair, ``>= 1``.
        scale: factor applied to estimate translations first (the Sim(3) scale from
            :func:`compute_ate`; rigid alignment does not change relative poses).
    """
    p_est, p_gt = _as_pair(est, gt)
    if int(delta_frames) != delta_frames or delta_frames < 1:
        raise EvalError(f"delta_frames must be an integer >= 1, got {delta_frames}")
    delta_frames = int(delta_frames)
    if delta_frames >= len(p_est):
        raise EvalError(f"delta_frames={delta_frames} leaves no pair among {len(p_est)} poses")
    if not (math.isfinite(scale) and scale > 0):
        raise EvalError(f"scale must be finite and > 0, got {scale}")
    p_est = p_est.copy()
    p_est[:, :3, 3] *= scale
    rel_est = _invert_rigid(p_est[:-delta_frames]) @ p_est[delta_frames:]
    rel_gt = _invert_rigid(p_gt[:-delta_frames]) @ p_gt[delta_frames:]
    err = _invert_rigid(rel_gt) @ rel_est
    t_err = np.linalg.norm(err[:, :3, 3], axis=1)
    r_err = np.degrees(_rotation_angle(err[:, :3, :3]))
    ts, rs = _stats(t_err), _stats(r_err)
    return RPEResult(
        delta_frames=delta_frames,
        trans_rmse=ts["rmse"], trans_mean=ts["mean"], trans_median=ts["median"], trans_max=ts["max"],
        rot_rmse_deg=rs["rmse"], rot_mean_deg=rs["mean"], rot_median_deg=rs["median"], rot_max_deg=rs["max"],
        n=len(t_err), scale=float(scale),
    )


def compute_scale_drift(
    est: PosesLike, gt: PosesLike, segment_frames: int, min_spread_m: float = 0.05
) -> ScaleDriftResult:
    """How much the estimate's metric scale changes along the trajectory.

    The associated poses are cut into consecutive, non-overlapping segments of
    ``segment_frames`` frames (a shorter tail of fewer than ``segment_frames`` frames
    is merged into the last segment). For each segment an independent Sim(3) Umeyama
    alignment estimate->GT gives a scale ``s_k`` (GT metres per estimate unit).
    Segments whose GT positions have an RMS spread below ``min_spread_m`` metres are
    skipped: with the camera nearly still the scale is dominated by noise.

    Reported:
        * ``segment_scales``: the ``s_k`` in time order;
        * ``ratio_last_first = s_last / s_first`` — net drift over the run
          (1 = none; >1 means the estimate shrinks over time relative to GT);
        * ``ratio_max_min = max s_k / min s_k >= 1`` — worst-case scale inconsistency;
        * ``log_scale_std = std(log s_k)`` — typical relative scale variation.
    With fewer than 2 usable segments the three summaries are NaN (``None`` in
    :meth:`ScaleDriftResult.to_dict`). A globally consistent scale (even a wrong one)
    gives 1, 1, 0.
    """
    p_est, p_gt = _as_pair(est, gt)
    if int(segment_frames) != segment_frames or segment_frames < MIN_MATCHED:
        raise EvalError(f"segment_frames must be an integer >= {MIN_MATCHED}, got {segment_frames}")
    segment_frames = int(segment_frames)
    n_seg = max(1, len(p_est) // segment_frames)
    bounds = [k * segment_frames for k in range(n_seg)] + [len(p_est)]
    scales: list[float] = []
    skipped = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        pos_gt = p_gt[a:b, :3, 3]
        spread = float(np.sqrt(np.mean(np.sum((pos_gt - pos_gt.mean(axis=0)) ** 2, axis=1))))
        if spread < min_spread_m:
            skipped += 1
            continue
        try:
            s, _, _ = umeyama(p_est[a:b, :3, 3], pos_gt, with_scale=True)
        except EvalError:
            skipped += 1  # estimate collapsed to a point in this segment
            continue
        scales.append(s)
    result = ScaleDriftResult(segment_frames=segment_frames, segment_scales=scales,
                              n_segments=len(scales), n_skipped=skipped)
    if len(scales) >= 2:
        arr = np.asarray(scales)
        result.ratio_last_first = float(arr[-1] / arr[0])
        result.ratio_max_min = float(arr.max() / arr.min())
        result.log_scale_std = float(np.std(np.log(arr)))
    return result


def evaluate(
    est: Trajectory,
    gt: Trajectory,
    align: str = "sim3",
    max_dt_ns: int = DEFAULT_MAX_DT_NS,
    rpe_delta_frames: int = 1,
    scale_segment_frames: int | None = None,
    min_spread_m: float = 0.05,
) -> dict:
    """Associate ``est`` with ``gt`` and compute ATE, RPE and scale drift.

    Args:
        est, gt: trajectories with int ns stamps; ``est`` poses in any world frame/scale.
        align: 'sim3', 'se3' or 'none' (see :func:`compute_ate`); RPE uses the ATE scale.
        max_dt_ns: association tolerance.
        rpe_delta_frames: RPE frame distance.
        scale_segment_frames: scale-drift segment length in frames; default
            ``max(3, n_matched // 5)`` (five segments).
        min_spread_m: see :func:`compute_scale_drift`.

    Returns:
        JSON-ready dict: ``n_est``, ``n_gt``, ``n_matched``, ``max_dt_ns``, ``align``,
        ``ate``, ``rpe``, ``scale_drift`` (the last three from ``to_dict()``).
    """
    _check_align(align)
    m_est, m_gt = associate_trajectories(est, gt, max_dt_ns)
    if len(m_est) < MIN_MATCHED:
        raise EvalError(
            f"only {len(m_est)} of {len(est)} estimate stamps match ground truth within "
            f"max_dt_ns={max_dt_ns} (need {MIN_MATCHED}); check clocks/units"
        )
    ate = compute_ate(m_est, m_gt, align=align)
    rpe = compute_rpe(m_est, m_gt, delta_frames=rpe_delta_frames, scale=ate.scale)
    seg = scale_segment_frames if scale_segment_frames is not None else max(MIN_MATCHED, len(m_est) // 5)
    drift = compute_scale_drift(m_est, m_gt, segment_frames=seg, min_spread_m=min_spread_m)
    return {
        "n_est": len(est),
        "n_gt": len(gt),
        "n_matched": len(m_est),
        "max_dt_ns": int(max_dt_ns),
        "align": align,
        "ate": ate.to_dict(),
        "rpe": rpe.to_dict(),
        "scale_drift": drift.to_dict(),
    }
