"""Scale-invariant losses over whole clips, in the style of Pi3 / LoGeR.

The network's scale is free, so each clip gets one scale `s` fitted in closed form between the
predicted and true camera-frame points (depth-weighted least squares) and used for every term:

- points: mean over valid pixels of `|s * p_pred - p_gt|_1 / z_gt`;
- camera: over all ordered frame pairs (i, j) of the clip, relative poses `T_i^-1 T_j`:
  rotation geodesic angle (radians) and `|s * t_pred - t_gt|_1 / norm`, where `norm` is the clip's
  mean depth (`translation_norm="depth"`) or its mean true relative translation (`"motion"`, floored
  at `motion_floor` x mean depth). Frames of different windows are paired too, so poses must stay
  consistent through the memory;
- conf: BCE of the confidence logits against "relative point error below `conf_threshold`";
- correspondence (optional, `LossWeights.correspondence` > 0): token matching across a window's
  frames, computed by the trainer from the decoder's tokens (`training.correspondence`).

All terms are invariant to a global similarity of the prediction (one scale, one rigid motion of
the world frame) and zero for a prediction equal to the ground truth up to such a similarity,
except the confidence term, which only vanishes for saturated logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LossWeights", "LossTerms", "fit_clip_scale", "relative_poses", "rotation_angle", "clip_losses"]

_EPS = 1e-6


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms and the confidence target's threshold (relative point error)."""

    points: float = 1.0
    rotation: float = 1.0
    translation: float = 1.0
    conf: float = 0.05
    conf_threshold: float = 0.05
    # "depth": a clip's translation error counts relative to its mean depth, so a clip whose camera
    # moves 0.3 m past walls 3 m away weighs a tenth of its own motion, and predicting no motion at
    # all costs little (the shipped small model did no better than that: weights/README.md).
    # "motion": relative to the clip's own mean true motion, so "no motion" costs ~1 in every clip.
    translation_norm: str = "depth"
    motion_floor: float = 0.05
    # Training-only token matching (training.correspondence); 0 = off, as the shipped weights were trained.
    correspondence: float = 0.0
    correspondence_temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.translation_norm not in ("depth", "motion"):
            raise ValueError(f"LossWeights.translation_norm must be 'depth' or 'motion', got {self.translation_norm!r}")
        if not self.correspondence >= 0.0 or not self.correspondence_temperature > 0.0:
            raise ValueError("LossWeights.correspondence must be >= 0 and correspondence_temperature > 0, got "
                             f"{self.correspondence!r} / {self.correspondence_temperature!r}")


@dataclass
class LossTerms:
    """Scalar float32 tensors; `total` is the weighted sum (the one to back-propagate)."""

    total: Tensor
    points: Tensor
    rotation: Tensor
    translation: Tensor
    conf: Tensor
    scale: Tensor  # (B,) fitted scales, detached (diagnostics)
    correspondence: Tensor | None = None  # set by the trainer when LossWeights.correspondence > 0

    def as_floats(self) -> dict[str, float]:
        names = ("total", "points", "rotation", "translation", "conf") + (("correspondence",) if self.correspondence is not None else ())
        return {k: float(getattr(self, k).detach()) for k in names}


def fit_clip_scale(pred: Tensor, gt: Tensor, valid: Tensor) -> Tensor:
    """Per-clip `s` minimising `sum_valid |s p - g|^2 / z_g` (closed form).

    pred, gt: (B, T, H, W, 3) camera-frame points; valid: (B, T, H, W) bool. Returns (B,) float32.
    """
    w = valid.float() / gt[..., 2].clamp_min(_EPS)
    num = (w * (pred * gt).sum(-1)).flatten(1).sum(1)
    den = (w * (pred * pred).sum(-1)).flatten(1).sum(1)
    return num / den.clamp_min(_EPS)


def relative_poses(T: Tensor) -> Tensor:
    """T: (B, N, 4, 4) rigid camera-to-world -> (B, N, N, 4, 4) with [i, j] = T_i^-1 T_j."""
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    Rt = R.transpose(-1, -2)
    R_rel = Rt.unsqueeze(2) @ R.unsqueeze(1)
    t_rel = (Rt.unsqueeze(2) @ (t.unsqueeze(1) - t.unsqueeze(2)).unsqueeze(-1)).squeeze(-1)
    out = torch.zeros(*R_rel.shape[:-2], 4, 4, dtype=T.dtype, device=T.device)
    out[..., :3, :3] = R_rel
    out[..., :3, 3] = t_rel
    out[..., 3, 3] = 1.0
    return out


def rotation_angle(Ra: Tensor, Rb: Tensor) -> Tensor:
    """Geodesic angle (radians) between rotations `(..., 3, 3)`; gradients stay finite at 0."""
    R = Ra.transpose(-1, -2) @ Rb
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = 0.5 * torch.sqrt((skew * skew).sum(-1) + 1e-12)
    return torch.atan2(sin, cos)


def clip_losses(
    pred_local: Tensor,
    pred_conf: Tensor,
    pred_poses: Tensor,
    gt_local: Tensor,
    gt_poses: Tensor,
    valid: Tensor,
    weights: LossWeights = LossWeights(),
) -> LossTerms:
    """Losses of one batch of clips.

    pred_local: (B, T, H, W, 3) predicted camera-frame points; pred_conf: (B, T, H, W, 1) logits;
    pred_poses: (B, T, 4, 4) predicted `T_world_cam` (any world frame, any scale);
    gt_local: (B, T, H, W, 3) true camera-frame points (metres); gt_poses: (B, T, 4, 4) true poses;
    valid: (B, T, H, W) bool. Frames may repeat (overlap frames predicted by two windows).
    """
    pred_local = pred_local.float()
    gt_local = gt_local.float()
    valid = valid & torch.isfinite(pred_local).all(-1)
    pred_local = torch.nan_to_num(pred_local)
    n_valid = valid.float().flatten(1).sum(1).clamp_min(1.0)
    s = fit_clip_scale(pred_local, gt_local, valid)  # (B,)
    z = gt_local[..., 2].clamp_min(_EPS)

    err = (s.view(-1, 1, 1, 1, 1) * pred_local - gt_local).abs().sum(-1) / z  # (B, T, H, W)
    err = torch.where(valid, err, torch.zeros_like(err))
    points = (err.flatten(1).sum(1) / n_valid).mean()

    target = (err.detach() < weights.conf_threshold).float()
    bce = F.binary_cross_entropy_with_logits(pred_conf[..., 0].float(), target, reduction="none")
    conf = ((bce * valid.float()).flatten(1).sum(1) / n_valid).mean()

    mean_depth = (z * valid.float()).flatten(1).sum(1) / n_valid  # (B,)
    rel_pred = relative_poses(pred_poses.float())
    rel_gt = relative_poses(gt_poses.float())
    rotation = rotation_angle(rel_pred[..., :3, :3], rel_gt[..., :3, :3]).flatten(1).mean(1).mean()
    t_err = (s.view(-1, 1, 1, 1) * rel_pred[..., :3, 3] - rel_gt[..., :3, 3]).abs().sum(-1)
    norm = mean_depth
    if weights.translation_norm == "motion":
        motion = rel_gt[..., :3, 3].abs().sum(-1).flatten(1).mean(1)
        norm = torch.maximum(motion, weights.motion_floor * mean_depth)
    translation = (t_err.flatten(1).mean(1) / norm.clamp_min(_EPS)).mean()

    total = (weights.points * points + weights.rotation * rotation + weights.translation * translation
             + weights.conf * conf)
    return LossTerms(total, points, rotation, translation, conf, s.detach())
