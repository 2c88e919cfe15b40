"""Occupancy grid update cost per committed window, as the map grows.

A synthetic sequence (``loger-synth`` renderer, exact depth and poses, z-up world = the map frame,
the floor at z = 0) is cut into windows of --window frames; every frame's valid pixels are
back-projected and inserted into one :class:`~loger_core.mapping.occupancy_grid.OccupancyGrid2D` (heights = world z,
the ground-truth floor). Per window: wall time, cells touched, rays and samples; and the number of
known cells of the map after it. The claim under test: the per-window cost follows the window, not
the map, so the first and the last windows cost about the same while the map grows.

Prints a table and writes JSON (--out); --png writes the final grid (ground-truth depth and poses:
what the grid looks like when the network is right).

    python bench/grid_update.py                                       # corridor, ground robot, 320x240
    python bench/grid_update.py --size 504x280 --frames 290 --window 29   # the full model's point count
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.mapping.grid_files import render_grid_png  # noqa: E402
from loger_core.mapping.occupancy_grid import GridConfig, OccupancyGrid2D  # noqa: E402
from loger_core.synthetic import SynthConfig, render_frames  # noqa: E402


def back_project(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """World points ``(N, 3)`` of the finite depth pixels."""
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    ok = np.isfinite(depth) & (depth > 0)
    z = depth[ok].astype(np.float64)
    cam = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * z, (v[ok] - K[1, 2]) / K[1, 1] * z, z], axis=1)
    return cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default="corridor")
    ap.add_argument("--trajectory", default="ground_robot")
    ap.add_argument("--frames", type=int, default=232)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--window", type=int, default=29, help="committed frames per window (32 - overlap 3)")
    ap.add_argument("--resolution", type=float, default=GridConfig.resolution)
    ap.add_argument("--rays", type=int, default=GridConfig.rays_per_frame)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("out/bench/grid_update.json"))
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))

    t0 = time.perf_counter()
    frames = render_frames(SynthConfig(scene=args.scene, trajectory=args.trajectory, frames=args.frames, width=w,
                                       height=h, fps=10, seed=args.seed), device="cpu")
    render_s = time.perf_counter() - t0
    cfg = GridConfig(resolution=args.resolution, rays_per_frame=args.rays)
    grid = OccupancyGrid2D(cfg)
    rows = []
    for start in range(0, len(frames), args.window):
        window = frames[start:start + args.window]
        clouds = [(back_project(f.depth, f.K, f.T_world_cam), f.T_world_cam[:3, 3]) for f in window]
        t = time.perf_counter()
        touched = rays = samples = points = 0
        for pts, centre in clouds:
            s = grid.insert(pts[:, :2], pts[:, 2], centre[:2], float(centre[2]))
            touched, rays, samples, points = touched + s.cells_touched, rays + s.rays, samples + s.samples, points + s.points
        ms = (time.perf_counter() - t) * 1e3
        rows.append({"window": len(rows), "frames": len(window), "points": points, "rays": rays, "samples": samples,
                     "cells_touched": touched, "ms": ms, "ms_per_frame": ms / len(window),
                     "known_cells_after": grid.known_cells()})
    snap = grid.snapshot()
    print(f"grid update per window: {args.scene}/{args.trajectory}, {len(frames)} frames at {w}x{h}, "
          f"{args.resolution} m cells, {args.rays} rays/frame (render {render_s:.1f} s)")
    print(f"{'window':>6} {'frames':>6} {'points':>9} {'samples':>9} {'touched':>8} {'ms':>8} {'ms/frame':>9} {'known':>8}")
    for r in rows:
        print(f"{r['window']:>6} {r['frames']:>6} {r['points']:>9} {r['samples']:>9} {r['cells_touched']:>8} "
              f"{r['ms']:>8.1f} {r['ms_per_frame']:>9.2f} {r['known_cells_after']:>8}")
    full = [r for r in rows if r["frames"] == args.window]
    summary = {
        "first_window_ms": full[0]["ms"] if full else None,
        "last_window_ms": full[-1]["ms"] if full else None,
        "known_cells_growth": rows[-1]["known_cells_after"] / max(1, rows[0]["known_cells_after"]),
        "grid_cells": snap.counts(),
        "grid_size": [snap.width, snap.height],
    }
    print(f"first / last full window: {summary['first_window_ms']:.1f} / {summary['last_window_ms']:.1f} ms while "
          f"the known area grew {summary['known_cells_growth']:.1f}x; final grid {snap.width}x{snap.height}: "
          f"{snap.counts()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": platform.node(),
                                    "python": platform.python_version(), "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {args.out}")
    if args.png is not None:
        traj = np.stack([f.T_world_cam[:2, 3] for f in frames])
        render_grid_png(args.png, snap, traj, title=f"ground-truth depth and poses: {args.scene}/{args.trajectory}")
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
