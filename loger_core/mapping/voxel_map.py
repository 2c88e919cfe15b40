"""Global voxel point map fused from per-frame world-frame point clouds: the interface.

Each occupied voxel (edge ``MapConfig.voxel_size`` metres, world frame) keeps the
running mean position and colour of the points that fell into it, a confidence
(max or mean), the number of merged points and the index of the last insert that
touched it. The map is memory-bounded: past ``max_points`` voxels a documented
eviction policy removes voxels in batches.

One map, two storages
---------------------
:class:`VoxelMap` is the interface (``insert``, ``snapshot``, ``hit_counts``, ``last_seen``,
``stats``, ``clear``, ``save_ply``, ``len``) and picks the storage: ``NumpyVoxelMap``
(:mod:`loger_core.mapping.numpy_storage`: a hash table, the CPU map and the reference) or ``TorchVoxelMap``
(:mod:`loger_core.mapping.torch_storage`: sorted keys in tensors on the model's device, for
CUDA). ``VoxelMap(cfg)`` is the numpy storage; ``VoxelMap(cfg, device)`` the numpy storage on
'cpu' and the torch storage elsewhere; ``storage='numpy'|'torch'`` forces one (the torch storage
runs on the CPU too: the tests compare the two there). Both hold the same voxels, means,
confidences, counters and eviction policies; the torch storage's snapshot is in key order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

__all__ = ["MapError", "MapConfig", "InsertStats", "STORAGES", "VoxelMap", "load_ply", "register_storage",
           "voxel_downsample_open3d", "write_ply"]

STORAGES = ("numpy", "torch")
# name -> storage class; filled by the storage modules when loger_core.mapping is imported.
_STORAGE_CLASSES: dict[str, type] = {}


# The built-in storages by name: imported (and so registered) the first time a VoxelMap is built,
# not at package import, so that light users of loger_core.mapping (the grid settings a CLI's
# --help shows) do not pull in torch. A plug-in registry: the storages import this module, not
# the other way round.
_BUILTIN_STORAGE_MODULES = ("loger_core.mapping.numpy_storage", "loger_core.mapping.torch_storage")


def _register_builtin_storages() -> None:
    import importlib

    for name in _BUILTIN_STORAGE_MODULES:
        importlib.import_module(name)


def register_storage(name: str, cls: type) -> None:
    """Make ``cls`` (a :class:`VoxelMap` subclass) the storage ``VoxelMap(..., storage=name)`` builds."""
    _STORAGE_CLASSES[name] = cls

PathLike = Union[str, "os.PathLike[str]"]

POLICIES = ("drop_far", "drop_oldest")
CONFIDENCE_REDUCE = ("max", "mean")

# 21 bits per axis: voxel indices in [-2^20, 2^20) fit in 63 bits, so keys are >= 0 and
# -1 can mark empty table cells. At 5 cm voxels that is +-52 km around the origin.
_AXIS_BITS = 21
_AXIS_OFFSET = 1 << (_AXIS_BITS - 1)
_AXIS_MASK = (1 << _AXIS_BITS) - 1


def pack_voxel_keys(vox):
    """One non-negative int64 key per voxel of ``vox (N, 3)`` int64 indices in [-2^20, 2^20) (numpy
    array or torch tensor: the same bit operations serve both maps)."""
    return ((vox[:, 0] + _AXIS_OFFSET) << (2 * _AXIS_BITS)) | ((vox[:, 1] + _AXIS_OFFSET) << _AXIS_BITS) \
        | (vox[:, 2] + _AXIS_OFFSET)


class MapError(ValueError):
    """Invalid map configuration or insert input (shape, dtype, value)."""


@dataclass
class MapConfig:
    """Voxel map settings.

    Attributes:
        voxel_size: voxel edge in metres (world frame), > 0.
        min_confidence: points with ``confidence < min_confidence`` are dropped. Compared
            in the caller's units: LoGeR emits confidence *logits*, where 0.0 means
            probability 0.5; pass sigmoid probabilities and raise this if preferred.
        max_points: voxel budget; exceeding it triggers eviction.
        policy: 'drop_far' evicts voxels farthest from the latest sensor origin;
            'drop_oldest' evicts voxels whose last update is oldest (ties: farthest).
        evict_headroom: fraction of ``max_points`` freed per eviction (0 < x < 1), so
            an eviction shrinks the map to ``floor(max_points * (1 - evict_headroom))``.
        confidence_reduce: per-voxel confidence as the 'max' or running 'mean' of its
            points' confidences.
    """

    voxel_size: float = 0.05
    min_confidence: float = 0.0
    max_points: int = 2_000_000
    policy: str = "drop_far"
    evict_headroom: float = 0.1
    confidence_reduce: str = "max"

    def __post_init__(self) -> None:
        if not (isinstance(self.voxel_size, (int, float)) and math.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise MapError(f"voxel_size must be a finite number > 0, got {self.voxel_size!r}")
        if not (isinstance(self.min_confidence, (int, float)) and not math.isnan(self.min_confidence)):
            raise MapError(f"min_confidence must be a number, got {self.min_confidence!r}")
        if isinstance(self.max_points, bool) or not isinstance(self.max_points, (int, np.integer)) or self.max_points < 1:
            raise MapError(f"max_points must be an integer >= 1, got {self.max_points!r}")
        if self.policy not in POLICIES:
            raise MapError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if not (isinstance(self.evict_headroom, (int, float)) and 0.0 < self.evict_headroom < 1.0):
            raise MapError(f"evict_headroom must be in (0, 1), got {self.evict_headroom!r}")
        if self.confidence_reduce not in CONFIDENCE_REDUCE:
            raise MapError(f"confidence_reduce must be one of {CONFIDENCE_REDUCE}, got {self.confidence_reduce!r}")


@dataclass
class InsertStats:
    """What one :meth:`VoxelMap.insert` did (for logging and for checking its cost).

    ``probes`` counts hash-table cells examined; ``rebuilt`` is True when the call
    ran one of the amortised map-sized operations (table growth or eviction rebuild).
    """

    frame: int
    n_input: int
    n_kept: int
    n_voxels: int
    n_new_voxels: int
    probes: int
    n_evicted: int
    rebuilt: bool


class VoxelMap:
    """The voxel map's interface; constructing it picks a storage (see the module docstring).

    ``VoxelMap(cfg=None, device=None, *, storage=None)``: ``NumpyVoxelMap`` unless
    ``storage`` is 'torch' or ``device`` is not 'cpu' (then ``TorchVoxelMap`` on ``device``).
    """

    cfg: MapConfig
    last_insert: Optional[InsertStats]

    def __new__(cls, cfg: Optional[MapConfig] = None, device=None, *, storage: Optional[str] = None):
        if cls is VoxelMap:
            _register_builtin_storages()
            if storage is None:
                storage = "numpy" if device is None or str(device) == "cpu" else "torch"
            if storage not in _STORAGE_CLASSES:
                raise MapError(f"storage {storage!r} must be one of {sorted(_STORAGE_CLASSES) or list(STORAGES)}")
            cls = _STORAGE_CLASSES[storage]
        return object.__new__(cls)

    def insert(self, points, colors, confidence, sensor_origin: Optional[np.ndarray] = None,
               weights=None) -> InsertStats:
        """Fuse one frame's world-frame points (see ``NumpyVoxelMap.insert``)."""
        raise NotImplementedError

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``points (M, 3) float32``, ``colors (M, 3) uint8``, ``confidence (M,) float32``."""
        raise NotImplementedError

    def hit_counts(self) -> np.ndarray:
        raise NotImplementedError

    def last_seen(self) -> np.ndarray:
        raise NotImplementedError

    def stats(self) -> dict:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def save_ply(self, path: PathLike) -> None:
        """Write the snapshot as a binary PLY through open3d: float xyz, uchar RGB and a
        float ``confidence`` vertex property (ignored by viewers that do not know it)."""
        write_ply(path, *self.snapshot())


def _check_inputs(points, colors, confidence):
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3 or not np.issubdtype(pts.dtype, np.floating):
        raise MapError(f"points must be a float (N, 3) array, got shape {pts.shape} dtype {pts.dtype}")
    col = np.asarray(colors)
    if col.shape != pts.shape or col.dtype != np.uint8:
        raise MapError(f"colors must be a uint8 {pts.shape} array, got shape {col.shape} dtype {col.dtype}")
    conf = np.asarray(confidence)
    if conf.shape != (len(pts),) or not np.issubdtype(conf.dtype, np.floating):
        raise MapError(
            f"confidence must be a float ({len(pts)},) array, got shape {conf.shape} dtype {conf.dtype}"
        )
    return pts, col, conf

def _check_weights(weights, n: int) -> Optional[np.ndarray]:
    """``(n,) float64`` whole-number weights > 0, or None."""
    if weights is None:
        return None
    w = np.asarray(weights)
    if w.shape != (n,):
        raise MapError(f"weights must be a ({n},) array, got shape {w.shape}")
    if w.dtype == np.bool_ or not (np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)):
        raise MapError(f"weights must be integer or float, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise MapError("weights must be finite")
    if n and not np.all(w > 0):
        raise MapError(f"weights must be > 0, got min {w.min()!r}")
    if not np.all(w == np.floor(w)):
        raise MapError("weights must be whole numbers (the map keeps integer point counts)")
    if n and w.max() > 2.0 ** 31 - 1:
        raise MapError(f"weights must be < 2^31, got max {w.max()!r}")
    return w


def check_insert_args(points, colors, confidence, weights=None, sensor_origin=None):
    """The checked arguments of an insert (raises :class:`MapError`): ``points (N, 3)`` float,
    ``colors (N, 3) uint8``, ``confidence (N,)`` float, ``weights (N,) float64`` or None and the
    sensor origin ``(3,) float64`` or None."""
    pts, col, conf = _check_inputs(points, colors, confidence)
    wts = _check_weights(weights, len(pts))
    origin = None
    if sensor_origin is not None:
        origin = np.asarray(sensor_origin, dtype=np.float64).reshape(-1)
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            raise MapError(f"sensor_origin must be 3 finite numbers, got {sensor_origin!r}")
    return pts, col, conf, wts, origin


def write_ply(path: PathLike, points: np.ndarray, colors: np.ndarray, conf: np.ndarray) -> None:
    """Binary PLY through open3d: ``points (M, 3) float32``, ``colors (M, 3) uint8`` and a float
    ``confidence`` vertex property."""
    o3d = _open3d()
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(points)
    cloud.point.colors = o3d.core.Tensor(colors)
    cloud.point.confidence = o3d.core.Tensor(conf.reshape(-1, 1))
    if not o3d.t.io.write_point_cloud(os.fspath(path), cloud):
        raise MapError(f"open3d could not write PLY to {os.fspath(path)!r}")


def _open3d():
    # Imported lazily: open3d is slow to import and only needed for file I/O.
    import open3d as o3d

    return o3d


def load_ply(path: PathLike) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Read a point cloud PLY through open3d.

    Returns:
        ``points (M, 3) float32``, ``colors (M, 3) uint8`` (zeros if the file has none;
        float colours are taken as [0, 1] if their max is <= 1, else as 0..255) and
        ``confidence (M,) float32`` or None if the file has no ``confidence`` property.
    """
    o3d = _open3d()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MapError(f"PLY file not found: {path!r}")
    cloud = o3d.t.io.read_point_cloud(path)
    if "positions" not in cloud.point:
        raise MapError(f"PLY file {path!r} has no vertex positions")
    points = cloud.point.positions.numpy().astype(np.float32)
    if "colors" in cloud.point:
        raw = cloud.point.colors.numpy()
        if np.issubdtype(raw.dtype, np.floating):
            raw = raw * 255.0 if raw.size and raw.max() <= 1.0 else raw
            colors = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
        else:
            colors = np.clip(raw, 0, 255).astype(np.uint8)
    else:
        colors = np.zeros((len(points), 3), dtype=np.uint8)
    conf = cloud.point.confidence.numpy().reshape(-1).astype(np.float32) if "confidence" in cloud.point else None
    return points, colors, conf


def voxel_downsample_open3d(
    points: np.ndarray, colors: Optional[np.ndarray], voxel_size: float
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """One-shot voxel-grid downsampling with open3d (per-voxel mean position/colour).

    Args:
        points: ``(N, 3)`` float positions; colors: ``(N, 3) uint8`` or None.

    Returns:
        ``points (M, 3) float32`` and ``colors (M, 3) uint8`` (or None).
    """
    if not (math.isfinite(voxel_size) and voxel_size > 0):
        raise MapError(f"voxel_size must be a finite number > 0, got {voxel_size!r}")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise MapError(f"points must be (N, 3), got shape {pts.shape}")
    o3d = _open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != pts.shape or col.dtype != np.uint8:
            raise MapError(f"colors must be a uint8 {pts.shape} array, got shape {col.shape} dtype {col.dtype}")
        cloud.colors = o3d.utility.Vector3dVector(col.astype(np.float64) / 255.0)
    down = cloud.voxel_down_sample(voxel_size)
    out_pts = np.asarray(down.points, dtype=np.float32)
    out_col = None
    if colors is not None:
        out_col = np.clip(np.rint(np.asarray(down.colors) * 255.0), 0, 255).astype(np.uint8)
    return out_pts, out_col
