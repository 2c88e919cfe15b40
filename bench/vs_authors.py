"""Our network against the authors' implementation, side by side in one process (not a test).

Both run the same weights (ours, loaded strictly into the authors' `Pi3`) on the same clip, whole
sequence, windowed as the authors' demo (window 32 / overlap 3, 504x280, bf16 autocast):

- ``authors``: their `Pi3.forward` (their own `torch.compile` of the TTT functions, warmed up), with
  `no_detach=True` so that, like ours, it leaves its outputs on the GPU;
- ``authors_default``: the same with their default, every window's outputs copied to the host in
  their loop (what their demo runs; not the baseline of the ratio);
- ``ours_eager``: `LoGeR.reconstruct` with the fast paths off (pinned kernels, fp32 weights);
- ``ours_fast``: the same model class with the default CUDA fast paths (`fast_paths.py`);
- ``ours_graphs``: ``ours_fast`` with every full window after the first replayed from a CUDA graph
  (`reconstruct(cuda_graphs=True)`, `window_graphs.py`);
- ``ours_<name>`` for each ``--variant name:field=value,...``: ``ours_graphs`` with those
  `FastPathConfig` fields changed (to measure one fast path's worth side by side).

frames/s counts the network: the clip goes in from the host and the run ends when the outputs are
ready on the GPU. The same runs also report frames/s until the poses and local points are on the host:
the same copies for every implementation (about 0.2 s for 128 frames into fresh pageable memory),
a fixed cost that hides the network's speed.
`--timeline` profiles one more run of each and prints where the GPU idles (`timeline.py`).

For each: new frames/s, seconds, peak GPU memory, and achieved TFLOP/s (the clip's FLOPs counted with
`torch.utils.flop_counter.FlopCounterMode` on an eager run of the same implementation). Then, per
window, how far each bf16 path is from its own implementation's fp32 run (camera rotation in degrees,
camera centre relative to the window's extent, median |log depth| difference): the fast path must be
no further from our fp32 path than the authors' bf16 is from their fp32.

The authors' code is NOT part of this repository: pass the path of a checkout of junyi42/LoGeR
(the folder that holds `loger/models/pi3.py`), kept in an ignored folder.

    python bench/vs_authors.py --authors .authors --frames 128 --out bench_results/vs_authors.json
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.model import MemoryOptions, build_model, window_schedule  # noqa: E402
from loger_core.model.fast_paths import FastPathConfig, enable_fast_paths  # noqa: E402
from loger_core.model.synthetic_weights import fill_deterministic_  # noqa: E402
from timeline import format_timeline, gpu_timeline  # noqa: E402  (bench/timeline.py)


def smooth_clip(n: int, width: int, height: int, seed: int = 0) -> torch.Tensor:
    """(1, n, 3, H, W) smooth random frames in [0, 1] that drift like a moving camera."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height // 4 + n, width // 4 + n, generator=g)
    frames = [base[:, :, i : i + height // 4, i : i + width // 4] for i in range(n)]
    clip = torch.nn.functional.interpolate(torch.cat(frames), size=(height, width), mode="bilinear", align_corners=False)
    return clip.unsqueeze(0).clamp(0, 1)


def authors_model(path: Path, name: str, state_dict: dict, device: torch.device):
    import yaml

    sys.path.insert(0, str(path.resolve()))
    from loger.models.pi3 import Pi3  # the authors' code, from the given checkout

    cfg = yaml.safe_load((path / "ckpts" / name / "original_config.yaml").read_text())["model"]
    kwargs = {k: cfg[k] for k in ("ttt_insert_after", "attn_insert_after", "ttt_head_dim", "ttt_inter_multi") if k in cfg}
    if cfg.get("ttt_pre_norm"):
        kwargs["ttt_pre_norm"] = True
    with torch.device(device):
        model = Pi3(**kwargs)
    model.load_state_dict(state_dict, strict=True)
    return model.eval(), bool(cfg.get("se3", False))


class Runner:
    """One implementation: `run(clip, bf16)` -> dict of (1, N, ...) outputs on the GPU."""

    def __init__(self, name, fn, warm_ups: int = 1):
        # warm_ups: runs before timing; window graphs need 2 (a shape is captured when seen again).
        self.name, self.fn, self.warm_ups = name, fn, warm_ups

    def run(self, clip: torch.Tensor, bf16: bool) -> dict:
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
        with torch.no_grad(), ctx:
            return self.fn(clip)

    def run_to_host(self, clip: torch.Tensor, bf16: bool) -> dict:
        return to_host(self.run(clip, bf16))


def to_host(out: dict) -> dict:
    return {k: v.float().cpu() for k, v in out.items()}


def ours_fn(model, opts, cuda_graphs=False):
    def fn(clip):
        pred = model.reconstruct(clip.cuda(), opts, alignment="none", cuda_graphs=cuda_graphs)
        return {"camera_poses": pred.camera_poses, "local_points": pred.local_points}
    return fn


def authors_fn(model, opts, no_detach=True):
    def fn(clip):
        # no_detach: their outputs stay on the GPU, as ours do. By default their forward copies every
        # window's outputs (points, local points, confidence, poses, ...) to the host inside the
        # loop: timed that way it does more work than our network row (about 0.23 s of copies per
        # 128 frames on an H100); the to-host column copies the same two outputs for both.
        out = model(clip.cuda(), window_size=opts.window_size, overlap_size=opts.overlap_size, no_detach=no_detach)
        return {k: out[k] for k in ("camera_poses", "local_points")}
    return fn


def timed(runner: Runner, clip: torch.Tensor, repeats: int) -> dict:
    """Best of `repeats`: the network (host clip in, outputs ready on the GPU: the frames/s the issue
    targets) and, in the same runs, until the poses and local points are copied to the host (a
    fixed cost of a few hundred MB into pageable memory, the same for every implementation)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, to_host_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = runner.run(clip, bf16=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        to_host(out)
        to_host_times.append(time.perf_counter() - t0)
        del out
    best, best_host = min(times), min(to_host_times)
    return {"seconds": best, "seconds_all": times, "fps": clip.shape[1] / best,
            "seconds_to_host": best_host, "fps_to_host": clip.shape[1] / best_host,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def count_flops(runner: Runner, clip: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    stance = getattr(torch.compiler, "set_stance", None)
    ctx = stance("force_eager") if stance is not None else nullcontext()  # count the math, not the compiled kernels
    counter = FlopCounterMode(display=False)
    with ctx, counter:
        runner.run(clip, bf16=True)
    return float(counter.get_total_flops())


def profile_timeline(runner: Runner, clip: torch.Tensor, trace_path: Path) -> dict:
    """One profiled run: device busy / idle inside it (`timeline.gpu_timeline`)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with record_function("vs_authors.run"):
            runner.run(clip, bf16=True)
            torch.cuda.synchronize()
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    return gpu_timeline(trace_path, "vs_authors.run")


def rotation_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    R = np.einsum("nji,njk->nik", Ra, Rb)
    cos = np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1)
    return np.degrees(np.arccos(cos))


def window_differences(a: dict, b: dict, windows: list[tuple[int, int]]) -> list[dict]:
    """Per window: max rotation difference (deg), max camera-centre difference / window extent,
    median |log depth_a - log depth_b| over pixels with positive finite depth in both."""
    rows = []
    Pa, Pb = a["camera_poses"][0].double().numpy(), b["camera_poses"][0].double().numpy()
    za, zb = a["local_points"][0, ..., 2].double(), b["local_points"][0, ..., 2].double()
    for s, e in windows:
        rot = rotation_deg(Pa[s:e, :3, :3], Pb[s:e, :3, :3])
        ta, tb = Pa[s:e, :3, 3], Pb[s:e, :3, 3]
        extent = max(np.ptp(tb, axis=0).max(), 1e-6)
        ok = (za[s:e] > 0) & (zb[s:e] > 0) & torch.isfinite(za[s:e]) & torch.isfinite(zb[s:e])
        dlog = (za[s:e][ok].log() - zb[s:e][ok].log()).abs()
        rows.append({"frames": [s, e], "rot_deg_max": float(np.nanmax(rot)),
                     "centre_rel_max": float(np.nanmax(np.linalg.norm(ta - tb, axis=1)) / extent),
                     "log_depth_median": float(dlog.median()) if dlog.numel() else float("nan")})
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--authors", type=Path, required=True, help="checkout of the authors' code (holds loger/models/pi3.py)")
    ap.add_argument("--config", default="loger", choices=["loger", "loger_star"])
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--width", type=int, default=504)
    ap.add_argument("--height", type=int, default=280)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per implementation (best is reported)")
    ap.add_argument("--accuracy-frames", type=int, default=61, help="clip length of the fp32-vs-bf16 comparison (0: skip)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE,...",
                    help="also time the fast paths with these FastPathConfig fields changed (with window graphs), "
                         "e.g. nogelu:fused_gelu=0 or tuned:tune_kernels=1")
    ap.add_argument("--timeline", action="store_true",
                    help="profile one more run of each implementation: device busy / idle time and the largest idle gaps")
    ap.add_argument("--out", type=Path, default=Path("bench_results/vs_authors.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("vs_authors needs a CUDA device")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 references in true fp32, as the authors' default

    opts = MemoryOptions(args.window, args.overlap)
    clip = smooth_clip(args.frames, args.width, args.height)
    eager = fill_deterministic_(build_model(args.config, device="meta")).to(device)
    state_dict = {k: v.clone() for k, v in eager.state_dict().items()}
    theirs, _ = authors_model(args.authors, "LoGeR_star" if args.config == "loger_star" else "LoGeR", state_dict, device)
    fast = enable_fast_paths(copy.deepcopy(eager), FastPathConfig())

    runners = {
        "authors": Runner("authors", authors_fn(theirs, opts)),
        # Their default call, outputs copied to the host window by window (what their demo runs).
        "authors_default": Runner("authors_default", authors_fn(theirs, opts, no_detach=False)),
        "ours_eager": Runner("ours_eager", ours_fn(eager, opts)),
        "ours_fast": Runner("ours_fast", ours_fn(fast, opts)),
        "ours_graphs": Runner("ours_graphs", ours_fn(fast, opts, cuda_graphs=True), warm_ups=2),
    }
    for spec in args.variant:  # other fast-path settings, each on its own copy, with window graphs
        name, _, fields = spec.partition(":")
        overrides = {k: type(getattr(FastPathConfig(), k))(int(v) if v.isdigit() else v)
                     for k, v in (f.split("=") for f in fields.split(",") if f)}
        variant = enable_fast_paths(copy.deepcopy(eager), replace(FastPathConfig(), **overrides))
        runners[f"ours_{name}"] = Runner(f"ours_{name}", ours_fn(variant, opts, cuda_graphs=True), warm_ups=2)
    warm = clip[:, : min(args.frames, 2 * args.window)]
    results: dict[str, dict] = {}
    for name, runner in runners.items():
        t0 = time.perf_counter()
        for _ in range(runner.warm_ups):
            runner.run(warm, bf16=True)  # compile / kernel choice / allocator growth
        torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        r = timed(runner, clip, args.repeats)
        r["warmup_s"] = warm_s
        results[name] = r
        print(f"  {name}: {r['fps']:.1f} new frames/s ({r['seconds']:.2f} s, warm-up {warm_s:.1f} s)", flush=True)

    timelines = {}
    if args.timeline:
        for name, runner in runners.items():
            trace = Path(tempfile.gettempdir()) / f"vs_authors_{name}_trace.json"
            timelines[name] = profile_timeline(runner, clip, trace)
            print(format_timeline(name, timelines[name]), flush=True)

    flops = {"authors": count_flops(runners["authors"], clip), "ours": count_flops(runners["ours_eager"], clip)}
    for name, r in results.items():
        f = flops["authors" if name.startswith("authors") else "ours"]
        r["tflop"] = f / 1e12
        r["tflops_per_s"] = f / r["seconds"] / 1e12

    accuracy = {}
    if args.accuracy_frames:
        acc_clip = clip[:, : args.accuracy_frames]
        windows = window_schedule(acc_clip.shape[1], args.window, args.overlap)
        ref_ours = runners["ours_eager"].run_to_host(acc_clip, bf16=False)
        ref_theirs = runners["authors"].run_to_host(acc_clip, bf16=False)
        accuracy = {f"{name}_vs_ours_fp32": window_differences(runners[name].run_to_host(acc_clip, True), ref_ours, windows)
                    for name in runners if name.startswith("ours_") and name != "ours_eager"}
        accuracy.update({
            "ours_eager_bf16_vs_ours_fp32": window_differences(runners["ours_eager"].run_to_host(acc_clip, True), ref_ours, windows),
            "authors_bf16_vs_authors_fp32": window_differences(runners["authors"].run_to_host(acc_clip, True), ref_theirs, windows),
            "ours_fp32_vs_authors_fp32": window_differences(ref_ours, ref_theirs, windows),
        })

    base = results["authors"]["fps"]
    print(f"\n{args.config}, {args.frames} frames {args.width}x{args.height}, window {args.window}/{args.overlap}, bf16, "
          f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print("frames/s: new frames per second of the network (clip in, outputs on the GPU); to host: "
          "until poses and local points are copied to the host")
    print(f"{'implementation':<14} {'frames/s':>9} {'vs authors':>10} {'s':>7} {'to host f/s':>11} {'peak GiB':>9} "
          f"{'TFLOP':>7} {'TFLOP/s':>8}")
    for name, r in results.items():
        print(f"{name:<14} {r['fps']:9.1f} {r['fps'] / base:9.2f}x {r['seconds']:7.2f} {r['fps_to_host']:11.1f} "
              f"{r['peak_gib']:9.2f} {r['tflop']:7.1f} {r['tflops_per_s']:8.0f}")
    if accuracy:
        print(f"\nper window, bf16 path vs its implementation's fp32 path ({args.accuracy_frames} frames):")
        print(f"{'comparison':<30} {'window':>7} {'rot deg':>9} {'centre rel':>11} {'|dlog z| med':>13}")
        for comp, rows in accuracy.items():
            for i, row in enumerate(rows):
                print(f"{comp:<30} {i:7d} {row['rot_deg_max']:9.4f} {row['centre_rel_max']:11.4f} {row['log_depth_median']:13.5f}")
    summary = {
        "config": args.config, "frames": args.frames, "resolution_wh": [args.width, args.height],
        "window": args.window, "overlap": args.overlap, "device_name": torch.cuda.get_device_name(device),
        "torch": torch.__version__, "results": results, "speedup_vs_authors": max(r["fps"] for k, r in results.items() if k.startswith("ours_") and k != "ours_eager") / base,
        "accuracy": accuracy, "timelines": timelines,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"\nwrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
