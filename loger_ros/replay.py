"""``loger-replay``: run the mapping node's core on a recorded bag, without a ROS install.

Reads rosbag2 (sqlite3, mcap) and ROS 1 bags through ``rosbags``, feeds the camera images
(raw or compressed, picked automatically unless ``--topic``), CameraInfo, optional depth and
``/tf_static`` to the same :class:`~loger_ros.mapping_core.MappingCore` the node runs, synchronously (no
frame is dropped for speed), and writes to the output folder:

- ``rosbag/``: a rosbag2 (mcap) with the original camera topic(s), ``/tf``, ``/tf_static`` and the
  node's outputs (``/loger/odom``, ``/loger/path``, ``/loger/cloud``,
  ``/loger/map``, ``/loger/grid``, ``/diagnostics``), so ``ros2 bag play`` + RViz (``rviz/loger.rviz``)
  shows the result;
- ``trajectory.tum`` (committed base_link poses in the map frame), ``map.ply``, ``trajectory.png``;
- with the occupancy grid on (``grid_enabled``): ``map.pgm`` + ``map.yaml`` (nav2_map_server) and ``grid.png``;
- ``metrics.json`` when the bag carries ground truth (ATE/RPE/scale drift of the camera poses);
- ``summary.json`` (counters, frames/s, latencies);
- with ``--session-out PATH``: the mapping session at the end of the bag, taken before the last
  incomplete window is committed, so that ``--resume PATH`` on the next bag (or on the same bag,
  whose frames the session already has are skipped) continues the map exactly.

Ctrl-C (SIGINT) or SIGTERM stops reading after the current message and writes the session (to
``--session-out``, else ``OUT/session.loger.safetensors``: taken before the last incomplete
window is committed, so ``--resume`` continues exactly), then commits that window, closes the bag
and writes the other outputs (``summary.json``: ``"interrupted": true``), prints the command that
continues it and exits with status 130; a second one exits at once. Files are replaced
atomically, so none is ever torn.

The bag side lives in :mod:`loger_ros.bag` (``reader``: discovery, topics, static TF, decoding;
``writer``: the output bag); this module drives the replay and is the CLI.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from loger_core.cli.interrupt import INTERRUPTED_EXIT, Progress, StopRequest, resume_command
from loger_core.eval.metrics import EvalError, evaluate
from loger_core.eval.plotting import plot_top_view
from loger_core.io.atomic import atomic_path, write_json_atomic
from loger_core.io.session import SessionError
from loger_core.mapping.grid import render_grid_png
from loger_core.model.checkpoint import CheckpointError
from loger_core.model.selection import MODEL_CHOICES
from loger_core.stream import StreamInputError
from loger_ros.bag.reader import (
    ROSBAG2_STORAGE_SUFFIXES, BagNormaliser, ReplayError, SelectedTopics, StaticTfTree, camera_mount_matrix,
    discover_bags, ground_truth_samples, image_stamp, resolve_bag_path, ros2_store, select_topics,
    trajectory_from_samples, with_mount,
)
from loger_ros.bag.writer import OutputBag, output_topic_names
from loger_ros.conversions import ConversionError, RosbagsFactory
from loger_ros.mapping_core import MappingCore
from loger_ros.params import NodeParams, ParamsError, load_params_yaml
from loger_ros.publications import Publication
from loger_ros.replay_args import build_arg_parser

__all__ = [
    "DEFAULT_SESSION_NAME",
    "ROSBAG2_STORAGE_SUFFIXES",
    "OutputBag",
    "ReplayError",
    "ReplayOptions",
    "ReplaySummary",
    "SelectedTopics",
    "StaticTfTree",
    "build_arg_parser",
    "camera_mount_matrix",
    "discover_bags",
    "main",
    "options_from_args",
    "output_topic_names",
    "resolve_bag_path",
    "run_replay",
    "select_topics",
]

log = logging.getLogger("loger_ros.replay")

# Where an interrupted replay without --session-out writes its session (in the output folder).
DEFAULT_SESSION_NAME = "session.loger.safetensors"


# ====================================================================== replay
@dataclass
class ReplayOptions:
    """What to replay and where to write (see ``loger-replay --help``)."""

    bag: Path
    out_dir: Path
    params: NodeParams
    topic: Optional[str] = None
    camera_info_topic: Optional[str] = "auto"
    depth_topic: Optional[str] = "none"
    gt_topic: Optional[str] = "auto"
    max_frames: Optional[int] = None
    write_bag: bool = True
    overwrite: bool = False
    progress: bool = True
    resume: Optional[Path] = None
    session_out: Optional[Path] = None
    camera_mount: Optional[tuple[float, float, float, float, float, float]] = None


@dataclass
class ReplaySummary:
    """What a replay did; ``outputs`` maps output names to paths (str)."""

    bag: str
    topics: dict
    frames_read: int = 0
    frames_processed: int = 0
    frames_in_session: int = 0
    poses: int = 0
    map_points: int = 0
    interrupted: bool = False
    read_error: Optional[str] = None
    wall_s: float = 0.0
    frames_per_s: float = 0.0
    latency_ms: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    metrics: Optional[dict] = None
    bag_message_counts: dict = field(default_factory=dict)
    camera_mount: str = ""
    camera_mount_T_base_cam: Optional[list] = None  # (4, 4) as used, when the mount came from TF


def _check_out_dir(options: ReplayOptions) -> Path:
    """The output bag's path; refuses an output folder that cannot be one and an output bag that
    exists without ``--overwrite`` (nothing is created yet)."""
    out = Path(options.out_dir)
    if out.exists() and not out.is_dir():
        raise ReplayError(f"output folder {str(out)!r} exists and is not a folder")
    bag_dir = out / "rosbag"
    if bag_dir.exists() and options.write_bag and not options.overwrite:
        raise ReplayError(f"output bag {str(bag_dir)!r} already exists; pass --overwrite to replace it")
    return bag_dir


def _create_out_dir(options: ReplayOptions, bag_dir: Path) -> None:
    try:
        Path(options.out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReplayError(f"output folder {str(options.out_dir)!r} cannot be created: {err}") from None
    if bag_dir.exists() and options.write_bag:
        shutil.rmtree(bag_dir)


def run_replay(options: ReplayOptions, reconstructor: Any = None,
               on_frame: Optional[Callable[[int], None]] = None,
               model_loader: Optional[Callable[[Any], Any]] = None,
               stop: Optional[Callable[[], bool]] = None) -> ReplaySummary:
    """Replay ``options.bag`` (see module docstring). ``on_frame(n)`` is called after each image (tests).

    ``model_loader(stream_config) -> model`` supplies the network when no ``reconstructor`` is given
    (``loger-batch`` passes a per-process cache); default: loaded from the parameters for this bag.
    ``stop()``, asked before each message, ends the replay early as Ctrl-C does (the session and
    the outputs are written, ``ReplaySummary.interrupted`` is set).

    Raises ReplayError when the bag cannot be opened or has no usable image topic, CheckpointError
    / StreamInputError when the model cannot be loaded: before the output folder is created. A read
    error in the middle of the bag stops the replay; the outputs of what was read are still written
    and the error is reported in ``ReplaySummary.read_error``.
    """
    from rosbags.highlevel import AnyReader

    bag_path = resolve_bag_path(options.bag)
    store = ros2_store()
    params = options.params
    if options.resume is not None:
        params = NodeParams.from_mapping({**params.to_dict(), "resume_session": str(options.resume)})
    if params.tf_mode != "odom_to_base":
        log.warning("replay has no external odometry in TF: using tf_mode 'odom_to_base'")
        params = NodeParams.from_mapping({**params.to_dict(), "tf_mode": "odom_to_base"})
    try:
        reader = AnyReader([bag_path], default_typestore=store)
        reader.open()
    except Exception as err:  # rosbags raises several error types for broken files
        raise ReplayError(f"cannot open bag {str(bag_path)!r}: {err}") from None
    try:
        topics = select_topics(reader.connections, options.topic, options.camera_info_topic,
                               options.depth_topic, options.gt_topic)
        params = NodeParams.from_mapping({
            **params.to_dict(), "image_topic": topics.image, "camera_info_topic": topics.camera_info or "",
            "depth_topic": topics.depth or "", "queue_size": max(params.queue_size, 1),
            # No live camera to keep up with: every low-latency pass runs, so a replay's output
            # does not depend on how fast this machine is.
            "provisional_budget": 1.0})
        bag_dir = _check_out_dir(options)
        owned = None
        if reconstructor is None:
            # Loaded before anything is written: a bad checkpoint leaves no output folder.
            from loger_core.stream import StreamingReconstructor

            stream_config = params.stream_config()
            model = model_loader(stream_config) if model_loader is not None else None
            reconstructor = owned = StreamingReconstructor(stream_config, model=model)
        created = not Path(options.out_dir).exists()
        try:
            return _replay(options, params, reader, topics, store, bag_dir, reconstructor, on_frame,
                           stop or (lambda: False))
        except BaseException:
            out = Path(options.out_dir)
            if created and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            raise
        finally:
            # A process that replays many bags (loger-batch) must not keep each one's worker
            # thread, and the sequence state it references, alive.
            if owned is not None:
                owned.close()
    finally:
        reader.close()


def _replay(options: ReplayOptions, params: NodeParams, reader: Any, topics: SelectedTopics, store: Any,
            bag_dir: Path, reconstructor: Any, on_frame: Optional[Callable[[int], None]],
            stop: Callable[[], bool]) -> ReplaySummary:
    from tqdm import tqdm

    tf_tree = StaticTfTree()
    lookup = tf_tree.lookup
    if options.camera_mount is not None:
        lookup = with_mount(tf_tree, params.base_frame, camera_mount_matrix(*options.camera_mount))
    core = MappingCore(params, RosbagsFactory(store), reconstructor=reconstructor, lookup=lookup, logger=log)
    if options.resume is not None and core.sessions.resume_error is not None:
        raise ReplayError(f"--resume: {core.sessions.resume_error}")
    _create_out_dir(options, bag_dir)
    progress = Progress()
    # Frames the resumed session already has (the same bag replayed again) are skipped, not dropped.
    resumed_until = core._last_stamp if core.sessions.resumed_from is not None else None
    normalise = BagNormaliser(reader, store)
    summary = ReplaySummary(bag=str(options.bag), topics=asdict(topics))
    gt_samples: dict[int, np.ndarray] = {}
    wanted = {t for t in (topics.image, topics.camera_info, topics.depth, topics.ground_truth, topics.tf_static) if t}
    copied = {t for t in (topics.image, topics.camera_info, topics.depth, topics.tf_static) if t}
    connections = [c for c in reader.connections if c.topic in wanted]
    n_images = sum(c.msgcount for c in connections if c.topic == topics.image)
    if options.max_frames is not None:
        n_images = min(n_images, options.max_frames)
    out = OutputBag(bag_dir, store) if options.write_bag else None
    bar = tqdm(total=n_images, unit="frame", desc="loger-replay", disable=not options.progress, dynamic_ncols=True)
    last_time = 0
    next_diag = None
    t0 = time.perf_counter()

    def emit(pubs: list[Publication], time_ns: int) -> None:
        if out is not None:
            for pub in pubs:
                out.write(pub, time_ns)

    try:
        try:
            for conn, time_ns, rawdata in reader.messages(connections=connections):
                # Between messages only: the image not fed is where --resume starts.
                if stop():
                    summary.interrupted = True
                    break
                last_time = time_ns
                try:
                    msg = normalise(conn, rawdata)
                except Exception as err:  # one undecodable message: log it, keep replaying
                    log.warning(f"skipping an undecodable message on {conn.topic}: {err}")
                    continue
                if out is not None and conn.topic in copied:
                    if reader.is2:
                        out.copy_raw(conn, time_ns, rawdata)
                    else:
                        out.write_message(conn.topic, conn.msgtype, time_ns, msg)
                if conn.topic == topics.image:
                    if resumed_until is not None and image_stamp(msg, topics.compressed) <= resumed_until:
                        summary.frames_in_session += 1
                        continue
                    core.on_image(msg, topics.compressed)
                    emit(core.process_all(), time_ns)
                    summary.frames_read += 1
                    bar.update(1)
                    bar.set_postfix(poses=core.counters.committed, odom=core.counters.odom_published, refresh=False)
                    progress.frames(summary.frames_read)
                    if on_frame is not None:
                        on_frame(summary.frames_read)
                elif conn.topic == topics.camera_info:
                    core.on_camera_info(msg)
                elif conn.topic == topics.depth:
                    core.on_depth(msg)
                elif conn.topic == topics.tf_static:
                    tf_tree.add(msg)
                elif conn.topic == topics.ground_truth:
                    try:
                        gt_samples.update(ground_truth_samples(msg, conn.msgtype))
                    except (ConversionError, AttributeError) as err:
                        log.warning(f"ignoring an invalid ground-truth message: {err}")
                emit(core.periodic(time_ns), time_ns)
                if next_diag is None or time_ns >= next_diag:
                    emit([core.diagnostics(time_ns)], time_ns)
                    next_diag = time_ns + int(params.diagnostics_period_s * 1e9)
                if options.max_frames is not None and summary.frames_read >= options.max_frames:
                    break
        except KeyboardInterrupt:  # a caller without a stop() (library use)
            summary.interrupted = True
        except Exception as err:  # a truncated or corrupt bag: keep what was read
            summary.read_error = f"reading {options.bag} failed after {summary.frames_read} frames: {err}"
            log.error(summary.read_error)
        summary.interrupted = summary.interrupted or stop()
        if summary.interrupted:
            log.warning("interrupted: writing the session, finishing the window and writing the outputs")
        session_path = options.session_out
        if session_path is None and summary.interrupted:
            session_path = Path(options.out_dir) / DEFAULT_SESSION_NAME
        if session_path is not None:
            progress.phase("session")
            pubs, saved = core.save_session(str(session_path), reason="interrupted" if summary.interrupted
                                            else "end of replay")
            emit(pubs, last_time)
            if saved is not None:
                summary.outputs["session"] = str(saved.path)
        progress.phase("outputs")
        try:
            emit(core.flush(), last_time)
        except KeyboardInterrupt:
            summary.interrupted = True
            log.warning("interrupted again: skipping the last window")
        finally:
            bar.close()
    finally:
        if out is not None:
            out.close()
            summary.bag_message_counts = dict(out.counts)
    summary.wall_s = time.perf_counter() - t0
    summary.camera_mount = core.mount.source
    if core.mount.frozen and core.mount.source == "tf":
        summary.camera_mount_T_base_cam = core.mount.current(core.mount.camera_frame).tolist()
    _write_outputs(options.out_dir, core, summary, gt_samples, out)
    return summary


def _write_outputs(out_dir: Path, core: MappingCore, summary: ReplaySummary, gt_samples: dict,
                   out: Optional[OutputBag]) -> None:
    out_dir = Path(out_dir)
    saved = core.save_map(str(out_dir))
    c = core.counters
    summary.frames_processed = c.processed
    summary.poses = saved.poses
    summary.map_points = saved.points
    summary.frames_per_s = summary.frames_read / summary.wall_s if summary.wall_s > 0 else 0.0
    summary.latency_ms = core.latency.summary().to_dict()
    summary.counters = {k: v for k, v in asdict(c).items()}
    summary.outputs = {**summary.outputs, "map": str(saved.map_ply), "trajectory": str(saved.trajectory_tum)}
    if out is not None:
        summary.outputs["rosbag"] = str(out.path)
    if saved.grid_yaml is not None:
        summary.outputs.update(grid_yaml=str(saved.grid_yaml), grid_pgm=str(saved.grid_pgm))
    if core.grid is not None:
        base = core.trajectory("base")
        png = out_dir / "grid.png"
        with atomic_path(png) as tmp:
            render_grid_png(tmp, core.grid.snapshot(), base.poses[:, :2, 3] if len(base) else None,
                            title=f"loger-replay: {Path(summary.bag).name}")
        summary.outputs["grid_png"] = str(png)
    est_cam = core.trajectory("camera")
    points, colors, _ = core.map_snapshot()
    gt = trajectory_from_samples(gt_samples) if gt_samples else None
    plot_est, plot_points, plot_gt = est_cam, points, None
    # With the mount from TF, base_frame's z axis is the robot's up: the plot needs no guess.
    base = core.trajectory("base") if core.mount.source == "tf" else None
    plot_up = base.poses[:, :3, 2].mean(axis=0) if base is not None and len(base) else None
    if gt is not None and len(est_cam):
        try:
            summary.metrics = evaluate(est_cam, gt)
        except EvalError as err:
            log.warning(f"ground truth present but not comparable: {err}")
        if summary.metrics is not None:
            metrics_path = write_json_atomic(out_dir / "metrics.json", summary.metrics)
            summary.outputs["metrics"] = str(metrics_path)
            T_align = np.asarray(summary.metrics["ate"]["T_align"], dtype=np.float64)
            plot_est = est_cam.poses[:, :3, 3] @ T_align[:3, :3].T + T_align[:3, 3]
            plot_points = points @ T_align[:3, :3].T.astype(np.float32) + T_align[:3, 3].astype(np.float32)
            plot_gt = gt
            plot_up = T_align[:3, :3] @ plot_up if plot_up is not None else None
    if len(est_cam):
        png = out_dir / "trajectory.png"
        with atomic_path(png) as tmp:
            plot_top_view(tmp, plot_est, plot_gt, plot_points if len(plot_points) else None,
                          colors if len(plot_points) else None, title=f"loger-replay: {Path(summary.bag).name}",
                          up=plot_up)
        summary.outputs["plot"] = str(png)
    summary_path = out_dir / "summary.json"
    summary.outputs["summary"] = str(summary_path)
    write_json_atomic(summary_path, asdict(summary), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


# ====================================================================== CLI
def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    if ":=" not in text:
        raise ReplayError(f"-p {text!r} must look like name:=value")
    name, value = text.split(":=", 1)
    try:
        return name.strip(), yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        return name.strip(), value


def _default_params_file() -> Optional[Path]:
    candidates = [Path(__file__).resolve().parents[1] / "config" / "loger.yaml"]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("loger_ros")) / "config" / "loger.yaml")
    except Exception:  # not in a ROS environment
        pass
    return next((c for c in candidates if c.is_file()), None)


def options_from_args(args: argparse.Namespace) -> ReplayOptions:
    overrides = dict(_parse_override(t) for t in args.param)
    for name, value in (("model_config", args.model), ("checkpoint_path", args.checkpoint),
                        ("device", args.device), ("dtype", args.dtype)):
        if value is not None:
            overrides[name] = value
    if args.synthetic_weights:
        overrides["allow_synthetic_weights"] = True
    if args.backend is not None:
        overrides["backend_enabled"] = args.backend == "on"
    # Offline default unless given with -p: no latency to save, so every frame's odometry comes
    # from its committed window (in order, none skipped). Input size and window follow the model
    # (parameters left at 0), as in the node.
    overrides.setdefault("provisional_every", 0)
    # Offline: the back end tracks every frame, however far behind it falls.
    overrides.setdefault("backend_max_queue", 0)
    # ... inline, so the output bag (every odometry and TF message) is the same on every run.
    overrides.setdefault("backend_threaded", False)
    params_file = args.params or _default_params_file()
    if params_file is not None:
        params = load_params_yaml(params_file, overrides=overrides)
    else:
        params = NodeParams.from_mapping(overrides)
    out = args.out if args.out is not None else Path.cwd() / f"{Path(args.bag).name.removesuffix('.bag')}_loger"
    mount = None
    if args.camera_mount is not None:
        try:
            mount = tuple(float(v) for v in args.camera_mount.split(","))
        except ValueError:
            mount = ()
        if len(mount) != 6 or not all(np.isfinite(mount)):
            raise ReplayError(f"--camera-mount {args.camera_mount!r} must be six numbers X,Y,Z,ROLL,PITCH,YAW")
    return ReplayOptions(
        bag=args.bag, out_dir=out, params=params, topic=args.topic, camera_info_topic=args.camera_info_topic,
        depth_topic=args.depth_topic, gt_topic=args.gt_topic, max_frames=args.max_frames,
        write_bag=not args.no_bag, overwrite=args.overwrite, progress=not args.no_progress, resume=args.resume,
        session_out=args.session_out, camera_mount=mount)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``loger-replay``; exit 0 on success, 1 on a read error, 2 on bad input, 130 when
    interrupted (SIGINT / SIGTERM: the session and the outputs are written first)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s")
    args = build_arg_parser().parse_args(argv)
    with StopRequest("loger-replay") as stop:
        try:
            options = options_from_args(args)
            options.params.stream_config()  # fail early on a missing checkpoint
            summary = run_replay(options, stop=stop)
        except (ReplayError, ParamsError, CheckpointError, StreamInputError, SessionError) as err:
            if stop.requested:
                print(f"loger-replay: interrupted before anything was mapped: {err}", file=sys.stderr)
                return INTERRUPTED_EXIT
            print(f"loger-replay: error: {err}", file=sys.stderr)
            return 2
    print(f"loger-replay: {summary.frames_read} frames, {summary.poses} poses, {summary.map_points} map points, "
          f"{summary.frames_per_s:.2f} frames/s -> {options.out_dir}")
    if summary.metrics is not None:
        print(f"loger-replay: ATE rmse {summary.metrics['ate']['rmse']:.4f} m (sim3)")
    if summary.read_error:
        print(f"loger-replay: {summary.read_error}", file=sys.stderr)
        return 1
    if summary.interrupted:
        session = summary.outputs.get("session")
        hint = (f"continue with: {resume_command('loger-replay', sys.argv[1:] if argv is None else argv, session, ('--overwrite',))}" if session
                else "no session could be written")
        print(f"loger-replay: interrupted after {summary.frames_read} frames; outputs so far in {options.out_dir}; "
              f"{hint}", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
