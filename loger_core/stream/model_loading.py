"""Builds the network a stream configuration asks for."""
from __future__ import annotations

import logging

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
