"""A training-only correspondence loss on the decoder's patch tokens.

Pose and point supervision alone did not teach the small model to match content between frames
(weights/README.md: its windows move the right way 55% of the time where SIFT two-view geometry on
the same frames gets 97%). The renderer knows where every pixel goes, so matching can be taught
directly, as VGGT does with its tracking loss: for frames `i`, `j` of one window, the true point
under each patch centre of frame `i` is moved into camera `j` by the true relative pose and
projected; where it lands on a patch of `j` and is visible there (its depth agrees with `j`'s true
depth), that patch is the target of an InfoNCE classification over `j`'s patches, scored by the
cosine similarity of the tokens the heads read. Neither the network nor the checkpoint changes.

Frames: camera points in the OpenCV optical frame (x right, y down, z forward); poses `T_world_cam`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["fit_intrinsics", "window_pairs", "centre_landings", "token_correspondences", "correspondence_loss"]

# A projected point is visible in the other frame when that frame's true depth at the landing pixel
# is within this fraction of the point's depth there (else something occludes it).
VISIBLE_DEPTH_TOLERANCE = 0.05


def fit_intrinsics(points: Tensor, valid: Tensor) -> Tensor:
    """Pinhole intrinsics that generated camera points, by least squares over valid pixels.

    points: (B, H, W, 3) camera-frame points; valid: (B, H, W) bool. Returns (B, 4) float32
    [fx, fy, cx, cy] in pixels (pixel centres at integer coordinates)."""
    B, H, W, _ = points.shape
    z = points[..., 2].clamp_min(1e-6)
    v, u = torch.meshgrid(torch.arange(H, device=points.device, dtype=torch.float32),
                          torch.arange(W, device=points.device, dtype=torch.float32), indexing="ij")
    w = valid.float()
    n = w.flatten(1).sum(1).clamp_min(1.0)

    def line(a: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:  # p = f a + c, per clip
        a_mean = (w * a).flatten(1).sum(1) / n
        p_mean = (w * p).flatten(1).sum(1) / n
        da = a - a_mean.view(B, 1, 1)
        f = (w * da * (p - p_mean.view(B, 1, 1))).flatten(1).sum(1) / (w * da * da).flatten(1).sum(1).clamp_min(1e-12)
        return f, p_mean - f * a_mean

    fx, cx = line(points[..., 0] / z, u.expand(B, H, W))
    fy, cy = line(points[..., 1] / z, v.expand(B, H, W))
    return torch.stack([fx, fy, cx, cy], dim=-1)


def window_pairs(window_lengths: list[int]) -> Tensor:
    """Ordered frame pairs (a, b), a != b, inside each window of a clip whose windows' predictions
    were concatenated in order (`lengths` frames each). Returns (M, 2) long."""
    pairs, offset = [], 0
    for n in window_lengths:
        idx = torch.arange(offset, offset + n)
        a, b = torch.meshgrid(idx, idx, indexing="ij")
        keep = a != b
        pairs.append(torch.stack([a[keep], b[keep]], dim=-1))
        offset += n
    return torch.cat(pairs) if pairs else torch.zeros(0, 2, dtype=torch.long)


@torch.no_grad()
def centre_landings(gt_local: Tensor, gt_poses: Tensor, valid: Tensor, patch: int, pairs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where each patch centre of frame `a` lands in frame `b`, for every pair (a, b).

    gt_local: (B, T, H, W, 3) true camera points; gt_poses: (B, T, 4, 4) true `T_world_cam`;
    valid: (B, T, H, W) bool; patch: patch size; pairs: (M, 2) long frame indices.
    Returns pixel coordinates u, v (B, M, P) float64 in frame `b` (P = (H / patch) * (W / patch)
    centres, row-major; centre pixel (patch * i + patch // 2)) and ok (B, M, P) bool: the centre has a
    valid point, lands inside frame `b` in front of it and is not occluded there."""
    B, T, H, W, _ = gt_local.shape
    h, w = H // patch, W // patch
    K = fit_intrinsics(gt_local[:, 0].float(), valid[:, 0])  # one camera per clip
    cy = torch.arange(h, device=gt_local.device) * patch + patch // 2
    cx = torch.arange(w, device=gt_local.device) * patch + patch // 2
    centres = gt_local[:, :, cy][:, :, :, cx].float().reshape(B, T, h * w, 3)
    centre_ok = valid[:, :, cy][:, :, :, cx].reshape(B, T, h * w)
    a, b = pairs[:, 0].to(gt_local.device), pairs[:, 1].to(gt_local.device)
    T_ba = torch.linalg.inv(gt_poses[:, b].double()) @ gt_poses[:, a].double()  # (B, M, 4, 4) cam a -> cam b
    X = centres[:, a].double()  # (B, M, P, 3)
    Xb = (T_ba[..., :3, :3] @ X.transpose(-1, -2)).transpose(-1, -2) + T_ba[..., None, :3, 3]
    z = Xb[..., 2]
    fx, fy, px, py = (K[:, i].double().view(B, 1, 1) for i in range(4))
    u = fx * Xb[..., 0] / z.clamp_min(1e-9) + px
    v = fy * Xb[..., 1] / z.clamp_min(1e-9) + py
    ui, vi = u.round().long(), v.round().long()
    inside = (z > 1e-6) & (ui >= 0) & (ui < w * patch) & (vi >= 0) & (vi < h * patch)
    uc, vc = ui.clamp(0, W - 1), vi.clamp(0, H - 1)
    bidx = torch.arange(B, device=gt_local.device).view(B, 1, 1)
    depth_b = gt_local[..., 2][bidx, b.view(1, -1, 1), vc, uc].double()
    seen = valid[bidx, b.view(1, -1, 1), vc, uc] & ((depth_b - z).abs() <= VISIBLE_DEPTH_TOLERANCE * z)
    return u, v, inside & seen & centre_ok[:, a]


def token_correspondences(gt_local: Tensor, gt_poses: Tensor, valid: Tensor, patch: int, pairs: Tensor) -> Tensor:
    """The patch of frame `b` each patch centre of frame `a` shows, for every pair (a, b) (arguments
    as `centre_landings`). Returns (B, M, P) long: the target patch index (row-major), or -1 where
    the centre has no valid point, leaves frame `b` or is occluded there."""
    u, v, ok = centre_landings(gt_local, gt_poses, valid, patch, pairs)
    w = gt_local.shape[3] // patch
    target = torch.div(v.round().long(), patch, rounding_mode="floor") * w + torch.div(u.round().long(), patch, rounding_mode="floor")
    return torch.where(ok, target, torch.full_like(target, -1))


def correspondence_loss(tokens: Tensor, target: Tensor, pairs: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE over frame `b`'s patches for every patch of frame `a` with a target.

    tokens: (B, T, P, D) patch tokens; target: (B, M, P) from `token_correspondences`; pairs: (M, 2).
    Returns a scalar float32 (0 when no patch has a target)."""
    f = F.normalize(tokens.float(), dim=-1)
    a, b = pairs[:, 0].to(tokens.device), pairs[:, 1].to(tokens.device)
    logits = (f[:, a] @ f[:, b].transpose(-1, -2)) / temperature  # (B, M, P, P)
    return F.cross_entropy(logits.flatten(0, 2), target.flatten(), ignore_index=-1) if bool((target >= 0).any()) \
        else tokens.sum() * 0.0
