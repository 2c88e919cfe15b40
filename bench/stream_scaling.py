"""Streaming throughput and memory against sequence length.

For each frame count the same reconstructor configuration streams that many frames (a fixed
set of 16 deterministic noise images at --input-size, cycled, so preprocessing is included) and
flushes; the model is built once. Reported per run: wall time, frames/s, ms/frame, the resident
set size before and at its peak during the run (sampled every 10 ms), the CUDA peak allocation,
and the memory-state bytes. Linear time shows as a constant ms/frame; bounded memory as a flat
peak. Prints a table and writes JSON (--out).

    python bench/stream_scaling.py                                   # tiny on CPU
    python bench/stream_scaling.py --model loger --device cuda --checkpoint ckpts/LoGeR/latest.pt

Without --checkpoint the weights are deterministic synthetic ones: timing and memory are those
of the real network, geometry is meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.stream import StreamConfig, StreamingReconstructor, load_stream_model  # noqa: E402

MIB = 2**20
TINY_RESOLUTION = (112, 84)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size in a thread; `peak` is the largest value seen."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def noise_frames(width: int, height: int, count: int = 16) -> list[np.ndarray]:
    """Smooth deterministic colour noise (closer to images than white noise; same cost)."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        frames.append(np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)))
    return frames


SEGMENT = 1000  # frames per memory segment


def run_once(cfg: StreamConfig, model, frames: list[np.ndarray], n: int) -> dict:
    rec = StreamingReconstructor(cfg, model=model)
    cuda = rec.device.type == "cuda"
    rec_close = rec.close
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_start = rss_bytes()
    out = 0
    state_peak = 0
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        segment_peaks: list[float] = []
        for i in range(n):
            if cuda and i and i % SEGMENT == 0:
                # Peak allocation per 1,000-frame segment: flat memory means the last segments
                # peak no higher than the first.
                segment_peaks.append(torch.cuda.max_memory_allocated() / MIB)
                torch.cuda.reset_peak_memory_stats()
            got = len(rec.push(frames[i % len(frames)], 1_000_000_000 + i * 33_333_333))
            if got:
                out += got
                state_peak = max(state_peak, rec.state_nbytes())
        out += len(rec.flush())
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    if cuda:
        segment_peaks.append(torch.cuda.max_memory_allocated() / MIB)
    rec_close()
    assert out == n, f"{out} results for {n} frames"
    return {
        "frames": n,
        "seconds": seconds,
        "frames_per_s": n / seconds,
        "ms_per_frame": 1000.0 * seconds / n,
        "rss_start_mib": rss_start / MIB,
        "rss_peak_mib": peak.peak / MIB,
        "cuda_peak_mib": max(segment_peaks) if cuda else None,
        "cuda_segment_peaks_mib": segment_peaks if cuda else None,
        # Largest segment peak over the first segment's: 1.0 = flat.
        "cuda_flat_ratio": max(segment_peaks) / segment_peaks[0] if cuda else None,
        # The largest memory state seen (after full windows; the final partial window's is smaller).
        "state_bytes": max(state_peak, rec.state_nbytes()),
        "windows": rec.stats.windows_run,
        "window_graph_replays": rec.stats.window_graph_replays,
    }


def network_fps(cfg: StreamConfig, model, windows: int = 10) -> dict:
    """The network alone in this process: steady windows (memory carried) on a fixed device tensor,
    new frames per second = (window - overlap) / seconds per window, launched block by block and,
    on CUDA, replayed from a CUDA graph (`WindowGraphs`); the faster one is the network's own speed,
    of which the stream's target is a share."""
    result = _network_fps(cfg, model, windows, graphs=False)
    if cfg.torch_device().type == "cuda":
        graph = _network_fps(cfg, model, windows, graphs=True)
        result = {"eager": result, "graph": graph, **max(result, graph, key=lambda r: r["frames_per_s"])}
    return result


