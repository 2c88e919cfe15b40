"""DINOv2 ViT image encoder with register tokens (the authors use ViT-L/14, 4 registers)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import EncoderConfig
from .layers import Block


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoEncoder(nn.Module):
    """Images `(B, 3, H, W)` normalised with ImageNet statistics -> patch tokens `(B, h*w, C)`.

    H and W must be multiples of the patch size. The learned position table is resampled to the
    input's patch grid with antialiased bicubic interpolation to an explicit output size.
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.num_heads, cfg.mlp_ratio, norm_eps=1e-6, layerscale=cfg.layerscale_init)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def _pos_embed(self, h: int, w: int, dtype: torch.dtype) -> Tensor:
        M = self.cfg.pos_grid
        if (h, w) == (M, M):
            return self.pos_embed
        table = self.pos_embed.float()
        patch = table[:, 1:].reshape(1, M, M, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=(h, w), mode="bicubic", antialias=True)
        patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([table[:, :1], patch], dim=1).to(dtype)

    def forward(self, images: Tensor) -> Tensor:
        B, _, H, W = images.shape
        p = self.cfg.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self._pos_embed(H // p, W // p, x.dtype)
        x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x[:, 1 + self.cfg.num_register_tokens :]
