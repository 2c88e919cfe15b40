"""A 2D occupancy grid for Nav2, built incrementally from committed frames by ray casting.

Model
    Each cell (edge ``GridConfig.resolution``) keeps a log-odds of being occupied, as octomap
    and Nav2's costmaps do. A frame contributes once per cell (several pixels falling into one
    cell count as one observation, so a close wall does not outvote everything else):

    - **occupied** (``+hit_log_odds``): cells holding an observed point whose height above the
      ground lies in the band ``[min_height, max_height]`` (an obstacle the robot would hit);
    - **free** (``+miss_log_odds``): cells crossed by the part of a camera ray (camera centre ->
      observed point) that lies inside the height band, and cells of observed *ground* points
      (below ``min_height``); a cell that is hit in the same frame is not also freed;
    - **unknown**: cells never observed.

    Points farther than ``max_range`` from the camera neither occupy cells nor free the end of
    their ray (depth is least reliable there); the ray is freed up to ``max_range``. Points above
    ``max_height`` (ceilings, tree tops) free the in-band part of their ray only.

Heights
    The caller gives each point's height above the ground: for the node, the point's z in the
    ``base_frame`` of the frame that observed it minus ``ground_z`` (the ground's z in
    base_frame), see :func:`heights_above_ground`. Heights are affine in position, so the
    height along a ray is the linear interpolation of its end heights (exact clipping to the band).

Cost
    One update touches only cells within ``max_range`` of its cameras: a frame costs
    ``O(points + rays_per_frame * max_range / resolution)`` plus a boolean mask of its bounding
    box (at most ``(2 max_range / resolution)^2`` cells), whatever the size of the map. The
    dense storage grows geometrically (amortised) and never beyond ``max_extent`` around the
    map origin.

Output
    :meth:`OccupancyGrid2D.snapshot` gives the Nav2 values (0 free, 100 occupied, -1 unknown)
    cropped to the observed cells, row 0 = lowest y (``nav_msgs/OccupancyGrid`` order);
    :func:`write_map_server` writes ``map.pgm`` + ``map.yaml`` that ``nav2_map_server`` loads
    unchanged (trinary mode). Pure numpy; no ROS.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional, Union

import numpy as np

__all__ = [
    "FREE",
    "FloorGridBuilder",
    "GridConfig",
    "GridError",
    "GridSnapshot",
    "MAP_SERVER_FREE_THRESH",
    "MAP_SERVER_OCCUPIED_THRESH",
    "OCCUPIED",
    "OccupancyGrid2D",
    "PGM_FREE",
    "PGM_OCCUPIED",
    "PGM_UNKNOWN",
    "UNKNOWN",
    "UpdateStats",
    "estimate_ground_frame",
    "heights_above_ground",
    "render_grid_png",
    "write_map_server",
]

PathLike = Union[str, "os.PathLike[str]"]

# nav_msgs/OccupancyGrid values.
FREE, OCCUPIED, UNKNOWN = 0, 100, -1
# map_server image values (map_saver's trinary output): white-ish free, black occupied, grey unknown.
PGM_FREE, PGM_OCCUPIED, PGM_UNKNOWN = 254, 0, 205
# map_server reads occ = (255 - pixel) / 255 and calls a cell occupied when occ > occupied_thresh,
# free when occ < free_thresh. Grey 205 gives occ = 50/255 = 0.19608: with Nav2's default
# free_thresh 0.25 unknown space would load as FREE, so we write ROS 1's 0.196 (just below it).
MAP_SERVER_OCCUPIED_THRESH = 0.65
MAP_SERVER_FREE_THRESH = 0.196


class GridError(ValueError):
    """Invalid grid configuration or update input."""


@dataclass
class GridConfig:
    """Occupancy grid settings (every field is the node parameter ``grid_<name>``).

    Attributes:
        resolution: cell edge in metres.
        max_extent: the grid never reaches farther than this from the map origin along x or y (m);
            observations beyond are ignored (bounds memory: (2 * max_extent / resolution)^2 cells).
        ground_z: z of the ground in ``base_frame`` (m): 0 when base_frame is on the ground
            (base_footprint), e.g. -0.1 for a base_link at a 10 cm wheel axle.
        min_height: bottom of the obstacle band above the ground (m); lower points are ground.
        max_height: top of the obstacle band above the ground (m), e.g. the robot's height.
        max_range: points farther than this from the camera are not mapped; rays are cut here (m).
        rays_per_frame: free-space rays cast per frame (evenly spread over its points).
        hit_log_odds: log-odds added to a cell occupied in a frame (> 0).
        miss_log_odds: log-odds added to a cell seen free in a frame (< 0).
        min_log_odds: lower clamp (how free a cell can get; limits how long it takes to re-occupy).
        max_log_odds: upper clamp.
    """

    resolution: float = 0.05
    max_extent: float = 100.0
    ground_z: float = 0.0
    min_height: float = 0.1
    max_height: float = 1.5
    max_range: float = 6.0
    rays_per_frame: int = 3000
    hit_log_odds: float = 0.85
    miss_log_odds: float = -0.4
    min_log_odds: float = -2.0
    max_log_odds: float = 3.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in (float, "float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise GridError(f"GridConfig: {f.name} {value!r} must be a finite number")
                setattr(self, f.name, float(value))
        c = self
        if not c.resolution > 0:
            raise GridError(f"GridConfig: resolution {c.resolution} must be > 0")
        checks = [
            (c.max_extent >= c.resolution, f"max_extent {c.max_extent} must be >= resolution {c.resolution}"),
            (c.max_extent / c.resolution <= 2**20,
             f"max_extent {c.max_extent} / resolution {c.resolution} must be <= 2^20 cells"),
            (c.max_height > c.min_height, f"max_height {c.max_height} must be > min_height {c.min_height}"),
            (c.max_range > 0, f"max_range {c.max_range} must be > 0"),
            (isinstance(c.rays_per_frame, int) and not isinstance(c.rays_per_frame, bool) and c.rays_per_frame >= 0,
             f"rays_per_frame {c.rays_per_frame!r} must be an integer >= 0"),
            (c.hit_log_odds > 0, f"hit_log_odds {c.hit_log_odds} must be > 0"),
            (c.miss_log_odds < 0, f"miss_log_odds {c.miss_log_odds} must be < 0"),
            (c.min_log_odds < 0 < c.max_log_odds,
             f"min_log_odds {c.min_log_odds} must be < 0 < max_log_odds {c.max_log_odds}"),
        ]
        for ok, text in checks:
            if not ok:
                raise GridError(f"GridConfig: {text}")

    @property
    def max_samples_per_ray(self) -> int:
        """Upper bound of the cells sampled along one ray."""
        return int(math.ceil(self.max_range / (_STEP * self.resolution))) + 1


# Rays are sampled every _STEP cell edges: below 1 so that a ray crossing a cell diagonally
# still leaves a sample in (nearly) every cell it crosses.
_STEP = 0.5
_GROW_MARGIN = 64  # cells added on each side when the storage grows (plus doubling)


@dataclass
class UpdateStats:
    """What one :meth:`OccupancyGrid2D.insert` did (per frame; summed over a window by callers)."""

    points: int = 0
    rays: int = 0
    samples: int = 0
    occupied_cells: int = 0
    free_cells: int = 0
    cells_touched: int = 0
    outside_extent: int = 0

    def add(self, other: "UpdateStats") -> "UpdateStats":
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self


@dataclass
class GridSnapshot:
    """The grid as Nav2 sees it.

    data: ``(H, W) int8`` with 0 free / 100 occupied / -1 unknown; row 0 is the LOWEST y
    (``nav_msgs/OccupancyGrid`` order), column 0 the lowest x. origin: ``(x, y)`` in the map frame
    of the outer corner of cell (0, 0). An empty grid has shape (0, 0).
    """

    data: np.ndarray
    resolution: float
    origin: tuple[float, float]

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def height(self) -> int:
        return int(self.data.shape[0])

    def counts(self) -> dict[str, int]:
        return {"free": int((self.data == FREE).sum()), "occupied": int((self.data == OCCUPIED).sum()),
                "unknown": int((self.data == UNKNOWN).sum())}

    def value_at(self, x: float, y: float) -> int:
        """Value of the cell holding map point ``(x, y)`` (-1 outside the grid)."""
        col = int(math.floor((x - self.origin[0]) / self.resolution + 1e-9))
        row = int(math.floor((y - self.origin[1]) / self.resolution + 1e-9))
        if 0 <= row < self.height and 0 <= col < self.width:
            return int(self.data[row, col])
        return UNKNOWN


def heights_above_ground(points: np.ndarray, T_map_base: np.ndarray, ground_z: float) -> np.ndarray:
    """Height above the ground of ``points (N, 3)`` (map frame): their z in ``base_frame`` (pose
    ``T_map_base (4, 4)``) minus ``ground_z``; ``(N,) float32``. Measured in the base frame of the
    observing frame, so a tilted or vertically drifting robot still sees its own floor at 0."""
    T = np.asarray(T_map_base, dtype=np.float64)
    up = T[:3, 2]  # base z axis in the map frame
    offset = float(up @ T[:3, 3]) + float(ground_z)
    return (np.asarray(points, dtype=np.float64) @ up - offset).astype(np.float32)


class OccupancyGrid2D:
    """Incremental log-odds occupancy grid in the map frame's xy plane (see the module docstring)."""

    def __init__(self, config: Optional[GridConfig] = None) -> None:
        self.config = config if config is not None else GridConfig()
        self._half = int(math.ceil(self.config.max_extent / self.config.resolution))  # cells each side
        self.clear()

    def clear(self) -> None:
        """Forget every observation."""
        self._log_odds = np.zeros((0, 0), dtype=np.float32)
        self._seen = np.zeros((0, 0), dtype=bool)
        self._x0 = self._y0 = 0  # global cell index of storage [0, 0]
        self.updates = 0
        self.last_stats = UpdateStats()

    def state(self) -> dict:
        """Copies of everything the grid holds: ``log_odds`` (H, W) float32, ``seen`` (H, W) bool,
        ``origin_cell`` (x0, y0) of storage [0, 0] and ``updates`` (for saving a session)."""
        return {"log_odds": self._log_odds.copy(), "seen": self._seen.copy(),
                "origin_cell": (int(self._x0), int(self._y0)), "updates": int(self.updates)}

    def load_state(self, state: dict) -> None:
        """Inverse of `state` (same config); raises GridError on arrays that do not fit."""
        log_odds = np.asarray(state["log_odds"], dtype=np.float32)
        seen = np.asarray(state["seen"], dtype=bool)
        if log_odds.ndim != 2 or log_odds.shape != seen.shape:
            raise GridError(f"grid state arrays of shapes {log_odds.shape} / {seen.shape} do not fit")
        if max(log_odds.shape, default=0) > 2 * self._half + 1:
            raise GridError(f"grid state of {log_odds.shape} cells exceeds max_extent {self.config.max_extent} m")
        self._log_odds, self._seen = log_odds.copy(), seen.copy()
        self._x0, self._y0 = (int(v) for v in state["origin_cell"])
        self.updates = int(state["updates"])

    # ------------------------------------------------------------------ update
    def insert(self, points_xy: np.ndarray, heights: np.ndarray, camera_xy: np.ndarray,
               camera_height: float) -> UpdateStats:
        """Add one frame.

        Args:
            points_xy: ``(N, 2)`` observed points, map frame x, y (m).
            heights: ``(N,)`` their heights above the ground (m), see :func:`heights_above_ground`.
            camera_xy: ``(2,)`` the camera centre, map frame.
            camera_height: the camera centre's height above the ground (m).
        """
        cfg = self.config
        xy = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        h = np.asarray(heights, dtype=np.float64).reshape(-1)
        cam = np.asarray(camera_xy, dtype=np.float64).reshape(-1)
        if len(xy) != len(h):
            raise GridError(f"points_xy has {len(xy)} points but heights has {len(h)}")
        if cam.shape != (2,) or not np.all(np.isfinite(cam)) or not math.isfinite(float(camera_height)):
            raise GridError(f"camera_xy {cam.tolist()} / camera_height {camera_height!r} must be finite, shape (2,) / scalar")
        ok = np.isfinite(xy[:, 0]) & np.isfinite(xy[:, 1]) & np.isfinite(h)
        if not ok.all():
            xy, h = xy[ok], h[ok]
        h0 = float(camera_height)
        stats = UpdateStats(points=len(xy))

        d = xy - cam
        dh = h - h0
        dist = np.sqrt(d[:, 0] ** 2 + d[:, 1] ** 2 + dh * dh)
        reached = dist <= cfg.max_range
        hit_xy = xy[reached & (h >= cfg.min_height) & (h <= cfg.max_height)]
        ground_xy = xy[reached & (h < cfg.min_height)]

        ray_idx = _spread(len(xy), cfg.rays_per_frame)
        stats.rays = len(ray_idx)
        free_xy = self._ray_samples(cam, h0, d[ray_idx], dh[ray_idx], dist[ray_idx])
        stats.samples = len(free_xy)

        # Everything this frame touches lies within max_range of its camera: that box (clipped to the
        # extent) bounds the work and is the only part of the map read or written.
        reach = int(math.ceil(cfg.max_range / cfg.resolution)) + 1
        cx, cy = (int(math.floor(v / cfg.resolution)) for v in cam)
        lo = np.array([max(cx - reach, -self._half), max(cy - reach, -self._half)])
        hi = np.array([min(cx + reach, self._half - 1), min(cy + reach, self._half - 1)])
        if np.any(hi < lo):  # the camera is beyond the extent
            stats.outside_extent = len(hit_xy) + len(free_xy) + len(ground_xy)
            self.updates += 1
            self.last_stats = stats
            return stats
        shape = (int(hi[1] - lo[1] + 1), int(hi[0] - lo[0] + 1))  # (rows = y, cols = x)
        hit = np.zeros(shape, dtype=bool)
        free = np.zeros(shape, dtype=bool)
        stats.outside_extent = sum(_mark(target, pts, lo, cfg.resolution)
                                   for target, pts in ((hit, hit_xy), (free, free_xy), (free, ground_xy)))
        free &= ~hit
        self._ensure(lo, hi)
        rows = slice(int(lo[1] - self._y0), int(hi[1] - self._y0 + 1))
        cols = slice(int(lo[0] - self._x0), int(hi[0] - self._x0 + 1))
        L = self._log_odds[rows, cols]
        L[hit] += cfg.hit_log_odds
        L[free] += cfg.miss_log_odds
        np.clip(L, cfg.min_log_odds, cfg.max_log_odds, out=L)
        self._seen[rows, cols] |= hit | free
        stats.occupied_cells = int(np.count_nonzero(hit))
        stats.free_cells = int(np.count_nonzero(free))
        stats.cells_touched = stats.occupied_cells + stats.free_cells
        self.updates += 1
        self.last_stats = stats
        return stats

    def _ray_samples(self, cam: np.ndarray, h0: float, d: np.ndarray, dh: np.ndarray,
                     dist: np.ndarray) -> np.ndarray:
        """Map xy of samples along the in-band, in-range part of each ray ``(S, 2)``."""
        cfg = self.config
        if len(d) == 0:
            return np.zeros((0, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            t_end = np.where(dist > cfg.max_range, cfg.max_range / dist, 1.0)
            # Height along the ray is h0 + t dh: keep t where it lies in [min_height, max_height].
            ta = (cfg.min_height - h0) / dh
            tb = (cfg.max_height - h0) / dh
        flat = dh == 0
        band_now = cfg.min_height <= h0 <= cfg.max_height
        t_lo = np.where(flat, 0.0 if band_now else 1.0, np.clip(np.minimum(ta, tb), 0.0, None))
        t_hi = np.where(flat, t_end if band_now else 0.0, np.minimum(t_end, np.maximum(ta, tb)))
        length_xy = np.sqrt((d * d).sum(axis=1))
        span = (t_hi - t_lo) * length_xy
        keep = (t_hi > t_lo) & (span > 0)
        if not np.any(keep):
            return np.zeros((0, 2))
        d, t_lo, t_hi, length_xy = d[keep], t_lo[keep], t_hi[keep], length_xy[keep]
        # A segment ending at its point (a ray ending in the band) stops half a step short of it, so
        # that the obstacle's own cell is not counted as seen through.
        t_far = np.maximum(t_lo, t_hi - np.where(t_hi >= 1.0, 0.5 * _STEP * cfg.resolution / length_xy, 0.0))
        start = cam + d * t_lo[:, None]
        end = cam + d * t_far[:, None]
        n = np.ceil((t_far - t_lo) * length_xy / (_STEP * cfg.resolution)).astype(np.int64) + 1
        step = (end - start) / np.maximum(n - 1, 1)[:, None]
        k = np.arange(int(n.sum()), dtype=np.float64) - np.repeat((np.cumsum(n) - n).astype(np.float64), n)
        # Per axis, each ray's start and step repeated over its samples (cheaper than gathering
        # (S, 2) rows by a sample -> ray index; the same arithmetic, so the same cells).
        out = np.empty((2, len(k))).T  # (S, 2) with contiguous columns: `_mark` reads them one by one
        for axis in range(2):
            np.multiply(np.repeat(step[:, axis], n), k, out=out[:, axis])
            out[:, axis] += np.repeat(start[:, axis], n)
        return out

    def _ensure(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Grow the storage to hold global cells ``lo..hi`` (x, y), geometrically, within the extent."""
        H, W = self._log_odds.shape
        x0, y0 = self._x0, self._y0
        if W and lo[0] >= x0 and lo[1] >= y0 and hi[0] < x0 + W and hi[1] < y0 + H:
            return
        if W == 0:
            nx0, ny0, nx1, ny1 = int(lo[0]), int(lo[1]), int(hi[0]) + 1, int(hi[1]) + 1
        else:
            nx0, ny0 = min(x0, int(lo[0])), min(y0, int(lo[1]))
            nx1, ny1 = max(x0 + W, int(hi[0]) + 1), max(y0 + H, int(hi[1]) + 1)
        # Grow by at least the current size on every side that grows (amortised O(1) per cell).
        gx, gy = max(_GROW_MARGIN, W // 2), max(_GROW_MARGIN, H // 2)
        nx0 = max(-self._half, nx0 - (gx if nx0 < x0 or W == 0 else 0))
        ny0 = max(-self._half, ny0 - (gy if ny0 < y0 or W == 0 else 0))
        nx1 = min(self._half, nx1 + (gx if W == 0 or nx1 > x0 + W else 0))
        ny1 = min(self._half, ny1 + (gy if W == 0 or ny1 > y0 + H else 0))
        L = np.zeros((ny1 - ny0, nx1 - nx0), dtype=np.float32)
        seen = np.zeros(L.shape, dtype=bool)
        if W:
            L[y0 - ny0:y0 - ny0 + H, x0 - nx0:x0 - nx0 + W] = self._log_odds
            seen[y0 - ny0:y0 - ny0 + H, x0 - nx0:x0 - nx0 + W] = self._seen
        self._log_odds, self._seen, self._x0, self._y0 = L, seen, nx0, ny0

    # ------------------------------------------------------------------ output
    @property
    def storage_shape(self) -> tuple[int, int]:
        return tuple(self._log_odds.shape)  # type: ignore[return-value]

    def known_cells(self) -> int:
        return int(self._seen.sum())

    def snapshot(self) -> GridSnapshot:
        """Nav2 values cropped to the observed cells (see :class:`GridSnapshot`). Costs the map size."""
        res = self.config.resolution
        if not self._seen.any():
            return GridSnapshot(np.zeros((0, 0), dtype=np.int8), res, (0.0, 0.0))
        rows = np.flatnonzero(self._seen.any(axis=1))
        cols = np.flatnonzero(self._seen.any(axis=0))
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        L = self._log_odds[r0:r1, c0:c1]
        seen = self._seen[r0:r1, c0:c1]
        data = np.full(L.shape, UNKNOWN, dtype=np.int8)
        data[seen & (L > 0)] = OCCUPIED
        data[seen & (L <= 0)] = FREE
        origin = ((self._x0 + int(c0)) * res, (self._y0 + int(r0)) * res)
        return GridSnapshot(data, res, origin)


def _mark(target: np.ndarray, pts: np.ndarray, lo: np.ndarray, resolution: float) -> int:
    """Sets the cells of ``target`` (rows = y, cols = x; cell ``lo`` at [0, 0]) that hold the
    ``(N, 2)`` map xy ``pts``; returns how many points fall outside it."""
    rows, cols = target.shape
    col, row = (np.floor(pts[:, axis] / resolution).astype(np.int64) - lo[axis] for axis in (0, 1))
    # Negative indices wrap to huge unsigned ones: one comparison per axis bounds both sides.
    kept = np.flatnonzero((col.view(np.uint64) < cols) & (row.view(np.uint64) < rows))
    flat = target.reshape(-1)
    assert np.shares_memory(flat, target)  # a C-contiguous mask: the flat view writes through
    flat[row[kept] * cols + col[kept]] = True
    return len(pts) - len(kept)


def _spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)`` (deterministic)."""
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= k:
        return np.arange(n)
    return np.linspace(0, n - 1, k).astype(np.int64)


# ====================================================================== ground frame (no TF)
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
        points = np.concatenate([p[_spread(len(p), 4000)] for p, _ in self._buffer])
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


# ====================================================================== files
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pgm_image(snapshot: GridSnapshot) -> np.ndarray:
    """The map_server image ``(H, W) uint8``: row 0 = HIGHEST y (image top), 254/0/205."""
    img = np.full(snapshot.data.shape, PGM_UNKNOWN, dtype=np.uint8)
    img[snapshot.data == FREE] = PGM_FREE
    img[snapshot.data == OCCUPIED] = PGM_OCCUPIED
    return img[::-1]


def write_map_server(directory: PathLike, snapshot: GridSnapshot, name: str = "map") -> tuple[Path, Path]:
    """Write ``<name>.pgm`` (binary P5) and ``<name>.yaml`` for ``nav2_map_server`` (trinary mode).

    The yaml's ``origin`` is ``[x, y, yaw]`` of the lower-left pixel's corner in the map frame
    (yaw 0: the grid is axis-aligned with the map frame). Both files are written then renamed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if snapshot.width == 0 or snapshot.height == 0:
        raise GridError("the occupancy grid is empty (no frame observed): nothing to save as a map_server map")
    img = pgm_image(snapshot)
    header = f"P5\n# loger_ros occupancy grid, {snapshot.resolution:g} m/cell\n{snapshot.width} {snapshot.height}\n255\n"
    pgm = directory / f"{name}.pgm"
    _atomic_write(pgm, header.encode("ascii") + img.tobytes())
    yaml_text = (
        f"image: {name}.pgm\n"
        "mode: trinary\n"
        f"resolution: {snapshot.resolution!r}\n"
        f"origin: [{round(float(snapshot.origin[0]), 9)!r}, {round(float(snapshot.origin[1]), 9)!r}, 0.0]\n"
        "negate: 0\n"
        f"occupied_thresh: {MAP_SERVER_OCCUPIED_THRESH}\n"
        f"free_thresh: {MAP_SERVER_FREE_THRESH}\n"
    )
    yml = directory / f"{name}.yaml"
    _atomic_write(yml, yaml_text.encode("ascii"))
    return pgm, yml


def render_grid_png(path: PathLike, snapshot: GridSnapshot, trajectory_xy: Optional[np.ndarray] = None,
                    title: str = "occupancy grid", max_pixels: int = 900) -> Path:
    """A picture of the grid (free white, occupied black, unknown grey; +y up) with the trajectory."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6, 6), dpi=max(60, min(150, max_pixels // 6)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    if snapshot.width and snapshot.height:
        shade = np.full(snapshot.data.shape, 0.75)
        shade[snapshot.data == FREE] = 1.0
        shade[snapshot.data == OCCUPIED] = 0.0
        x0, y0 = snapshot.origin
        extent = (x0, x0 + snapshot.width * snapshot.resolution, y0, y0 + snapshot.height * snapshot.resolution)
        ax.imshow(shade, cmap="gray", vmin=0.0, vmax=1.0, origin="lower", extent=extent, interpolation="nearest")
    if trajectory_xy is not None and len(trajectory_xy):
        t = np.asarray(trajectory_xy, dtype=np.float64)
        ax.plot(t[:, 0], t[:, 1], color="tab:red", linewidth=1.2, label="trajectory")
        ax.plot(t[:1, 0], t[:1, 1], "o", color="tab:red", markersize=4)
        ax.legend(loc="upper right", fontsize=8)
    counts = snapshot.counts()
    ax.set_title(f"{title}\n{snapshot.width}x{snapshot.height} cells @ {snapshot.resolution:g} m: "
                 f"{counts['occupied']} occupied, {counts['free']} free", fontsize=9)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    return path
