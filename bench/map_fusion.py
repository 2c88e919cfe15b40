"""Fusing committed windows into the global voxel map: numpy `VoxelMap` (CPU) against the tensor
`TorchVoxelMap` (CPU, and CUDA where present). Not a test.

Per window of ``--frames`` frames of ``--points`` points each (the full model's 504x280 gives 141,120
pixels per frame), two geometries:

- ``spread``: every point in its own voxel (what synthetic-weight networks and far outdoor geometry
  give, and what made the node's map thread cost 2.5 s per window on an H100 host);
- ``surfaces``: points on a few planes seen from a moving camera (a room: many points per voxel).

The map is filled for ``--windows`` windows (so insert cost is measured against a growing map), and
the mean seconds per window (each frame one `insert`, as the node's map thread does) are printed
with the map size. Writes JSON (--out).

    python bench/map_fusion.py                      # CPU maps
    python bench/map_fusion.py --points 141120      # full-resolution frames
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.mapping.voxel_map import MapConfig, VoxelMap  # noqa: E402
from loger_core.mapping.torch_storage import TorchVoxelMap  # noqa: E402


def make_frame(kind: str, index: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3) float32`` world points of frame ``index``."""
    if kind == "spread":
        return (rng.random((n, 3)) * [40.0, 10.0, 40.0] + [index * 0.3, 0, 0]).astype(np.float32)
    # Five walls of a 6 x 3 x 6 m room, the camera sliding along x: a frame covers part of them.
    wall = rng.integers(0, 5, n)
    u, v = rng.random(n), rng.random(n)
    x0 = (index * 0.02) % 3.0
    pts = np.empty((n, 3))
    pts[:, 0] = np.where(wall < 3, x0 + 3 * u, np.where(wall == 3, x0, x0 + 3))
    pts[:, 1] = np.where(wall == 1, 0.0, np.where(wall == 2, 3.0, 3 * v))
    pts[:, 2] = np.where(wall == 0, 6.0, 6 * np.where(wall < 3, v, u))
    return pts.astype(np.float32)


def run(kind: str, backend: str, args) -> dict:
    cfg = MapConfig(voxel_size=args.voxel, max_points=args.max_points)
    vmap = VoxelMap(cfg) if backend == "numpy" else TorchVoxelMap(cfg, backend.split("-", 1)[1])
    rng = np.random.default_rng(0)
    times = []
    for w in range(args.windows):
        frames = []
        for f in range(args.frames):
            idx = w * args.frames + f
            pts = make_frame(kind, idx, args.points, rng)
            frames.append((pts, rng.integers(0, 256, (len(pts), 3), dtype=np.uint8), rng.random(len(pts)).astype(np.float32)))
        t0 = time.perf_counter()
        for pts, col, conf in frames:
            vmap.insert(pts, col, conf, sensor_origin=pts[0].astype(np.float64))
        if backend.endswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    steady = times[1:] if len(times) > 1 else times
    return {"geometry": kind, "backend": backend, "s_per_window": float(np.mean(steady)),
            "s_per_window_max": float(np.max(steady)), "voxels": len(vmap), "evicted": vmap.stats()["evicted"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=29, help="new frames per window (default 29: window 32 / overlap 3)")
    ap.add_argument("--points", type=int, default=50_000, help="points per frame")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--voxel", type=float, default=0.05)
    ap.add_argument("--max-points", type=int, default=2_000_000)
    ap.add_argument("--backends", default=None, help="comma list of numpy, torch-cpu, torch-cuda (default: all available)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "map_fusion.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    backends = args.backends.split(",") if args.backends else (
        ["numpy", "torch-cpu"] + (["torch-cuda"] if torch.cuda.is_available() else []))
    rows = [run(kind, b, args) for kind in ("spread", "surfaces") for b in backends]
    print(f"{args.frames} frames x {args.points} points per window, voxel {args.voxel} m, {args.windows} windows "
          f"({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
          f"{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})")
    print(f"{'geometry':>9} {'backend':>10} {'s/window':>9} {'max s':>7} {'voxels':>9}")
    for r in rows:
        print(f"{r['geometry']:>9} {r['backend']:>10} {r['s_per_window']:>9.3f} {r['s_per_window_max']:>7.3f} {r['voxels']:>9d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in vars(args).items() if k != "out"}
    meta.update(torch=torch.__version__, cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