def _network_fps(cfg: StreamConfig, model, windows: int, graphs: bool) -> dict:
    from contextlib import nullcontext

    from loger_core.model.state import MemoryOptions
    from loger_core.model.window_graphs import WindowGraphs, graph_autocast

    device, dtype = cfg.torch_device(), cfg.torch_dtype()
    w, h = cfg.resolution
    x = torch.rand(1, cfg.window_size, 3, h, w, device=device)
    opts = MemoryOptions(cfg.window_size, cfg.overlap_size, cfg.reset_every, cfg.use_ttt, cfg.use_swa)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    replay = WindowGraphs(model, opts, graph_autocast(device.type, dtype)) if graphs else None

    def window(state):
        out = replay.run(x, state) if replay is not None else None
        return out[1] if out is not None else model.forward_window(x, state, opts, commit=True)[1]

    state = None
    with torch.no_grad(), amp:
        for _ in range(4):  # first window, windows with SWA history, graph capture: not timed
            state = window(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(windows):
            state = window(state)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / windows
    if replay is not None:
        replay.release()
    return {"window_s": seconds, "frames_per_s": (cfg.window_size - cfg.overlap_size) / seconds,
            "graph_replays": replay.replays if replay is not None else 0}


def table(runs: list[dict]) -> str:
    head = f"{'frames':>7} {'seconds':>9} {'frames/s':>9} {'ms/frame':>9} {'RSS start':>10} {'RSS peak':>10} {'CUDA peak':>10} {'state KiB':>10}"
    lines = [head, "-" * len(head)]
    for r in runs:
        cuda = f"{r['cuda_peak_mib']:9.0f}M" if r["cuda_peak_mib"] is not None else f"{'-':>10}"
        lines.append(
            f"{r['frames']:>7} {r['seconds']:>9.2f} {r['frames_per_s']:>9.2f} {r['ms_per_frame']:>9.2f} "
            f"{r['rss_start_mib']:>9.0f}M {r['rss_peak_mib']:>9.0f}M {cuda} {r['state_bytes'] / 1024:>10.1f}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", "--config", dest="config", default="tiny", choices=("tiny", "small", "loger", "loger_star"))
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA), float32, bfloat16, float16")
    p.add_argument("--frames", type=int, nargs="+", default=[250, 1000, 4000])
    p.add_argument("--resolution", default=None, help="WxH network input (default 112x84 tiny, 504x280 full)")
    p.add_argument("--input-size", default="640x480", help="WxH of the pushed frames")
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--reset-every", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--preprocess-threads", type=int, default=4, help="frame-resizing threads of the stream")
    p.add_argument("--point-voxel-size", type=float, default=0.0, help="device-side per-frame voxel merge (0 = off)")
    p.add_argument("--async-windows", default="auto", choices=("auto", "on", "off"),
                   help="windows on a worker thread, pipelined (auto: on for CUDA)")
    p.add_argument("--cuda-graphs", default="auto", choices=("auto", "on", "off"),
                   help="StreamConfig.cuda_graphs: committed windows replay CUDA graphs (auto: on CUDA with async windows)")
    p.add_argument("--no-network-baseline", action="store_true", help="skip timing the network alone")
    p.add_argument("--out", default="bench_stream_scaling.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resolution:
        resolution = tuple(int(v) for v in args.resolution.lower().split("x"))
    else:
        resolution = TINY_RESOLUTION if args.config == "tiny" else (504, 280)
    in_w, in_h = (int(v) for v in args.input_size.lower().split("x"))
    cfg = StreamConfig(
        model=args.config, checkpoint=args.checkpoint, device=args.device, dtype=args.dtype, resolution=resolution,
        window_size=args.window, overlap_size=args.overlap, reset_every=args.reset_every,
        preprocess_threads=args.preprocess_threads, point_voxel_size=args.point_voxel_size,
        async_windows=args.async_windows, cuda_graphs=args.cuda_graphs,
    )
    t0 = time.perf_counter()
    model = load_stream_model(cfg)
    load_s = time.perf_counter() - t0
    frames = noise_frames(in_w, in_h)
    # Warm-up (kernel selection, compilation of each window shape: first window, windows with the
    # SWA history, and the partial final window of every timed length, whose size depends on the
    # length: compiling it inside a timed run charged a one-off cost to the stream; allocator).
    step = args.window - args.overlap
    for tail in sorted({(n - args.window) % step for n in args.frames if n > args.window}) or [5]:
        run_once(cfg, model, frames, args.window + step + tail)

    baseline = None if args.no_network_baseline else network_fps(cfg, model)
    if baseline:
        print(f"  network alone: {baseline['frames_per_s']:.2f} new frames/s ({baseline['window_s'] * 1000:.1f} ms per window)"
              + (f"; block by block {baseline['eager']['frames_per_s']:.2f}, CUDA graph {baseline['graph']['frames_per_s']:.2f}"
                 if "graph" in baseline else ""), flush=True)
    runs = []
    for n in args.frames:
        runs.append(run_once(cfg, model, frames, n))
        if baseline:
            runs[-1]["share_of_network"] = runs[-1]["frames_per_s"] / baseline["frames_per_s"]
        print(f"  {n} frames: {runs[-1]['frames_per_s']:.2f} frames/s"
              + (f" ({runs[-1]['share_of_network']:.0%} of the network)" if baseline else ""), flush=True)
    device = cfg.torch_device()
    info = {
        "config": args.config,
        "weights": args.checkpoint or "synthetic (deterministic)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "dtype": str(cfg.torch_dtype()).replace("torch.", ""),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "resolution": list(resolution),
        "input_size": [in_w, in_h],
        "window": args.window,
        "overlap": args.overlap,
        "reset_every": args.reset_every,
        "preprocess_threads": args.preprocess_threads,
        "fast_paths": str(cfg.fast_path_config()),
        "async_windows": cfg.async_enabled(),
        "cuda_graphs": cfg.cuda_graphs,
        "model_load_s": load_s,
        "network_alone": baseline,
        "runs": runs,
    }
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        info["ms_per_frame_ratio_last_first"] = last["ms_per_frame"] / first["ms_per_frame"]
        info["rss_peak_growth_mib"] = last["rss_peak_mib"] - first["rss_peak_mib"]
        if first["cuda_peak_mib"] is not None:
            info["cuda_peak_growth_mib"] = last["cuda_peak_mib"] - first["cuda_peak_mib"]
    print(f"\n{args.config} on {info['device']} ({info['dtype']}), input {in_w}x{in_h} -> {resolution[0]}x{resolution[1]}, "
          f"window {args.window}/{args.overlap}, weights: {info['weights']}")
    print(table(runs))
    for r in runs:
        if r["cuda_segment_peaks_mib"]:
            peaks = ", ".join(f"{v:.0f}" for v in r["cuda_segment_peaks_mib"])
            print(f"{r['frames']} frames: CUDA peak per {SEGMENT}-frame segment (MiB): {peaks}; "
                  f"largest / first = {r['cuda_flat_ratio']:.3f}")
    if len(runs) > 1:
        print(f"ms/frame ratio {runs[-1]['frames']} vs {runs[0]['frames']} frames: {info['ms_per_frame_ratio_last_first']:.3f}; "
              f"peak RSS growth {info['rss_peak_growth_mib']:.1f} MiB")
    Path(args.out).write_text(json.dumps(info, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
