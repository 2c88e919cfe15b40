"""GPU fast paths of the network, switched on per model instance.

The eager fp32 path is the reference (bitwise equal to the authors' code on the CPU); the fast paths
change how the same computation runs on a CUDA device under bf16 autocast:

- ``attention="fastest"``: each attention call uses the fastest SDPA kernel for its shape
  (cuDNN / flash / memory-efficient, timed once; see `attention.py`) instead of the pinned flash.
- ``bf16_weights``: the weights of every linear / convolution layer that runs under autocast are
  stored in bf16. Autocast casts them to bf16 at every call anyway, so the arithmetic is unchanged
  (bitwise); it saves the cast kernels and half the weight memory. Layers that the network runs in
  fp32 (the depth / confidence / camera output projections, the TTT learning rates) stay fp32.
- ``fused_gelu``: every MLP's first linear layer applies its GELU in the cuBLASLt matmul epilogue
  (`layers.linear_gelu`: tanh-form GELU, within 5e-4 of the exact one, below bf16 rounding) instead
  of a separate elementwise pass over the (tokens, 4 x dim) activations.
- ``tune_kernels``: Inductor's coordinate-descent tuning of the fused kernels' launch configurations
  (longer first compile; see `compile_regions_`).
- ``compile``: ``torch.compile`` of each transformer block (around the opaque attention op) and of
  each TTT layer: the layer norms, RoPE, qk-norm, residuals, layer scales, GELU and the TTT
  Newton-Schulz iterations become a few fused kernels instead of thousands of small launches.
  Identical blocks share compiled code, so compile time does not grow with depth.

Compiled regions are entered by one thread at a time (`_COMPILED_CALLS`, a lock around every call):
while dynamo traces a new shape on one thread, a call into any compiled function on another thread
would fail ("FX to symbolically trace a dynamo-optimized function"); with the lock it waits instead.
A thread that must never wait for another thread's compile (a provisional pass of the
`StreamingReconstructor` launched from Python while the window worker may be compiling) runs the same
blocks eagerly inside `eager_regions()`: it never compiles and never enters compiled code. Its CUDA
graphs are captured from the compiled blocks where that compiles nothing (`ProvisionalGraphs`).
"""
from __future__ import annotations

import functools
import logging
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .attention import POLICIES
from .layers import Attention, Block, Mlp
from .ttt import FastWeightSwiGLU

log = logging.getLogger(__name__)

# Layers the network runs with autocast disabled on float32 inputs (the output heads, the TTT
# learning rates): their weights stay fp32.
FP32_PREFIXES = ("point_head.", "conf_head.", "camera_head.")
FP32_SUFFIXES = (".lr_fc",)


@dataclass(frozen=True)
class FastPathConfig:
    """attention: 'reference' or 'fastest'; bf16_weights / compile: see the module docstring."""

    attention: str = "fastest"
    bf16_weights: bool = True
    compile: bool = True
    fused_gelu: bool = True
    tune_kernels: bool = False

    def __post_init__(self) -> None:
        if self.attention not in POLICIES:
            raise ValueError(f"attention must be one of {POLICIES}, got {self.attention!r}")

    @classmethod
    def off(cls) -> "FastPathConfig":
        return cls(attention="reference", bf16_weights=False, compile=False, fused_gelu=False, tune_kernels=False)

    @property
    def enabled(self) -> bool:
        return self != FastPathConfig.off()


def _runs_in_fp32(name: str) -> bool:
    return name.startswith(FP32_PREFIXES) or name.endswith(FP32_SUFFIXES)


