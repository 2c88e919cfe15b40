"""Transformer building blocks shared by the encoder, the decoder, the SWA layers and the heads.

Token tensors are `(B, L, C)`; attention heads are split as `(B, heads, L, head_dim)`.
Parameter names (norm1, attn.qkv, ls1, mlp.fc1, ...) match the authors' checkpoints.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import attention


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


def linear_gelu(x: Tensor, fc: nn.Linear) -> Tensor:
    """GELU(fc(x)) as one `addmm` with the activation in the matmul's epilogue: (..., in) -> (..., out).

    On CUDA this is cuBLASLt's bias + GELU epilogue, which saves writing and re-reading the
    (tokens, hidden) activations (about a quarter of an MLP's time at 23k tokens x 4096); its GELU is
    the tanh form, within 5e-4 of the exact one, below bf16's rounding of the same values. On the CPU
    it is the exact GELU and equals `F.gelu(fc(x))` bitwise. Runs in the autocast dtype, if any."""
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    out = torch._addmm_activation(fc.bias.to(dtype), x.reshape(-1, x.shape[-1]).to(dtype), fc.weight.to(dtype).t(),
                                  use_gelu=True)
    return out.reshape(*x.shape[:-1], out.shape[-1])


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        # Set by the CUDA fast paths (`fast_paths.py`): fc1's GELU in the matmul epilogue.
        self.fused_gelu = False

    def forward(self, x: Tensor) -> Tensor:
        if self.fused_gelu:
            return self.fc2(linear_gelu(x, self.fc1))
        return self.fc2(self.act(self.fc1(x)))


class RoPE2D(nn.Module):
    """2-D rotary position embedding: the first half of each head's channels rotates with the
    token's row (y), the second half with its column (x); frequencies `base ** (-2i / D)`."""

    # Positions the cos/sin table covers per axis: a patch grid up to 4096 patches on a side. A fixed
    # size (each entry depends only on its own position) spares a device->host read of `pos.max()`
    # in every attention call, which stalled the CUDA stream and broke `torch.compile` graphs.
    TABLE_LENGTH = 4096

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = float(base)
        self._cache: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _cos_sin(self, dim: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        key = (dim, device, dtype)
        if key not in self._cache:
            inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, device=device).float() / dim))
            t = torch.arange(self.TABLE_LENGTH, device=device, dtype=inv_freq.dtype)
            freqs = torch.outer(t, inv_freq).to(dtype)
            freqs = torch.cat((freqs, freqs), dim=-1)
            self._cache[key] = (freqs.cos(), freqs.sin())
        return self._cache[key]

    @staticmethod
    def _rotate_half(x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)

    def _apply_1d(self, x: Tensor, pos: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        cos = F.embedding(pos, cos)[:, None]
        sin = F.embedding(pos, sin)[:, None]
        return x * cos + self._rotate_half(x) * sin

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x: (B, heads, L, D); pos: (B, L, 2) integer (y, x) positions."""
        half = x.shape[-1] // 2
        cos, sin = self._cos_sin(half, x.device, x.dtype)
        y, xx = x.chunk(2, dim=-1)
        return torch.cat((self._apply_1d(y, pos[..., 0], cos, sin), self._apply_1d(xx, pos[..., 1], cos, sin)), dim=-1)


def patch_positions(batch: int, h: int, w: int, device: torch.device) -> Tensor:
    """(batch, h*w, 2) int64 (y, x) grid positions in row-major patch order."""
    ys = torch.arange(h, device=device)
    xs = torch.arange(w, device=device)
    grid = torch.cartesian_prod(ys, xs)
    return grid.view(1, h * w, 2).expand(batch, -1, -1).clone()


class Attention(nn.Module):
    """Multi-head self-attention with optional per-head LayerNorm on q/k and optional 2-D RoPE.

    `attend` also serves the SWA layers: it can attend from the current tokens to
    `[cached history, current]` and returns the current tokens' (k, v), the next window's history.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope: RoPE2D | None = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.rope = rope
        # "reference" (the authors' pinned kernels) or "fastest" (see `attention.py`).
        self.kernel_policy = "reference"

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, L, C = x.shape
        qkv = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads).transpose(1, 3)
        q, k, v = qkv.unbind(dim=2)
        return self.q_norm(q).to(v.dtype), self.k_norm(k).to(v.dtype), v

    def _merge(self, x: Tensor) -> Tensor:
        B, _, L, _ = x.shape
        return self.proj(x.transpose(1, 2).reshape(B, L, -1))

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        return self.attend(x, pos)[0]

    def attend(
        self, x: Tensor, pos: Tensor | None = None, cache: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x: (B, L, C). cache: keys/values (B, heads, L_hist, head_dim) to attend to before x's.
        Returns the output (B, L, C) and x's own (k, v) after norm and RoPE."""
        q, k, v = self._qkv(x)
        if self.rope is not None and pos is not None:
            q, k = self.rope(q, pos), self.rope(k, pos)
        k_all, v_all = k, v
        if cache is not None:
            k_all = torch.cat([cache[0].to(k.dtype), k], dim=2)
            v_all = torch.cat([cache[1].to(v.dtype), v], dim=2)
        return self._merge(attention(q, k_all, v_all, self.kernel_policy)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1 x)); x + ls2(mlp(norm2 x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-6,
        layerscale: float | None = None,
        qk_norm: bool = False,
        rope: RoPE2D | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale) if layerscale else nn.Identity()

    def forward(self, x: Tensor, pos: Tensor | None = None) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos))
        return x + self.ls2(self.mlp(self.norm2(x)))

    def forward_swa(
        self, x: Tensor, pos: Tensor | None, cache: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The block over x attending also to `cache`; returns the output and x's (k, v), which
        become the next window's cache (one projection serves both)."""
        a, kv = self.attn.attend(self.norm1(x), pos, cache)
        x = x + self.ls1(a)
        return x + self.ls2(self.mlp(self.norm2(x))), kv
