"""Top-view plots of trajectories over the fused point map (matplotlib, Agg, headless)."""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loger_core.io.trajectory import Trajectory

__all__ = ["PlotError", "TopView", "TopViewProjection", "plot_top_view", "top_view_axes", "top_view_projection"]

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


def _rotations(traj: Optional[TrajLike]) -> Optional[np.ndarray]:
    """Camera rotations of finite poses, or None for bare positions."""
    if traj is None:
        return None
    poses = traj.poses if isinstance(traj, Trajectory) else np.asarray(traj, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4):
        return None
    poses = poses[np.all(np.isfinite(poses.reshape(len(poses), -1)), axis=1)]
    return poses[:, :3, :3] if len(poses) else None


def top_view_axes(positions: np.ndarray, map_points: Optional[np.ndarray] = None) -> tuple[int, int]:
    """The two world axes with the largest extent, in increasing index order.

    The last resort of :func:`top_view_projection`, which :func:`plot_top_view` uses: the
    widest axes are a side view for a straight path or a map taller than it is wide.

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


# An up direction within this angle of a world axis is taken as that axis, so a z-up world or
# LoGeR's first-camera world (up ~ -y) is drawn in plain world coordinates.
_SNAP_DEG = 1.0
# Camera centres define a plane only when the path spans two directions: a nearly straight path
# (second singular value below this fraction of the first) fits every plane through its line.
_PLANAR_RATIO = 0.15
# The cameras' mean "-y" axis (OpenCV: y down) is a usable up hint only when the cameras roughly
# agree on it (mean of unit vectors at least this long).
_MIN_AXIS_AGREEMENT = 0.3


@dataclass(frozen=True)
class TopViewProjection:
    """How a top view maps world points onto the plot: ``(x, y) = R[:2] @ (p - origin)``.

    ``R``'s rows are the plot's horizontal axis, its vertical axis and ``up`` (all in world
    coordinates); it is a rotation, so the view is from above and never mirrored.
    ``source`` says where ``up`` came from: ``'up'`` or ``'T_world_ground'`` (given by the
    caller), ``'trajectory_plane'`` (plane fitted to the camera centres), ``'camera_axes'``
    (the cameras' mean -y axis), ``'map_floor'`` (largest map plane along the path) or
    ``'widest_axes'`` (the two widest world axes: nothing better was known).
    """

    R: np.ndarray
    origin: np.ndarray
    source: str
    xlabel: str
    ylabel: str

    @property
    def up(self) -> np.ndarray:
        return self.R[2].copy()

    @property
    def axes(self) -> tuple[int, int]:
        """The world axes closest to the plot's horizontal and vertical axes."""
        return int(np.argmax(np.abs(self.R[0]))), int(np.argmax(np.abs(self.R[1])))

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world points -> ``(N, 2)`` plot coordinates."""
        return (np.asarray(points, dtype=np.float64) - self.origin) @ self.R[:2].T


class TopView(tuple):
    """What :func:`plot_top_view` returns: ``(u, v)`` as it always did (now the world axes closest to
    the plot's axes) with the exact :class:`TopViewProjection` as ``.projection``."""

    projection: TopViewProjection

    def __new__(cls, projection: TopViewProjection) -> "TopView":
        obj = super().__new__(cls, projection.axes)
        obj.projection = projection
        return obj


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v)) if v.shape == (3,) else 0.0
    if not np.isfinite(n) or n < 1e-9:
        raise PlotError(f"{what} must be a finite non-zero 3-vector, got {v.tolist()}")
    return v / n


