"""The numpy storage of :class:`~loger_core.mapping.voxel_map.VoxelMap`: the CPU map and the reference.

Why a vectorised open-addressing hash table
-------------------------------------------
Per-frame insert cost must not grow with the map. Voxel coordinates are packed into one
non-negative ``int64`` key; a power-of-two table (load factor <= 1/2) maps keys to
*slots* of dense struct-of-arrays storage, found by linear probing from a
multiplicative (Fibonacci) hash. Probing runs for the whole batch at once: each round
checks every still-unresolved key with one gather, so the work is ``O(U * probes)``
for ``U`` distinct voxels in the frame, with expected probes O(1) at that load — no
Python loop over voxels (as a ``dict`` would need) and no sort of the map (as
``np.unique`` over map + frame would). Only batch-sized arrays are sorted.
Two map-sized operations exist, both amortised: doubling the table/storage when full
(geometric growth) and rebuilding after an eviction, which frees ``evict_headroom`` of
the budget so that at least that many new voxels arrive before the next one.

Dense slots ``0 .. len(map) - 1`` are always compact, so :meth:`VoxelMap.snapshot` is a
slice copy. Not thread-safe: one writer, snapshots taken from the same thread.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .voxel_map import (
    _AXIS_OFFSET, InsertStats, MapConfig, MapError, VoxelMap, check_insert_args, pack_voxel_keys, register_storage,
)

__all__ = ["NumpyVoxelMap"]

_EMPTY = np.int64(-1)
_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd: spreads structured keys
_MIN_TABLE_BITS = 10
_MIN_CAPACITY = 1024


def _hash(keys: np.ndarray, bits: int) -> np.ndarray:
    # Multiplicative hashing keeps the top bits, which mix all key bits.
    return ((keys.astype(np.uint64) * _FIB) >> np.uint64(64 - bits)).astype(np.int64)


class NumpyVoxelMap(VoxelMap):
    """The numpy storage: memory-bounded voxel map in a hash table (see the module docstring)."""

    def __init__(self, cfg: Optional[MapConfig] = None, device=None, *, storage: Optional[str] = None) -> None:
        if device is not None and str(device) != "cpu":
            raise MapError(f"the numpy voxel map lives on the CPU, not {device!r}")
        self.cfg = cfg if cfg is not None else MapConfig()
        self.last_insert: Optional[InsertStats] = None
        self.clear()

    # ------------------------------------------------------------------ state

    def clear(self) -> None:
        """Remove all voxels and reset counters (the config is kept)."""
        self._n = 0
        self._frame = -1
        self._evicted_total = 0
        self._dropped = {"low_confidence": 0, "non_finite": 0, "out_of_range": 0}
        self._origin: Optional[np.ndarray] = None
        self._origin_given = False
        self._alloc_storage(_MIN_CAPACITY)
        self._alloc_table(_MIN_TABLE_BITS)

    def _alloc_storage(self, capacity: int) -> None:
        self._keys = np.empty(capacity, dtype=np.int64)
        self._pos = np.empty((capacity, 3), dtype=np.float32)
        self._col = np.empty((capacity, 3), dtype=np.float32)
        self._conf = np.empty(capacity, dtype=np.float32)
        self._count = np.empty(capacity, dtype=np.int64)
        self._seen = np.empty(capacity, dtype=np.int64)

    def _grow_storage(self, needed: int) -> None:
        capacity = len(self._keys)
        while capacity < needed:
            capacity *= 2
        n = self._n
        old = (self._keys, self._pos, self._col, self._conf, self._count, self._seen)
        self._alloc_storage(capacity)
        for dst, src in zip((self._keys, self._pos, self._col, self._conf, self._count, self._seen), old):
            dst[:n] = src[:n]

    def _alloc_table(self, bits: int) -> None:
        self._bits = bits
        self._table_keys = np.full(1 << bits, _EMPTY, dtype=np.int64)
        self._table_slot = np.empty(1 << bits, dtype=np.int32)

    def _rebuild_table(self, bits: int) -> None:
        self._alloc_table(bits)
        slots = np.arange(self._n)
        self._probe_insert(self._keys[:self._n], slots)

    def __len__(self) -> int:
        return self._n

    # ------------------------------------------------------------------ hashing

    def _probe_insert(self, keys: np.ndarray, new_slots: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """Find or create table entries for distinct ``keys``.

        With ``new_slots`` given, keys are known absent and get those slots (rebuild).
        Otherwise absent keys get slots ``self._n, self._n + 1, ...`` in claim order.

        Returns ``(slots (U,) int64, is_new (U,) bool, probes)``.
        """
        mask = (1 << self._bits) - 1
        slots = np.full(len(keys), -1, dtype=np.int64)
        is_new = np.zeros(len(keys), dtype=bool)
        cell = _hash(keys, self._bits)
        pending = np.arange(len(keys))
        next_slot = self._n
        probes = 0
        while pending.size:
            probes += pending.size
            c = cell[pending]
            tk = self._table_keys[c]
            hit = tk == keys[pending]
            slots[pending[hit]] = self._table_slot[c[hit]]
            empty = np.flatnonzero(tk == _EMPTY)
            # Several pending keys may reach the same empty cell in one round: the first
            # claims it, the others see a foreign key there and move on.
            _, first = np.unique(c[empty], return_index=True)
            winners = pending[empty[first]]
            if winners.size:
                if new_slots is not None:
                    assigned = new_slots[winners]
                else:
                    assigned = next_slot + np.arange(winners.size)
                    next_slot += winners.size
                self._table_keys[cell[winners]] = keys[winners]
                self._table_slot[cell[winners]] = assigned
                slots[winners] = assigned
                is_new[winners] = True
            unresolved = ~hit
            unresolved[empty[first]] = False
            pending = pending[unresolved]
            cell[pending] = (cell[pending] + 1) & mask
        return slots, is_new, probes

    # ------------------------------------------------------------------ insert

    def insert(
        self,
        points: np.ndarray,
        colors: np.ndarray,
        confidence: np.ndarray,
        sensor_origin: Optional[np.ndarray] = None,
        weights: Optional[np.ndarray] = None,
    ) -> InsertStats:
        """Fuse one frame's points.

        Args:
            points: ``(N, 3)`` float world-frame positions (metres).
            colors: ``(N, 3) uint8`` RGB.
            confidence: ``(N,)`` float; points below ``cfg.min_confidence`` are dropped.
            sensor_origin: ``(3,)`` camera centre in the world frame; used by the
                'drop_far' policy. If never given, the mean of the latest kept points
                stands in for it.
            weights: optional ``(N,)`` whole numbers > 0 (integer dtype, or float holding
                whole numbers: the map keeps integer point counts), e.g. the pixel counts of
                points already merged per voxel (:mod:`loger_core.mapping.voxel_downsample`). A point
                of weight ``w`` counts as ``w`` identical points: in the running mean of
                position and colour, the point count (:meth:`hit_counts`), a 'mean'
                confidence and the ``dropped_*`` counters ('max' confidence is unaffected).
                ``InsertStats.n_input``/``n_kept`` still count rows. None = weight 1 each.

        Points with any non-finite coordinate or confidence, and points beyond the key
        range (+-2^20 voxels per axis), are dropped and counted in :meth:`stats`.
        """
        pts, col, conf, wts, origin = check_insert_args(points, colors, confidence, weights, sensor_origin)
        if origin is not None:
            self._origin = origin
            self._origin_given = True
        self._frame += 1
        n_input = len(pts)

        finite = np.all(np.isfinite(pts), axis=1) & np.isfinite(conf)
        confident = conf >= self.cfg.min_confidence
        self._dropped["non_finite"] += self._count_of(~finite, wts)
        self._dropped["low_confidence"] += self._count_of(finite & ~confident, wts)
        keep = finite & confident
        pts, col, conf = pts[keep], col[keep], conf[keep]
        wts = wts[keep] if wts is not None else None
        vox = np.floor(pts.astype(np.float64) / self.cfg.voxel_size)
        in_range = np.all((vox >= -_AXIS_OFFSET) & (vox < _AXIS_OFFSET), axis=1)
        self._dropped["out_of_range"] += self._count_of(~in_range, wts)
        pts, col, conf, vox = pts[in_range], col[in_range], conf[in_range], vox[in_range]
        wts = wts[in_range] if wts is not None else None
        if not self._origin_given and len(pts):
            if wts is None:
                self._origin = pts.mean(axis=0).astype(np.float64)
            else:
                self._origin = np.average(pts.astype(np.float64), axis=0, weights=wts)

        stats = InsertStats(frame=self._frame, n_input=n_input, n_kept=len(pts), n_voxels=0,
                            n_new_voxels=0, probes=0, n_evicted=0, rebuilt=False)
        if len(pts):
            self._merge(pts, col, conf, vox.astype(np.int64), stats, wts)
        if self._n > self.cfg.max_points:
            stats.n_evicted = self._evict()
            stats.rebuilt = True
        self.last_insert = stats
        return stats

    @staticmethod
    def _count_of(mask: np.ndarray, wts: Optional[np.ndarray]) -> int:
        """Points selected by ``mask``, each counted ``weight`` times."""
        if wts is None:
            return int(np.count_nonzero(mask))
        return int(wts[mask].sum())

    def _merge(self, pts, col, conf, vox, stats: InsertStats, wts: Optional[np.ndarray] = None) -> None:
        packed = pack_voxel_keys(vox)
        # Batch-local reduction: one entry per distinct voxel of this frame.
        ukeys, inv, counts = np.unique(packed, return_inverse=True, return_counts=True)
        u = len(ukeys)
        rows = counts  # input rows per voxel (the reduceat segments below)
        if wts is None:
            sum_pos = np.stack([np.bincount(inv, weights=pts[:, k], minlength=u) for k in range(3)], axis=1)
            sum_col = np.stack([np.bincount(inv, weights=col[:, k], minlength=u) for k in range(3)], axis=1)
        else:
            # As w identical points: float32 coordinate x whole weight < 2^29 is exact in float64.
            sum_pos = np.stack([np.bincount(inv, weights=pts[:, k] * wts, minlength=u) for k in range(3)], axis=1)
            sum_col = np.stack([np.bincount(inv, weights=col[:, k] * wts, minlength=u) for k in range(3)], axis=1)
            counts = np.rint(np.bincount(inv, weights=wts, minlength=u)).astype(np.int64)
        if self.cfg.confidence_reduce == "max":
            order = np.argsort(inv, kind="stable")
            starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
            batch_conf = np.maximum.reduceat(conf[order].astype(np.float64), starts)
        else:
            # A sum, averaged below.
            batch_conf = np.bincount(inv, weights=conf if wts is None else conf * wts, minlength=u)

        if 2 * (self._n + u) > (1 << self._bits):
            bits = self._bits
            while 2 * (self._n + u) > (1 << bits):
                bits += 1
            self._rebuild_table(bits)
            stats.rebuilt = True
        if self._n + u > len(self._keys):
            self._grow_storage(self._n + u)
            stats.rebuilt = True

        slots, is_new, probes = self._probe_insert(ukeys, None)
        n_new = int(np.count_nonzero(is_new))
        new_slots = slots[is_new]
        self._keys[new_slots] = ukeys[is_new]
        self._count[new_slots] = 0
        self._pos[new_slots] = 0.0
        self._col[new_slots] = 0.0
        self._conf[new_slots] = 0.0
        self._n += n_new

        old_n = self._count[slots]
        tot = old_n + counts
        w_old = (old_n / tot)[:, None]
        self._pos[slots] = self._pos[slots] * w_old + sum_pos / tot[:, None]
        self._col[slots] = self._col[slots] * w_old + sum_col / tot[:, None]
        if self.cfg.confidence_reduce == "max":
            self._conf[slots] = np.where(old_n > 0, np.maximum(self._conf[slots], batch_conf), batch_conf)
        else:
            self._conf[slots] = self._conf[slots] * w_old[:, 0] + batch_conf / tot
        self._count[slots] = tot
        self._seen[slots] = self._frame

        stats.n_voxels = u
        stats.n_new_voxels = n_new
        stats.probes = probes

    # ------------------------------------------------------------------ eviction

    def _evict(self) -> int:
        """Shrink to ``floor(max_points * (1 - evict_headroom))`` voxels by policy."""
        n = self._n
        target = int(self.cfg.max_points * (1.0 - self.cfg.evict_headroom))
        n_drop = n - target
        origin = self._origin if self._origin is not None else np.zeros(3)
        dist2 = np.sum((self._pos[:n].astype(np.float64) - origin) ** 2, axis=1)
        if self.cfg.policy == "drop_far":
            drop = np.argpartition(-dist2, n_drop - 1)[:n_drop]
        else:
            # Oldest first; among equally old voxels the farthest go first.
            order = np.lexsort((-dist2, self._seen[:n]))
            drop = order[:n_drop]
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        for arr in (self._keys, self._pos, self._col, self._conf, self._count, self._seen):
            arr[:target] = arr[:n][keep]
        self._n = target
        self._rebuild_table(self._bits)
        self._evicted_total += n_drop
        return n_drop

    # ------------------------------------------------------------------ output

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Copy of the map: ``points (M, 3) float32`` voxel mean positions (world frame),
        ``colors (M, 3) uint8`` mean colours, ``confidence (M,) float32``."""
        n = self._n
        colors = np.clip(np.rint(self._col[:n]), 0, 255).astype(np.uint8)
        return self._pos[:n].copy(), colors, self._conf[:n].copy()

    def hit_counts(self) -> np.ndarray:
        """``(M,) int64`` number of points merged into each voxel, in snapshot order."""
        return self._count[: self._n].copy()

    def last_seen(self) -> np.ndarray:
        """``(M,) int64`` insert index (0-based) that last touched each voxel, in snapshot order."""
        return self._seen[: self._n].copy()

    def stats(self) -> dict:
        """Counters: ``points`` (voxels), ``evicted`` (total), ``bytes`` (array memory),
        ``frames`` (inserts), ``capacity``, ``table_size`` and ``dropped_*`` point counts."""
        arrays = (self._keys, self._pos, self._col, self._conf, self._count, self._seen,
                  self._table_keys, self._table_slot)
        out = {
            "points": self._n,
            "evicted": self._evicted_total,
            "bytes": int(sum(a.nbytes for a in arrays)),
            "frames": self._frame + 1,
            "capacity": len(self._keys),
            "table_size": len(self._table_keys),
        }
        out.update({f"dropped_{k}": v for k, v in self._dropped.items()})
        return out


register_storage("numpy", NumpyVoxelMap)
