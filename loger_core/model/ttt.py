"""Test-time-training (TTT) fast-weight layer: LaCT-style multi-head SwiGLU fast weights.

Per head the fast weights are `w0, w2: (d, dh)` and `w1: (dh, d)`; the fast network is
`f(x) = (silu(x @ w0) * (x @ w2)) @ w1`. For every window the layer first *applies* the incoming
fast weights to the window's queries, then *updates* them with one step of gradient ascent on the
dot-product objective `<f(k), v>` over all the window's tokens, with learned per-token learning
rates. Each gradient is orthogonalised by a Newton-Schulz iteration (Muon) computed in bfloat16,
and each updated weight is renormalised column-wise back to the incoming weight's norms. The
updated weights are the memory carried to the next window.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Quintic Newton-Schulz coefficients of the Muon optimiser (Jordan et al., 2024).
_NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz_orthogonalize(G: Tensor, steps: int) -> Tensor:
    """Approximate orthogonalisation `U V^T` of each matrix of `G (b, m, n)`, in bfloat16.

    Returns a bfloat16 tensor of the same shape: the authors run this in bfloat16 on every device,
    so we do too (it is part of what the checkpoint computes).
    """
    a, b, c = _NS_COEFFS
    X = G.bfloat16()
    transposed = G.size(1) > G.size(2)
    if transposed:
        X = X.transpose(1, 2)
    X = X / (X.norm(dim=(1, 2), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.transpose(1, 2)
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.transpose(1, 2) if transposed else X


def _silu_backward(dy: Tensor, x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return dy * s * (1 + x * (1 - s))


def fast_weight_update(
    w0: Tensor, w1: Tensor, w2: Tensor, k: Tensor, v: Tensor,
    lr0: Tensor, lr1: Tensor, lr2: Tensor, muon_steps: int, update_steps: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """One TTT update over all tokens.

    w0, w2: (b, d, dh); w1: (b, dh, d); k, v: (b, l, d); lr*: (b, l, 1) float32.
    Returns the updated (w0, w1, w2), renormalised to the column norms of the inputs.
    """
    n0 = w0.detach().norm(dim=1, keepdim=True)
    n1 = w1.detach().norm(dim=1, keepdim=True)
    n2 = w2.detach().norm(dim=1, keepdim=True)
    gate = k @ w0
    lin = k @ w2
    hidden = F.silu(gate) * lin
    for _ in range(update_steps):
        dhidden = v @ w1.transpose(-1, -2)
        dlin = dhidden * F.silu(gate)
        dgate = _silu_backward(dhidden * lin, gate)
        g1 = newton_schulz_orthogonalize((hidden * lr1).transpose(-1, -2) @ v, muon_steps)
        g0 = newton_schulz_orthogonalize((k * lr0).transpose(-1, -2) @ dgate, muon_steps)
        g2 = newton_schulz_orthogonalize((k * lr2).transpose(-1, -2) @ dlin, muon_steps)
        # Gradient *ascent* on <f(k), v>, then weight norm back to the incoming column norms.
        w1 = w1 + g1
        w0 = w0 + g0
        w2 = w2 + g2
        w0 = w0 / (w0.norm(dim=1, keepdim=True) + 1e-5) * n0
        w1 = w1 / (w1.norm(dim=1, keepdim=True) + 1e-5) * n1
        w2 = w2 / (w2.norm(dim=1, keepdim=True) + 1e-5) * n2
    return w0, w1, w2


def fast_weight_apply(w0: Tensor, w1: Tensor, w2: Tensor, q: Tensor) -> Tensor:
    """q: (b, l, d) -> (b, l, d) through the SwiGLU fast network."""
    return (F.silu(q @ w0) * (q @ w2)) @ w1


class FastWeightSwiGLU(nn.Module):
    """TTT layer on decoder tokens `(B, N, L, C)`; returns its output and the updated fast weights.

    Heads: `C // head_dim`; fast weights are stored batch-major as `(B * heads, ...)`.
    """

    def __init__(
        self, dim: int, head_dim: int, inter_multi: int, base_lr: float = 0.01,
        muon_steps: int = 5, update_steps: int = 1, pre_norm: bool = False,
    ) -> None:
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of ttt head_dim {head_dim}")
        self.num_heads = dim // head_dim
        self.muon_steps = muon_steps
        self.update_steps = update_steps
        dh = int(head_dim * inter_multi)
        self.w0 = nn.Parameter(torch.randn(self.num_heads, head_dim, dh) * math.sqrt(2.0 / head_dim))
        self.w1 = nn.Parameter(torch.randn(self.num_heads, dh, head_dim) * math.sqrt(2.0 / dh))
        self.w2 = nn.Parameter(torch.randn(self.num_heads, head_dim, dh) * math.sqrt(2.0 / head_dim))
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        # Unused by the forward pass; present in the released checkpoints, so kept for strict loading.
        self.to_qkv_stack = nn.Sequential(nn.Linear(dim, 3 * dim, bias=False))
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.lr_fc = nn.Linear(dim, 3 * self.num_heads)
        # softplus(x + inv_softplus(base_lr)) == base_lr at x == 0.
        self.lr_offset = base_lr + math.log(-math.expm1(-base_lr))
        self.pre_norm = nn.RMSNorm(dim, eps=1e-5) if pre_norm else None
        self.o_norm = nn.RMSNorm(head_dim, eps=1e-5)

    def initial_weights(self, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.w0.repeat(batch, 1, 1), self.w1.repeat(batch, 1, 1), self.w2.repeat(batch, 1, 1)

    def _split_heads(self, t: Tensor) -> Tensor:
        # (B, L, heads * d) -> (B * heads, L, d)
        B, L, _ = t.shape
        return t.reshape(B, L, self.num_heads, -1).transpose(1, 2).reshape(B * self.num_heads, L, -1)

    def forward(
        self, x: Tensor, weights: tuple[Tensor, Tensor, Tensor] | None, update: bool = True,
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        """x: (B, N, L, C). weights: incoming (w0, w1, w2) or None for the learned initial ones.

        Returns (output (B, N, L, C), new weights). With `update=False` the weights pass through
        unchanged (used for provisional, uncommitted passes).
        """
        B, N, L, C = x.shape
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        x = x.reshape(B, N * L, C)
        q, k, v = F.silu(self.to_qkv(x)).chunk(3, dim=-1)
        q, k, v = self._split_heads(q), self._split_heads(k), self._split_heads(v)
        q = q / (q.norm(dim=2, keepdim=True) + 1e-5)
        k = k / (k.norm(dim=2, keepdim=True) + 1e-5)
        with torch.autocast(device_type=x.device.type, enabled=False):
            lr = F.softplus(self.lr_fc(x.float()) + self.lr_offset)
        lr0, lr1, lr2 = (self._split_heads(t) for t in lr.chunk(3, dim=-1))

        w0, w1, w2 = weights if weights is not None else self.initial_weights(B)
        out = fast_weight_apply(w0, w1, w2, q)
        if update:
            w0, w1, w2 = fast_weight_update(w0, w1, w2, k, v, lr0, lr1, lr2, self.muon_steps, self.update_steps)
        out = self.o_norm(out)
        out = out.reshape(B, self.num_heads, N * L, -1).transpose(1, 2).reshape(B, N * L, C)
        out = self.c_proj(out)
        return out.reshape(B, N, L, C).to(x.dtype), (w0, w1, w2)
