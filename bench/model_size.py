#!/usr/bin/env python3
"""CPU speed of candidate model sizes, to choose the shipped default (not a test).

Streams `--frames` random frames through `forward_window` (window 16 / overlap 3 at 112x84, the
bundled model's native input, memory carried) with `--threads` CPU threads and reports new frames
per second of the network alone plus parameters and fp32 file size. The candidates are `tiny`,
`small` and two variants around `small`.

    python bench/model_size.py --threads 2 --out /tmp/model_size.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.model import build_model, get_config  # noqa: E402
from loger_core.model.config import EncoderConfig  # noqa: E402
from loger_core.model.state import MemoryOptions  # noqa: E402
from loger_core.model.windowing import window_schedule  # noqa: E402


def candidates():
    small = get_config("small")
    yield get_config("tiny")
    yield replace(small, name="small_narrow", encoder=replace(small.encoder, embed_dim=96, num_heads=3), dec_embed_dim=96,
                  dec_num_heads=3, head_embed_dim=64, head_num_heads=2, camera_dim=48, ttt_head_dim=48)
    yield small
    yield get_config("small_deep")
    yield replace(small, name="small_wide", encoder=EncoderConfig(embed_dim=192, depth=4, num_heads=6, pos_grid=8),
                  dec_embed_dim=192, dec_num_heads=6, head_embed_dim=128, ttt_head_dim=64)


@torch.no_grad()
def bench(cfg, frames: int, width: int, height: int, window: int, overlap: int) -> dict:
    model = build_model(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    images = torch.rand(1, frames, 3, height, width)
    opts = MemoryOptions(window_size=window, overlap_size=overlap)
    sched = window_schedule(frames, window, overlap)
    state = model.init_state()
    warm = model.init_state()
    for _ in range(3):  # warm-up (first calls allocate; the second window is the first with memory)
        _, warm = model.forward_window(images[:, :window], warm, opts)
    t0 = time.perf_counter()
    for start, end in sched:
        _, state = model.forward_window(images[:, start:end], state, opts)
    dt = time.perf_counter() - t0
    return {"model": cfg.name, "params_M": round(n_params / 1e6, 3), "fp32_MB": round(4 * n_params / 1e6, 2),
            "frames": frames, "seconds": round(dt, 3), "frames_per_s": round(frames / dt, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--frames", type=int, default=94)
    p.add_argument("--size", default="112x84")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--only", default=None, help="comma-separated candidate names")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    print(f"{'model':14s} {'params M':>9s} {'fp32 MB':>8s} {'frames/s':>9s}")
    for cfg in candidates():
        if args.only and cfg.name not in args.only.split(","):
            continue
        r = bench(cfg, args.frames, w, h, args.window, args.overlap)
        r.update(threads=args.threads, size=args.size, window=args.window, overlap=args.overlap)
        rows.append(r)
        print(f"{r['model']:14s} {r['params_M']:9.3f} {r['fp32_MB']:8.2f} {r['frames_per_s']:9.2f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