def _basis(up: np.ndarray, source: str) -> TopViewProjection:
    up = _unit(up, "up")
    k = int(np.argmax(np.abs(up)))
    sign = 1.0 if up[k] > 0 else -1.0
    if abs(up[k]) >= np.cos(np.radians(_SNAP_DEG)):
        # The cyclic order (k+1, k+2) is right-handed about +axis k; about -axis k, swap the two.
        a, b = (k + 1) % 3, (k + 2) % 3
        if sign < 0:
            a, b = b, a
        R = np.eye(3)[[a, b, k]]
        R[2] *= sign
        return TopViewProjection(R, np.zeros(3), source, f"world {_AXIS_NAMES[a]} [m]", f"world {_AXIS_NAMES[b]} [m]")
    # Horizontal axis: the world axis farthest from up, laid into the ground plane, so the plot
    # keeps roughly the orientation of the world frame.
    j = int(np.argmin(np.abs(up)))
    e1 = np.eye(3)[j] - up[j] * up
    e1 /= np.linalg.norm(e1)
    R = np.stack([e1, np.cross(up, e1), up])
    return TopViewProjection(R, np.zeros(3), source, "ground plane x [m]", "ground plane y [m]")


def _camera_up(rotations: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if rotations is None or not len(rotations):
        return None
    down = rotations[:, :, 1]
    down = down / np.maximum(np.linalg.norm(down, axis=1, keepdims=True), 1e-12)  # Sim(3)-aligned poses carry scale
    up = -down.mean(axis=0)
    n = float(np.linalg.norm(up))
    return up / n if n >= _MIN_AXIS_AGREEMENT else None


def _orient(n: np.ndarray, cam_up: Optional[np.ndarray], centre: np.ndarray,
            map_points: Optional[np.ndarray]) -> np.ndarray:
    """Choose the sign of a plane normal: the cameras' up, else the map mostly below, else positive."""
    if cam_up is not None and abs(float(n @ cam_up)) > 0.2:
        return n if n @ cam_up > 0 else -n
    if map_points is not None and len(map_points) >= 100:
        # Cameras look more at the floor than at the ceiling, so most of a map lies below them.
        below = float(np.mean((map_points - centre) @ n < 0))
        if abs(below - 0.5) > 0.1:
            return n if below > 0.5 else -n
    k = int(np.argmax(np.abs(n)))
    return n if n[k] > 0 else -n


def _map_floor(map_points: Optional[np.ndarray], centre: np.ndarray, line: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """Up from the largest map plane that runs along the path and lies off it (RANSAC), pointing at the cameras."""
    if map_points is None or len(map_points) < 50:
        return None
    rng = np.random.default_rng(0)
    pts = map_points[_subsample(len(map_points), 20_000)]
    tol = 0.01 * float(np.median(np.linalg.norm(pts - centre, axis=1))) + 1e-9
    best, best_count = None, 0
    for _ in range(300):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        norm = float(np.linalg.norm(n))
        if norm < 1e-12:
            continue
        n /= norm
        if line is not None and abs(float(n @ line)) > np.sin(np.radians(10.0)):
            continue
        height = float((centre - a) @ n)
        if abs(height) < 3 * tol:
            continue
        count = int(np.count_nonzero(np.abs((pts - a) @ n) < tol))
        if count > best_count:
            best, best_count = (n if height > 0 else -n), count
    return best


def top_view_projection(
    positions: np.ndarray,
    rotations: Optional[np.ndarray] = None,
    map_points: Optional[np.ndarray] = None,
    up: Optional[np.ndarray] = None,
    T_world_ground: Optional[np.ndarray] = None,
) -> TopViewProjection:
    """The ground-plane projection of a top view.

    In order: ``T_world_ground`` (plot in that floor frame's x/y), ``up`` (e.g. gravity from the
    camera mount), the plane fitted to the camera centres (SVD; its normal's sign from the cameras'
    -y axis), for a nearly straight path the cameras' mean -y axis (OpenCV: y down) made
    perpendicular to the path, else the largest map plane along the path, else the two widest
    world axes. ``rotations`` are the cameras' ``R_world_cam (N, 3, 3)``.
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if T_world_ground is not None:
        T = np.asarray(T_world_ground, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)) or not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-4) \
                or np.linalg.det(T[:3, :3]) < 0:
            raise PlotError("T_world_ground must be a finite (4, 4) rigid transform")
        return TopViewProjection(T[:3, :3].T.copy(), T[:3, 3].copy(), "T_world_ground", "ground x [m]", "ground y [m]")
    if up is not None:
        return _basis(_unit(up, "up"), "up")
    cam_up = _camera_up(rotations)
    centre = positions.mean(axis=0) if len(positions) else np.zeros(3)
    line = None
    if len(positions) >= 2:
        _, s, vt = np.linalg.svd(positions - centre, full_matrices=True)
        s = np.pad(s, (0, 3 - len(s)))
        if s[0] > 1e-9:
            if len(positions) >= 3 and s[1] >= _PLANAR_RATIO * s[0]:
                return _basis(_orient(vt[2], cam_up, centre, map_points), "trajectory_plane")
            line = vt[0]
    if cam_up is not None:
        along = cam_up - (cam_up @ line) * line if line is not None else cam_up
        if np.linalg.norm(along) > 0.1:
            return _basis(along, "camera_axes")
    floor = _map_floor(map_points, centre, line)
    if floor is not None:
        return _basis(floor, "map_floor")
    u, v = top_view_axes(positions, map_points)
    return _basis(np.cross(np.eye(3)[u], np.eye(3)[v]), "widest_axes")


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
    *,
    up: Optional[np.ndarray] = None,
    T_world_ground: Optional[np.ndarray] = None,
) -> TopView:
    """Draw trajectory (and optional GT and map) seen from above and save a PNG.

    Args:
        path_png: output file.
        est: estimated trajectory: :class:`Trajectory`, ``T_world_cam (N, 4, 4)`` or
            positions ``(N, 3)``, world frame.
        gt: optional ground truth in the *same* world frame (align it first), dashed.
        map_points: optional ``(M, 3)`` world points drawn as a scatter underneath;
            randomly subsampled to ``max_map_points``.
        map_colors: optional ``(M, 3) uint8`` RGB for ``map_points`` (grey if None).
        title: figure title (wrapped to the figure's width).
        up: the world's up direction when the caller knows it (gravity, the camera mount's
            base z axis); the plot shows the plane perpendicular to it.
        T_world_ground: a floor frame (z up) in the world; the plot shows its x/y.

    Without ``up`` or ``T_world_ground`` the ground plane is estimated (see
    :func:`top_view_projection`): a side view drawn as a top view would misrepresent the path.

    Returns:
        :class:`TopView`: ``(u, v)``, the world axes closest to the plot's horizontal/vertical
        axes, with the exact projection as ``.projection``.
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
    proj = top_view_projection(traj_pts, _rotations(est), pts, up=up, T_world_ground=T_world_ground)
    e2 = proj.project(p_est)
    g2 = proj.project(p_gt) if p_gt is not None else None
    m2 = proj.project(pts) if pts is not None else None

    fig = Figure(figsize=tuple(figsize), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if m2 is not None and len(m2):
        color = cols / 255.0 if cols is not None else "0.6"
        ax.scatter(m2[:, 0], m2[:, 1], s=2.0, c=color, linewidths=0, rasterized=True, zorder=1)
    if g2 is not None and len(g2):
        ax.plot(g2[:, 0], g2[:, 1], "--", color="black", lw=1.2, label="ground truth", zorder=2)
    ax.plot(e2[:, 0], e2[:, 1], "-", color="tab:blue", lw=1.5, label="estimate", zorder=3)
    # Start drawn larger and below the end marker so both stay visible on closed loops.
    ax.plot(*e2[0], "o", color="tab:green", ms=11, label="start", zorder=4)
    ax.plot(*e2[-1], "s", color="tab:red", ms=6, label="end", zorder=5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel(proj.xlabel)
    ax.set_ylabel(proj.ylabel)
    if proj.xlabel.startswith("ground plane"):
        # A plane that is not a world axis plane is only meaningful with its up direction.
        ax.text(0.01, 0.01, f"up = ({proj.up[0]:+.2f}, {proj.up[1]:+.2f}, {proj.up[2]:+.2f}) [{proj.source}]",
                transform=ax.transAxes, fontsize="x-small", color="0.3", zorder=6)
    chars = max(20, int(figsize[0] * 72 / (0.6 * 12)))  # about a 12 pt title's characters per line
    ax.set_title("\n".join(textwrap.wrap(title, chars)) if title else title)
    ax.grid(True, lw=0.3, alpha=0.5)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(os.fspath(path_png), dpi=dpi)
    return TopView(proj)
