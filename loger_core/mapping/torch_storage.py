"""The global voxel map as torch tensors on the model's device (GPU map fusion).

Same voxels, same running means, confidences, counters and eviction policies as
:class:`loger_core.mapping.voxel_map.VoxelMap`, but the whole map lives in tensors on ``device``, so fusing a
frame costs a few kernels instead of CPU work per point. Why: on an H100 host the node's map thread
spent 2.5 s of CPU per 29-frame window (``bench/node_latency.py`` time split) when a window's points
do not merge per voxel (far or noisy geometry: every pixel its own voxel), 2.6x the window period,
and it shares the interpreter with the inference thread.

Why sorted keys instead of a hash table
---------------------------------------
The voxels are kept sorted by their packed key (the packing of ``loger_core.mapping.voxel_map``). A frame's
points are reduced per voxel (``torch.unique``), found in the map by binary search
(``searchsorted``), and its new voxels are merged into the sorted order by computing every entry's
destination (``O(M + U log M)`` gathers, no sort of the map) — operations that run as a few
device-wide kernels on a GPU. On a CPU the numpy hash table of ``VoxelMap`` is faster: that is the
map for CPU runs; this one is meant for CUDA and tested on the CPU for equality with it.

Snapshot order is key order (``VoxelMap``'s is insertion order); values agree to float rounding.
Not thread-safe: one writer.
"""
from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch

from .numpy_storage import NumpyVoxelMap
from .voxel_map import _AXIS_OFFSET, InsertStats, MapConfig, VoxelMap, check_insert_args, pack_voxel_keys, register_storage

__all__ = ["TorchVoxelMap"]

PathLike = Union[str, "os.PathLike[str]"]


