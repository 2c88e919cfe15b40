"""Frame-to-odometry latency and odometry rate of the mapping node's core (no ROS needed).

A camera thread feeds ``sensor_msgs/Image`` messages (rosbags messages) into
:class:`loger_ros.mapping_core.MappingCore` at ``--fps`` through the same non-blocking callback the node
uses; the core's inference thread runs the streaming reconstructor and publishes. For each
``--provisional-every`` value the script reports, from the core's own telemetry:

- latency: image callback -> that frame's first odometry message (ms: mean, p50, p95, max);
- odometry rate: odometry messages per second of wall time (first frame fed to last odometry),
  the share of frames that got one and the longest gap between two odometry messages;
- processed / dropped frames (the bounded queue drops the oldest frame when inference lags);
- network passes (committed windows, provisional passes) and peak GPU memory.

    python bench/node_latency.py --model tiny --device cpu                     # quick CPU check
    python bench/node_latency.py --model loger --device cuda --fps 30 \\
        --provisional-every 0 2 4 8 --frames 300                                 # full model on a GPU

``--fps 0`` feeds the next frame as soon as the queue is empty (throughput without drops).
Weights are deterministic synthetic ones unless ``--checkpoint`` is given: timing does not depend
on the weights' values. Writes a JSON file (``--out``) next to the printed table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.eval.metrics import compute_ate  # noqa: E402
from loger_core.stream import StreamingReconstructor, warm_up as stream_warm_up  # noqa: E402
from loger_core.stream.model_loading import load_stream_model  # noqa: E402
from loger_ros.conversions import make_header, rosbags_factory  # noqa: E402
from loger_ros.mapping_core import MappingCore  # noqa: E402
from loger_ros.params import NodeParams  # noqa: E402

F = rosbags_factory("ros2_humble")
T0 = 1_700_000_000_000_000_000
STAMP_STEP_NS = 33_333_333  # frame k is stamped T0 + k * STAMP_STEP_NS, whatever the camera rate


class _QuietLog:
    def __init__(self):
        self.errors = []

    def debug(self, text):
        pass

    info = debug

    def warning(self, text):
        if "no TF transform" not in text and "dropped the oldest" not in text:
            print(f"  [warn] {text}", file=sys.stderr)

    def error(self, text):
        self.errors.append(text)
        print(f"  [error] {text}", file=sys.stderr)


def make_images(n: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random textures (the network's cost does not depend on content; the back end's does:
    unrelated images make every tracked frame a keyframe, its worst case)."""
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.resize(rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8), (width, height),
                       interpolation=cv2.INTER_CUBIC) for _ in range(n)]


def camera_images(scene: str, n: int, width: int, height: int, fps: float,
                  device: str) -> tuple[list[np.ndarray], Optional[np.ndarray]]:
    """(images, true T_world_cam (n, 4, 4) or None): what a camera sees, a rendered synthetic walk
    (held-out seed) for ``scene`` 'room' or 'corridor', else :func:`make_images` ('noise', cycled)."""
    if scene == "noise":
        return make_images(16, width, height), None
    from loger_core.synthetic import SynthConfig, render_frames

    render_device = "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    frames = render_frames(SynthConfig(scene=scene, trajectory="handheld", frames=n, width=width, height=height,
                                       fps=fps if fps > 0 else 15.0, seed=5005), device=render_device)
    return [f.rgb for f in frames], np.stack([f.T_world_cam for f in frames])


def image_message(rgb: np.ndarray, stamp_ns: int):
    h, w = rgb.shape[:2]
    header = make_header(F, stamp_ns, "camera_optical_frame")
    return F.make("sensor_msgs/msg/Image", header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                  step=w * 3, data=rgb.reshape(-1))


def build(args) -> torch.nn.Module:
    # The same loading (checkpoint, or loudly-labelled synthetic weights) as the node itself.
    return load_stream_model(params_for(args, 0).stream_config())


