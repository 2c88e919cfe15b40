#!/usr/bin/env python3
"""Rendering speed of the synthetic-sequence generator (not a test).

For each scene with its natural camera motion (room/handheld, corridor/ground_robot,
street/car, loop/car) this renders ``--frames`` frames after a warm-up frame and
reports frames per second of the renderer alone and of the full frame pipeline
(render + copy to host numpy, i.e. what ``generate_sequence`` yields).
CPU runs are repeated for each ``--threads`` value; CUDA runs when available.

    python bench/synth_speed.py --device all --size 320x240 --frames 60 --out /tmp/synth_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.synthetic.config import SynthConfig, parse_size  # noqa: E402
from loger_core.synthetic.sequence import prepare  # noqa: E402

CASES = (("room", "handheld"), ("corridor", "ground_robot"), ("street", "car"), ("loop", "car"))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench_case(scene: str, trajectory: str, width: int, height: int, frames: int, device: str, threads,
               batch: int = 16) -> dict:
    cfg = SynthConfig(scene=scene, trajectory=trajectory, frames=frames + 1, width=width, height=height, seed=0)
    t0 = time.perf_counter()
    setup = prepare(cfg)
    renderer = setup.renderer(width, height, device, threads=threads)
    setup_s = time.perf_counter() - t0
    renderer.render(setup.poses[0])  # warm-up (allocations, CUDA kernels)
    _sync(device)
    t0 = time.perf_counter()
    for pose in setup.poses[1:]:
        renderer.render(pose)
    _sync(device)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for pose in setup.poses[1:]:
        out = renderer.render(pose)
        out.rgb.cpu().numpy()
        out.depth.cpu().numpy()
    pipeline_s = time.perf_counter() - t0
    # All views in batches (render_batch: what render_many and the training data use on CUDA).
    renderer.render_batch(setup.poses[1:1 + batch])
    _sync(device)
    t0 = time.perf_counter()
    for s in range(1, len(setup.poses), batch):
        renderer.render_batch(setup.poses[s:s + batch])
    _sync(device)
    batch_s = time.perf_counter() - t0
    return {
        "scene": scene,
        "trajectory": trajectory,
        "device": device,
        "threads": threads if device == "cpu" else None,
        "width": width,
        "height": height,
        "frames": frames,
        "boxes": setup.scene.num_boxes,
        "setup_s": round(setup_s, 4),
        "render_fps": round(frames / render_s, 2),
        "pipeline_fps": round(frames / pipeline_s, 2),
        "batch": batch,
        "batch_render_fps": round(frames / batch_s, 2),
        "ms_per_frame": round(1000 * render_s / frames, 3),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="all = CPU, plus CUDA when available")
    p.add_argument("--size", default="320x240")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", default="1,2", help="comma-separated CPU thread counts")
    p.add_argument("--scenes", default=",".join(s for s, _ in CASES), help="subset of room,corridor,street,loop")
    p.add_argument("--batch", type=int, default=16, help="views per render_batch call")
    p.add_argument("--out", default="synth_speed.json", help="JSON results file")
    args = p.parse_args(argv)
    width, height = parse_size(args.size)
    devices = []
    if args.device in ("cpu", "all"):
        devices += [("cpu", int(t)) for t in args.threads.split(",") if t.strip()]
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            p.error("--device cuda but CUDA is not available")
        devices.append(("cuda", None))
    wanted = set(args.scenes.split(","))
    results = []
    header = (
        f"{'scene':9s} {'trajectory':13s} {'device':6s} {'thr':>3s} {'boxes':>6s} "
        f"{'render fps':>11s} {'pipeline fps':>13s} {'ms/frame':>9s} {'batch fps':>10s}"
    )
    print(f"synthetic renderer speed, {width}x{height}, {args.frames} frames per case")
    print(header)
    print("-" * len(header))
    for scene, trajectory in CASES:
        if scene not in wanted:
            continue
        for device, threads in devices:
            r = bench_case(scene, trajectory, width, height, args.frames, device, threads, args.batch)
            results.append(r)
            thr = "-" if r["threads"] is None else str(r["threads"])
            print(f"{scene:9s} {trajectory:13s} {device:6s} {thr:>3s} {r['boxes']:6d} {r['render_fps']:11.1f} "
                  f"{r['pipeline_fps']:13.1f} {r['ms_per_frame']:9.2f} {r['batch_render_fps']:10.1f}", flush=True)
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_default_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
