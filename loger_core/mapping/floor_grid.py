"""The floor frame for inputs without TF (image folders, videos): RANSAC for the floor plane under
the cameras (:func:`estimate_ground_frame`, ``T_world_ground`` (4, 4)) and an occupancy grid built
in that frame (:class:`FloorGridBuilder`). Pure numpy.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .occupancy_grid import GridConfig, OccupancyGrid2D, spread_indices

__all__ = ["FloorGridBuilder", "estimate_ground_frame"]


def estimate_ground_frame(points: np.ndarray, camera_positions: np.ndarray, camera_up: np.ndarray,
                          max_tilt_deg: float = 35.0, inlier_m: Optional[float] = None,
                          iterations: int = 300, seed: int = 0) -> Optional[np.ndarray]:
    """Find the floor under the cameras when no TF says where "up" is (image folders, videos).

    RANSAC for the plane with most inliers among ``points (N, 3)`` below the cameras whose normal
    is within ``max_tilt_deg`` of the mean ``camera_up (M, 3)`` (the cameras' image-up axis,
    ``-y`` of an OpenCV camera), with every camera above it.

    Returns ``T_world_ground (4, 4)``: z = the floor's normal pointing to the cameras, origin = the
    foot of the first camera on the floor, x = a horizontal direction (fixed rule, not the view
    direction). None when no such plane holds at least 5% of those points.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    cams = np.asarray(camera_positions, dtype=np.float64).reshape(-1, 3)
    up = np.asarray(camera_up, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    if len(cams) == 0 or not np.all(np.isfinite(up)) or np.linalg.norm(up) == 0:
        return None
    up /= np.linalg.norm(up)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    below = pts[(pts - cams.mean(axis=0)) @ up < 0]
    if len(below) < 50:
        return None
    rng = np.random.default_rng(seed)
    if len(below) > 20000:
        below = below[rng.choice(len(below), 20000, replace=False)]
    spread = np.percentile(below, 95, axis=0) - np.percentile(below, 5, axis=0)
    tol = inlier_m if inlier_m is not None else max(1e-3, 0.01 * float(np.linalg.norm(spread)))
    cos_max = math.cos(math.radians(max_tilt_deg))
    best, best_count = None, int(0.05 * len(below))
    tri = rng.integers(0, len(below), size=(iterations, 3))
    for a, b, c in tri:
        n = np.cross(below[b] - below[a], below[c] - below[a])
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n /= norm
        if n @ up < 0:
            n = -n
        if n @ up < cos_max:
            continue
        offset = n @ below[a]
        if np.any(cams @ n - offset <= 0):  # every camera must be above the floor
            continue
        count = int((np.abs(below @ n - offset) < tol).sum())
        if count > best_count:
            best, best_count = (n, offset), count
    if best is None:
        return None
    n, offset = best
    inliers = below[np.abs(below @ n - offset) < tol]
    # Refine with least squares on the inliers (normal = smallest singular vector).
    centre = inliers.mean(axis=0)
    normal = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    if normal @ n < 0:
        normal = -normal
    offset = normal @ centre
    x = np.cross(np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0]), normal)
    x /= np.linalg.norm(x)
    y = np.cross(normal, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = x, y, normal
    T[:3, 3] = cams[0] - (cams[0] @ normal - offset) * normal
    return T


class FloorGridBuilder:
    """An occupancy grid for inputs without TF (image folders, videos): the floor found in the first
    frames (:func:`estimate_ground_frame`) defines "up" and height 0.

    Frames are buffered (at most ``max_buffered`` of them) until the floor is found, then inserted
    in order; later frames go straight in. The grid lives in the floor frame ``ground``:
    ``T_world_ground`` maps it to the reconstruction's world frame. Points are in the caller's
    units (metres when the scale is metric).
    """

    def __init__(self, config: Optional[GridConfig] = None, min_frames: int = 8, max_buffered: int = 256) -> None:
        self.grid = OccupancyGrid2D(config)
        self.min_frames = min_frames
        self.max_buffered = max_buffered
        self.T_world_ground: Optional[np.ndarray] = None
        self.gave_up = False
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def ready(self) -> bool:
        return self.T_world_ground is not None

    def add(self, points_world: np.ndarray, T_world_cam: np.ndarray) -> None:
        """One committed frame: ``points_world (N, 3)``, camera pose ``T_world_cam (4, 4)`` (OpenCV axes)."""
        if self.gave_up:
            return
        T = np.asarray(T_world_cam, dtype=np.float64)
        if self.ready:
            self._insert(points_world, T)
            return
        self._buffer.append((np.asarray(points_world, dtype=np.float32), T))
        if len(self._buffer) >= self.min_frames and (len(self._buffer) % self.min_frames == 0
                                                     or len(self._buffer) >= self.max_buffered):
            self._try_floor()
        if not self.ready and len(self._buffer) >= self.max_buffered:
            self.gave_up = True
            self._buffer.clear()

    def finish(self) -> bool:
        """Last attempt at the floor with what is buffered; True when the grid has data."""
        if not self.ready and not self.gave_up and self._buffer:
            self._try_floor()
        return self.ready

    def _try_floor(self) -> None:
        points = np.concatenate([p[spread_indices(len(p), 4000)] for p, _ in self._buffer])
        poses = np.stack([T for _, T in self._buffer])
        found = estimate_ground_frame(points, poses[:, :3, 3], -poses[:, :3, 1])
        if found is None:
            return
        self.T_world_ground = found
        buffered, self._buffer = self._buffer, []
        for points, T in buffered:
            self._insert(points, T)

    def _insert(self, points_world: np.ndarray, T_world_cam: np.ndarray) -> None:
        T_ground_world = np.linalg.inv(self.T_world_ground)
        p = np.asarray(points_world, dtype=np.float64) @ T_ground_world[:3, :3].T + T_ground_world[:3, 3]
        c = T_ground_world[:3, :3] @ T_world_cam[:3, 3] + T_ground_world[:3, 3]
        self.grid.insert(p[:, :2], p[:, 2], c[:2], float(c[2]))

    def to_ground(self, positions_world: np.ndarray) -> np.ndarray:
        """``(N, 3)`` world positions in the floor frame."""
        T = np.linalg.inv(self.T_world_ground)
        return np.asarray(positions_world, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]
