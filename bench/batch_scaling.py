"""loger-batch throughput against the number of Ray workers (one input per worker at a time).

Makes --bags synthetic bags (or takes the bags below --bags-dir, e.g. made with ``loger-synth --bag mcap``),
then for each worker count W starts a local Ray instance sized to W workers (W GPUs with --gpus,
else W x --cpus-per-job CPUs), maps every bag with ``run_batch`` (``--force``: nothing skipped)
and reports: the cold start (Ray up; one 2-frame bag per worker, which starts the worker processes
and loads the model once in each), then for the whole batch on those warm workers: wall time,
inputs/hour, frames/s in all and per worker, scaling efficiency against one worker, the mean
frames/s of one job, peak GPU memory per worker and model loads (0: the workers kept theirs).
Prints a table and writes JSON (--out).

    python bench/batch_scaling.py                                    # small (bundled weights), CPU, 1 and 2 workers
    python bench/batch_scaling.py --gpus 1 --model loger --frames 1000 --size 640x480
    python bench/batch_scaling.py --gpus 4 --model loger --bags 8 --frames 1000 --size 640x480

Without --checkpoint a full model (loger / loger_star) runs deterministic synthetic weights:
timing and memory are the real network's, geometry is meaningless.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.model.selection import BUNDLED_MODEL  # noqa: E402
from loger_ros.batch import collect_inputs  # noqa: E402
from loger_ros.batch.runner import BatchOptions, run_batch  # noqa: E402
from loger_ros.replay import discover_bags  # noqa: E402


def make_bags(root: Path, count: int, frames: int, size: tuple[int, int], device: str, encoding: str = "rgb8") -> None:
    """``count`` synthetic mcap bags ``root/synth_NN/bag_mcap`` made by ``loger-synth``, in a child
    process: the renderer's CUDA context must not sit on a GPU that the workers are measured on."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = root / f"synth_{i:02d}"
        if path.exists():
            continue
        subprocess.run([sys.executable, "-m", "loger_core.synthetic.cli", "--scene", ("room", "corridor")[i % 2],
                        "--frames", str(frames), "--size", f"{size[0]}x{size[1]}", "--seed", str(100 + i),
                        "--out", str(path), "--no-folder", "--bag", "mcap", "--device", device, "--quiet",
                        "--image-encoding", encoding],
                       check=True, cwd=REPO)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def worker_counts(text: str | None, gpus: int) -> list[int]:
    if text:
        return sorted({int(t) for t in text.split(",")})
    if gpus:
        counts = {1, gpus}
        w = 2
        while w < gpus:
            counts.add(w)
            w *= 2
        return sorted(counts)
    return [1, 2]


