#!/usr/bin/env python3
"""Underfitting or memorisation? The held-out metrics on sequences a training run saw (not a test).

Renders the first pool of `SyntheticClipSource` for a checkpoint's own data config and seed (the
sequences its training started on, each seen many times) or for another seed (same distribution,
never seen), runs them window by window with the memory as `heldout_eval.py` does, and prints ATE
(Sim(3)) % of path, single-window ATE % and "dir %" per sequence and on average. Seen about as
badly as unseen means the model underfits; much better means it memorised.

    python bench/train_fit.py --checkpoint loger_core/weights/small_synthetic.safetensors --sequences 6
    python bench/train_fit.py --checkpoint loger_core/weights/small_synthetic.safetensors --sequences 6 --seed 91731
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.model import load_checkpoint  # noqa: E402
from loger_core.model.state import MemoryOptions  # noqa: E402
from loger_core.training.data import ClipDataConfig, SyntheticClipSource  # noqa: E402
from loger_core.training.heldout import run_poses, trajectory_metrics, window_metrics  # noqa: E402


def data_config(data: dict, seed: int | None, sequences: int) -> ClipDataConfig:
    """The `ClipDataConfig` a checkpoint was trained with (`data` of its JSON record), reseeded / resized."""
    known = {f.name for f in fields(ClipDataConfig)}
    cfg = ClipDataConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})
    return replace(cfg, seed=cfg.seed if seed is None else seed, pool_size=sequences)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--seed", type=int, default=None, help="data seed (default: the checkpoint's own: seen sequences)")
    p.add_argument("--sequences", type=int, default=6)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = Path(args.checkpoint)
    trained_on = json.loads(ckpt.with_suffix(".json").read_text())["training"]["data"]
    cfg = data_config(trained_on, args.seed, args.sequences)
    model = load_checkpoint(ckpt).eval()
    source = SyntheticClipSource(cfg, "cpu")
    opts = MemoryOptions(window_size=args.window, overlap_size=args.overlap)
    rows = []
    print(f"{'sequence':44s} {'path m':>7s} {'ATE %':>6s} {'win ATE %':>9s} {'dir %':>6s}")
    for seq in source.pool:
        windows: list = []
        est, _ = run_poses(model, seq.rgb.float() / 255.0, opts, windows=windows)
        gt = seq.poses.cpu().numpy()
        row = {"sequence": seq.name, **trajectory_metrics(est, gt), **window_metrics(windows, gt)}
        rows.append(row)
        print(f"{seq.name:44s} {row['path_m']:7.2f} {row['ate_pct']:6.2f} {row['window_ate_pct']:9.2f} "
              f"{row['window_direction_pct']:6.1f}", flush=True)
    summary = {"mean_ate_pct": float(np.mean([r["ate_pct"] for r in rows])),
               "median_window_ate_pct": float(np.median([r["window_ate_pct"] for r in rows])),
               "mean_window_direction_pct": float(np.mean([r["window_direction_pct"] for r in rows]))}
    print(f"\nmean ATE {summary['mean_ate_pct']:.1f}%  median window ATE {summary['median_window_ate_pct']:.1f}%  "
          f"mean dir {summary['mean_window_direction_pct']:.1f}%  (data seed {cfg.seed}, trained on seed "
          f"{trained_on['seed']})")
    if args.out:
        Path(args.out).write_text(json.dumps({"checkpoint": str(ckpt), "data_seed": cfg.seed, "window": args.window,
                                              "overlap": args.overlap, "summary": summary, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
