"""``loger-batch``: map many bags, image folders and videos with Ray (see :mod:`loger_ros.batch`).

Example::

    loger-batch /data/bags/*.mcap /data/runs/ --out /data/maps --max-retries 2 \\
        --checkpoint ckpts/LoGeR_star/latest.pt --replay-args "-p window_size:=32"
    loger-batch /data/bags --out /data/maps --address auto      # on a running Ray cluster

Exit status: 0 when every input is mapped (or was already), 1 when some failed after their
retries, 2 for bad options or inputs, 3 when Ray is not installed, 130 on Ctrl-C / SIGTERM: no
further input starts, the running ones stop after their current frame and keep their outputs
and a session; running the same command again resumes them. A second Ctrl-C quits at once.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from loger_core.model.selection import MODEL_CHOICES

__all__ = ["RAY_MISSING", "build_parser", "main"]

RAY_MISSING = (
    "loger-batch needs Ray, an optional extra of this package. Install it with\n"
    "    pip install '.[batch]'        (from a checkout of loger_ros)\n"
    "or  pip install 'ray>=2.40'      (next to an installed loger_ros)"
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loger-batch",
        description="Map many recordings with Ray: one actor call per input running loger-replay (bags) or "
        "loger-reconstruct (image folders, videos) into OUT/<input name>/. Resumable: a rerun skips "
        "inputs whose outputs are complete and current.")
    p.add_argument("inputs", nargs="+", help="bags (rosbag2 directory, .mcap, .db3, ROS 1 .bag), image folders, "
                   "videos, folders holding them, or globs (quote them to let loger-batch expand '**')")
    p.add_argument("--out", type=Path, required=True, help="output folder: OUT/<input name>/, manifest.json, "
                   "summary.json, summary.csv")
    p.add_argument("--address", default="local",
                   help="'local' (start Ray on this machine, the default), 'auto' (the running cluster this "
                   "machine belongs to) or ray://HOST:10001")
    p.add_argument("--gpus-per-job", type=float, default=None,
                   help="GPUs per input (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--cpus-per-job", type=float, default=1.0, help="CPUs per input (default 1)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs of a local Ray instance (default: all)")
    p.add_argument("--max-retries", type=int, default=2,
                   help="retries of a failed input (error or dead worker) before it is reported (default 2)")
    p.add_argument("--force", action="store_true", help="redo inputs whose outputs are already complete")
    g = p.add_argument_group("model and parameters (passed to both tools)")
    g.add_argument("--model", default=None, choices=MODEL_CHOICES, help="model_config (default auto)")
    g.add_argument("--checkpoint", default=None,
                   help="weights (the authors' latest.pt or .safetensors); must be readable at the same path on "
                   "every node (default: the bundled small demo weights, trained on synthetic scenes only)")
    g.add_argument("--synthetic-weights", action="store_true", help="deterministic untrained weights (tests)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda (a job sees only its own GPUs)")
    g.add_argument("--dtype", default=None, help="auto, float32, bfloat16, float16")
    g.add_argument("--max-frames", type=int, default=None, help="stop each input after this many frames")
    g.add_argument("--params", type=Path, default=None, help="bags: ROS 2 parameter file (loger-replay --params)")
    g.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="bags: one node parameter (repeatable), as loger-replay -p")
    g.add_argument("--replay-args", default="", help="further loger-replay options for bags, one string, "
                   "e.g. \"--topic /cam/image_raw --no-bag\"")
    g.add_argument("--reconstruct-args", default="", help="further loger-reconstruct options for image folders "
                   "and videos, one string, e.g. \"--stride 2 --voxel-size 0.05\"")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def tool_argv(args: argparse.Namespace) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(loger-replay options, loger-reconstruct options) for ``args``."""
    common: list[str] = []
    for flag, value in (("--checkpoint", args.checkpoint), ("--device", args.device), ("--dtype", args.dtype),
                        ("--max-frames", args.max_frames)):
        if value is not None:
            common += [flag, str(value)]
    if args.synthetic_weights:
        common.append("--synthetic-weights")
    replay = list(common)
    recon = list(common)
    if args.model is not None:
        replay += ["--model", args.model]
        recon += ["--model", args.model]
    if args.params is not None:
        replay += ["--params", str(args.params)]
    for p in args.param:
        replay += ["-p", p]
    replay += shlex.split(args.replay_args)
    recon += shlex.split(args.reconstruct_args)
    return tuple(replay), tuple(recon)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("ray") is None:
        print(f"loger-batch: error: {RAY_MISSING}", file=sys.stderr)
        return 3
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    from loger_core.cli.interrupt import INTERRUPTED_EXIT, StopRequest

    from .inputs import BatchInputError, collect_inputs
    from .runner import BatchError, BatchOptions, print_report, run_batch

    if args.max_retries < 0:
        print("loger-batch: error: --max-retries must be >= 0", file=sys.stderr)
        return 2
    replay_argv, recon_argv = tool_argv(args)
    options = BatchOptions(
        out_dir=args.out, address=args.address, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
        max_retries=args.max_retries, force=args.force, replay_argv=replay_argv, reconstruct_argv=recon_argv,
        num_cpus=args.num_cpus, num_gpus=args.num_gpus, progress=not args.no_progress)
    with StopRequest("loger-batch") as stop:
        try:
            inputs = collect_inputs(args.inputs)
            report = run_batch(inputs, options, stop=stop)
        except (BatchInputError, BatchError) as err:
            print(f"loger-batch: error: {err}", file=sys.stderr)
            return 2
    print_report(report, args.out)
    if report.interrupted:
        print(f"loger-batch: interrupted; finished inputs are in {args.out}/manifest.json; run the same command "
              "again to resume the interrupted ones and map the rest", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
