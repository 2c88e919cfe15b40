"""One batch job: map one input with the single-input tool's own code into ``OUT/<name>/``.

Runs inside a Ray worker (or any process): no Ray import here. The network comes from the
process-wide cache :func:`loger_core.stream.model_loading.cached_stream_model`, so a worker loads
each model once, however many inputs it maps.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .inputs import BatchInput

__all__ = ["FAULT_DIR_ENV", "SESSION_NAME", "STOP_FILE", "BatchWorker", "JobResult", "JobSpec", "PARTIAL_DIR", "TOOLS",
           "run_job"]

log = logging.getLogger("loger_ros.batch")

# Folder of OUT holding jobs' temporary outputs until they are complete (then renamed to OUT/<name>).
PARTIAL_DIR = ".partial"
# OUT/<STOP_FILE> exists while the batch is being stopped (Ctrl-C on the driver): every job stops
# after its current frame and keeps what it mapped, with its session, for the next run to resume.
STOP_FILE = ".stop"
# An interrupted input's session in its output folder (the tools' default name).
SESSION_NAME = "session.loger.safetensors"
# Which single-input tool maps each kind of input.
TOOLS = {"bag": "loger-replay", "images": "loger-reconstruct", "video": "loger-reconstruct"}
# Fault injection for the tests: when FAULT_DIR/<name>.kill exists, the job renames it to
# <name>.killed and SIGKILLs its own worker mid-task (once, as the marker is gone afterwards).
FAULT_DIR_ENV = "LOGER_BATCH_FAULT_DIR"


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to map one input (small: it is pickled per task).

    argv: the tool's command-line options, without the input and ``--out`` (the tool parses them
    itself, so the batch accepts exactly what the tool accepts).
    """

    input: BatchInput
    out_root: str
    argv: tuple[str, ...]
    key: str
    fault_dir: Optional[str] = None
    resume: Optional[str] = None  # the session of this input's interrupted run


@dataclass
class JobResult:
    """Outcome of one attempt. status: 'ok', 'failed' (error says why) or 'interrupted' (the batch
    was stopped: the partial output and its session are in ``output``); 'crashed' / 'skipped' are
    set by the runner for workers that died and for inputs already done. retryable: the failure
    may not recur (out of memory); a deterministic one (a bad checkpoint, a malformed input) is not."""

    name: str
    input: str
    kind: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    frames_per_s: float = 0.0
    ate_rmse: Optional[float] = None
    error: Optional[str] = None
    attempts: int = 1
    job_seconds: float = 0.0
    output: Optional[str] = None
    pid: int = 0
    host: str = ""
    model_loaded: bool = False
    gpu_peak_mb: Optional[float] = None
    retryable: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class JobError(RuntimeError):
    """The tool finished but its result is not a complete map (e.g. a read error mid-bag)."""


def is_retryable(err: BaseException) -> bool:
    """Whether another attempt may succeed: running out of (device or host) memory depends on what
    else ran; a bad checkpoint, a malformed input or bad options fail the same way every time."""
    import torch

    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def _fault_hook(spec: JobSpec) -> Callable[[int], None]:
    """Faults a test injects through FAULT_DIR_ENV: ``NAME.kill`` kills the worker at frame 2 (once);
    ``NAME.slow`` makes each frame take 50 ms more and writes the frame count to ``NAME.frames``, so
    that a signal can be sent while the input is being mapped."""
    root = Path(spec.fault_dir) if spec.fault_dir else None
    kill = root / f"{spec.input.name}.kill" if root else None
    slow = root / f"{spec.input.name}.slow" if root else None

    def hook(frames: int) -> None:
        if kill is not None and frames >= 2 and kill.exists():
            os.replace(kill, kill.with_suffix(".killed"))
            os.kill(os.getpid(), signal.SIGKILL)
        if slow is not None and slow.exists():
            time.sleep(0.05)
            slow.with_suffix(".frames").write_text(str(frames))

    return hook


def _resume_argv(spec: JobSpec) -> list[str]:
    return ["--resume", spec.resume] if spec.resume else []


def _stop_check(spec: JobSpec) -> Callable[[], bool]:
    marker = Path(spec.out_root) / STOP_FILE
    return marker.exists


def _run_bag(spec: JobSpec, tmp: Path, hook: Callable[[int], None], loader) -> JobResult:
    from loger_ros import replay

    args = replay.build_arg_parser().parse_args([str(spec.input.path), "--out", str(tmp), "--no-progress", *spec.argv,
                                                 *_resume_argv(spec)])
    options = replay.options_from_args(args)
    summary = replay.run_replay(options, on_frame=hook, model_loader=loader, stop=_stop_check(spec))
    if summary.read_error:
        raise JobError(summary.read_error)
    if summary.interrupted:
        return JobResult(spec.input.name, str(spec.input.path), spec.input.kind, "interrupted",
                         frames=summary.frames_read, seconds=summary.wall_s, frames_per_s=summary.frames_per_s,
                         extra={"poses": summary.poses, "session": SESSION_NAME})
    if summary.poses == 0:
        raise JobError(f"no frame was mapped (frames read: {summary.frames_read})")
    ate = summary.metrics["ate"]["rmse"] if summary.metrics and "ate" in summary.metrics else None
    return JobResult(spec.input.name, str(spec.input.path), spec.input.kind, "ok", frames=summary.frames_read,
                     seconds=summary.wall_s, frames_per_s=summary.frames_per_s, ate_rmse=ate,
                     extra={"poses": summary.poses, "map_points": summary.map_points})