def run_once(bags: list, workers: int, args, replay_argv: tuple, out_root: Path) -> dict:
    import ray

    t0 = time.perf_counter()
    if args.gpus:
        ray.init(num_cpus=os.cpu_count(), num_gpus=workers, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=int(workers * args.cpus_per_job), num_gpus=0, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0

    def batch(items, argv, out):
        return run_batch(items, BatchOptions(
            out_dir=out, gpus_per_job=1.0 if args.gpus else 0.0, cpus_per_job=args.cpus_per_job,
            max_retries=0, force=True, replay_argv=argv, progress=not args.quiet))

    try:
        # Cold start: Ray starts one worker process per slot, each imports torch and loads the model
        # (once: the timed batch below reuses them). Measured apart, so that the scaling columns show
        # the steady state that a batch of hundreds of bags sees.
        t0 = time.perf_counter()
        warm = batch(bags[:workers], (*replay_argv, "--max-frames", "2"), out_root / f"warm{workers}")
        warmup_s = time.perf_counter() - t0
        report = batch(bags, replay_argv, out_root / f"w{workers}")
    finally:
        ray.shutdown()
    ok = [r for r in report.results if r.status == "ok"]
    frames = sum(r.frames for r in ok)
    pids = {(r.host, r.pid) for r in ok}
    gpu = [r.gpu_peak_mb for r in ok if r.gpu_peak_mb is not None]
    return {
        "workers": workers,
        "load_average_1min": os.getloadavg()[0],
        "inputs": len(report.results),
        "ok": len(ok),
        "failed": [(r.name, r.error) for r in report.results if r.status != "ok"],
        "frames": frames,
        "wall_s": report.wall_s,
        "ray_init_s": init_s,
        "warmup_s": warmup_s,
        "warmup_model_loads": sum(r.model_loaded for r in warm.results),
        "inputs_per_hour": len(ok) / report.wall_s * 3600,
        "frames_per_s": frames / report.wall_s,
        "frames_per_s_per_worker": frames / report.wall_s / workers,
        "mean_job_frames_per_s": sum(r.frames_per_s for r in ok) / max(len(ok), 1),
        "worker_processes": len(pids),
        "model_loads": sum(r.model_loaded for r in ok),
        "gpu_peak_mb_per_worker": max(gpu) if gpu else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, default=0, help="GPUs to scale over (0: CPU workers)")
    ap.add_argument("--workers", default=None, help="worker counts, e.g. 1,2,4 (default: 1,2 on CPU; 1,2,..,N GPUs)")
    ap.add_argument("--model", default=BUNDLED_MODEL, help=f"model_config (default {BUNDLED_MODEL}, the bundled model)")
    ap.add_argument("--checkpoint", default=None,
                    help=f"weights (default: bundled for {BUNDLED_MODEL}, synthetic otherwise)")
    ap.add_argument("--bags", type=int, default=8, help="synthetic bags to make (default 8)")
    ap.add_argument("--frames", type=int, default=64, help="frames per synthetic bag (default 64)")
    ap.add_argument("--size", default="160x120", help="camera WIDTHxHEIGHT of the synthetic bags (default 160x120)")
    ap.add_argument("--bags-dir", type=Path, default=None, help="use (and keep) the bags here; made if missing")
    ap.add_argument("--image-encoding", default="rgb8", choices=("rgb8", "bgr8", "jpeg"),
                    help="images of the synthetic bags (jpeg: CompressedImage, ~10x smaller bags at 640x480)")
    ap.add_argument("--cpus-per-job", type=float, default=1.0)
    ap.add_argument("--replay-args", default="", help="further loger-replay options, one string")
    ap.add_argument("--out", type=Path, default=Path("bench_results/batch_scaling.json"))
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    import shlex

    import torch

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = "cuda" if args.gpus else "cpu"
    replay_argv = ["--model", args.model, "--device", device, "--no-bag", *shlex.split(args.replay_args)]
    if args.checkpoint:
        replay_argv += ["--checkpoint", args.checkpoint]
    elif args.model != BUNDLED_MODEL:
        replay_argv.append("--synthetic-weights")
    work = Path(tempfile.mkdtemp(prefix="loger_batch_bench_"))
    bags_dir = args.bags_dir or work / "bags"
    try:
        t0 = time.perf_counter()
        make_bags(bags_dir, args.bags, args.frames, (width, height), "cuda" if args.gpus else "cpu",
                  args.image_encoding)
        make_s = time.perf_counter() - t0
        print(f"{args.bags} bags of {args.frames} frames ready in {make_s:.1f} s", flush=True)
        # Bags only: a loger-synth output folder is also an image folder, which loger-batch would map
        # with loger-reconstruct instead.
        bags = collect_inputs([str(b) for b in discover_bags(bags_dir)])
        rows = [run_once(bags, w, args, tuple(replay_argv), work / "out") for w in worker_counts(args.workers, args.gpus)]
    finally:
        shutil.rmtree(work / "out", ignore_errors=True)
        if args.bags_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in rows if r["workers"] == 1), None)
    for r in rows:
        r["scaling_efficiency"] = (r["frames_per_s"] / (base["frames_per_s"] * r["workers"])) if base else None

    device_name = torch.cuda.get_device_name(0) if args.gpus and torch.cuda.is_available() else cpu_name()
    print(f"loger-batch scaling: {len(bags)} bags x {args.frames} frames ({width}x{height}), model {args.model}, "
          f"{'GPU' if args.gpus else 'CPU'} ({device_name}), {os.cpu_count()} CPUs, cpus/job {args.cpus_per_job}, "
          f"load average after each run {[round(r['load_average_1min'], 1) for r in rows]}")
    head = ("workers", "wall s", "inputs/h", "frames/s", "frames/s/worker", "efficiency", "job frames/s", "GPU MiB/worker",
            "model loads", "ray init s", "warm-up s")
    table = [head]
    for r in rows:
        table.append((str(r["workers"]), f"{r['wall_s']:.1f}", f"{r['inputs_per_hour']:.0f}", f"{r['frames_per_s']:.2f}",
                      f"{r['frames_per_s_per_worker']:.2f}",
                      f"{r['scaling_efficiency']:.2f}" if r["scaling_efficiency"] is not None else "-",
                      f"{r['mean_job_frames_per_s']:.2f}",
                      f"{r['gpu_peak_mb_per_worker']:.0f}" if r["gpu_peak_mb_per_worker"] else "-",
                      f"{r['model_loads']}/{r['worker_processes']}", f"{r['ray_init_s']:.1f}",
                      f"{r['warmup_s']:.1f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for i, row in enumerate(table):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in rows:
        for name, error in r["failed"]:
            print(f"FAILED with {r['workers']} workers: {name}: {error}")
    doc = {"bags": len(bags), "frames_per_bag": args.frames, "size": [width, height], "model": args.model,
           "checkpoint": args.checkpoint, "gpus": args.gpus, "device": device_name, "cpu_count": os.cpu_count(),
           "cpus_per_job": args.cpus_per_job, "make_bags_s": make_s, "replay_argv": replay_argv, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"-> {args.out}")
    return 0 if all(not r["failed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
