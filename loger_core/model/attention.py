"""Scaled-dot-product attention, with the kernel chosen by policy.

Two policies:

- ``"reference"`` pins the kernels the authors pin (flash in bf16; math / memory-efficient in
  fp32). The TTT update rounds to bf16, which turns even last-bit differences from another fp32
  kernel into visible drift over windows, so the CPU fp32 path (our golden reference) keeps these.
- ``"fastest"`` times every kernel PyTorch offers for the (device, dtype, shape) of a call once —
  cuDNN, flash, memory-efficient — and uses the fastest from then on. On an H100 at a global-attention
  shape of one 32-frame window (16 heads x 23,232 tokens x 64), cuDNN ran at 429 TFLOP/s and flash at
  306; at the short frame-wise shapes flash can win. Off CUDA it is the reference policy.

The kernel call is registered as the custom op ``loger::attention`` so that ``torch.compile`` of a
block treats it as one opaque call (no graph break, no retrace of the timing code).
"""
from __future__ import annotations

import logging
import threading

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

POLICIES = ("reference", "fastest")

_FP32_BACKENDS = [SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION]
_BF16_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# Candidates of the "fastest" policy on CUDA, in order of preference on a tie.
_CUDA_CANDIDATES = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]

# On the CPU the math kernel materialises the (Lq, Lk) score matrix: beyond this many entries per
# head (a 32-frame window at 504x280 has 23k tokens) it is minutes per window, so we let PyTorch pick
# its blocked CPU kernel, which differs from math only in rounding.
CPU_MATH_MAX_SCORES = 1 << 24


def reference_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: (B, heads, Lq, D); k, v: (B, heads, Lk, D) -> (B, heads, Lq, D) with the authors' kernels."""
    if q.device.type == "cpu" and q.dtype != torch.bfloat16 and q.shape[-2] * k.shape[-2] > CPU_MATH_MAX_SCORES:
        return F.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(_BF16_BACKENDS if q.dtype == torch.bfloat16 else _FP32_BACKENDS):
        return F.scaled_dot_product_attention(q, k, v)


class KernelChooser:
    """Per-shape choice of the fastest CUDA SDPA kernel, measured once with CUDA events."""

    def __init__(self, repeats: int = 3) -> None:
        self.repeats = repeats
        self.choices: dict[tuple, SDPBackend] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(q: Tensor, k: Tensor) -> tuple:
        return (q.device.index, q.dtype, tuple(q.shape), tuple(k.shape))

    def _time(self, backend: SDPBackend, q: Tensor, k: Tensor, v: Tensor) -> float:
        with sdpa_kernel([backend]):
            F.scaled_dot_product_attention(q, k, v)  # warm-up (and refusal of unsupported shapes)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(self.repeats):
                F.scaled_dot_product_attention(q, k, v)
            end.record()
        end.synchronize()
        return start.elapsed_time(end) / self.repeats

    def choose(self, q: Tensor, k: Tensor, v: Tensor) -> SDPBackend:
        key = self.key(q, k)
        choice = self.choices.get(key)
        if choice is not None:
            return choice
        with self._lock:
            if key in self.choices:
                return self.choices[key]
            timings: dict[SDPBackend, float] = {}
            for backend in _CUDA_CANDIDATES:
                try:
                    timings[backend] = self._time(backend, q, k, v)
                except RuntimeError:  # kernel does not support this shape / dtype / GPU
                    continue
            best = min(timings, key=timings.get) if timings else SDPBackend.MATH
            log.info("attention %s x %s %s: %s (%s)", tuple(q.shape), tuple(k.shape), q.dtype, best.name,
                     ", ".join(f"{b.name} {t:.2f} ms" for b, t in timings.items()))
            self.choices[key] = best
            return best


CHOOSER = KernelChooser()


# The op returns (B, Lq, heads, D) contiguous: a fixed layout for the compiler (each kernel has its
# own output strides), and the one the output projection reads anyway (flash writes it natively).
@torch.library.custom_op("loger::attention", mutates_args=())
def _attention_op(q: Tensor, k: Tensor, v: Tensor, policy: str) -> Tensor:
    if policy == "fastest" and q.is_cuda:
        with sdpa_kernel([CHOOSER.choose(q, k, v)]):
            out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = reference_attention(q, k, v)
    return out.transpose(1, 2).contiguous()


@_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, policy: str) -> Tensor:
    B, H, L, _ = q.shape
    return q.new_empty(B, L, H, v.shape[-1])


def attention(q: Tensor, k: Tensor, v: Tensor, policy: str = "reference") -> Tensor:
    """Softmax attention of q (B, heads, Lq, D) over k, v (B, heads, Lk, D) under `policy`."""
    if policy not in POLICIES:
        raise ValueError(f"attention policy must be one of {POLICIES}, got {policy!r}")
    if policy == "reference" or not q.is_cuda:
        return reference_attention(q, k, v)
    return _attention_op(q, k, v, policy).transpose(1, 2)
