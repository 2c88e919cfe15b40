"""Runs a batch on Ray: one actor call per input, retries, the manifest, progress and the summary.

The only module of the package that imports Ray (at call time, so that importing it is free).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .inputs import BatchInput
from .jobs import FAULT_DIR_ENV, PARTIAL_DIR, SESSION_NAME, STOP_FILE, TOOLS, BatchWorker, JobResult, JobSpec
from .manifest import Manifest, input_fingerprint, job_key, model_identity
from .summary import format_table, write_summary

__all__ = ["BatchError", "BatchOptions", "BatchReport", "init_ray", "run_batch", "tool_settings"]

log = logging.getLogger("loger_ros.batch")

# Ray's messages for a dead worker run to many lines; the summary keeps the start.
_ERROR_CHARS = 500


class BatchError(ValueError):
    """Options that no input can run with (bad tool options, a missing checkpoint, a bad manifest)."""


@dataclass
class BatchOptions:
    """How to run a batch (see ``loger-batch --help``).

    gpus_per_job: None = 1 when the Ray cluster has GPUs, else 0. replay_argv / reconstruct_argv:
    options handed unchanged to loger-replay (bags) and loger-reconstruct (image folders, videos).
    num_cpus / num_gpus: size of a local Ray instance (None: Ray's detection); ignored when joining
    a cluster or when Ray is already initialised in this process.
    """

    out_dir: Path
    address: str = "local"
    gpus_per_job: Optional[float] = None
    cpus_per_job: float = 1.0
    max_retries: int = 2
    force: bool = False
    replay_argv: tuple[str, ...] = ()
    reconstruct_argv: tuple[str, ...] = ()
    num_cpus: Optional[int] = None
    num_gpus: Optional[int] = None
    progress: bool = True


@dataclass
class BatchReport:
    """Every input's final result (in input order), the batch's wall time and its summary document."""

    results: list[JobResult]
    wall_s: float
    summary: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status not in ("ok", "skipped", "interrupted")]

    @property
    def interrupted(self) -> bool:
        return any(r.status == "interrupted" for r in self.results)


@dataclass(frozen=True)
class _ToolSettings:
    parameters: Any  # what the key records of the tool's options, fully resolved
    model: str  # model identity (weights hash)


def tool_settings(kind: str, argv: Sequence[str], probe: Path, model_ids: dict) -> _ToolSettings:
    """Parses ``argv`` with the tool's own parser and resolves what decides its outputs (node
    parameters with the YAML file and defaults applied; the model's weights). Raises BatchError."""
    from loger_core.model.selection import ModelSelectionError, select_model

    try:
        if kind == "bag":
            from loger_ros.replay import build_arg_parser, options_from_args

            args = build_arg_parser().parse_args([str(probe), "--out", "unused", *argv])
            options = options_from_args(args)
            options.params.stream_config()  # a missing checkpoint or impossible window fails here, once
            selection = options.params.model_selection()
            parameters = {"params": options.params.to_dict(), "topic": options.topic,
                          "camera_info_topic": options.camera_info_topic, "depth_topic": options.depth_topic,
                          "gt_topic": options.gt_topic, "max_frames": options.max_frames,
                          "write_bag": options.write_bag}
        else:
            from loger_core.cli.reconstruct import build_parser

            args = build_parser().parse_args([str(probe), "--out", "unused", *argv])
            selection = select_model(args.model, args.checkpoint, synthetic=args.synthetic_weights)
            parameters = {k: v for k, v in sorted(vars(args).items()) if k not in ("input", "out", "quiet")}
    except SystemExit as err:
        raise BatchError(f"options {list(argv)} are not accepted by {TOOLS[kind]} (exit {err.code})") from None
    except (ModelSelectionError, ValueError) as err:  # ParamsError, ReplayError, StreamInputError
        raise BatchError(f"{TOOLS[kind]} options {list(argv)}: {err}") from None
    ident = (selection.model, selection.checkpoint)
    if ident not in model_ids:
        _check_checkpoint(selection.checkpoint)
        model_ids[ident] = model_identity(*ident)
    return _ToolSettings(parameters, model_ids[ident])


def _check_checkpoint(checkpoint: Optional[str]) -> None:
    """Refuses, once and before any job, a checkpoint that no job could load: missing, or a
    .safetensors file whose header does not read (a .pt file is only read by the jobs: a bad one
    fails each input at once, without retries)."""
    if not checkpoint:
        return
    path = Path(checkpoint)
    if not path.is_file():
        raise BatchError(f"checkpoint {checkpoint!r} does not exist (it must be at the same path on every node)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as err:  # safetensors raises its own error types for a bad header
            raise BatchError(f"checkpoint {checkpoint!r} is not a readable safetensors file ({err})") from None


def init_ray(options: BatchOptions) -> bool:
    """Starts or joins Ray unless this process already did; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    if options.address == "local":
        ray.init(num_cpus=options.num_cpus, num_gpus=options.num_gpus, include_dashboard=False)
    else:
        ray.init(address=options.address)
    return True


def _entry(result: JobResult, key: str) -> dict:
    return {"key": key, "input": result.input, "kind": result.kind, "status": result.status,
            "frames": result.frames, "seconds": result.seconds, "frames_per_s": result.frames_per_s,
            "ate_rmse": result.ate_rmse, "error": result.error, "attempts": result.attempts,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _skipped(item: BatchInput, entry: dict, out: Path) -> JobResult:
    return JobResult(item.name, str(item.path), item.kind, "skipped", frames=int(entry.get("frames") or 0),
                     seconds=float(entry.get("seconds") or 0.0), frames_per_s=float(entry.get("frames_per_s") or 0.0),
                     ate_rmse=entry.get("ate_rmse"), attempts=0, output=str(out / item.name))


def run_batch(inputs: Sequence[BatchInput], options: BatchOptions,
              on_result: Optional[Callable[[JobResult], None]] = None,
              stop: Optional[Callable[[], bool]] = None) -> BatchReport:
    """Maps every input not already done (manifest key) on Ray; returns the report and writes
    OUT/manifest.json, OUT/summary.json, OUT/summary.csv. Failures that may not recur (a dead
    worker, out of memory) are retried ``options.max_retries`` times; deterministic ones (a bad
    checkpoint, a malformed input) are reported at once; none stops the other inputs.

    ``stop()`` (Ctrl-C on the driver): no further input starts, the running ones stop after their
    current frame and keep their outputs with a session (status 'interrupted'); the next run with
    the same key resumes them from it."""
    from tqdm import tqdm

    out = Path(options.out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise BatchError(f"--out {str(out)!r} exists and is not a folder")
    try:
        manifest = Manifest.load(out)
    except ValueError as err:
        raise BatchError(str(err)) from None
    model_ids: dict = {}
    settings: dict[tuple, _ToolSettings] = {}
    specs: dict[str, JobSpec] = {}
    final: dict[str, JobResult] = {}
    fault_dir = os.environ.get(FAULT_DIR_ENV)
    for item in inputs:
        argv = tuple(options.replay_argv if item.kind == "bag" else options.reconstruct_argv)
        tool = TOOLS[item.kind]
        if (item.kind, argv) not in settings:
            settings[(item.kind, argv)] = tool_settings(item.kind, argv, item.path, model_ids)
        s = settings[(item.kind, argv)]
        key = job_key(item.path, input_fingerprint(item.path), tool, s.parameters, s.model)
        if not options.force and manifest.is_done(item.name, key):
            final[item.name] = _skipped(item, manifest.entries[item.name], out)
            continue
        entry = manifest.entries.get(item.name) or {}
        session = out / item.name / SESSION_NAME
        resume = (str(session) if not options.force and entry.get("status") == "interrupted" and entry.get("key") == key
                  and session.is_file() else None)
        specs[item.name] = JobSpec(item, str(out), argv, key, fault_dir, resume)
    # Options, checkpoint and manifest are good: only now is anything written.
    out.mkdir(parents=True, exist_ok=True)
    # Temporary outputs of a batch that died (its rename never came) are garbage now.
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)
    (out / STOP_FILE).unlink(missing_ok=True)

    t0 = time.perf_counter()
    bar = tqdm(total=len(inputs), initial=len(final), unit="input", desc="loger-batch",
               disable=not options.progress, file=sys.stderr, dynamic_ncols=True)
    if specs:
        try:
            _run_on_ray(specs, options, manifest, final, bar, on_result, stop or (lambda: False))
        finally:
            (out / STOP_FILE).unlink(missing_ok=True)
    bar.close()
    wall = time.perf_counter() - t0
    shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)  # empty unless a worker died between retries
    results = [final[item.name] for item in inputs]
    doc = write_summary(out, results, wall, extra={"out_dir": str(out), "address": options.address,
                                                    "max_retries": options.max_retries})
    return BatchReport(results, wall, doc)


def _run_on_ray(specs: dict[str, JobSpec], options: BatchOptions, manifest: Manifest, final: dict,
                bar: Any, on_result: Optional[Callable[[JobResult], None]], stop: Callable[[], bool]) -> None:
    import ray
    from ray.exceptions import RayError

    try:
        init_ray(options)
    except (ConnectionError, RuntimeError, ValueError) as err:  # no cluster at that address, bad address
        raise BatchError(f"cannot start or join Ray (--address {options.address}): {err}") from None
    gpus = options.gpus_per_job
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    actors = _worker_pool(ray, options.cpus_per_job, gpus, len(specs))
    idle = list(actors)
    queue = deque(specs)
    attempts = {name: 1 for name in specs}
    pending: dict = {}  # ref of a run() call -> (input name, actor)
    reviving: dict = {}  # ref of a ready() call on an actor that died -> actor
    stopping = False
    while queue or pending:
        if stop() and not stopping:
            stopping = True
            log.warning("loger-batch: stopping: running inputs finish their frame and keep a session")
            (Path(options.out_dir).resolve() / STOP_FILE).touch()
            while queue:
                name = queue.popleft()
                spec = specs[name]
                final[name] = JobResult(name, str(spec.input.path), spec.input.kind, "interrupted",
                                        error="not started: the batch was stopped", attempts=0)
        while queue and idle:
            name = queue.popleft()
            actor = idle.pop()
            pending[actor.run.remote(specs[name])] = (name, actor)
        if not pending and not reviving:
            break
        # A timeout, so that a stop request is seen while jobs run.
        ready, _ = ray.wait(list(pending) + list(reviving), num_returns=1, timeout=0.5)
        if not ready:
            continue
        ref = ready[0]
        if ref in reviving:
            actor = reviving.pop(ref)
            try:
                ray.get(ref)
                idle.append(actor)
            except RayError as err:  # it cannot come back (its node is gone): a fresh one takes its place
                log.warning("loger-batch: a worker could not restart (%s); starting another", type(err).__name__)
                idle.append(_replace_worker(ray, actor, options.cpus_per_job, gpus))
            continue
        name, actor = pending.pop(ref)
        spec = specs[name]
        try:
            result: JobResult = ray.get(ref)
            idle.append(actor)
        except RayError as err:  # the worker died (killed, out of host memory, node lost)
            text = str(err).strip()
            result = JobResult(name, str(spec.input.path), spec.input.kind, "crashed",
                               error=f"{type(err).__name__}: {text[:_ERROR_CHARS]}")
            # Ray restarts the actor (max_restarts); a call made while it restarts fails at once,
            # so it gets work again only once a ready() call (retried until it lands) returns.
            reviving[actor.ready.options(max_task_retries=-1).remote()] = actor
        result.attempts = attempts[name]
        if result.status == "crashed":
            # A dead worker never cleaned up; no other attempt of this input is running.
            shutil.rmtree(Path(spec.out_root) / PARTIAL_DIR / name, ignore_errors=True)
        # Only what can change on another attempt is retried: a dead worker, out of memory.
        retry = result.status == "crashed" or (result.status == "failed" and result.retryable)
        if retry and attempts[name] <= options.max_retries and not stopping:
            log.warning("loger-batch: %s attempt %d/%d %s: %s; retrying", name, attempts[name],
                        options.max_retries + 1, result.status, (result.error or "")[:200])
            attempts[name] += 1
            queue.append(name)
            continue
        if result.status == "crashed":
            result.status = "failed"
        final[name] = result
        manifest.record(name, _entry(result, spec.key))
        bar.update(1)
        bar.set_postfix(failed=sum(r.status == "failed" for r in final.values()), refresh=False)
        if on_result is not None:
            on_result(result)


# Actors of this driver, by (Ray node + job, CPUs and GPUs per job): a later batch in the same
# process (a benchmark, a service) reuses them and their loaded models. They end with the driver.
_POOLS: dict[tuple, list] = {}


def _worker_pool(ray: Any, cpus: float, gpus: float, jobs: int) -> list:
    """As many BatchWorker actors as the cluster fits at ``cpus``/``gpus`` each (at most one per
    job); raises BatchError when it fits none."""
    resources = ray.cluster_resources()
    if gpus > 0:
        fits = int(resources.get("GPU", 0) // gpus + 1e-9)
        if not fits:
            raise BatchError(f"--gpus-per-job {gpus:g} but the Ray cluster has {resources.get('GPU', 0):g} GPUs "
                             "(use --gpus-per-job 0 to run on CPUs)")
    else:
        fits = int(resources.get("CPU", 0) // cpus + 1e-9) if cpus > 0 else jobs
        if not fits:
            raise BatchError(f"--cpus-per-job {cpus:g} but the Ray cluster has {resources.get('CPU', 0):g} CPUs")
    pool = _POOLS.setdefault(_pool_key(ray, cpus, gpus), [])
    if len(pool) < min(fits, jobs):
        pool.extend(_new_worker(ray, cpus, gpus) for _ in range(min(fits, jobs) - len(pool)))
    return pool[: max(1, min(fits, jobs))]


def _pool_key(ray: Any, cpus: float, gpus: float) -> tuple:
    context = ray.get_runtime_context()
    return (context.get_node_id(), context.get_job_id(), cpus, gpus)


def _new_worker(ray: Any, cpus: float, gpus: float) -> Any:
    # Ray's own task retries are off: ours count application failures and dead workers alike.
    cls = ray.remote(BatchWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0)
    return cls.remote()


def _replace_worker(ray: Any, dead: Any, cpus: float, gpus: float) -> Any:
    pool = _POOLS.get(_pool_key(ray, cpus, gpus), [])
    fresh = _new_worker(ray, cpus, gpus)
    pool[:] = [fresh if a is dead else a for a in pool]
    return fresh


def print_report(report: BatchReport, out_dir: Path, file: Any = None) -> None:
    """The summary table and where the files are (on ``file``, default stdout)."""
    file = file if file is not None else sys.stdout
    print(format_table(report.results), file=file)
    counts = report.summary.get("status_counts", {})
    print(f"loger-batch: {len(report.results)} inputs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}) "
          f"in {report.wall_s:.1f} s -> {Path(out_dir) / 'summary.json'}, summary.csv", file=file)
