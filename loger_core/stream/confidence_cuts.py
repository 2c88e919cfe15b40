"""Per-frame confidence cuts: the q-th percentile of each frame's confidence (numpy's linear rule)
on the model's device, by a sort of all frames (CUDA) or two k-th value selections per frame (CPU).
Frames are (n, h, w) tensors; a cut is (n,) float64.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

__all__ = ["percentile", "percentile_cuts", "sorted_percentiles"]


def percentile_cuts(values: torch.Tensor, mask: torch.Tensor, q: float, by_sort: Optional[bool] = None) -> torch.Tensor:
    """(n,) float64: for each frame the q-th percentile of `values[i][mask[i]]` (numpy's linear
    rule), -inf where the mask is empty, so that every value passes. values, mask: (n, h, w).
    One host read (the per-frame counts); the selections stay on the device.
    by_sort: one sort of all frames (default on CUDA, where a k-th value selection costs about
    1.3 ms per 141k-value frame on an H100, a quarter of the stream's GPU time at 504x280) instead of
    two selections per frame (the CPU default: there a sort costs more). Both give the same values."""
    flat = values.flatten(1)
    masked = torch.where(mask.flatten(1), flat, torch.full_like(flat, float("inf")))
    counts = mask.flatten(1).sum(1).tolist()
    if by_sort if by_sort is not None else flat.is_cuda:
        return sorted_percentiles(masked.sort(dim=1).values, q, counts)
    cuts = torch.full((flat.shape[0],), float("-inf"), dtype=torch.float64, device=flat.device)
    for i, n in enumerate(counts):
        if n:
            cuts[i] = percentile(masked[i], q, n)
    return cuts


def sorted_percentiles(ordered: torch.Tensor, q: float, counts: list[int]) -> torch.Tensor:
    """`percentile` of each row of `ordered` (n, m) (ascending, +inf padding after the first
    counts[i]) in one gather; -inf for empty rows."""
    n = np.asarray(counts, dtype=np.int64)
    pos = (q / 100.0) * np.maximum(n - 1, 0)
    lo = pos.astype(np.int64)
    frac = pos - lo
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    idx = torch.from_numpy(np.stack([lo, hi], axis=1)).to(ordered.device)
    v = ordered.gather(1, idx).double()
    frac_t = torch.from_numpy(frac).to(ordered.device)
    cuts = torch.where(frac_t == 0.0, v[:, 0], v[:, 0] + (v[:, 1] - v[:, 0]) * frac_t)
    return torch.where(torch.from_numpy(n > 0).to(ordered.device), cuts, torch.full_like(cuts, float("-inf")))


def percentile(values: torch.Tensor, q: float, n: Optional[int] = None) -> torch.Tensor:
    """Linear-interpolated q-th percentile of the `n` smallest entries of a 1-D tensor (all of
    them by default; larger entries may be +inf padding) by numpy's default rule, with two O(n)
    selections: torch.quantile sorts, which costs more than the rest of a frame on the CPU."""
    n = values.numel() if n is None else n
    pos = (q / 100.0) * (n - 1)
    lo = int(pos)
    frac = pos - lo
    v_lo = values.kthvalue(lo + 1).values.double()
    if frac == 0.0 or lo + 1 >= n:
        return v_lo
    v_hi = values.kthvalue(lo + 2).values.double()
    return v_lo + (v_hi - v_lo) * frac