class TorchVoxelMap(VoxelMap):
    """The torch storage of :class:`~loger_core.mapping.voxel_map.VoxelMap` (``insert``, ``snapshot``,
    ``hit_counts``, ``last_seen``, ``stats``, ``clear``, ``save_ply``, ``len``) on tensors on ``device``."""

    def __init__(self, cfg: Optional[MapConfig] = None, device: Union[str, torch.device, None] = "cpu", *,
                 storage: Optional[str] = None) -> None:
        self.cfg = cfg if cfg is not None else MapConfig()
        self.device = torch.device(device if device is not None else "cpu")
        self.last_insert: Optional[InsertStats] = None
        self.clear()

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Remove all voxels and reset counters (the config is kept)."""
        dev = self.device
        self._keys = torch.empty(0, dtype=torch.int64, device=dev)
        self._pos = torch.empty((0, 3), dtype=torch.float32, device=dev)
        self._col = torch.empty((0, 3), dtype=torch.float32, device=dev)
        self._conf = torch.empty(0, dtype=torch.float32, device=dev)
        self._count = torch.empty(0, dtype=torch.int64, device=dev)
        self._seen = torch.empty(0, dtype=torch.int64, device=dev)
        self._frame = -1
        self._evicted_total = 0
        self._dropped = {"low_confidence": 0, "non_finite": 0, "out_of_range": 0}
        self._origin: Optional[np.ndarray] = None
        self._origin_given = False

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def _arrays(self) -> tuple[torch.Tensor, ...]:
        return self._keys, self._pos, self._col, self._conf, self._count, self._seen

    def _set_arrays(self, arrays) -> None:
        self._keys, self._pos, self._col, self._conf, self._count, self._seen = arrays

    # ------------------------------------------------------------------ insert
    def insert(
        self,
        points,
        colors,
        confidence,
        sensor_origin: Optional[np.ndarray] = None,
        weights=None,
    ) -> InsertStats:
        """Fuse one frame's points; arguments and drops as :meth:`loger_core.mapping.voxel_map.VoxelMap.insert`
        (numpy arrays or tensors on any device: ``points (N, 3)`` float, ``colors (N, 3) uint8``,
        ``confidence (N,)``, ``weights (N,)`` whole numbers > 0 or None)."""
        pts_np, col_np, conf_np, wts_np, origin = check_insert_args(
            _host(points), _host(colors), _host(confidence), _host(weights), sensor_origin)
        if origin is not None:
            self._origin = origin
            self._origin_given = True
        self._frame += 1
        dev = self.device
        pts = torch.as_tensor(pts_np).to(dev, torch.float32, non_blocking=True)
        col = torch.as_tensor(col_np).to(dev, non_blocking=True)
        conf = torch.as_tensor(conf_np).to(dev, torch.float32, non_blocking=True)
        wts = None if wts_np is None else torch.as_tensor(wts_np).to(dev, torch.float64, non_blocking=True)
        n_input = int(pts.shape[0])

        finite = torch.isfinite(pts).all(dim=1) & torch.isfinite(conf)
        confident = conf >= self.cfg.min_confidence
        vox = torch.floor(pts.double() / self.cfg.voxel_size)
        in_range = ((vox >= -_AXIS_OFFSET) & (vox < _AXIS_OFFSET)).all(dim=1)
        # The three drop counts in one transfer (VoxelMap's order: non-finite, then confidence, then range).
        w = torch.ones(n_input, dtype=torch.float64, device=dev) if wts is None else wts
        keep = finite & confident & in_range
        drops = torch.stack([w[~finite].sum(), w[finite & ~confident].sum(), w[finite & confident & ~in_range].sum()])
        non_finite, low_conf, out_of_range = (int(round(v)) for v in drops.tolist())
        self._dropped["non_finite"] += non_finite
        self._dropped["low_confidence"] += low_conf
        self._dropped["out_of_range"] += out_of_range
        pts, col, conf, vox, w = pts[keep], col[keep], conf[keep], vox[keep].long(), w[keep]
        n_kept = int(pts.shape[0])
        if not self._origin_given and n_kept:
            if wts is None:
                self._origin = pts.double().mean(dim=0).cpu().numpy()
            else:
                self._origin = ((pts.double() * w[:, None]).sum(dim=0) / w.sum()).cpu().numpy()

        stats = InsertStats(frame=self._frame, n_input=n_input, n_kept=n_kept, n_voxels=0, n_new_voxels=0,
                            probes=0, n_evicted=0, rebuilt=False)
        if n_kept:
            self._merge(pts, col, conf, vox, w, stats)
        if len(self) > self.cfg.max_points:
            stats.n_evicted = self._evict()
            stats.rebuilt = True
        self.last_insert = stats
        return stats

    def _merge(self, pts, col, conf, vox, w, stats: InsertStats) -> None:
        """Merges the kept points; ``w (N,) float64`` their weights (ones when none were given)."""
        # Frame-local reduction: one entry per distinct voxel (sorted keys).
        ukeys, inv = torch.unique(pack_voxel_keys(vox), sorted=True, return_inverse=True)
        u = int(ukeys.shape[0])
        sum_pos = torch.zeros((u, 3), dtype=torch.float64, device=pts.device).index_add_(0, inv, pts.double() * w[:, None])
        sum_col = torch.zeros((u, 3), dtype=torch.float64, device=pts.device).index_add_(0, inv, col.double() * w[:, None])
        counts = torch.zeros(u, dtype=torch.float64, device=pts.device).index_add_(0, inv, w).round().long()
        if self.cfg.confidence_reduce == "max":
            batch_conf = torch.full((u,), -torch.inf, dtype=torch.float64, device=pts.device).scatter_reduce_(
                0, inv, conf.double(), reduce="amax")
        else:  # a sum, averaged below
            batch_conf = torch.zeros(u, dtype=torch.float64, device=pts.device).index_add_(0, inv, conf.double() * w)

        slots, n_new = self._insert_keys(ukeys)
        old_n = self._count[slots]
        tot = old_n + counts
        w_old = (old_n.double() / tot.double())[:, None]
        self._pos[slots] = (self._pos[slots].double() * w_old + sum_pos / tot[:, None]).float()
        self._col[slots] = (self._col[slots].double() * w_old + sum_col / tot[:, None]).float()
        if self.cfg.confidence_reduce == "max":
            merged = torch.where(old_n > 0, torch.maximum(self._conf[slots].double(), batch_conf), batch_conf)
        else:
            merged = self._conf[slots].double() * w_old[:, 0] + batch_conf / tot
        self._conf[slots] = merged.float()
        self._count[slots] = tot
        self._seen[slots] = self._frame
        stats.n_voxels = u
        stats.n_new_voxels = n_new

    def _insert_keys(self, ukeys: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Adds the keys of sorted ``ukeys`` that are not in the map (zeroed entries), keeping the
        map sorted; returns every ukey's index in the map and how many were new."""
        keys = self._keys
        n = int(keys.shape[0])
        if n:
            at = torch.searchsorted(keys, ukeys).clamp_(max=n - 1)
            found = keys[at] == ukeys
        else:
            found = torch.zeros_like(ukeys, dtype=torch.bool)
        new = ukeys[~found]
        n_new = int(new.shape[0])
        if n_new:
            # Destinations in the merged order: an old entry moves up by the new keys below it, the
            # j-th new key lands after the old keys below it and the j new keys before it.
            old_dest = torch.arange(n, device=keys.device) + torch.searchsorted(new, keys)
            new_dest = torch.searchsorted(keys, new) + torch.arange(n_new, device=keys.device)
            merged = []
            for arr in self._arrays():
                out = torch.zeros((n + n_new,) + tuple(arr.shape[1:]), dtype=arr.dtype, device=arr.device)
                out[old_dest] = arr
                merged.append(out)
            merged[0][new_dest] = new
            self._set_arrays(merged)
        return torch.searchsorted(self._keys, ukeys), n_new

    # ------------------------------------------------------------------ eviction
    def _evict(self) -> int:
        """Shrink to ``floor(max_points * (1 - evict_headroom))`` voxels by policy (as VoxelMap)."""
        n = len(self)
        target = int(self.cfg.max_points * (1.0 - self.cfg.evict_headroom))
        n_drop = n - target
        origin = torch.as_tensor(self._origin if self._origin is not None else np.zeros(3), dtype=torch.float64,
                                 device=self.device)
        dist2 = ((self._pos.double() - origin) ** 2).sum(dim=1)
        if self.cfg.policy == "drop_far":
            drop = torch.topk(dist2, n_drop, largest=True, sorted=False).indices
        else:
            # Oldest first; among equally old voxels the farthest go first (two stable sorts).
            by_far = torch.sort(dist2, descending=True, stable=True).indices
            drop = by_far[torch.sort(self._seen[by_far], stable=True).indices][:n_drop]
        keep = torch.ones(n, dtype=torch.bool, device=self.device)
        keep[drop] = False
        self._set_arrays([a[keep] for a in self._arrays()])
        self._evicted_total += n_drop
        return n_drop

    # ------------------------------------------------------------------ output
    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``points (M, 3) float32`` voxel means (world frame), ``colors (M, 3) uint8``,
        ``confidence (M,) float32``, on the host, in key order."""
        colors = torch.clamp(torch.round(self._col), 0, 255).to(torch.uint8)
        return _copy_to_host(self._pos), colors.cpu().numpy(), _copy_to_host(self._conf)

    def hit_counts(self) -> np.ndarray:
        """``(M,) int64`` points merged into each voxel, in snapshot order."""
        return _copy_to_host(self._count)

    def last_seen(self) -> np.ndarray:
        """``(M,) int64`` insert index that last touched each voxel, in snapshot order."""
        return _copy_to_host(self._seen)

    def stats(self) -> dict:
        """As :meth:`VoxelMap.stats` (``table_size`` 0: no hash table; ``capacity`` = voxels)."""
        out = {
            "points": len(self),
            "evicted": self._evicted_total,
            "bytes": int(sum(a.numel() * a.element_size() for a in self._arrays())),
            "frames": self._frame + 1,
            "capacity": len(self),
            "table_size": 0,
            "device": str(self.device),
        }
        out.update({f"dropped_{k}": v for k, v in self._dropped.items()})
        return out

    # ------------------------------------------------------------------ conversion
    def to_voxel_map(self) -> NumpyVoxelMap:
        """The same map in the numpy storage (sessions, or a fallback when the device fails)."""
        vmap = NumpyVoxelMap(self.cfg)
        # Voxels with no point yet can only be the remains of an insert that failed half-way.
        arrays = [a.cpu() for a in self._arrays()]
        filled = arrays[4] > 0
        arrays = [a[filled].numpy() for a in arrays]
        n = len(arrays[0])
        if n:
            vmap._grow_storage(n)
            for name, arr in zip(("_keys", "_pos", "_col", "_conf", "_count", "_seen"), arrays):
                getattr(vmap, name)[:n] = arr
            vmap._n = n
            bits = vmap._bits
            while 2 * n > (1 << bits):
                bits += 1
            vmap._rebuild_table(bits)
        vmap._frame = self._frame
        vmap._evicted_total = self._evicted_total
        vmap._dropped = dict(self._dropped)
        vmap._origin = None if self._origin is None else self._origin.copy()
        vmap._origin_given = self._origin_given
        return vmap

    def load_voxel_map(self, vmap: VoxelMap) -> None:
        """Takes over the voxels and counters of ``vmap`` (e.g. a restored session)."""
        n = len(vmap)
        keys = torch.from_numpy(vmap._keys[:n].copy())
        order = torch.argsort(keys)
        arrays = [torch.from_numpy(getattr(vmap, name)[:n].copy())[order].to(self.device)
                  for name in ("_keys", "_pos", "_col", "_conf", "_count", "_seen")]
        self._set_arrays(arrays)
        self._frame = vmap._frame
        self._evicted_total = vmap._evicted_total
        self._dropped = dict(vmap._dropped)
        self._origin = None if vmap._origin is None else np.array(vmap._origin, dtype=np.float64)
        self._origin_given = vmap._origin_given


def _copy_to_host(t: torch.Tensor) -> np.ndarray:
    """A numpy copy (on the CPU ``.cpu()`` returns the map's own memory, which later inserts change)."""
    return t.cpu().numpy() if t.device.type != "cpu" else t.numpy().copy()


def _host(x):
    """numpy view of ``x`` (tensors are copied to the host; they are validated there like arrays)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


register_storage("torch", TorchVoxelMap)
