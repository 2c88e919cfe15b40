"""Per-frame voxel merge of a window's points on the model's device, before they cross to the host.

A frame at 504x280 has ~110k valid pixels; at 30 frames/s that is 3.3 M points/s, which a CPU voxel
map cannot fuse. Merging each frame's points per voxel on the device first leaves a few thousand
weighted points per frame; every valid pixel still counts (weights sum to the valid pixels).
Voxels are `floor(p / voxel_size)` cells of the frame the points are given in (the same cells as
`loger_core.map.VoxelMap` when that frame is the map's).

Hand-written because neither open3d's `VoxelDownSample` nor torch has a batched, weighted per-frame
voxel mean; it is `torch.unique` over (frame, voxel) rows plus `index_add_` / `scatter_reduce_`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class VoxelBatch:
    """Merged points of N frames, frame-major (frame i's are the rows `offsets[i]:offsets[i+1]`).

    points: (M, 3) float32 voxel centroids; colors: (M, 3) uint8 mean colours (rounded);
    confidence: (M,) float32 highest confidence in the voxel; weights: (M,) int32 pixels merged;
    frame_counts: (N,) int64 merged points per frame.
    """

    points: Tensor
    colors: Tensor
    confidence: Tensor
    weights: Tensor
    frame_counts: Tensor


def downsample_frames(points: Tensor, colors: Tensor, confidence: Tensor, valid: Tensor, voxel_size: float) -> VoxelBatch:
    """points (N, h, w, 3) float; colors (N, h, w, 3) uint8; confidence (N, h, w) float;
    valid (N, h, w) bool (pixels to keep; non-finite points are dropped too) -> `VoxelBatch`."""
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size!r}")
    N = points.shape[0]
    keep = valid & torch.isfinite(points).all(dim=-1)
    frame = torch.arange(N, device=points.device)[:, None, None].expand_as(keep)[keep]
    p = points[keep].double()
    cells = torch.floor(p / voxel_size).long()
    rows, inverse = torch.unique(torch.cat([frame[:, None], cells], dim=1), dim=0, return_inverse=True)
    M = rows.shape[0]
    weights = torch.zeros(M, dtype=torch.int64, device=p.device).index_add_(0, inverse, torch.ones_like(inverse))
    w = weights.double()[:, None]
    centroid = torch.zeros(M, 3, dtype=torch.float64, device=p.device).index_add_(0, inverse, p) / w
    rgb = torch.zeros(M, 3, dtype=torch.float64, device=p.device).index_add_(0, inverse, colors[keep].double()) / w
    conf = torch.full((M,), float("-inf"), dtype=confidence.dtype, device=p.device)
    conf.scatter_reduce_(0, inverse, confidence[keep], reduce="amax")
    return VoxelBatch(
        points=centroid.float(),
        colors=rgb.round().clamp(0, 255).to(torch.uint8),
        confidence=conf,
        weights=weights.int(),
        frame_counts=torch.bincount(rows[:, 0], minlength=N),
    )