def params_for(args, provisional_every: int, cuda_graphs: str = "auto", pass_priority: str = "auto",
               provisional_anchors: int = 0) -> NodeParams:
    return NodeParams(
        model_config=args.config, checkpoint_path=args.checkpoint or "", allow_synthetic_weights=True,
        device=args.device, dtype=args.dtype, input_width=args.width, input_height=args.height,
        window_size=args.window, overlap_size=args.overlap, provisional_every=provisional_every,
        queue_size=args.queue_size, map_publish_period_s=args.map_period, preprocess_threads=args.preprocess_threads,
        async_windows=args.async_windows, cuda_graphs=cuda_graphs, pass_priority=pass_priority,
        provisional_anchors=provisional_anchors, provisional_budget=args.budget,
        backend_enabled=args.backend == "on", backend_cpu_share=args.backend_cpu_share)


def warm_up(model, args) -> None:
    """The node's own warm-up (`loger_core.stream.warm_up`, untimed) for every setting measured: each
    meets its own shapes (first window, windows with the SWA history, each provisional pass size)."""
    for setting in sorted(set(settings(args))):
        stream_warm_up(params_for(args, *setting).stream_config(), model, image_size=tuple(args.camera_size), seed=99)


def settings(args) -> list[tuple[int, str, str, int]]:
    """(provisional_every, cuda_graphs, pass_priority, provisional_anchors) to run; the last three
    only matter with passes."""
    out = []
    for p in args.provisional_every:
        for g in (args.cuda_graphs if p else args.cuda_graphs[:1]):
            for q in (args.pass_priority if p else args.pass_priority[:1]):
                for a in (args.provisional_anchors if p else args.provisional_anchors[:1]):
                    out.append((p, g, q, a))
    return out


def _time_calls(spent: dict, key: str, obj, name: str) -> None:
    """Wraps ``obj.name`` so that its wall time adds up in ``spent[key]`` (and its calls in ``key#``)."""
    real = getattr(obj, name)

    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return real(*a, **kw)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
            spent[key + "#"] = spent.get(key + "#", 0) + 1

    setattr(obj, name, timed)


