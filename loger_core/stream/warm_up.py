"""Warm-up of a stream's model before the first real frame.

On CUDA with the fast paths the first window of each shape compiles its blocks (`torch.compile`),
times the attention kernels, grows the allocator and, the second time a shape is seen, captures a
CUDA graph. On an H100 that is about 45 s for the full model. A node that meets this with a live
camera drops frames and publishes no odometry for that long; a warm-up pays it at start-up (the
lifecycle node's configure), on frames of its own.

The warm-up stream shares the model (its compiled code, kernel choices and window graphs) and
nothing else: no result, map, scale or memory state of it reaches the stream that follows.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .config import ScaleConfig, StreamConfig
from .errors import StreamInputError
from .reconstructor import StreamingReconstructor

__all__ = ["WarmUpReport", "warm_up", "warm_up_frames", "warm_up_wanted"]

log = logging.getLogger(__name__)

# Camera-like spacing of the synthetic stamps (30 fps).
_STAMP_STEP_NS = 33_333_333


@dataclass(frozen=True)
class WarmUpReport:
    """What a warm-up ran: wall seconds, frames pushed, committed windows, provisional passes,
    committed windows replayed from a CUDA graph (a non-zero count means the graph was captured) and
    provisional-pass graphs captured from compiled blocks (the live stream reuses their code)."""

    seconds: float
    frames: int
    windows: int
    provisional_passes: int
    window_graph_replays: int
    compiled_pass_graphs: int = 0


def warm_up_frames(window_size: int, overlap_size: int) -> int:
    """Frames that fill exactly four windows: the first (no memory), then the steady shape three
    times (its eager compile, its graph capture, a replay). No partial window is left for a flush
    to run: a live stream never meets that shape until it stops."""
    return window_size + 3 * (window_size - overlap_size)


def warm_up_wanted(mode: str, device: torch.device) -> bool:
    """'on', 'off', or 'auto' = on CUDA only (on the CPU nothing is compiled: the first windows cost
    what every window costs)."""
    if mode not in ("auto", "on", "off"):
        raise StreamInputError(f"warm-up mode must be 'auto', 'on' or 'off', got {mode!r}")
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def warm_up(config: StreamConfig, model: Any, image_size: Optional[tuple[int, int]] = None, seed: int = 0,
            timeout_s: Optional[float] = None) -> WarmUpReport:
    """Runs a throwaway stream of `config` on `model` over random frames and returns what it ran.

    image_size: (W, H) of the frames; default `config.resolution` (required when that is None, since
        the network size then comes from the camera's).
    The scale source is left out (the frames carry no depth or odometry). Raises StreamInputError
    when no size is known; a model error propagates (the caller decides whether to start anyway).
    """
    size = image_size if image_size is not None else config.resolution
    if size is None:
        raise StreamInputError("warm_up needs image_size when StreamConfig.resolution is None")
    width, height = (int(v) for v in size)
    cfg = dataclasses.replace(config, scale=ScaleConfig())
    frames = warm_up_frames(cfg.window_size, cfg.overlap_size)
    rng = np.random.default_rng(seed)
    # A few distinct images: identical frames would be a degenerate (zero-parallax) input.
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    t0 = time.perf_counter()
    # Its provisional passes compile their shapes, so the live stream's graphs hold compiled blocks.
    stream = StreamingReconstructor(cfg, model=model, compile_passes=True)
    try:
        for i in range(frames):
            stream.push(images[i % len(images)], (i + 1) * _STAMP_STEP_NS)
        stream.drain(timeout_s)
        errors = stream.take_errors()
        if errors:
            raise RuntimeError(f"warm-up window failed: {errors[0]}")
    finally:
        stream.close()
    if stream.device.type == "cuda":
        torch.cuda.synchronize(stream.device)
    stats, graphs = stream.stats, stream.provisional_graphs
    report = WarmUpReport(seconds=time.perf_counter() - t0, frames=frames, windows=stats.windows_run,
                          provisional_passes=stats.provisional_runs, window_graph_replays=stats.window_graph_replays,
                          compiled_pass_graphs=graphs.compiled_captures if graphs is not None else 0)
    log.info("warm-up: %d frames, %d windows, %d provisional passes (%d graphs of compiled blocks), %d window graph "
             "replays in %.1f s", report.frames, report.windows, report.provisional_passes,
             report.compiled_pass_graphs, report.window_graph_replays, report.seconds)
    return report
