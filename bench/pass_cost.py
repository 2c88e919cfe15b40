"""What one provisional pass costs on the device, alone, by the number of frames it carries.

A provisional pass runs the network on a few anchor frames plus the newest frames against the
last committed memory (see `StreamingReconstructor`). Its cost decides how often odometry can come
and how long it takes. This script builds the stream's model, commits two windows so that the
memory has its steady-state shape, then for each pass size times (CUDA events, median of
``--reps``):

- ``graph``: the replay of the pass's CUDA graph (`ProvisionalGraphs`, as the node runs it);
- ``eager``: the same pass launched from Python;
- one committed window of ``--window`` frames, for the cost per frame of the bulk work.

and, for one size, the pass's kernels by device time (`torch.profiler`): how many there are and
which dominate. Prints a table, writes JSON.

    python bench/pass_cost.py --model loger --frames-per-pass 2 3 4 6 --out bench_results/pass_cost.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.model.fast_paths import eager_regions  # noqa: E402
from loger_core.model.window_graphs import capture_graph  # noqa: E402
from loger_core.stream import StreamConfig, StreamingReconstructor  # noqa: E402
from loger_core.stream.preprocess import rgb_batch  # noqa: E402
from timeline import kernel_kind  # noqa: E402  (bench/timeline.py)


def _time(fn, reps: int) -> float:
    """Median device+host time of fn() in ms (synchronised around each call)."""
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _kernel_summary(prof, top: int) -> dict:
    """Device time of a `torch.profiler` run: total, by kernel kind, and the `top` kernels."""
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    by_kind: dict[str, float] = {}
    for e in events:
        kind = kernel_kind(e.key)
        by_kind[kind] = by_kind.get(kind, 0.0) + e.device_time_total / 1000
    ranked = sorted(events, key=lambda e: -e.device_time_total)[:top]
    return {"kernels": sum(e.count for e in events), "device_ms": sum(by_kind.values()),
            "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "top": [{"name": e.key[:90], "calls": e.count, "ms": e.device_time_total / 1000} for e in ranked]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="loger")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", default="504x280", help="network input WxH")
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--frames-per-pass", type=int, nargs="+", default=[2, 3, 4, 6])
    ap.add_argument("--profile", type=int, default=4, help="pass size to profile (0: none)")
    ap.add_argument("--profile-window", action="store_true",
                    help="also profile one committed window (compiled, as the stream runs it): kernels by kind")
    ap.add_argument("--compiled-graph", action="store_true",
                    help="also time each pass captured from the compiled blocks (the node does so for the shapes "
                         "its warm-up compiled; `graph` here captures the eager blocks: this stream compiles none)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=REPO / "bench_results" / "pass_cost.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("pass_cost needs a CUDA device")
    w, h = (int(v) for v in args.size.split("x"))
    cfg = StreamConfig(model=args.model, checkpoint=args.checkpoint, device="cuda", resolution=(w, h),
                       window_size=args.window, overlap_size=args.overlap, async_windows="on", cuda_graphs="on",
                       provisional_every=0)
    rec = StreamingReconstructor(cfg)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(2 * args.window, h, w, 3), dtype=np.uint8)
    for i, img in enumerate(frames):  # two committed windows: the memory's steady-state layout
        rec.push(img, 1000 + i)
    rec._worker.wait_idle()
    state = rec._view.state
    graphs = rec.provisional_graphs
    model = rec.model

    def eager_pass(rgb: torch.Tensor) -> None:
        """The pass launched from Python, as the node runs it when no graph serves."""
        with torch.no_grad(), rec._autocast(), eager_regions():
            model.forward_window(rgb_batch(rgb), state, rec.options, commit=False, raw_camera=True)

    def compiled_graph_ms(rgb: torch.Tensor) -> float:
        """Replay time of the same pass captured from the compiled blocks (this thread alone)."""
        static_rgb, static_state = rgb.clone(), state.clone()

        def forward():
            with torch.no_grad(), rec._autocast():
                return model.forward_window(rgb_batch(static_rgb), static_state, rec.options, commit=False,
                                            raw_camera=True)[0]

        graph, _ = capture_graph(forward, rgb.device, warm_ups=2)
        return _time(graph.replay, args.reps)

    rows = []
    for n in args.frames_per_pass:
        rgb = torch.from_numpy(frames[:n]).to("cuda")
        with torch.cuda.stream(rec._prov_stream):
            graphs.run(rgb, state, capture_allowed=True)  # capture
            graph_ms = _time(lambda: graphs.run(rgb, state, capture_allowed=False), args.reps)
            eager_pass(rgb)
            eager_ms = _time(lambda: eager_pass(rgb), max(3, args.reps // 4))
            compiled_ms = compiled_graph_ms(rgb) if args.compiled_graph else None
        rows.append({"frames": n, "graph_ms": graph_ms, "eager_ms": eager_ms, "graph_ms_per_frame": graph_ms / n,
                     "compiled_graph_ms": compiled_ms})
        print(f"pass of {n} frames: graph {graph_ms:.1f} ms, eager {eager_ms:.1f} ms"
              + (f", graph of the compiled blocks {compiled_ms:.1f} ms" if compiled_ms else ""), flush=True)

    window = torch.from_numpy(frames[: args.window]).to("cuda")

    def bulk():
        with torch.no_grad(), rec._autocast():
            model.forward_window(rgb_batch(window), state, rec.options, commit=True)

    bulk()
    window_ms = _time(bulk, 3)

    from torch.profiler import ProfilerActivity, profile as torch_profile

    window_profile = {}
    if args.profile_window:
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            bulk()
            end.record()
            torch.cuda.synchronize()
        window_profile = _kernel_summary(prof, top=25)
        window_profile["wall_ms"] = start.elapsed_time(end)

    profile = {}
    if args.profile:
        rgb = torch.from_numpy(frames[: args.profile]).to("cuda")
        with torch.cuda.stream(rec._prov_stream):
            graphs.run(rgb, state, capture_allowed=True)
            torch.cuda.synchronize()
            # Eager: a graph replay shows as one launch; its kernels are those of the eager pass.
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                eager_pass(rgb)
                torch.cuda.synchronize()
        profile = {"frames": args.profile, **_kernel_summary(prof, top=15)}

    print(f"\n{args.model}, {w}x{h}, memory of window {args.window}/{args.overlap}, {torch.cuda.get_device_name()}")
    print(f"{'frames':>6} {'graph ms':>9} {'eager ms':>9} {'ms/frame':>9}")
    for r in rows:
        print(f"{r['frames']:>6d} {r['graph_ms']:>9.1f} {r['eager_ms']:>9.1f} {r['graph_ms_per_frame']:>9.1f}")
    print(f"committed window of {args.window} frames: {window_ms:.1f} ms ({window_ms / args.window:.1f} ms/frame)")
    if window_profile:
        p = window_profile
        print(f"\ncommitted window, compiled: {p['kernels']} kernels, {p['device_ms']:.1f} ms of device time in "
              f"{p['wall_ms']:.1f} ms (the GPU idle {100 * (1 - p['device_ms'] / p['wall_ms']):.0f}%)")
        for kind, ms in p["by_kind_ms"].items():
            print(f"  {ms:7.2f} ms  {kind}")
        for t in p["top"]:
            print(f"  {t['ms']:7.2f} ms {t['calls']:5d}x  {t['name']}")
    if profile:
        print(f"\npass of {profile['frames']} frames, eager: {profile['kernels']} kernels, {profile['device_ms']:.1f} ms of device time")
        for t in profile["top"]:
            print(f"  {t['ms']:7.2f} ms {t['calls']:5d}x  {t['name']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "size": [w, h], "window": args.window, "overlap": args.overlap,
                                    "device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                    "passes": rows, "window_ms": window_ms, "profile": profile,
                                    "window_profile": window_profile}, indent=2))
    print(f"wrote {args.out}")
    rec.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