def run_setting(model, args, provisional_every: int, cuda_graphs: str, pass_priority: str, provisional_anchors: int,
                images: list[np.ndarray], truth: Optional[np.ndarray] = None) -> dict:
    params = params_for(args, provisional_every, cuda_graphs, pass_priority, provisional_anchors)
    stream = StreamingReconstructor(params.stream_config(), model=model)
    log = _QuietLog()
    core = MappingCore(params, F, reconstructor=stream, logger=log)
    odom_times: list[int] = []
    lock = threading.Lock()

    def sink(pub):
        if pub.channel == "odom":
            with lock:
                odom_times.append(time.monotonic_ns())

    # Every result the stream hands the core, to compare provisional poses with committed ones.
    provisional_poses: dict[int, np.ndarray] = {}
    committed_poses: dict[int, np.ndarray] = {}
    push = stream.push

    def recording_push(*a, **kw):
        out = push(*a, **kw)
        for r in out:
            (provisional_poses if r.provisional else committed_poses).setdefault(r.index, r.T_world_cam)
        return out

    # When each frame was fed and when its committed pose reached the core (async windows hand
    # committed results over through poll()).
    fed_ns: dict[int, int] = {}
    committed_ns: dict[int, int] = {}
    poll = stream.poll

    def note_committed(out):
        now = time.monotonic_ns()
        for r in out:
            if r.provisional:
                provisional_poses.setdefault(r.index, r.T_world_cam)
            else:
                committed_poses.setdefault(r.index, r.T_world_cam)
                committed_ns.setdefault(r.stamp_ns, now)
        return out

    def recording_poll():
        return note_committed(poll())

    stream.push = lambda *a, **kw: note_committed(push(*a, **kw))
    # Where the inference thread's time goes (and the mapper's): wall time per wrapped call.
    spent: dict[str, float] = {}
    _time_calls(spent, "push", stream, "push")
    _time_calls(spent, "push.provisional_pass", stream, "_provisional_async")
    graphs = stream.provisional_graphs
    if graphs is not None:
        _time_calls(spent, "push.provisional_pass.graph_replay", graphs, "run")
    _time_calls(spent, "push.provisional_pass.outputs", stream, "_emit")
    _time_calls(spent, "push.submit_window", stream, "_submit")
    _time_calls(spent, "decode", core.decoder, "decode_image")
    _time_calls(spent, "handle_results", core, "_safe_handle")
    _time_calls(spent, "handle_results.map_submit_wait", core.fusion, "submit")
    _time_calls(spent, "mapper.fuse_window", core.fusion, "_fuse")
    stream.poll = recording_poll
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    core.start(sink, time.monotonic_ns)
    period = 1.0 / args.fps if args.fps > 0 else 0.0
    t_start = time.perf_counter()
    t_start_ns = time.monotonic_ns()
    for k in range(args.frames):
        if period:
            delay = t_start + k * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        else:
            while len(core.queue) > 0:
                time.sleep(0.0005)
        stamp = T0 + k * STAMP_STEP_NS
        fed_ns[stamp] = time.monotonic_ns()
        core.on_image(image_message(images[k % len(images)], stamp))
    feed_s = time.perf_counter() - t_start
    deadline = time.time() + 600
    while (core.counters.processed + core.counters.dropped_total < args.frames) and time.time() < deadline:
        time.sleep(0.01)
    core.stop(60)
    consumer = core.mapper.consumer
    backend = consumer.stats() if consumer is not None and hasattr(consumer, "stats") else {}
    # Accuracy of what the node published (corrected by the back end when on) against the rendered truth.
    ate_pct = float("nan")
    if truth is not None:
        traj = core.mapper.trajectory("camera")
        k = (traj.stamps_ns - T0) // STAMP_STEP_NS
        if len(k) >= 3:
            gt = truth[k]
            path = float(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum())
            ate_pct = 100.0 * compute_ate(traj.poses, gt, align="sim3").rmse / max(path, 1e-9)
    wall_s = time.perf_counter() - t_start
    stream.close()
    lat = core.latency.summary()
    series = core.latency.samples_ms()  # in publication order
    # Where in the run the tail is: a slow start (compile, first kernel loads) or throughout.
    quarters = [float(np.percentile(q, 95)) for q in np.array_split(series, 4) if q.size]
    c = core.counters
    # Average rate over the run (first frame fed -> last odometry): bursts must not inflate it.
    span_s = (odom_times[-1] - t_start_ns) / 1e9 if odom_times else float("nan")
    gaps = np.diff(np.array(odom_times)) / 1e6 if len(odom_times) > 1 else np.array([np.nan])
    peak_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    share = stream.gpu_share_stats
    both = sorted(set(provisional_poses) & set(committed_poses))
    rot_deg, trans = [], []
    for i in both:
        P, C = provisional_poses[i], committed_poses[i]
        cos = np.clip((np.trace(P[:3, :3].T @ C[:3, :3]) - 1) / 2, -1, 1)
        rot_deg.append(np.degrees(np.arccos(cos)))
        trans.append(np.linalg.norm(P[:3, 3] - C[:3, 3]))
    commit_lat = np.array([(committed_ns[st] - fed_ns[st]) / 1e6 for st in committed_ns if st in fed_ns])
    # From the moment the frame's window was complete (its last frame fed) to its committed pose:
    # the part of the delay that is computation and queueing, not waiting for later frames.
    stride = args.window - args.overlap

    def filled_ns(st: int) -> Optional[int]:
        k = (st - T0) // STAMP_STEP_NS
        return fed_ns.get(T0 + min((k // stride) * stride + args.window - 1, args.frames - 1) * STAMP_STEP_NS)

    filled = {st: filled_ns(st) for st in committed_ns}
    after_fill = np.array([(committed_ns[st] - f) / 1e6 for st, f in filled.items() if f is not None])
    window_period_ms = 1000.0 * (args.window - args.overlap) / args.fps if args.fps > 0 else float("nan")
    centres = np.array([committed_poses[i][:3, 3] for i in sorted(committed_poses)])
    path_len = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum()) if len(centres) > 1 else float("nan")
    return {
        "provisional_every": provisional_every,
        "time_split_s": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in sorted(spent.items())},
        "cuda_graphs": cuda_graphs,
        "pass_priority": pass_priority,
        "provisional_anchors": provisional_anchors,
        "provisional_budget": args.budget,
        "pass_priority_used": share is not None,
        "window_holds": share.holds if share is not None else 0,
        "window_held_s": share.held_s if share is not None else 0.0,
        "window_hold_timeouts": share.hold_timeouts if share is not None else 0,
        "graphs_used": bool(graphs.replays) if graphs is not None else False,
        "provisional_pass_ms": 1000 * stream.stats.provisional_s_total / max(stream.stats.provisional_runs, 1),
        "provisional_deferred": stream.stats.provisional_deferred,
        "provisional_skipped_budget": stream.stats.provisional_skipped_budget,
        "provisional_graph_captures": graphs.captures if graphs is not None else 0,
        "provisional_compiled_captures": graphs.compiled_captures if graphs is not None else 0,
        "frames_fed": args.frames,
        "input_fps": args.frames / feed_s if feed_s > 0 else float("nan"),
        "frames_processed": c.processed,
        "frames_dropped_queue": c.dropped["queue_full"],
        "frames_committed": c.committed,
        "odometry_messages": c.odom_published,
        "odometry_share": c.odom_published / max(c.received, 1),
        "odometry_rate_hz": len(odom_times) / span_s if span_s == span_s and span_s > 0 else float("nan"),
        "odometry_max_gap_ms": float(np.nanmax(gaps)),
        "latency_mean_ms": lat.mean_ms,
        "latency_p50_ms": lat.p50_ms,
        "latency_p95_ms": lat.p95_ms,
        "latency_max_ms": lat.max_ms,
        "latency_p95_by_quarter_ms": quarters,
        "latency_series_ms": [round(float(v), 2) for v in series],
        "windows_run": stream.stats.windows_run,
        "provisional_runs": stream.stats.provisional_runs,
        "provisional_graph_replays": graphs.replays if graphs is not None else 0,
        "last_window_s": stream.stats.last_window_s,
        "processed_fps": c.processed / wall_s,
        "peak_gpu_mib": peak_mib,
        "committed_share": stream.stats.commit_s_total / wall_s,
        "provisional_share": stream.stats.provisional_s_total / wall_s,
        "prov_vs_committed_frames": len(both),
        "prov_vs_committed_rot_deg_median": float(np.median(rot_deg)) if rot_deg else float("nan"),
        "prov_vs_committed_rot_deg_p95": float(np.percentile(rot_deg, 95)) if rot_deg else float("nan"),
        "prov_vs_committed_trans_median": float(np.median(trans)) if trans else float("nan"),
        "committed_path_length": path_len,
        "committed_latency_p50_ms": float(np.median(commit_lat)) if commit_lat.size else float("nan"),
        "committed_latency_max_ms": float(commit_lat.max()) if commit_lat.size else float("nan"),
        "committed_after_fill_p50_ms": float(np.median(after_fill)) if after_fill.size else float("nan"),
        "committed_after_fill_max_ms": float(after_fill.max()) if after_fill.size else float("nan"),
        # No backlog: every window's poses are in within one window period of its last frame.
        "committed_within_period_after_fill": bool(after_fill.size and after_fill.max() <= window_period_ms),
        "window_period_ms": window_period_ms,
        # A frame waits at most one period for its window to fill, then the window must be in
        # within one more period or the backlog grows.
        "committed_within_two_periods": bool(commit_lat.size and commit_lat.max() <= 2 * window_period_ms),
        "frames_dropped_total": c.dropped_total,
        "async_windows": stream.config.async_enabled(),
        "errors": len(log.errors),
        "ate_pct_of_path": ate_pct,
        "backend_cpu_share": getattr(consumer, "cpu_share", None),
        "backend_keyframes": int(backend.get("keyframes", 0)),
        "backend_frames": int(backend.get("frames", 0)),
        "backend_frames_tracked": int(backend.get("frames", 0)) - int(backend.get("frames_skipped", 0)),
        "backend_frame_ms_mean": float(backend.get("frame_ms_mean", float("nan"))),
        "backend_keyframe_ms_mean": float(backend.get("keyframe_ms_mean", float("nan"))),
    }


COLUMNS = [("provisional_every", "prov", "{:>4d}"), ("cuda_graphs", "graphs", "{:>6s}"),
           ("pass_priority", "prio", "{:>4s}"), ("provisional_anchors", "anch", "{:>4d}"),
           ("provisional_pass_ms", "pass ms", "{:>7.1f}"), ("processed_fps", "proc/s", "{:>7.2f}"),
           ("frames_dropped_queue", "dropped", "{:>7d}"), ("odometry_rate_hz", "odom Hz", "{:>7.2f}"),
           ("odometry_share", "odom%", "{:>6.0%}"), ("odometry_max_gap_ms", "max gap ms", "{:>10.0f}"),
           ("latency_p50_ms", "lat p50", "{:>8.1f}"), ("latency_p95_ms", "lat p95", "{:>8.1f}"),
           ("latency_max_ms", "lat max", "{:>8.1f}"), ("committed_latency_max_ms", "commit max", "{:>10.0f}"),
           ("committed_after_fill_max_ms", "fill->commit max", "{:>16.0f}"),
           ("window_period_ms", "win period", "{:>10.0f}"), ("last_window_s", "window s", "{:>8.3f}"),
           ("peak_gpu_mib", "GPU MiB", "{:>8.0f}"), ("committed_share", "commit%", "{:>7.0%}"),
           ("provisional_share", "prov%", "{:>6.0%}"), ("prov_vs_committed_rot_deg_median", "dR deg", "{:>7.3f}"),
           ("prov_vs_committed_trans_median", "dt", "{:>7.4f}"), ("window_held_s", "held s", "{:>6.2f}"),
           ("backend_keyframes", "BE kf", "{:>5d}"), ("backend_frames_tracked", "BE tracked", "{:>10d}"),
           ("ate_pct_of_path", "ATE %", "{:>6.2f}")]


def print_table(rows: list[dict]) -> None:
    def width(fmt):
        return len(fmt.format(0) if "d" in fmt else fmt.format("") if "s" in fmt else fmt.format(0.0))

    print(" ".join(f"{title:>{width(fmt)}}" for _, title, fmt in COLUMNS))
    for row in rows:
        print(" ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", "--config", dest="config", default="tiny", choices=("tiny", "small", "loger", "loger_star"))
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--provisional-every", type=int, nargs="+", default=[0, 1, 4])
    ap.add_argument("--frames", type=int, default=None, help="frames per setting (default 3 windows)")
    ap.add_argument("--fps", type=float, default=30.0, help="camera rate; 0 = next frame when the queue is empty")
    ap.add_argument("--width", type=int, default=None, help="image/network width (default 504, tiny 56)")
    ap.add_argument("--height", type=int, default=None, help="image/network height (default 280, tiny 42)")
    ap.add_argument("--window", type=int, default=None, help="window size (default 32, tiny 8)")
    ap.add_argument("--overlap", type=int, default=None, help="overlap (default 3, tiny 2)")
    ap.add_argument("--queue-size", type=int, default=NodeParams.__dataclass_fields__["queue_size"].default,
                    help="input queue (default: the node's)")
    ap.add_argument("--map-period", type=float, default=2.0)
    ap.add_argument("--camera-size", default=None, help="camera image WxH (default: the network size); "
                    "the node resizes to --width x --height")
    ap.add_argument("--async-windows", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--cuda-graphs", nargs="+", default=["auto"], choices=("auto", "on", "off"),
                    help="provisional passes as CUDA graphs; several values run each setting with each")
    ap.add_argument("--pass-priority", nargs="+", default=["auto"], choices=("auto", "on", "off"),
                    help="committed windows yield the GPU to provisional passes; several values run each")
    ap.add_argument("--provisional-anchors", type=int, nargs="+", default=[0],
                    help="anchor frames per provisional pass (0 = all overlap frames); several values run each")
    ap.add_argument("--budget", type=float, default=NodeParams.__dataclass_fields__["provisional_budget"].default,
                    help="provisional_budget (default: the node's)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval (s) for the run: how long a thread may hold the interpreter")
    ap.add_argument("--preprocess-threads", type=int, default=2, help="frame-resizing threads of the stream")
    ap.add_argument("--backend", choices=("on", "off"), default="on", help="the geometric back end (default on, as the node)")
    ap.add_argument("--backend-cpu-share", type=float, default=NodeParams.__dataclass_fields__["backend_cpu_share"].default,
                    help="the node's backend_cpu_share (0: auto)")
    ap.add_argument("--scene", default="room", choices=("room", "corridor", "noise"),
                    help="camera images: a rendered handheld walk (default room) or cycled random textures")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default bench_results/node_latency_<config>_<device>.json)")
    args = ap.parse_args(argv)
    tiny = args.config in ("tiny", "small")  # the CPU-sized models
    # 0 = the node's model-aware default input size (None: the bench's small default).
    args.width = args.width if args.width is not None else (56 if tiny else 504)
    args.height = args.height if args.height is not None else (42 if tiny else 280)
    args.window = args.window or (8 if tiny else 32)
    args.overlap = args.overlap if args.overlap is not None else (2 if tiny else 3)
    args.frames = args.frames or 3 * args.window
    if args.camera_size:
        args.camera_size = tuple(int(v) for v in args.camera_size.split("x"))
    elif args.width and args.height:
        args.camera_size = (args.width, args.height)
    else:
        ap.error("--width/--height 0 (the node's default input size) needs --camera-size")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    model = build(args)
    device = next(model.parameters()).device
    args.device = str(device)
    print(f"model {args.config} on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"camera {args.camera_size[0]}x{args.camera_size[1]} -> {args.width}x{args.height}, window {args.window}/{args.overlap}, camera {args.fps:g} fps, {args.frames} frames")
    warm_up(model, args)
    images, truth = camera_images(args.scene, args.frames, *args.camera_size, args.fps, args.device)
    rows = [run_setting(model, args, *setting, images, truth) for setting in settings(args)]
    print_table(rows)
    for row in rows:
        print(f"prov {row['provisional_every']} graphs {row['cuda_graphs']} priority {row['pass_priority']} "
              f"anchors {row['provisional_anchors']}: time split (s, calls#): {row['time_split_s']}")
        print("  odometry latency p95 by quarter of the run (ms): "
              + " / ".join(f"{v:.0f}" for v in row["latency_p95_by_quarter_ms"]))
    out = args.out or REPO / "bench_results" / f"node_latency_{args.config}_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": args.config, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "width": args.width, "height": args.height, "window": args.window,
            "overlap": args.overlap, "fps": args.fps, "camera_size": list(args.camera_size), "frames": args.frames, "queue_size": args.queue_size,
            "dtype": args.dtype, "checkpoint": args.checkpoint, "threads": torch.get_num_threads(),
            "switch_interval_s": sys.getswitchinterval(), "scene": args.scene, "backend": args.backend,
            "backend_cpu_share": args.backend_cpu_share}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
