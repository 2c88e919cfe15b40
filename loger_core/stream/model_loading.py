"""Builds the network a stream configuration asks for."""
from __future__ import annotations

import logging
import os
import threading

import torch

from loger_core.model import build_model, load_checkpoint
from loger_core.model.fast_paths import enable_fast_paths
from loger_core.model.synthetic_weights import fill_deterministic_

from .config import StreamConfig

log = logging.getLogger(__name__)

SYNTHETIC_WEIGHTS_WARNING = (
    "NO CHECKPOINT GIVEN: model {name!r} runs with deterministic SYNTHETIC weights; poses, depth and "
    "points are NOT meaningful geometry. Pass the authors' weights (checkpoint) for real results."
)


def load_stream_model(config: StreamConfig) -> torch.nn.Module:
    """The model on `config.torch_device()` with float32 weights (lower precisions run under
    autocast, as the authors do), with the fast paths `config` asks for (on CUDA + bf16 by
    default). Without a checkpoint: deterministic synthetic weights, loudly."""
    device = config.torch_device()
    if config.checkpoint:
        model = load_checkpoint(config.checkpoint, config=config.model, device=device, allow_pickle=config.allow_pickle)
    else:
        log.warning(SYNTHETIC_WEIGHTS_WARNING.format(name=config.model))
        model = fill_deterministic_(build_model(config.model, device="meta")).to(device)
    fast = config.fast_path_config()
    if fast.enabled:
        log.info("GPU fast paths on: %s", fast)
        enable_fast_paths(model, fast)
    return model.eval()


# One model per process and configuration: a batch worker (loger-batch) maps many inputs with the
# same weights, and loading a full checkpoint costs seconds and GBs of host memory each time.
_MODEL_CACHE: dict[tuple, torch.nn.Module] = {}
_CACHE_LOADS = 0
_CACHE_LOCK = threading.Lock()


def model_cache_key(config: StreamConfig) -> tuple:
    """What decides the loaded model: weights, device and the fast paths patched into it."""
    checkpoint = config.checkpoint
    stamp = None
    if checkpoint:
        # A file replaced in place (retrained weights) must not hit the old entry.
        st = os.stat(checkpoint)
        stamp = (st.st_size, st.st_mtime_ns)
    return (config.model, checkpoint, stamp, config.allow_pickle, str(config.torch_device()),
            repr(config.fast_path_config()))


def cached_stream_model(config: StreamConfig) -> torch.nn.Module:
    """:func:`load_stream_model`, once per process and :func:`model_cache_key`.

    The model carries no per-sequence state (memory lives in the reconstructor's ``StreamState``),
    so one instance serves every sequence of a process, one at a time.
    """
    global _CACHE_LOADS
    key = model_cache_key(config)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = load_stream_model(config)
            _MODEL_CACHE[key] = model
            _CACHE_LOADS += 1
        return model


def model_cache_loads() -> int:
    """How many models :func:`cached_stream_model` has loaded in this process (batch statistics)."""
    return _CACHE_LOADS


def clear_model_cache() -> None:
    """Drops the cached models (frees their memory once no reconstructor holds them)."""
    with _CACHE_LOCK:
        _MODEL_CACHE.clear()
