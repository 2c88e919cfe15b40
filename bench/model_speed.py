"""Per-window speed and peak memory of the LoGeR network (not a test).

Default: the full `loger` config with random weights, bf16 autocast, the authors' demo resolution
504x280, window 32 / overlap 3, on CUDA. Prints a table and writes JSON.

    python bench/model_speed.py --device cuda --windows 6 --out bench_results/model_speed.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from loger_core.model import MemoryOptions, build_model
from loger_core.model.fast_paths import FastPathConfig, default_fast_paths, enable_fast_paths


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", "--config", dest="config", default="loger", choices=["loger", "loger_star", "tiny"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"], help="bf16 = autocast with fp32 weights (as the authors run)")
    ap.add_argument("--width", type=int, default=504)
    ap.add_argument("--height", type=int, default=280)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--windows", type=int, default=6, help="windows to time (the first is a warm-up)")
    ap.add_argument("--fast-paths", default="auto", choices=["auto", "on", "off"],
                    help="GPU fast paths (loger_core.model.fast_paths); auto = on for CUDA bf16")
    ap.add_argument("--profile", type=int, default=0, help="print the N most expensive CUDA kernels of one window")
    ap.add_argument("--out", type=Path, default=Path("bench_results/model_speed.json"))
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.config, device=device)
    # Open the memory gates so the TTT and SWA branches carry real values (cost is the same either way).
    for g in [*model.ttt_gate_projs, *model.swa_gate_projs]:
        torch.nn.init.constant_(g.bias, 0.5)
    opts = MemoryOptions(window_size=args.window, overlap_size=args.overlap)
    frames = torch.rand(1, args.window, 3, args.height, args.width, device=device)
    amp = args.dtype == "bf16" and device.type == "cuda"
    fast = default_fast_paths(device, torch.bfloat16 if amp else torch.float32)
    if args.fast_paths == "on":
        fast = FastPathConfig()
    elif args.fast_paths == "off":
        fast = FastPathConfig.off()
    enable_fast_paths(model, fast)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    state = None
    for w in range(args.windows):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, state = model.forward_window(frames, state, opts)
        sync()
        dt = time.perf_counter() - t0
        new_frames = args.window if w == 0 else args.window - args.overlap
        rows.append({
            "window": w,
            "seconds": dt,
            "window_frames": args.window,
            "new_frames": new_frames,
            "fps_new_frames": new_frames / dt,
            "peak_gpu_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            "state_mib": state.nbytes() / 2**20,
        })
    timed = rows[1:] if len(rows) > 1 else rows
    if args.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof, torch.no_grad(), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            model.forward_window(frames, state, opts)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.profile, max_name_column_width=60))
    summary = {
        "config": args.config, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "dtype": args.dtype, "fast_paths": vars(fast) if hasattr(fast, "__dict__") else str(fast), "resolution_wh": [args.width, args.height], "window": args.window, "overlap": args.overlap,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30,
        "mean_window_s": sum(r["seconds"] for r in timed) / len(timed),
        "mean_fps_new_frames": sum(r["fps_new_frames"] for r in timed) / len(timed),
        "max_peak_gpu_mem_gib": max((r["peak_gpu_mem_gib"] or 0) for r in rows),
        "torch": torch.__version__, "rows": rows,
    }
    print(f"{'window':>6} {'sec':>8} {'new frames/s':>13} {'peak GiB':>9} {'state MiB':>10}")
    for r in rows:
        peak = f"{r['peak_gpu_mem_gib']:.2f}" if r["peak_gpu_mem_gib"] is not None else "-"
        print(f"{r['window']:>6} {r['seconds']:>8.3f} {r['fps_new_frames']:>13.1f} {peak:>9} {r['state_mib']:>10.1f}")
    print(f"{args.config} {args.dtype} {args.width}x{args.height} w{args.window}/o{args.overlap} on {summary['device_name']}: "
          f"{summary['mean_fps_new_frames']:.1f} frames/s, {summary['mean_window_s']:.3f} s/window, peak {summary['max_peak_gpu_mem_gib']:.2f} GiB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
