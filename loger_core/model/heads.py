"""Prediction heads: per-frame transformer decoders, a linear patch-to-pixel head and the camera head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Block, RoPE2D


class TransformerDecoder(nn.Module):
    """Project `(B*N, L, in_dim)` tokens, run frame-wise RoPE blocks, project to `out_dim`."""

    def __init__(self, in_dim: int, embed_dim: int, out_dim: int, depth: int, num_heads: int, rope: RoPE2D) -> None:
        super().__init__()
        self.projects = nn.Linear(in_dim, embed_dim)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, 4.0, norm_eps=1e-6, rope=rope) for _ in range(depth))
        self.linear_out = nn.Linear(embed_dim, out_dim)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = self.projects(x)
        for blk in self.blocks:
            x = blk(x, pos)
        return self.linear_out(x)


class LinearPatchHead(nn.Module):
    """Each patch token -> a `patch x patch` block of `out_channels` values (pixel shuffle)."""

    def __init__(self, dim: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(dim, out_channels * patch_size**2)

    def forward(self, tokens: Tensor, H: int, W: int) -> Tensor:
        """tokens: (B*N, h*w, dim) -> (B*N, H, W, out_channels)."""
        BN = tokens.shape[0]
        p = self.patch_size
        feat = self.proj(tokens).transpose(-1, -2).reshape(BN, -1, H // p, W // p)
        return F.pixel_shuffle(feat, p).permute(0, 2, 3, 1)


class ResLinearBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv1 = nn.Linear(dim, dim)
        self.res_conv2 = nn.Linear(dim, dim)
        self.res_conv3 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.res_conv1(x))
        y = F.relu(self.res_conv2(y))
        return x + F.relu(self.res_conv3(y))


def rotation_from_9d(m: Tensor) -> Tensor:
    """(B, 9) -> (B, 3, 3) proper rotations by SVD projection of the row-normalised matrix."""
    m = F.normalize(m.reshape(-1, 3, 3), p=2, dim=-1).transpose(-1, -2)
    u, _, vh = torch.linalg.svd(m)
    det = torch.det(u @ vh)
    d = torch.diag_embed(torch.stack([torch.ones_like(det), torch.ones_like(det), det], dim=-1))
    return (u @ d @ vh).transpose(-1, -2)


class CameraHead(nn.Module):
    """Per-frame tokens `(B*N, h*w, dim)` -> camera-to-world pose `(B*N, 4, 4)` float32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.res_conv = nn.ModuleList(ResLinearBlock(dim) for _ in range(2))
        self.more_mlps = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU())
        self.fc_t = nn.Linear(dim, 3)
        self.fc_rot = nn.Linear(dim, 9)

    def forward(self, feat: Tensor, patch_h: int, patch_w: int, raw: bool = False) -> Tensor:
        """feat: (B*N, patch_h*patch_w, dim) patch tokens. raw: return the (B*N, 12) float32
        [translation, 9-d rotation] before the SVD projection (`pose_from_raw` finishes it): a CUDA
        graph can hold everything but the SVD, whose error check copies to the host."""
        for blk in self.res_conv:
            feat = blk(feat)
        # Average over the patch grid (adaptive pooling, the same reduction the checkpoint used).
        grid = feat.transpose(1, 2).reshape(feat.shape[0], -1, patch_h, patch_w)
        feat = self.more_mlps(F.adaptive_avg_pool2d(grid, 1).flatten(1))
        with torch.autocast(device_type=feat.device.type, enabled=False):
            feat = feat.float()
            t = self.fc_t(feat)
            m = self.fc_rot(feat)
            if raw:
                return torch.cat([t, m], dim=-1)
            return _pose(t, rotation_from_9d(m))


def _pose(t: Tensor, R: Tensor) -> Tensor:
    pose = torch.zeros(t.shape[0], 4, 4, device=t.device, dtype=torch.float32)
    pose[:, :3, :3] = R
    pose[:, :3, 3] = t
    pose[:, 3, 3] = 1.0
    return pose


def pose_from_raw(raw: Tensor) -> Tensor:
    """(M, 12) float32 output of `CameraHead(..., raw=True)` -> (M, 4, 4) camera-to-world poses,
    the same values the head returns without `raw`."""
    return _pose(raw[:, :3], rotation_from_9d(raw[:, 3:]))
