"""A 2D occupancy grid for Nav2 (:class:`OccupancyGrid2D`), built incrementally from committed
frames by ray casting.

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
    ``grid_files.write_map_server`` writes ``map.pgm`` + ``map.yaml`` that ``nav2_map_server``
    loads unchanged (trinary mode). The floor frame for inputs without TF is ``floor_grid``.
    Pure numpy; no ROS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

__all__ = [
    "FREE",
    "GridConfig",
    "GridError",
    "GridSnapshot",
    "OCCUPIED",
    "OccupancyGrid2D",
    "UNKNOWN",
    "UpdateStats",
    "heights_above_ground",
    "spread_indices",
]

# nav_msgs/OccupancyGrid values.
FREE, OCCUPIED, UNKNOWN = 0, 100, -1


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

        ray_idx = spread_indices(len(xy), cfg.rays_per_frame)
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


def spread_indices(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``range(n)`` (deterministic)."""
    if k <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= k:
        return np.arange(n)
    return np.linspace(0, n - 1, k).astype(np.int64)
