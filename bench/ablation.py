#!/usr/bin/env python3
"""Hybrid-memory ablation of a trained checkpoint on held-out sequences (not a test).

Variants (LoGeR paper, Table 5 style): both memories; TTT off; SWA off; both off (windows chained
only by the overlap alignment, which every variant here uses: `--alignment`); one window over the
whole sequence where it fits (`--one-window-max` frames). Sequences: for each held-out scene
(`--scenes`), one long sequence is rendered and its first 64 / 256 / 1,024 / 4,096 frames are the
cases, so every length sees the same scene. Prints a table, writes JSON and a plot of ATE (% of
path length) against sequence length.

    python bench/ablation.py --checkpoint loger_core/weights/small_synthetic.safetensors \\
        --lengths 64,256,1024,4096 --out /tmp/ablation.json --plot /tmp/ablation.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.model import load_checkpoint  # noqa: E402
from loger_core.training.heldout import (  # noqa: E402
    ABLATION_VARIANTS as VARIANTS, HeldOutCase, ablation_options, render_case, run_poses, trajectory_metrics)

# Held-out seeds (training skips them: training.data.HELD_OUT_SEEDS).
SCENES = {"room": HeldOutCase("room", "handheld", 4096, 51), "loop": HeldOutCase("loop", "ground_robot", 4096, 53)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", default="112x84")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--alignment", default="sim3", choices=("none", "se3", "sim3"))
    p.add_argument("--lengths", default="64,256,1024,4096")
    p.add_argument("--scenes", default="room,loop")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--one-window-max", type=int, default=0,
                   help="longest sequence run as one window (0: 1024 on CUDA, 256 on CPU)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda"
    one_max = args.one_window_max or (1024 if device.type == "cuda" else 256)
    w, h = (int(v) for v in args.size.split("x"))
    lengths = [int(v) for v in args.lengths.split(",")]
    model = load_checkpoint(args.checkpoint, device=device).eval()
    rows = []

    def save(rows: list[dict]) -> None:
        result = {"checkpoint": str(args.checkpoint), "model": model.cfg.name, "device": str(device),
                  "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                  else f"cpu x{torch.get_num_threads()} threads"),
                  "size": args.size, "window": args.window, "overlap": args.overlap, "alignment": args.alignment,
                  "rows": rows}
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
        if args.plot:
            plot(rows, args.plot, f"{model.cfg.name}: ATE vs length ({args.alignment} overlap alignment)")
    print(f"{'scene':6s} {'frames':>6s} {'variant':10s} {'ATE %':>7s} {'RPE deg':>8s} {'drift':>6s} {'fps':>7s}")
    for scene in args.scenes.split(","):
        base = SCENES[scene]
        case = HeldOutCase(base.scene, base.trajectory, max(lengths), base.seed, base.fov_deg)
        t0 = time.perf_counter()
        images, gt = render_case(case, w, h, device)
        print(f"# rendered {case.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        for n in lengths:
            for variant in args.variants.split(","):
                row = {"scene": scene, "case": case.name, "frames": n, "variant": variant, "alignment": args.alignment}
                if variant == "one_window" and n > one_max:
                    row.update(skipped=f"longer than --one-window-max {one_max}")
                    rows.append(row)
                    continue
                opts = ablation_options(variant, n, args.window, args.overlap)
                try:
                    est, seconds = run_poses(model, images[:n], opts, args.alignment, amp)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    row.update(skipped="out of memory")
                    rows.append(row)
                    continue
                row.update(trajectory_metrics(est, gt[:n]), frames_per_s=n / seconds)
                row = {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()}
                rows.append(row)
                print(f"{scene:6s} {n:6d} {variant:10s} {row['ate_pct']:7.2f} {row['rpe_rot_deg']:8.3f} "
                      f"{row['scale_drift']:6.3f} {row['frames_per_s']:7.1f}", flush=True)
                save(rows)  # after every row: a run cut short keeps what it measured
    save(rows)
    return 0


def plot(rows: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = sorted({r["scene"] for r in rows})
    fig, axes = plt.subplots(1, len(scenes), figsize=(5 * len(scenes), 4), squeeze=False)
    for ax, scene in zip(axes[0], scenes):
        for variant in VARIANTS:
            pts = [(r["frames"], r["ate_pct"]) for r in rows
                   if r["scene"] == scene and r["variant"] == variant and "ate_pct" in r and np.isfinite(r["ate_pct"])]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=variant)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("frames")
        ax.set_ylabel("ATE (Sim3) / path length, %")
        ax.set_title(scene)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
