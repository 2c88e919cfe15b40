"""Per-frame voxel merging of point maps on the model's device (torch, CPU or CUDA).

Why: a committed frame at 504x280 has ~110k valid pixels; copying all of them to the host and
fusing them one by one into the CPU :class:`~loger_core.mapping.voxel_map.VoxelMap` back-pressures inference on a
GPU. :func:`downsample_frames` merges each frame's points per voxel *where they were computed*, so
only one point per occupied voxel crosses to the host, with a weight (the number of merged
pixels) that lets the map fuse it exactly like that many identical points
(``VoxelMap.insert(..., weights=...)``).

Grid
    A point ``p`` falls into voxel ``floor(p / voxel_size)`` per axis, computed in float64 exactly
    like ``loger_core.mapping.voxel_map`` (``np.floor(points.astype(np.float64) / voxel_size)``), so when the
    world frame and the map frame coincide and the edges match, every output point lies in the map
    voxel of the pixels it stands for, and a weighted insert of the merged points gives the same
    voxels, counts and (up to float32 rounding) means as inserting every pixel. With a map voxel a
    whole multiple of ``voxel_size`` the merged voxels nest inside map voxels; otherwise (or under a
    map anchor / metric scale that is not the identity) a merged point may land in a neighbouring
    map voxel of the one some of its pixels would have hit: a displacement below one merge voxel.

Precision
    Positions are summed in float64 and divided by the count (no per-voxel offset needed): for
    ``n`` float32 inputs the float64 mean is off by at most ``~n * 2^-53`` relative, far below half a
    float32 ulp for any frame size, so the float32 centroid rounds to a value inside the
    ``[min, max]`` of its points per axis -- it never leaves its voxel, also 1 km or more from the
    origin. (A float32 sum would lose ~3 digits at 1 km with 100+ points per voxel.)

Keys
    Within a frame, voxels come out in lexicographic ``(ix, iy, iz)`` order, which is the order of
    ``loger_core.mapping.voxel_map``'s 21-bit packed keys; frames come out in input order (frame-major, so each
    frame is a contiguous slice). Internally the key is the frame index and the voxel index relative
    to the batch's smallest occupied voxel in a mixed radix (one ``torch.unique`` of int64); when that
    does not fit in 63 bits (a batch spanning more than ~2^20 voxels on several axes) the voxel rows
    are ranked first (``torch.unique(dim=0)``, slower). Voxels beyond the map's key range
    (``|index| >= 2^20``) are merged like any other; the map drops them (``dropped_out_of_range``).
    Colour sums are int32 (255 x pixels per frame < 2^31).

Points that are dropped or passed through
    A ``valid`` pixel with a non-finite coordinate is dropped (it is no point; the stream's ``valid``
    already excludes them, so there weights sum to ``valid.sum()``). One with a non-finite
    confidence, or so far out that its voxel index does not fit in int64 (``|p / voxel| >= 2^62``),
    is passed through unmerged as its own point of weight 1, after the frame's voxels, so that it
    cannot poison a voxel's confidence; the map drops it as it would without merging.

Host synchronisation: three small reads are unavoidable -- the number of valid points (the
selection's size), the occupied voxel range (6 numbers, to size the key) and the number of voxels
(``torch.unique``'s output size); the rest is queued.
open3d's ``VoxelDownSample`` is not used: it neither returns per-voxel counts nor uses the map's grid
and key order, and it does not run on torch tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

__all__ = ["VoxelBatch", "VoxelDownsampleError", "downsample_frames"]

_VOX_LIMIT = float(1 << 62)  # |voxel index| below this fits int64 with room for the range arithmetic
_INT63 = 1 << 63

ArrayLike = Union[torch.Tensor, np.ndarray]


class VoxelDownsampleError(ValueError):
    """Invalid input of :func:`downsample_frames` (shape, dtype, voxel size)."""


@dataclass
class VoxelBatch:
    """Merged points of ``N`` frames, frame-major (frame ``i`` is the slice
    ``offsets[i]:offsets[i + 1]`` with ``offsets = [0, *cumsum(frame_counts)]``), on the input's device.

    points: ``(M, 3) float32`` voxel centroids (mean position of the merged pixels).
    colors: ``(M, 3) uint8`` mean colour, rounded half to even.
    confidence: ``(M,) float32`` highest confidence of the merged pixels.
    weights: ``(M,) int32`` number of merged pixels (>= 1); per frame they sum to the frame's valid
        pixels with finite coordinates.
    frame_counts: ``(N,) int64`` merged points per frame.
    """

    points: torch.Tensor
    colors: torch.Tensor
    confidence: torch.Tensor
    weights: torch.Tensor
    frame_counts: torch.Tensor

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def split_numpy(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame ``(points, colors, confidence, weights)`` numpy arrays (one copy to the host per field)."""
        counts = self.frame_counts.cpu().numpy()
        fields = [t.cpu().numpy() for t in (self.points, self.colors, self.confidence, self.weights)]
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return [tuple(f[bounds[i]:bounds[i + 1]] for f in fields) for i in range(len(counts))]


