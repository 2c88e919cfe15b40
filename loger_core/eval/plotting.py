"""Top-view plots of trajectories over the fused point map (matplotlib, Agg, headless)."""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loger_core.io.trajectory import Trajectory

__all__ = ["PlotError", "plot_top_view", "top_view_axes"]

PathLike = Union[str, "os.PathLike[str]"]
TrajLike = Union[Trajectory, np.ndarray]

_AXIS_NAMES = ("x", "y", "z")
# Extents of the map use inner percentiles so a few far outlier points (sky, bad depth)
# cannot decide the viewing plane.
_EXTENT_PERCENTILES = (2.0, 98.0)


class PlotError(ValueError):
    """Invalid plotting input (shape, emptiness, sizes)."""


def _positions(traj: TrajLike, name: str) -> np.ndarray:
    if isinstance(traj, Trajectory):
        arr = traj.positions
    else:
        arr = np.asarray(traj, dtype=np.float64)
        if arr.ndim == 3 and arr.shape[1:] == (4, 4):
            arr = arr[:, :3, 3]
        elif not (arr.ndim == 2 and arr.shape[1] == 3):
            raise PlotError(f"{name} must be a Trajectory, (N, 4, 4) poses or (N, 3) positions, got shape {arr.shape}")
    arr = np.asarray(arr, dtype=np.float64)
    arr = arr[np.all(np.isfinite(arr), axis=1)]
    if len(arr) == 0:
        raise PlotError(f"{name} has no finite poses")
    return arr


def top_view_axes(positions: np.ndarray, map_points: Optional[np.ndarray] = None) -> tuple[int, int]:
    """The two world axes with the largest extent, in increasing index order.

    Camera trajectories and indoor/outdoor maps are much flatter along gravity than
    across the ground, so the two widest axes span the ground plane whatever the world
    frame's up axis is (LoGeR's world frame is the first camera's, so "up" is usually
    -y, but nothing guarantees it).
    """
    extents = np.ptp(positions, axis=0) if len(positions) else np.zeros(3)
    if map_points is not None and len(map_points):
        lo, hi = np.percentile(map_points, _EXTENT_PERCENTILES, axis=0)
        extents = np.maximum(extents, hi - lo)
    drop = int(np.argmin(extents))
    u, v = (a for a in range(3) if a != drop)
    return u, v


def _subsample(n: int, max_n: int) -> np.ndarray:
    if n <= max_n:
        return np.arange(n)
    # Deterministic, spatially unbiased choice so repeated plots are identical.
    return np.sort(np.random.default_rng(0).choice(n, size=max_n, replace=False))


def plot_top_view(
    path_png: PathLike,
    est: TrajLike,
    gt: Optional[TrajLike] = None,
    map_points: Optional[np.ndarray] = None,
    map_colors: Optional[np.ndarray] = None,
    title: str = "Top view",
    max_map_points: int = 100_000,
    figsize: Sequence[float] = (8.0, 8.0),
    dpi: int = 100,
) -> tuple[int, int]:
    """Draw trajectory (and optional GT and map) seen from above and save a PNG.

    Args:
        path_png: output file.
        est: estimated trajectory: :class:`Trajectory`, ``T_world_cam (N, 4, 4)`` or
            positions ``(N, 3)``, world frame.
        gt: optional ground truth in the *same* world frame (align it first), dashed.
        map_points: optional ``(M, 3)`` world points drawn as a scatter underneath;
            randomly subsampled to ``max_map_points``.
        map_colors: optional ``(M, 3) uint8`` RGB for ``map_points`` (grey if None).
        title: figure title.

    Returns:
        ``(u, v)`` indices of the world axes on the plot's horizontal/vertical axes.
    """
    if max_map_points < 1:
        raise PlotError(f"max_map_points must be >= 1, got {max_map_points}")
    p_est = _positions(est, "est")
    p_gt = _positions(gt, "gt") if gt is not None else None
    pts = cols = None
    if map_points is not None:
        pts = np.asarray(map_points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise PlotError(f"map_points must be (M, 3), got shape {pts.shape}")
        if map_colors is not None:
            cols = np.asarray(map_colors)
            if cols.shape != pts.shape or cols.dtype != np.uint8:
                raise PlotError(f"map_colors must be a uint8 {pts.shape} array, got shape {cols.shape} dtype {cols.dtype}")
        finite = np.all(np.isfinite(pts), axis=1)
        idx = _subsample(int(finite.sum()), max_map_points)
        pts = pts[finite][idx]
        cols = cols[finite][idx] if cols is not None else None

    traj_pts = p_est if p_gt is None else np.concatenate([p_est, p_gt])
    u, v = top_view_axes(traj_pts, pts)

    fig = Figure(figsize=tuple(figsize), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if pts is not None and len(pts):
        color = cols / 255.0 if cols is not None else "0.6"
        ax.scatter(pts[:, u], pts[:, v], s=2.0, c=color, linewidths=0, rasterized=True, zorder=1)
    if p_gt is not None and len(p_gt):
        ax.plot(p_gt[:, u], p_gt[:, v], "--", color="black", lw=1.2, label="ground truth", zorder=2)
    ax.plot(p_est[:, u], p_est[:, v], "-", color="tab:blue", lw=1.5, label="estimate", zorder=3)
    # Start drawn larger and below the end marker so both stay visible on closed loops.
    ax.plot(*p_est[0, [u, v]], "o", color="tab:green", ms=11, label="start", zorder=4)
    ax.plot(*p_est[-1, [u, v]], "s", color="tab:red", ms=6, label="end", zorder=5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(f"{_AXIS_NAMES[u]} [m]")
    ax.set_ylabel(f"{_AXIS_NAMES[v]} [m]")
    ax.set_title(title)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(os.fspath(path_png), dpi=dpi)
    return u, v
