"""Frame-by-frame reconstruction with the authors' windowing, alignment and merge.

Frames are buffered until a window of `window_size` frames is complete; the window runs through
`forward_window` with the memory state (TTT fast weights, SWA cache) of the previous window, is
aligned to the previous window over their shared frames (`WindowAligner`, se3/sim3/none) and its
frames except the last `overlap_size` are returned; those are re-predicted as the next window's
first frames, exactly as the authors' whole-sequence merge drops them. `flush()` runs the final,
partial window (or returns the pending tail). Streaming therefore reproduces
`LoGeR.reconstruct` frame for frame.

This module holds the public class, input checks and the synchronous window path; its other jobs
are mixins in their own modules: provisional passes (`provisional`), the async-window worker path
(`async_windows`), output assembly (`output_assembly`, with `confidence_cuts`), window checks
(`window_prediction`), session capture / restore (`session_state`).

Resources are bounded: the buffer holds at most one window of preprocessed frames, the aligner
and the pending tail `overlap_size` frames of predictions, the memory state has a fixed size and
the scale source a fixed history. Results are handed to the caller, never accumulated.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Iterable, Optional

import numpy as np
import torch

from loger_core.model.prediction import WindowPrediction
from loger_core.model.state import MemoryOptions
from loger_core.model.window_graphs import WindowGraphs, graph_autocast
from loger_core.model.windowing import WindowAligner

from .async_windows import AsyncWindows
from .config import StreamConfig
from .errors import StreamInputError
from .frames import BufferedFrame, CommittedView
from .gpu_share import GpuShare, GpuShareStats, install_yield_points
from .intrinsics import check_intrinsics
from .model_loading import load_stream_model
from .output_assembly import OutputAssembly
from .provisional import ProvisionalScheduling
from .provisional_graphs import ProvisionalGraphs
from .preprocess import check_image, check_resolution, demo_resolution, image_geometry, prepare_image, resample_depth, rgb_batch
from .results import FrameResult, StreamStats
from .scale import ScaleEstimate, make_scale_source
from .session_state import capture_stream, restore_stream, stream_settings
from .window_prediction import usable
from .window_worker import WindowStages, WindowWorker

log = logging.getLogger(__name__)


def _check_stamp(stamp_ns: Any) -> int:
    if isinstance(stamp_ns, (bool, np.bool_)) or not isinstance(stamp_ns, (int, np.integer)):
        raise StreamInputError(f"stamp_ns must be an integer number of nanoseconds, got {stamp_ns!r}")
    return int(stamp_ns)


def _check_odom(odom: Any) -> Optional[np.ndarray]:
    if odom is None:
        return None
    arr = np.asarray(odom, dtype=np.float64)
    if arr.shape == (4, 4):
        arr = arr[:3, 3]
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise StreamInputError(f"odom must be a finite (4, 4) pose or (3,) position, got {odom!r}")
    return arr


class StreamingReconstructor(AsyncWindows, ProvisionalScheduling, OutputAssembly):
    """Accepts frames one at a time and returns `FrameResult`s as windows complete.

        rec = StreamingReconstructor(StreamConfig(model="loger_star", checkpoint="latest.pt"))
        for image, stamp in frames:
            for r in rec.push(image, stamp):
                use(r.T_world_cam, r.points, r.colors)
        for r in rec.flush():
            use(...)

    model: inject a ready model (or a test double implementing `forward_window(images, state,
    options, commit, anchor_frames=None)`, `init_state()` and `cfg.patch_size`); default: built from the config.
    """

    def __init__(self, config: Optional[StreamConfig] = None, model: Optional[Any] = None,
                 compile_passes: bool = False) -> None:
        self.config = config if config is not None else StreamConfig()
        cfg = self.config
        self.device = cfg.torch_device()
        self.dtype = cfg.torch_dtype()
        self.model = model if model is not None else load_stream_model(cfg)
        self.patch_size = int(self.model.cfg.patch_size)
        # Test doubles of the model may not offer the raw camera output; they give finished poses.
        params = inspect.signature(self.model.forward_window).parameters
        self._takes_raw_camera = "raw_camera" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if cfg.resolution is not None:
            check_resolution(cfg.resolution, self.patch_size)
        model_se3 = bool(getattr(self.model.cfg, "se3", False))
        self.alignment = cfg.alignment if cfg.alignment is not None else ("se3" if model_se3 else "none")
        self.options = MemoryOptions(cfg.window_size, cfg.overlap_size, cfg.reset_every, cfg.use_ttt, cfg.use_swa)
        self.stats = StreamStats()
        self._scale = make_scale_source(cfg.scale)
        self._pool = ThreadPoolExecutor(cfg.preprocess_threads, "loger-preprocess") if cfg.preprocess_threads else None
        self._scale_lock = threading.Lock()
        self._prov_next_s = 0.0  # perf_counter time before which provisional passes are skipped
        self._last_K_model = np.full((3, 3), np.nan)  # of the last committed frame (pose-only results)
        self._errors: list[str] = []
        self._async = cfg.async_enabled()
        self._worker: Optional[WindowWorker] = None
        self._prov_stream = None
        self._out_stream = None
        self._graphs: Optional[ProvisionalGraphs] = None
        self._window_graphs: Optional[WindowGraphs] = None
        self._share: Optional[GpuShare] = None
        if self._async:
            commit_stream = None
            if self.device.type == "cuda":
                # Provisional passes go ahead of committed windows at kernel-block granularity. Out of
                # range priorities are clamped: 0 is the lowest, a large negative one the highest.
                commit_stream = torch.cuda.Stream(self.device, priority=0)
                self._prov_stream = torch.cuda.Stream(self.device, priority=-100)
                self._out_stream = torch.cuda.Stream(self.device, priority=0)
                if cfg.graphs_enabled():
                    autocast = graph_autocast(self.device.type, self.dtype)
                    self._graphs = ProvisionalGraphs(self.model, self.options, autocast, compile_new=compile_passes)
                    if isinstance(self.model, torch.nn.Module):
                        self._window_graphs = WindowGraphs.shared(
                            self.model, ("stream", self.options, self.dtype),
                            lambda: WindowGraphs(self.model, self.options, autocast, rgb_batch))
            if cfg.pass_priority_enabled() and isinstance(self.model, torch.nn.Module):
                self._share = GpuShare(self.device)
                self._share.active = cfg.provisional_every > 0
                install_yield_points(self.model)
            stages = WindowStages(self._w_enqueue, self._w_settle, self._w_finish, self._w_error)
            self._worker = WindowWorker(stages, functools.partial(self._worker_context, commit_stream),
                                        overlap=commit_stream is not None)
        self._start_map()

    # ------------------------------------------------------------------ public
    def push(
        self,
        image: np.ndarray,
        stamp_ns: int,
        K: Optional[np.ndarray] = None,
        depth: Optional[np.ndarray] = None,
        odom: Optional[np.ndarray] = None,
        provisional: bool = True,
    ) -> list[FrameResult]:
        """Adds one frame; returns the results that became available (often none).

        image: (H, W, 3) uint8 RGB, any size. stamp_ns: int nanoseconds, increasing.
        K: optional (3, 3) intrinsics of `image` (reported as the frame's K; not used by the network).
        depth: optional (H, W) metric depth aligned with `image` (float metres, or integer units of
            `ScaleConfig.depth_unit_m`) for the 'depth' scale source.
        odom: optional external odometry pose (4, 4) or position (3,) for the 'odometry' scale source.
        provisional: False holds back a provisional pass that is due with this frame (a caller with
            frames waiting catches up first: a pass would delay them); the pass runs with the next
            frame pushed with True (counted in `stats.provisional_deferred`).
        Raises StreamInputError for bad input; nothing is changed then. An exception of the model
        (e.g. out of memory) propagates after the failed window's new frames were dropped
        (counted in `stats.frames_dropped_error`); the stream stays usable.
        """
        cfg = self.config
        self.stats.frames_pushed += 1
        if self._finished:
            raise StreamInputError("push() after flush(): the sequence is finished; call reset() to start a new map")
        stamp = _check_stamp(stamp_ns)
        image = check_image(image)
        K_arr = check_intrinsics(K, "K") if K is not None else None
        odom_pos = _check_odom(odom)
        if self._last_stamp is not None and stamp <= self._last_stamp:
            if cfg.out_of_order == "raise":
                raise StreamInputError(f"stamp_ns {stamp} is not after the previous frame's {self._last_stamp}")
            self.stats.frames_dropped_out_of_order += 1
            log.debug("dropped out-of-order frame %d (previous %d)", stamp, self._last_stamp)
            return []
        owed: list[FrameResult] = []
        if len(self._buffer) >= cfg.window_size:
            # A complete window whose run did not happen: Ctrl-C inside the network (KeyboardInterrupt
            # is no Exception, so `_commit` kept its frames), or a session captured then. It runs
            # before this frame joins, or the next window would hold window_size + 1 frames.
            if self._async:
                self._submit(final=False)
            else:
                owed = self._commit(final=False)
        resolution = self._resolution
        if resolution is None:
            resolution = demo_resolution(image.shape[1], image.shape[0], cfg.pixel_limit, self.patch_size)
        depth_m = None
        if depth is not None and cfg.scale.source == "depth":
            depth_m = resample_depth(depth, image_geometry(image.shape[1], image.shape[0], resolution, cfg.resize_mode),
                                     cfg.scale.depth_unit_m)
        if self._pool is not None:
            # The caller may reuse its buffer once push returns: the worker resizes a copy.
            prepared = self._pool.submit(prepare_image, image.copy(), resolution, cfg.resize_mode)
        else:
            prepared = prepare_image(image, resolution, cfg.resize_mode)

        self._resolution = resolution
        self._last_stamp = stamp
        frame = BufferedFrame(self._next_index, stamp, prepared, K_arr, depth_m, odom_pos if cfg.scale.source == "odometry" else None)
        self._next_index += 1
        self.stats.frames_accepted += 1
        self._buffer.append(frame)
        if self._first_frame is None:
            self._first_frame = frame
        if self._async:
            return owed + self._push_async(provisional)
        if len(self._buffer) >= cfg.window_size:
            self._prov_owed = False
            return owed + self._commit(final=False)
        new = len(self._buffer) - self._head
        if self._provisional_due(new % cfg.provisional_every == 0 if cfg.provisional_every else False, provisional):
            return owed + self._provisional()
        return owed

    def flush(self) -> list[FrameResult]:
        """Finishes the sequence: runs the partial final window, or returns the pending tail of
        the last window. Afterwards `push` refuses frames until `reset()`. If the model raises, the
        final window's new frames are dropped and a second `flush()` returns the pending tail."""
        if self._finished:
            return []
        if self._async:
            self._submit(final=True)
            self._worker.wait_idle()
            results = self._worker.drain()
        elif len(self._buffer) > self._head:
            results = self._commit(final=True)
        else:
            results = self._emit_pending()
        self._finished = True
        self._buffer = []
        self._head = 0
        self._pending = None
        return results

    def reset(self) -> list[FrameResult]:
        """Drops everything of the current map (memory, alignment, buffered frames, scale) and
        starts a new one; the next frame becomes the new world origin. Returns the committed
        results of windows that were still running (async_windows; else none): they belong to the
        old map and are handed over before it is dropped."""
        results: list[FrameResult] = []
        if self._async:
            self._worker.wait_idle()
            results = self._worker.drain()
        self._start_map()
        with self._scale_lock:
            self._scale.reset()
        self.stats.resets += 1
        return results

    def poll(self) -> list[FrameResult]:
        """Results that became ready since the last call (async_windows; else always empty)."""
        return self._worker.drain() if self._async else []

    def take_errors(self) -> list[str]:
        """Messages of the windows that failed on the worker since the last call (async_windows;
        their new frames are lost and counted in `stats.frames_dropped_error`)."""
        errors, self._errors = self._errors, []
        return errors

    @property
    def windows_in_flight(self) -> bool:
        """A completed window is still running on the worker (async_windows)."""
        return self._async and self._worker.busy

    def close(self) -> None:
        """Ends the worker and preprocessing threads (results not yet polled stay pollable)."""
        if self._worker is not None:
            self._worker.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def drain(self, timeout_s: Optional[float] = None) -> list[FrameResult]:
        """Waits until no window is in flight (async_windows) and returns every result not yet
        handed over; afterwards the committed state is complete (see `session_component`).
        A timeout returns what is ready; `windows_in_flight` then stays True."""
        if not self._async:
            return []
        self._worker.wait_idle(timeout_s)
        return self._worker.drain()

    # Mapping sessions (loger_core.io.session): the committed state as a component, and back.
    def session_component(self):
        """The committed state (memory, aligner, buffered frames, scale) as a `SessionComponent`;
        `drain()` first with async_windows. See `loger_core.stream.session_state`."""
        return capture_stream(self)

    def restore_session(self, component, path: Optional[str] = None) -> None:
        """Continues from a `session_component()` of an earlier stream (this one must be fresh)."""
        restore_stream(self, component, path)

    def set_provisional(self, every: Optional[int] = None, budget: Optional[float] = None,
                        anchors: Optional[int] = None) -> None:
        """Changes `provisional_every` / `provisional_budget` / `provisional_anchors` while frames
        flow (None keeps a value); the next frame's push uses them. Committed windows do not depend
        on them. Raises StreamInputError for a bad value (nothing changed then)."""
        changes = {k: v for k, v in (("provisional_every", every), ("provisional_budget", budget),
                                     ("provisional_anchors", anchors)) if v is not None}
        # One new config object, swapped in at once: a pass never sees half an update.
        self.config = dataclasses.replace(self.config, **changes)
        if self._share is not None:
            self._share.active = self.config.provisional_every > 0

    def session_settings(self) -> dict:
        """The settings a resumed stream must share with the one that saved the session."""
        return stream_settings(self)

    @property
    def memory_state(self):
        """The memory state carried to the next window (None before the first window)."""
        return self._state

    def state_nbytes(self) -> int:
        """Bytes of the memory state's tensors (constant once the first window ran)."""
        return int(self._state.nbytes()) if self._state is not None and hasattr(self._state, "nbytes") else 0

    @property
    def buffered_frames(self) -> int:
        return len(self._buffer)

    @property
    def resolution(self) -> Optional[tuple[int, int]]:
        """Network input size (W, H) in use (None until the first frame when chosen automatically)."""
        return self._resolution

    def scale_estimate(self) -> ScaleEstimate:
        with self._scale_lock:
            return self._scale.estimate()

    # ------------------------------------------------------------------ windows
    def _start_map(self) -> None:
        cfg = self.config
        self._state = None
        self._aligner = WindowAligner(self.alignment, cfg.overlap_size, cfg.reset_every, cfg.sim3_scale_mode)
        self._buffer: list[BufferedFrame] = []
        self._head = 0  # leading buffer frames shared with the previous committed window
        self._pending: Optional[tuple[list[BufferedFrame], WindowPrediction, int]] = None
        self._last_stamp: Optional[int] = None
        self._next_index = 0
        self._finished = False
        self._resolution = cfg.resolution
        self._first_frame: Optional[BufferedFrame] = None
        self._prov_owed = False  # a due pass was deferred by the caller (push(provisional=False))
        # Worker side (async_windows): continuity after a failed window, the last committed view.
        self._broken = False
        self._good_tail: list[BufferedFrame] = []
        self._view = CommittedView(None, self._aligner.snapshot(), [])

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _stack(self, frames: list[BufferedFrame]) -> torch.Tensor:
        """(n, h, w, 3) uint8 images of `frames` on the host, pinned for CUDA."""
        rgb = torch.from_numpy(np.stack([f.rgb for f in frames]))
        return rgb.pin_memory() if self.device.type == "cuda" else rgb

    def _device_images(self, frames: list[BufferedFrame], rgb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(n, h, w, 3) uint8 images of `frames` on the model's device; rgb: them from `_stack`,
        if already stacked."""
        if rgb is None:
            rgb = self._stack(frames)
        return rgb.to(self.device, non_blocking=self.device.type == "cuda")

    def _forward(self, frames: list[BufferedFrame], state, commit: bool, rgb: Optional[torch.Tensor] = None,
                 anchor_frames: Optional[int] = None, graphs: Optional[WindowGraphs] = None, raw_camera: bool = False):
        """Runs the window; returns (prediction, next state, (n, h, w, 3) uint8 images on the device).
        rgb: the frames' images from `_stack`, if already stacked; anchor_frames: a provisional
        pass's anchors (see `LoGeR.forward_window`); graphs: replay a committed window from these
        where they serve it; raw_camera: the prediction may hold the camera head's raw output and no
        points (`_finish_camera` completes it), so that nothing here waits for the device."""
        rgb = self._device_images(frames, rgb)
        raw = raw_camera and self._takes_raw_camera
        replayed = graphs.run(rgb, state, finish=not raw) if graphs is not None and commit else None
        if replayed is not None:
            self.stats.window_graph_replays += 1
            return replayed[0], replayed[1], rgb
        with torch.no_grad(), self._autocast():
            pred, new_state = self.model.forward_window(rgb_batch(rgb), state, self.options,
                                                        commit=commit, anchor_frames=anchor_frames,
                                                        **({"raw_camera": True} if raw else {}))
        pred = WindowPrediction(pred.local_points.float(), pred.conf.float(), pred.camera_poses.float(),
                                None if pred.points is None else pred.points.float(), getattr(pred, "descriptors", None))
        return pred, new_state, rgb

    def _commit(self, final: bool) -> list[FrameResult]:
        frames = self._buffer
        n = len(frames)
        t0 = time.perf_counter()
        try:
            pred, new_state, rgb = self._forward(frames, self._state, commit=True)
        except Exception:
            # E.g. out of device memory: drop the window's new frames as for a non-finite
            # window, so the stream stays consistent and usable, and let the caller know.
            self.stats.windows_failed_error += 1
            self.stats.frames_dropped_error += len(frames) - self._head
            self._buffer = frames[: self._head]
            raise
        self.stats.windows_run += 1
        if not usable(pred):
            # Keep the memory and the alignment of the last good window; its shared frames stay at
            # the head of the buffer so the next window still overlaps it.
            lost = frames[self._head :]
            self.stats.windows_dropped_nonfinite += 1
            self.stats.frames_dropped_nonfinite += len(lost)
            log.warning(
                "window of frames %d..%d gave non-finite poses/points: dropped (%d frames), memory kept",
                frames[0].index, frames[-1].index, len(lost),
            )
            self._buffer = frames[: self._head]
            return self._emit_pending() if final else []

        self._state = new_state
        aligned = self._aligner.align(pred)
        window_index = self._aligner.window_index - 1
        overlap = self.config.overlap_size
        keep = n if (final or overlap == 0) else n - overlap
        results = self._emit(frames[:keep], aligned, rgb, 0, window_index, provisional=False)
        if final or overlap == 0:
            self._buffer, self._head, self._pending = [], 0, None
        else:
            tail = frames[n - overlap :]
            self._pending = (tail, aligned.frames(n - overlap), rgb[n - overlap :], window_index)
            self._buffer, self._head = list(tail), overlap
            if self.config.provisional_every > 0:
                # Low-latency mode: the frame that completed the window (and the rest of the shared
                # tail) get a pose now; the next window's committed results supersede them.
                results += self._emit(tail, aligned, rgb, n - overlap, window_index, provisional=True)
        self.stats.state_bytes = self.state_nbytes()
        self.stats.last_window_s = time.perf_counter() - t0
        self.stats.commit_s_total += self.stats.last_window_s
        return results

    def _emit_pending(self) -> list[FrameResult]:
        if self._pending is None:
            return []
        frames, pred, rgb, window_index = self._pending
        self._pending = None
        return self._emit(frames, pred, rgb, 0, window_index, provisional=False)

    @property
    def provisional_graphs(self) -> Optional[ProvisionalGraphs]:
        """The CUDA graphs of the provisional passes, with their capture / replay counts (None: no
        async windows on CUDA, or `cuda_graphs` off)."""
        return self._graphs

    @property
    def gpu_share_stats(self) -> Optional[GpuShareStats]:
        """How often committed windows stopped for provisional passes (None: `pass_priority` off)."""
        return self._share.stats if self._share is not None else None


def _frame_fields(item: Any, position: int) -> tuple[np.ndarray, int, dict]:
    """(image, stamp_ns, extra push kwargs) from an array, an (image, stamp_ns) pair or a frame
    object with `image`/`rgb` and `stamp_ns` (and optional `K`, `depth`)."""
    if isinstance(item, np.ndarray):
        return item, position, {}
    if isinstance(item, tuple) and len(item) == 2:
        return item[0], item[1], {}
    image = getattr(item, "image", None)
    if image is None:
        image = getattr(item, "rgb", None)
    stamp = getattr(item, "stamp_ns", None)
    if image is None or stamp is None:
        raise StreamInputError(
            f"frame {position} must be an image array, an (image, stamp_ns) pair or an object with "
            f"image/rgb and stamp_ns, got {type(item).__name__}"
        )
    extra = {k: getattr(item, k) for k in ("K", "depth") if getattr(item, k, None) is not None}
    return image, stamp, extra


def reconstruct_sequence(
    frames: Iterable[Any], config: Optional[StreamConfig] = None, model: Optional[Any] = None,
) -> list[FrameResult]:
    """Convenience for notebooks: streams every frame and returns all committed results in order.

    frames: images (stamp = position), (image, stamp_ns) pairs, or frame objects (see `_frame_fields`).
    """
    rec = StreamingReconstructor(config, model)
    results: list[FrameResult] = []
    for position, item in enumerate(frames):
        image, stamp, extra = _frame_fields(item, position)
        results.extend(r for r in rec.push(image, stamp, **extra) if not r.provisional)
    results.extend(rec.flush())
    return results
