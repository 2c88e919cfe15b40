"""Pinhole intrinsics implied by the predicted camera-frame points, and their mapping between the
network input and the original image.

The network predicts camera-frame points, never takes intrinsics. With the principal point at the
image centre, each pixel gives `u - cx = fx * x / z` and `v - cy = fy * y / z`; fx and fy are the
least-squares solutions over the valid pixels (separately, because the demo's resize may change
the aspect ratio). Pixel centres sit at integer coordinates (OpenCV).
"""
from __future__ import annotations

import numpy as np

from .errors import StreamInputError
from .preprocess import ImageGeometry

# Fewer usable pixels than this and the masked estimate falls back to all finite pixels.
MIN_PIXELS = 16


def _focal(ratio: np.ndarray, offset: np.ndarray) -> float:
    den = float(np.dot(ratio, ratio))
    if not np.isfinite(den) or den <= 0.0:
        return float("nan")
    f = float(np.dot(ratio, offset)) / den
    return f if f > 0 else float("nan")


MAX_FIT_PIXELS = 16384


def estimate_intrinsics(local_points: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """K at model resolution from one frame's camera-frame points.

    local_points: (h, w, 3) float, OpenCV camera axes. mask: (h, w) bool of trusted pixels
    (e.g. confident ones); ignored if it leaves fewer than MIN_PIXELS usable pixels.
    Returns (3, 3) float64; focal lengths are NaN when no pixel is usable.
    """
    h, w = local_points.shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # A regular sub-grid of at most ~MAX_FIT_PIXELS pixels: two scalars need no more, and the full
    # 504x280 grid made this the most expensive per-frame step of the stream.
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_FIT_PIXELS))))
    pts = local_points[::step, ::step].astype(np.float64)
    z = pts[..., 2]
    usable = np.isfinite(pts).all(axis=-1) & (z > 1e-9)
    if mask is not None and np.count_nonzero(usable & mask[::step, ::step]) >= MIN_PIXELS:
        usable = usable & mask[::step, ::step]
    K = np.array([[np.nan, 0.0, cx], [0.0, np.nan, cy], [0.0, 0.0, 1.0]])
    if not usable.any():
        return K
    vv, uu = np.nonzero(usable)
    zs = z[vv, uu]
    K[0, 0] = _focal(pts[vv, uu, 0] / zs, uu * step - cx)
    K[1, 1] = _focal(pts[vv, uu, 1] / zs, vv * step - cy)
    return K


def check_intrinsics(K, name: str = "K") -> np.ndarray:
    arr = np.asarray(K, dtype=np.float64) if K is not None else None
    if arr is None or arr.shape != (3, 3) or not np.all(np.isfinite(arr)) or arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise StreamInputError(f"{name} must be a finite (3, 3) matrix with positive focal lengths, got {K!r}")
    return arr


def model_to_original(K_model: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """Intrinsics of the network input -> intrinsics of the original image (undoes resize and crop)."""
    sx, sy = geometry.scale_xy
    x0, y0 = geometry.crop[:2]
    K = np.array(K_model, dtype=np.float64)
    K[0, :3] *= sx
    K[1, :3] *= sy
    K[0, 2] = x0 + (K_model[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = y0 + (K_model[1, 2] + 0.5) * sy - 0.5
    return K


def original_to_model(K_orig: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """Intrinsics of the original image -> intrinsics of the network input."""
    sx, sy = geometry.scale_xy
    x0, y0 = geometry.crop[:2]
    K = np.array(K_orig, dtype=np.float64)
    K[0, :3] /= sx
    K[1, :3] /= sy
    K[0, 2] = (K_orig[0, 2] - x0 + 0.5) / sx - 0.5
    K[1, 2] = (K_orig[1, 2] - y0 + 0.5) / sy - 0.5
    return K


def estimate_intrinsics_batch(local_points: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """`estimate_intrinsics` for a batch of frames on their own device, without a host sync.

    local_points: (N, h, w, 3) float; mask: (N, h, w) bool. Returns (N, 3, 3) float64 on the same
    device, equal to the per-frame function up to summation order (same sub-grid, same fallback
    to all finite pixels below MIN_PIXELS masked ones, NaN focal lengths where none is usable).
    """
    import torch

    N, h, w = local_points.shape[:3]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    step = max(1, int(np.ceil(np.sqrt(h * w / MAX_FIT_PIXELS))))
    pts = local_points[:, ::step, ::step].double()
    z = pts[..., 2]
    usable = torch.isfinite(pts).all(dim=-1) & (z > 1e-9)
    masked = usable & mask[:, ::step, ::step]
    use_mask = masked.flatten(1).sum(1) >= MIN_PIXELS
    usable = torch.where(use_mask[:, None, None], masked, usable)
    dev = pts.device
    u = torch.arange(0, w, step, device=dev, dtype=torch.float64)[: pts.shape[2]] - cx
    v = torch.arange(0, h, step, device=dev, dtype=torch.float64)[: pts.shape[1]] - cy
    safe_z = torch.where(usable, z, torch.ones_like(z))

    def focal(ratio, offset):
        ratio = torch.where(usable, ratio, torch.zeros_like(ratio))
        den = (ratio * ratio).flatten(1).sum(1)
        num = (ratio * offset).flatten(1).sum(1)
        f = num / den
        ok = torch.isfinite(den) & (den > 0) & torch.isfinite(f) & (f > 0)
        return torch.where(ok, f, torch.full_like(f, float("nan")))

    K = torch.zeros(N, 3, 3, dtype=torch.float64, device=dev)
    K[:, 0, 0] = focal(pts[..., 0] / safe_z, u[None, None, :])
    K[:, 1, 1] = focal(pts[..., 1] / safe_z, v[None, :, None])
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = cx, cy, 1.0
    return K