def cast_autocast_weights_(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Stores the weights of linear / conv layers that run under autocast in `dtype`; returns how
    many layers were cast. Only valid for a model that is always run under `dtype` autocast."""
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and not _runs_in_fp32(name):
            module.to(dtype)
            count += 1
    return count


_local = threading.local()
# Held by a thread while it is inside a compiled region (see the module docstring); re-entrant.
_COMPILED_CALLS = threading.RLock()


@contextmanager
def eager_regions() -> Iterator[None]:
    """Within it, on this thread only, compiled regions run their original eager code."""
    previous = getattr(_local, "eager", False)
    _local.eager = True
    try:
        yield
    finally:
        _local.eager = previous


def _compiled_or_eager(eager: Callable, compile_fn: Callable = torch.compile) -> Callable:
    """`compile_fn(eager)`, except on a thread inside `eager_regions()`."""
    compiled = compile_fn(eager)

    @functools.wraps(eager)
    def forward(*args, **kwargs):
        if getattr(_local, "eager", False):
            return eager(*args, **kwargs)
        with _COMPILED_CALLS:
            return compiled(*args, **kwargs)

    forward.compiled = compiled
    return forward


def compile_regions_(model: nn.Module, tune_kernels: bool = False) -> int:
    """`torch.compile`s every transformer block (both its plain and its SWA entry) and every TTT
    layer in place; returns how many modules were compiled. tune_kernels: Inductor searches each
    fused kernel's launch configuration (coordinate descent) when it first compiles it."""
    import torch._dynamo

    # One compiled graph per (block kind, shape); all instances share it, so the cache must hold
    # at least the number of instances for the guard checks to find it rather than give up.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    torch._dynamo.config.accumulated_cache_size_limit = max(torch._dynamo.config.accumulated_cache_size_limit, 4096)
    compile_fn = functools.partial(torch.compile, options={"coordinate_descent_tuning": True}) if tune_kernels \
        else torch.compile
    count = 0
    for module in model.modules():
        if isinstance(module, Block):
            module.forward = _compiled_or_eager(module.forward, compile_fn)
            module.forward_swa = _compiled_or_eager(module.forward_swa, compile_fn)
            count += 1
        elif isinstance(module, FastWeightSwiGLU):
            module.forward = _compiled_or_eager(module.forward, compile_fn)
            count += 1
    return count


def enable_fast_paths(model: nn.Module, config: FastPathConfig = FastPathConfig()) -> nn.Module:
    """Switches `model` (a LoGeR on a CUDA device, run under bf16 autocast) to the fast paths in
    `config`; returns it. Recorded as `model.fast_paths`. Calling it again with the same config is a
    no-op; fast paths cannot be switched off again on the same instance."""
    current = getattr(model, "fast_paths", FastPathConfig.off())
    if current == config:
        return model
    if current.enabled:
        raise RuntimeError(f"fast paths already enabled ({current}); build a new model for {config}")
    for module in model.modules():
        if isinstance(module, Attention):
            module.kernel_policy = config.attention
            if module.rope is not None:
                # Fill the RoPE tables now: compiled graphs then read them as constants.
                half = module.qkv.out_features // 3 // module.num_heads // 2
                for dtype in (torch.float32, torch.bfloat16):
                    module.rope._cos_sin(half, module.qkv.weight.device, dtype)
    if config.bf16_weights:
        n = cast_autocast_weights_(model)
        log.info("fast paths: %d linear/conv layers hold bf16 weights", n)
    if config.fused_gelu:
        for module in model.modules():
            if isinstance(module, Mlp):
                module.fused_gelu = True
    if config.compile:
        n = compile_regions_(model, config.tune_kernels)
        log.info("fast paths: %d blocks / TTT layers compiled (first windows of each shape compile)", n)
    model.fast_paths = config
    return model


def default_fast_paths(device: torch.device, dtype: torch.dtype) -> FastPathConfig:
    """The fast paths a model gets by default: all of them for CUDA under bf16 autocast, none
    otherwise (the CPU fp32 path stays the reference)."""
    if device.type == "cuda" and dtype == torch.bfloat16:
        return FastPathConfig()
    return FastPathConfig.off()


def describe(config: FastPathConfig) -> dict:
    return asdict(config)
