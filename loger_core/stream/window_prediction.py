"""Checks and completion of one window's `WindowPrediction` (poses (B, N, 4, 4), points
(B, N, h, w, 3) in the network world frame): is it usable, and its poses / world points from a raw
camera output.
"""
from __future__ import annotations

import torch

from loger_core.model.prediction import WindowPrediction, finish_raw_camera

__all__ = ["finish_camera", "usable"]


def usable(pred: WindowPrediction) -> bool:
    """A window is usable when every pose is finite and every frame has some finite point;
    partially non-finite point maps are masked per pixel instead."""
    finite = torch.isfinite(pred.local_points).all(dim=-1).flatten(2)  # (B, N, h*w)
    # One host sync for both checks.
    return bool(torch.isfinite(pred.camera_poses).all() & finite.any(dim=-1).all())


def finish_camera(pred: WindowPrediction) -> WindowPrediction:
    """`pred` with poses and world points, from a raw camera output (`raw_camera`) if it has one."""
    if pred.points is not None:
        return pred
    poses, points = finish_raw_camera(pred.local_points, pred.camera_poses)
    return WindowPrediction(pred.local_points, pred.conf, poses, points, pred.descriptors)
