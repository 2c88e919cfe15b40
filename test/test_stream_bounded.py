"""Bounded resources: 2,000 frames through the tiny model; the memory state and the process's
memory stay flat (nothing per frame is retained by the reconstructor)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import StreamConfig, StreamingReconstructor

H, W = 28, 42
FRAMES = 2000
WINDOW, OVERLAP = 8, 1
# A leak of one preprocessed frame (3 x 28 x 42 float32 = 14 KiB) per frame over the last 1,500
# frames would be ~21 MiB (a leaked FrameResult much more); a few MiB of allocator noise are allowed.
RSS_SLACK = 12 * 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc for the resident size")
def test_state_and_memory_stay_flat_over_2000_frames():
    model = fill_deterministic_(build_model("tiny", device="meta"))
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(W, H), window_size=WINDOW, overlap_size=OVERLAP,
                       alignment="sim3", reset_every=5, conf_percentile=0.0)
    rec = StreamingReconstructor(cfg, model=model)
    # One thread: on a loaded 2-core machine OpenMP spin-waiting makes 2 threads several times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _stream(rec)
    finally:
        torch.set_num_threads(threads)


def _stream(rec: StreamingReconstructor) -> None:
    clip = np.random.default_rng(0).integers(0, 256, (16, H, W, 3), dtype=np.uint8)
    state_sizes = []
    emitted = 0
    rss = {}
    last_index = -1
    for i in range(FRAMES):
        results = rec.push(clip[i % len(clip)], 1_000_000 + i * 33_000_000)
        if results:
            state_sizes.append(rec.state_nbytes())
            assert results[0].index == last_index + 1
            last_index = results[-1].index
            emitted += len(results)
        assert rec.buffered_frames <= WINDOW
        if i + 1 in (500, FRAMES):
            rss[i + 1] = _rss_bytes()
    emitted += len(rec.flush())
    assert emitted == FRAMES
    windows = len(state_sizes)
    assert windows == (FRAMES - WINDOW) // (WINDOW - OVERLAP) + 1
    assert state_sizes[0] > 0 and len(set(state_sizes)) == 1
    assert len(rec._aligner.transforms) <= 1
    assert rss[FRAMES] - rss[500] < RSS_SLACK, f"RSS grew by {(rss[FRAMES] - rss[500]) / 2**20:.1f} MiB"
