"""What one window pass of the network returns (:class:`WindowPrediction`) and the two small
functions that turn its raw outputs into world-frame poses and points. Shared by the network
(``loger``), the sequence merging (``windowing``), the CUDA-graph replay (``window_graphs``) and
the stream, so that none of them imports another for these types.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .heads import pose_from_raw

__all__ = ["WindowPrediction", "finish_raw_camera", "transform_points"]


@dataclass
class WindowPrediction:
    """Predictions for the frames of one window (or a merged sequence), all float32.

    local_points: (B, N, H, W, 3) camera-frame points (OpenCV axes).
    conf: (B, N, H, W, 1) confidence logits (higher = more confident).
    camera_poses: (B, N, 4, 4) `T_world_cam`, world = the frame of the memory / alignment.
    points: (B, N, H, W, 3) world-frame points, `camera_poses @ local_points`.
    descriptors: (B, N, C) unit global descriptors of the frames from the encoder's patch tokens
        (`descriptor.pool_patch_tokens`; C = the encoder width), or None where a path does not
        carry them (provisional CUDA graphs, test doubles).
    """

    local_points: Tensor
    conf: Tensor
    camera_poses: Tensor
    points: Tensor
    descriptors: Optional[Tensor] = None

    @property
    def depth(self) -> Tensor:
        """(B, N, H, W) z-depth in the model's (or aligned) scale."""
        return self.local_points[..., 2]

    @property
    def num_frames(self) -> int:
        return self.camera_poses.shape[1]

    def frames(self, start: int, end: int | None = None) -> "WindowPrediction":
        sl = slice(start, end)
        return WindowPrediction(self.local_points[:, sl], self.conf[:, sl], self.camera_poses[:, sl], self.points[:, sl],
                                None if self.descriptors is None else self.descriptors[:, sl])

    def to(self, device: torch.device | str) -> "WindowPrediction":
        return WindowPrediction(*(t.to(device) for t in (self.local_points, self.conf, self.camera_poses, self.points)),
                                None if self.descriptors is None else self.descriptors.to(device))

    @staticmethod
    def cat(parts: list["WindowPrediction"]) -> "WindowPrediction":
        descriptors = None
        if parts and all(p.descriptors is not None for p in parts):
            descriptors = torch.cat([p.descriptors for p in parts], 1)
        return WindowPrediction(
            torch.cat([p.local_points for p in parts], 1), torch.cat([p.conf for p in parts], 1),
            torch.cat([p.camera_poses for p in parts], 1), torch.cat([p.points for p in parts], 1), descriptors,
        )


def finish_raw_camera(local_points: Tensor, raw: Tensor) -> tuple[Tensor, Tensor]:
    """(B, N, H, W, 3) local points and the (B, N, 12) raw camera output of
    `forward_window(..., raw_camera=True)` -> ((B, N, 4, 4) T_world_cam, (B, N, H, W, 3) points)."""
    B, N = raw.shape[:2]
    poses = pose_from_raw(raw.reshape(B * N, 12)).reshape(B, N, 4, 4)
    return poses, transform_points(poses, local_points)


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """T: (B, N, 4, 4); points: (B, N, H, W, 3) -> T applied to each frame's points."""
    homog = torch.cat([points, torch.ones_like(points[..., :1])], dim=-1)
    return torch.einsum("bnij,bnhwj->bnhwi", T, homog)[..., :3]
