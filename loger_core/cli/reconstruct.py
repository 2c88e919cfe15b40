"""``loger-reconstruct``: stream a sequence through LoGeR and write trajectory, map, plot, metrics.

Example::

    loger-reconstruct data/office                 # bundled small demo weights, CPU-sized; writes ./office_loger
    loger-reconstruct seq/ --out out/ --model loger_star --checkpoint ckpts/LoGeR_star/latest.pt --device cuda

INPUT is a KITTI odometry sequence (``image_0/`` or ``image_2/``, ``calib.txt``, ``times.txt``; ground
truth ``poses.txt`` beside it or ``dataset/poses/<seq>.txt``), a EuRoC MAV sequence (``mav0/cam0``,
undistorted; ground truth from ``state_groundtruth_estimate0``, converted to the camera), a folder of
images (the dataset layout of :mod:`loger_core.io.image_folder`, which is also what ``loger-synth``
writes and what TUM RGB-D sequences look like, or a plain image folder) or a video file; the layout
is detected (:func:`loger_core.io.sequences.open_sequence`). ``--groundtruth FILE`` (TUM or KITTI
poses of the camera) replaces the input's ground truth. Grayscale images are read as grey RGB.
ROS bags are ``loger-replay``'s. Writes into ``--out`` (default ``./<input name>_loger``):

- ``trajectory.tum``: committed camera poses ``T_world_cam`` (TUM format, stamps from the input);
- ``map.ply``: the fused voxel map (binary PLY with colours and confidence);
- ``top_view.png``: trajectory (and ground truth, aligned) over the map, seen from above;
- ``metrics.json``: ATE / RPE / scale drift against the ground truth, when the input has one;
- ``run.json``: configuration, weights, timing and stream statistics;
- with ``--session-out PATH``: the mapping session (network memory, map, trajectory, buffered
  frames) after the last frame read and before the final incomplete window is committed, so that
  ``--resume PATH`` continues exactly (on the rest of the sequence, or on the same input, whose
  frames the session already has are skipped).
- ``map.pgm`` + ``map.yaml`` (``nav2_map_server``) and ``grid.png``: a 2D occupancy grid. An image
  folder has no TF, so "up" comes from the floor found in the first frames; the grid is in that floor
  frame, whose pose in the trajectory's world frame ``grid.json`` gives (``--no-grid``: none).

Ctrl-C (SIGINT) or SIGTERM stops reading after the current frame and writes the session (to
``--session-out``, else ``OUT/session.loger.safetensors``) and the outputs of the frames read
(``run.json``: ``"interrupted": true``), prints the command that continues it (``--resume``) and
exits with status 130; a second one exits at once. Every file is replaced atomically.

Model selection is the node's and ``loger-replay``'s (:mod:`loger_core.model.selection`): an explicit
``--checkpoint``, else the trained ``small`` weights shipped in the package (a demo model trained on
synthetic scenes, said loudly); ``--synthetic-weights`` runs deterministic untrained weights (tests).
Input size and window default to the model's (``small``, ``small_deep``, ``tiny``: ~10k pixels, e.g.
112x84 for 4:3, window 16; full models: 504x280, window 32).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from tqdm import tqdm

from loger_core.eval.metrics import EvalError, evaluate
from loger_core.mapping.grid import FloorGridBuilder, GridConfig, GridError, render_grid_png, write_map_server
from loger_core.io.image_folder import ImageFolderError, ImageFolderSequence
from loger_core.io.sequences import open_sequence
from loger_core.cli.reconstruct_outputs import ReconstructOutputs, backend_config, make_backend
from loger_core.cli.reconstruct_args import AUTO_VOXEL_FRACTION, build_parser  # noqa: F401 (re-exported)
from loger_core.io.atomic import atomic_path, write_json_atomic
from loger_core.io.trajectory import Trajectory
from loger_core.cli.interrupt import INTERRUPTED_EXIT, Progress, StopRequest, resume_command
from loger_core.pipeline.outputs import write_tum_atomic
from loger_core.mapping.voxel_map import MapError
from loger_core.model.selection import ModelSelection, ModelSelectionError, select_model
from loger_core.model.checkpoint import CheckpointError
from loger_core.eval.plotting import plot_top_view
from loger_core.io.session import Session, SessionError, load_session, model_identity, save_session
from loger_core.stream import ScaleConfig, StreamConfig, StreamingReconstructor, StreamInputError

__all__ = ["DEFAULT_SESSION_NAME", "ReconstructOutcome", "build_parser", "main", "run_reconstruct"]

log = logging.getLogger("loger-reconstruct")

# Where an interrupted run without --session-out writes its session (in the output folder).
DEFAULT_SESSION_NAME = "session.loger.safetensors"



def _open_input(path: Path, fps: Optional[float], groundtruth: Optional[str] = None):
    return open_sequence(path, fps=fps, groundtruth=groundtruth)


def _selection(args) -> ModelSelection:
    try:
        return select_model(args.model, args.checkpoint, synthetic=args.synthetic_weights)
    except ModelSelectionError as err:
        raise StreamInputError(str(err)) from None


def _stream_config(args, selection: ModelSelection) -> StreamConfig:
    defaults = selection.defaults
    resolution = args.resolution
    if resolution is None:
        resolution = defaults.resolution or "auto"
    pixel_limit = args.pixel_limit if args.pixel_limit is not None else defaults.pixel_limit
    scale = ScaleConfig(source=args.scale_source, factor=args.scale_factor)
    return StreamConfig(
        model=selection.model, checkpoint=selection.checkpoint, allow_pickle=args.allow_pickle, device=args.device,
        dtype=args.dtype, resolution=None if resolution == "auto" else tuple(resolution), pixel_limit=pixel_limit,
        resize_mode=args.resize_mode,
        window_size=args.window if args.window is not None else defaults.window_size,
        overlap_size=args.overlap if args.overlap is not None else defaults.overlap_size,
        reset_every=args.reset_every, alignment=args.alignment, sim3_scale_mode=args.sim3_scale_mode,
        conf_threshold=args.conf_threshold, conf_percentile=args.conf_percentile,
        use_known_intrinsics=not args.no_known_intrinsics, scale=scale,
    )


def _voxel_size(text: str) -> Optional[float]:
    if text == "auto":
        return None
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise StreamInputError(f"--voxel-size must be a number > 0 or 'auto', got {text!r}")
    return v


def _save_session(path: str, rec: StreamingReconstructor, outputs: ReconstructOutputs) -> None:
    outputs.add(rec.drain())  # windows in flight (async) are committed state first
    comps = {"stream": rec.session_component(), **outputs.session_components()}
    save_session(path, Session(model_identity(rec.model), rec.session_settings(), comps))


def _resume(path: str, rec: StreamingReconstructor, outputs: ReconstructOutputs) -> Optional[int]:
    """Continue from the session at ``path``; returns the last stamp it holds (frames up to it are skipped)."""
    session = load_session(path, model_identity(rec.model), rec.session_settings())
    outputs.restore(session, path)
    rec.restore_session(session.component("stream", path), path)
    return rec._last_stamp


@dataclass
class ReconstructOutcome:
    """What :func:`run_reconstruct` wrote: ``out`` folder, the ``run.json`` content and the metrics
    (None without ground truth)."""

    out: Path
    run: dict
    metrics: Optional[dict]

    @property
    def interrupted(self) -> bool:
        return bool(self.run.get("interrupted"))


def run_reconstruct(args: argparse.Namespace,
                    model_loader: Optional[Callable[[StreamConfig], Any]] = None,
                    stop: Optional[Callable[[], bool]] = None) -> ReconstructOutcome:
    """The whole of ``loger-reconstruct`` for parsed ``args`` (:func:`build_parser`); prints its summary.

    ``model_loader(stream_config) -> model`` supplies the network (``loger-batch`` passes a
    per-process cache); default: loaded from the configuration. ``stop()``, asked before each
    frame, ends the reading early (Ctrl-C): the session (``--session-out``, else
    ``OUT/session.loger.safetensors``) and the outputs of the frames read are written and
    ``run.json`` says ``"interrupted": true``. Raises StreamInputError, ImageFolderError,
    CheckpointError, MapError or SessionError for bad input, before the output folder is created
    (or after removing it again while empty).
    """
    selection = _selection(args)
    cfg = _stream_config(args, selection)
    voxel = _voxel_size(args.voxel_size)
    if args.stride < 1:
        raise StreamInputError(f"--stride must be >= 1, got {args.stride}")
    if args.max_frames is not None and args.max_frames < 1:
        raise StreamInputError(f"--max-frames must be >= 1, got {args.max_frames}")
    backend_config(args)  # bad --backend-param values fail before anything is created
    seq = _open_input(Path(args.input), args.fps, args.groundtruth)
    out = Path(args.out) if args.out else Path.cwd() / f"{Path(args.input).name}_loger"
    if out.exists() and not out.is_dir():
        raise StreamInputError(f"--out {str(out)!r} exists and is not a folder")
    if selection.bundled:  # (synthetic weights: the model loader logs a loud warning)
        log.warning(selection.warning())

    rec = StreamingReconstructor(cfg, model=model_loader(cfg) if model_loader is not None else None)
    created = not out.exists()
    try:
        return _reconstruct(args, cfg, selection, seq, out, voxel, rec, stop or (lambda: False))
    except BaseException:
        # A failed run leaves no empty output folder behind (one with files in it stays).
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    finally:
        # A process that runs many inputs (loger-batch) must not keep each one's worker thread,
        # and the sequence state it references, alive.
        rec.close()


def _reconstruct(args, cfg: StreamConfig, selection: ModelSelection, seq, out: Path, voxel: Optional[float],
                 rec: StreamingReconstructor, stop: Callable[[], bool]) -> ReconstructOutcome:
    synthetic = selection.synthetic
    use_depth = cfg.scale.source == "depth"
    grid = None
    if not args.no_grid:
        try:
            grid = FloorGridBuilder(GridConfig(resolution=args.grid_resolution, min_height=args.grid_min_height,
                                               max_height=args.grid_max_height, max_range=args.grid_max_range))
        except GridError as err:
            raise StreamInputError(f"--grid-*: {err}") from None
    consumer = make_backend(args, cfg)
    outputs = ReconstructOutputs(voxel, args.max_map_points, grid, consumer)
    resumed_until = _resume(args.resume, rec, outputs) if args.resume else None
    try:
        out.mkdir(parents=True, exist_ok=True)  # inputs, model and session are good by now
    except OSError as err:
        raise StreamInputError(f"--out {str(out)!r} cannot be created: {err}") from None
    progress = Progress()
    interrupted = False
    in_session = 0
    total = None
    if isinstance(seq, ImageFolderSequence):
        total = len(range(0, len(seq), args.stride))
        if args.max_frames is not None:
            total = min(total, args.max_frames)
    bar = tqdm(total=total, unit="frame", desc="reconstruct", disable=args.quiet, file=sys.stderr)
    t0 = time.perf_counter()
    used = 0
    for i, frame in enumerate(seq):
        # Between frames only: the frame read but not pushed is where --resume starts.
        if stop():
            interrupted = True
            break
        if i % args.stride:
            continue
        if resumed_until is not None and frame.stamp_ns <= resumed_until:
            in_session += 1
            continue
        if args.max_frames is not None and used >= args.max_frames:
            break
        used += 1
        outputs.remember(frame.stamp_ns, frame.rgb)
        outputs.add(rec.push(frame.rgb, frame.stamp_ns, K=frame.K, depth=frame.depth if use_depth else None))
        bar.update(1)
        progress.frames(used)
    interrupted = interrupted or stop()
    bar.close()
    session_path = args.session_out or (str(out / DEFAULT_SESSION_NAME) if interrupted else None)
    if session_path:
        progress.phase("session")
        _save_session(session_path, rec, outputs)
    progress.phase("outputs")
    outputs.add(rec.flush())
    t_backend = time.perf_counter()
    try:
        outputs.finish_backend()
    finally:
        if consumer is not None:
            consumer.close()
    t_backend = time.perf_counter() - t_backend
    elapsed = time.perf_counter() - t0
    if not len(outputs.mapper):
        raise StreamInputError(f"INPUT {args.input!r}: no frame was reconstructed (frames read: {used})")

    est = outputs.trajectory()
    write_tum_atomic(out / "trajectory.tum", est)
    frontend = outputs.frontend_trajectory()
    if consumer is not None:
        write_tum_atomic(out / "trajectory_frontend.tum", frontend)
    with atomic_path(out / "map.ply") as tmp:
        outputs.map.save_ply(tmp)
    map_pts, map_cols, _ = outputs.map.snapshot()

    metrics = None
    gt = seq.groundtruth() if getattr(seq, "has_groundtruth", False) else None
    if gt is not None:
        try:
            metrics = evaluate(est, gt, align=args.eval_align)
        except EvalError as e:
            log.warning("no metrics: %s", e)
            metrics = {"error": str(e)}
        if consumer is not None and "ate" in metrics:
            try:
                metrics["frontend"] = evaluate(frontend, gt, align=args.eval_align)
            except EvalError as e:
                metrics["frontend"] = {"error": str(e)}
        if synthetic:
            metrics["warning"] = "synthetic weights: not meaningful geometry"
        elif selection.bundled:
            metrics["warning"] = "bundled demo weights (small, synthetic training): poses not fit for navigation"
        write_json_atomic(out / "metrics.json", metrics)

    title = f"{cfg.model}: {len(est)} frames" + (" (SYNTHETIC WEIGHTS - not meaningful)" if synthetic else
                                                 " (bundled demo weights)" if selection.bundled else "")
    plot_est, plot_map, plot_gt = est.poses, map_pts, None
    if metrics is not None and "ate" in metrics:
        # Draw in the ground-truth frame: the estimate and its map through the ATE alignment.
        T = np.asarray(metrics["ate"]["T_align"], dtype=np.float64)
        plot_est = np.einsum("ij,njk->nik", T, est.poses)
        plot_map = map_pts.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        plot_gt = gt.poses
        title += f", ATE {metrics['ate']['rmse']:.3f}"
    with atomic_path(out / "top_view.png") as tmp:
        plot_top_view(tmp, plot_est, gt=plot_gt, map_points=plot_map, map_colors=map_cols, title=title)
    grid_info = _write_grid(out, outputs.grid, est) if outputs.grid is not None else None

    run = {
        "input": str(args.input),
        "weights": "SYNTHETIC (deterministic; not meaningful geometry)" if synthetic else selection.describe(),
        "config": {**asdict(cfg), "scale": asdict(cfg.scale)},
        "alignment": rec.alignment,
        "resolution": list(rec.resolution) if rec.resolution else None,
        "device": str(rec.device),
        "dtype": str(rec.dtype).replace("torch.", ""),
        "frames_read": used,
        "frames_in_resumed_session": in_session,
        "resumed_from": args.resume,
        "session_out": session_path,
        "interrupted": interrupted,
        "frames_out": len(est),
        "seconds": elapsed,
        "frames_per_second": used / elapsed if elapsed > 0 else None,
        "voxel_size": outputs.voxel,
        "map": outputs.map.stats(),
        "grid": grid_info,
        "stream": rec.stats.to_dict(),
        "scale": asdict(rec.scale_estimate()),
        "last_K": outputs.last_K.tolist() if outputs.last_K is not None else None,
        "backend": None if consumer is None else {**consumer.stats(), "config": asdict(consumer.cfg),
                                                  "finish_s": t_backend},
    }
    write_json_atomic(out / "run.json", _no_nan(run), default=str)
    summary = f"{selection.describe()}: {len(est)} frames in {elapsed:.1f} s ({run['frames_per_second']:.2f} frames/s), map {len(map_pts)} voxels -> {out}"
    if metrics is not None and "ate" in metrics:
        summary += f"; ATE rmse {metrics['ate']['rmse']:.4f} ({args.eval_align})"
    print(summary)
    if synthetic:
        print("NOTE: synthetic weights were used; the results are not meaningful geometry.")
    elif selection.bundled:
        print("NOTE: the bundled demo model was used (trained on synthetic scenes); pass --checkpoint for real results.")
    return ReconstructOutcome(out, run, metrics)


def _write_grid(out: Path, grid: FloorGridBuilder, est: Trajectory) -> dict:
    """map.pgm / map.yaml / grid.png / grid.json in the floor frame, or the reason there is none."""
    if not grid.finish():
        text = "no floor found under the cameras in the first frames: no occupancy grid written"
        log.warning(text)
        return {"written": False, "reason": text}
    snap = grid.grid.snapshot()
    if snap.width == 0:
        return {"written": False, "reason": "no point fell in the grid"}
    pgm, yml = write_map_server(out, snap)
    with atomic_path(out / "grid.png") as tmp:
        render_grid_png(tmp, snap, grid.to_ground(est.poses[:, :3, 3]), title="loger-reconstruct: occupancy grid")
    info = {"written": True, "map_yaml": yml.name, "map_pgm": pgm.name, "grid_png": "grid.png",
            "frame": "floor frame: z up from the floor found under the cameras, height 0 on it",
            "T_world_ground": grid.T_world_ground.tolist(), "resolution": snap.resolution,
            "size_cells": [snap.width, snap.height], "cells": snap.counts()}
    write_json_atomic(out / "grid.json", info)
    return info


def _no_nan(obj):
    """JSON has no NaN / inf: they become null."""
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 bad input or checkpoint, 130 interrupted:
    SIGINT / SIGTERM write the session and the outputs first, see :mod:`loger_core.cli.interrupt`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with StopRequest("loger-reconstruct") as stop:
        try:
            outcome = run_reconstruct(args, stop=stop)
        except (StreamInputError, ImageFolderError, CheckpointError, MapError, SessionError) as e:
            if stop.requested:
                print(f"loger-reconstruct: interrupted before anything was mapped: {e}", file=sys.stderr)
                return INTERRUPTED_EXIT
            print(f"loger-reconstruct: error: {e}", file=sys.stderr)
            return 2
    if outcome.interrupted:
        print(f"loger-reconstruct: interrupted after {outcome.run['frames_read']} frames; outputs so far in "
              f"{outcome.out}; continue with: {resume_command('loger-reconstruct', sys.argv[1:] if argv is None else argv, outcome.run['session_out'])}",
              file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