def _as_tensor(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise VoxelDownsampleError(f"{name} must be a torch tensor or numpy array, got {type(x).__name__}")
    return x.to(device, non_blocking=True)


def _check(points, colors, confidence, valid, voxel_size):
    if isinstance(voxel_size, bool) or not isinstance(voxel_size, (int, float, np.integer, np.floating)) \
            or not math.isfinite(voxel_size) or voxel_size <= 0:
        raise VoxelDownsampleError(f"voxel_size must be a finite number > 0, got {voxel_size!r}")
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(np.ascontiguousarray(points))
    if not isinstance(points, torch.Tensor):
        raise VoxelDownsampleError(f"points must be a torch tensor or numpy array, got {type(points).__name__}")
    device = points.device
    colors = _as_tensor(colors, "colors", device)
    confidence = _as_tensor(confidence, "confidence", device)
    valid = _as_tensor(valid, "valid", device)
    if points.ndim != 4 or points.shape[-1] != 3 or not points.is_floating_point():
        raise VoxelDownsampleError(f"points must be a float (N, h, w, 3) tensor, got shape {tuple(points.shape)} "
                                   f"dtype {points.dtype}")
    if tuple(colors.shape) != tuple(points.shape) or colors.dtype != torch.uint8:
        raise VoxelDownsampleError(f"colors must be a uint8 {tuple(points.shape)} tensor, got shape "
                                   f"{tuple(colors.shape)} dtype {colors.dtype}")
    if tuple(confidence.shape) != tuple(points.shape[:3]) or not confidence.is_floating_point():
        raise VoxelDownsampleError(f"confidence must be a float {tuple(points.shape[:3])} tensor, got shape "
                                   f"{tuple(confidence.shape)} dtype {confidence.dtype}")
    if tuple(valid.shape) != tuple(points.shape[:3]) or valid.dtype != torch.bool:
        raise VoxelDownsampleError(f"valid must be a bool {tuple(points.shape[:3])} tensor, got shape "
                                   f"{tuple(valid.shape)} dtype {valid.dtype}")
    return points, colors, confidence, valid, float(voxel_size)


@torch.no_grad()
def downsample_frames(
    points: ArrayLike,
    colors: ArrayLike,
    confidence: ArrayLike,
    valid: ArrayLike,
    voxel_size: float,
) -> VoxelBatch:
    """Merge each frame's valid points per voxel of edge ``voxel_size`` (see the module docstring).

    Args:
        points: ``(N, h, w, 3)`` float world-frame points (any float dtype; keys and sums in float64).
        colors: ``(N, h, w, 3) uint8`` RGB.
        confidence: ``(N, h, w)`` float.
        valid: ``(N, h, w) bool`` pixels that are points (non-finite ones are dropped too).
        voxel_size: voxel edge in the points' units, finite and > 0.

    ``colors``, ``confidence`` and ``valid`` are moved to ``points.device`` (numpy arrays are
    accepted too); the result lives there. Frames are merged independently.
    """
    points, colors, confidence, valid, voxel = _check(points, colors, confidence, valid, voxel_size)
    device = points.device
    n_frames, h, w = valid.shape
    hw = h * w
    keep = valid & torch.isfinite(points).all(dim=-1)
    idx = keep.reshape(-1).nonzero().squeeze(1)  # (T,) flat pixel index, frame-major (one sync)
    total = int(idx.numel())
    if total == 0:
        return VoxelBatch(
            points=torch.zeros((0, 3), dtype=torch.float32, device=device),
            colors=torch.zeros((0, 3), dtype=torch.uint8, device=device),
            confidence=torch.zeros(0, dtype=torch.float32, device=device),
            weights=torch.zeros(0, dtype=torch.int32, device=device),
            frame_counts=torch.zeros(n_frames, dtype=torch.int64, device=device),
        )
    frame = idx // hw
    pixel = idx - frame * hw
    p = points.reshape(-1, 3)[idx].to(torch.float64)
    conf = confidence.reshape(-1)[idx]
    col = colors.reshape(-1, 3)[idx]

    vox = torch.floor(p / voxel)
    # Unmergeable rows get voxel 0 here (their key is replaced below).
    mergeable = (vox.abs() < _VOX_LIMIT).all(dim=1) & torch.isfinite(conf)
    vox_l = torch.where(mergeable[:, None], vox, 0.0).to(torch.int64)
    lo, hi = torch.aminmax(vox_l, dim=0)
    lo_x, lo_y, lo_z, hi_x, hi_y, hi_z = torch.cat([lo, hi]).tolist()  # second sync
    ry, rz = hi_y - lo_y + 1, hi_z - lo_z + 1
    n_local = (hi_x - lo_x + 1) * ry * rz
    stride = n_local + hw  # local keys: voxels in [0, n_local), unmerged points n_local + pixel
    if n_frames * stride < _INT63:
        local = ((vox_l[:, 0] - lo_x) * ry + (vox_l[:, 1] - lo_y)) * rz + (vox_l[:, 2] - lo_z)
    else:
        # Too wide for one mixed-radix key: rank the voxel rows (lexicographic, the map's key order).
        _, local = torch.unique(vox_l, sorted=True, return_inverse=True, dim=0)
        n_local = total
        stride = n_local + hw
    local = torch.where(mergeable, local, n_local + pixel)
    key = frame * stride + local

    ukeys, inv, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    m = int(ukeys.numel())
    sum_pos = torch.zeros((m, 3), dtype=torch.float64, device=device).index_add_(0, inv, p)
    centroid = (sum_pos / counts[:, None].to(torch.float64)).to(torch.float32)
    sum_col = torch.zeros((m, 3), dtype=torch.int32, device=device).index_add_(0, inv, col.to(torch.int32))
    mean_col = torch.round(sum_col.to(torch.float64) / counts[:, None].to(torch.float64)).clamp_(0, 255)
    conf32 = conf.to(torch.float32)
    best = torch.full((m,), -math.inf, dtype=torch.float32, device=device)
    best.scatter_reduce_(0, inv, conf32, reduce="amax", include_self=False)
    frame_counts = torch.bincount(ukeys // stride, minlength=n_frames)
    return VoxelBatch(
        points=centroid,
        colors=mean_col.to(torch.uint8),
        confidence=best,
        weights=counts.to(torch.int32),
        frame_counts=frame_counts,
    )