def _run_sequence(spec: JobSpec, tmp: Path, hook: Callable[[int], None], loader) -> JobResult:
    from loger_core.cli import reconstruct

    args = reconstruct.build_parser().parse_args([str(spec.input.path), "--out", str(tmp), "--quiet", *spec.argv,
                                                  *_resume_argv(spec)])
    hook(2)  # the tool has no per-frame callback: a fault injected here is still mid-task (tmp exists)
    outcome = reconstruct.run_reconstruct(args, model_loader=loader, stop=_stop_check(spec))
    run, metrics = outcome.run, outcome.metrics
    ate = metrics["ate"]["rmse"] if metrics and "ate" in metrics else None
    return JobResult(spec.input.name, str(spec.input.path), spec.input.kind,
                     "interrupted" if outcome.interrupted else "ok", frames=int(run["frames_read"]),
                     seconds=float(run["seconds"]), frames_per_s=float(run["frames_per_second"] or 0.0),
                     ate_rmse=ate, extra={"poses": run["frames_out"], "map_points": run["map"].get("points")})


def _expected(err: BaseException) -> bool:
    """Errors the tools raise for bad inputs, options or checkpoints (no traceback needed)."""
    from loger_core.io.errors import ImageFolderError
    from loger_core.io.session import SessionError
    from loger_core.model.checkpoint import CheckpointError
    from loger_core.stream import StreamInputError
    from loger_ros.bag.reader import ReplayError
    from loger_ros.params import ParamsError

    return isinstance(err, (JobError, ReplayError, ParamsError, CheckpointError, StreamInputError, SessionError,
                            ImageFolderError))


def _publish(tmp: Path, final: Path) -> None:
    """Moves a complete output into place; an older output of the same input (``--force``) goes
    only after the new one is complete, so OUT/<name> is always a whole result."""
    old = None
    if final.exists():
        old = tmp.parent / f"old.{uuid.uuid4().hex[:8]}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(tmp.parent, ignore_errors=True)


def run_job(spec: JobSpec) -> JobResult:
    """Maps ``spec.input`` into ``OUT/<name>/`` through ``OUT/.partial/``; never raises for a bad
    input or a failing model (the result says 'failed' and why, and no partial output is left)."""
    import torch

    from loger_core.stream.model_loading import cached_stream_model, model_cache_loads

    t0 = time.perf_counter()
    out_root = Path(spec.out_root)
    # One folder per input under .partial: the runner removes an attempt's leftovers by name alone.
    tmp = out_root / PARTIAL_DIR / spec.input.name / uuid.uuid4().hex[:8]
    tmp.mkdir(parents=True)
    loads = model_cache_loads()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run = _run_bag if spec.input.kind == "bag" else _run_sequence
    try:
        result = run(spec, tmp, _fault_hook(spec), cached_stream_model)
        _publish(tmp, out_root / spec.input.name)
        result.output = str(out_root / spec.input.name)
    except Exception as err:  # any failure of one input is reported, and the batch goes on
        if _expected(err):  # a bad input or checkpoint: the reason is the whole story
            log.error("loger-batch: %s failed: %s", spec.input.path, err)
        else:
            log.exception("loger-batch: %s failed", spec.input.path)
        shutil.rmtree(tmp.parent, ignore_errors=True)
        if cuda:
            torch.cuda.empty_cache()  # after an out-of-memory error, give the next input the whole GPU
        result = JobResult(spec.input.name, str(spec.input.path), spec.input.kind, "failed",
                           error=f"{type(err).__name__}: {err}", retryable=is_retryable(err))
    except SystemExit as err:  # argparse: options the tool does not accept
        shutil.rmtree(tmp.parent, ignore_errors=True)
        result = JobResult(spec.input.name, str(spec.input.path), spec.input.kind, "failed",
                           error=f"bad options for {TOOLS[spec.input.kind]}: {' '.join(spec.argv)} (exit {err.code})")
    result.job_seconds = time.perf_counter() - t0
    result.pid = os.getpid()
    result.host = socket.gethostname()
    result.model_loaded = model_cache_loads() > loads
    if cuda:
        result.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return result


class BatchWorker:
    """The body of a loger-batch Ray actor: one long-lived process that maps inputs one at a time
    and keeps its model between them. An actor, not a plain task: Ray pins an actor's GPU for its
    whole life, whereas a task worker reused across tasks may be handed another GPU than the one its
    CUDA context (and cached model) already lives on."""

    def ready(self) -> int:
        """Imports what a job needs (start-up cost paid before the first input); returns the pid."""
        import torch
        from loger_ros import replay

        del torch, replay
        return os.getpid()

    def run(self, spec: JobSpec) -> JobResult:
        return run_job(spec)
