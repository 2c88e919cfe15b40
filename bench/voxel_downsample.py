"""Per-frame voxel merging on the device vs fusing every pixel into the CPU voxel map.

One window of --frames frames at --size (default 29 committed frames of a 32/3 window at
504x280): each frame is a back-projected smooth depth map (walls 1.5-4 m away, a camera moving 2 cm
per frame, --offset metres from the origin), 80% of the pixels valid. Measured (median of --repeat):

- downsample: ``downsample_frames`` of the whole window on each --device (inputs already there, as
  the model's outputs are; colours uploaded from the host as the stream would), and with the
  merged points copied to the host per frame (``split_numpy``);
- map insert: a fresh ``VoxelMap`` (--map-voxel) fusing the window on the CPU, every pixel (raw) vs
  the merged points with weights, per merge voxel; reported as ms per window and pixels per second.

Prints a table and writes JSON (--out).

    python bench/voxel_downsample.py                      # CPU (and CUDA when available)
    python bench/voxel_downsample.py --device cuda --offset 1000
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.mapping.voxel_map import MapConfig, VoxelMap  # noqa: E402
from loger_core.mapping.voxel_downsample import downsample_frames  # noqa: E402


def make_window(n: int, w: int, h: int, offset: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    f = 0.8 * w
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pts = np.empty((n, h, w, 3), np.float32)
    for i in range(n):
        depth = 2.5 + 1.0 * np.sin((u + 7 * i) / 60.0) + 0.5 * v / h + rng.normal(0, 0.005, size=u.shape)
        x = (u - w / 2) / f * depth + 0.02 * i
        y = (v - h / 2) / f * depth
        pts[i] = np.stack([x + offset, y - offset, depth + offset], axis=-1)
    col = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    conf = rng.random((n, h, w)).astype(np.float32)
    valid = conf >= 0.2
    return pts, col, conf, valid


def timed(fn, repeat: int, sync=None) -> tuple[float, object]:
    out = fn()  # warm-up
    if sync:
        sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=29)
    p.add_argument("--size", default="504x280", help="WxH")
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    p.add_argument("--map-voxel", type=float, default=0.05)
    p.add_argument("--merge-voxels", default="0.025,0.05", help="comma-separated merge voxel edges")
    p.add_argument("--offset", type=float, default=0.0, help="metres from the origin")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="bench_voxel_downsample.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(x) for x in args.size.split("x"))
    voxels = [float(x) for x in args.merge_voxels.split(",")]
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("CUDA is not available")
        devices.remove("cuda")

    pts, col, conf, valid = make_window(args.frames, w, h, args.offset)
    n_pixels = int(valid.sum())
    result = {
        "frames": args.frames, "size": [w, h], "valid_pixels": n_pixels, "offset_m": args.offset,
        "map_voxel": args.map_voxel, "torch": torch.__version__, "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
        "downsample": [], "map_insert": [],
    }
    merged = {}
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else None
        dev_pts = torch.from_numpy(pts).to(device)
        dev_conf = torch.from_numpy(conf).to(device)
        dev_valid = torch.from_numpy(valid).to(device)
        host_col = torch.from_numpy(col)
        if device == "cuda":
            result["gpu"] = torch.cuda.get_device_name()
        for voxel in voxels:
            ms, batch = timed(lambda: downsample_frames(dev_pts, host_col, dev_conf, dev_valid, voxel),
                              args.repeat, sync)
            ms_host, parts = timed(
                lambda: downsample_frames(dev_pts, host_col, dev_conf, dev_valid, voxel).split_numpy(),
                args.repeat, sync)
            merged.setdefault(voxel, parts)
            result["downsample"].append({
                "device": device, "voxel": voxel, "ms_per_window": ms, "ms_per_window_to_host": ms_host,
                "points_out": len(batch), "reduction": n_pixels / max(len(batch), 1),
                "pixels_per_s": n_pixels / (ms_host * 1e-3),
            })

    cfg = MapConfig(voxel_size=args.map_voxel)

    def insert_raw():
        vmap = VoxelMap(cfg)
        for i in range(args.frames):
            vmap.insert(pts[i][valid[i]], col[i][valid[i]], conf[i][valid[i]])
        return len(vmap)

    ms, n_vox = timed(insert_raw, args.repeat)
    result["map_insert"].append({"input": "raw", "points_in": n_pixels, "ms_per_window": ms,
                                 "pixels_per_s": n_pixels / (ms * 1e-3), "map_voxels": n_vox})
    for voxel, parts in merged.items():
        def insert_merged(parts=parts):
            vmap = VoxelMap(cfg)
            for p_, c_, f_, w_ in parts:
                vmap.insert(p_, c_, f_, weights=w_)
            return len(vmap)

        ms, n_vox = timed(insert_merged, args.repeat)
        result["map_insert"].append({"input": f"merged {voxel:g}", "points_in": sum(len(x[0]) for x in parts),
                                     "ms_per_window": ms, "pixels_per_s": n_pixels / (ms * 1e-3),
                                     "map_voxels": n_vox})

    print(f"{args.frames} frames {w}x{h}, {n_pixels} valid pixels, offset {args.offset:g} m, "
          f"torch {torch.__version__} ({torch.get_num_threads()} CPU threads)"
          + (f", {result['gpu']}" if "gpu" in result else ""))
    print(f"\n{'downsample':<12}{'voxel':>7}{'points out':>12}{'x fewer':>9}{'ms/window':>11}"
          f"{'+to host':>10}{'Mpix/s':>9}")
    for r in result["downsample"]:
        print(f"{r['device']:<12}{r['voxel']:>7g}{r['points_out']:>12}{r['reduction']:>9.1f}"
              f"{r['ms_per_window']:>11.1f}{r['ms_per_window_to_host']:>10.1f}{r['pixels_per_s'] / 1e6:>9.2f}")
    print(f"\n{'map insert (CPU, map voxel ' + format(args.map_voxel, 'g') + ')':<34}{'points in':>10}"
          f"{'ms/window':>11}{'Mpix/s':>9}{'voxels':>9}")
    for r in result["map_insert"]:
        print(f"{r['input']:<34}{r['points_in']:>10}{r['ms_per_window']:>11.1f}{r['pixels_per_s'] / 1e6:>9.2f}"
              f"{r['map_voxels']:>9}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
