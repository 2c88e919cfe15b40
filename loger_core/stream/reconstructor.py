"""Frame-by-frame reconstruction with the authors' windowing, alignment and merge.

Frames are buffered until a window of `window_size` frames is complete; the window runs through
`forward_window` with the memory state (TTT fast weights, SWA cache) of the previous window, is
aligned to the previous window over their shared frames (`WindowAligner`, se3/sim3/none) and its
frames except the last `overlap_size` are returned; those are re-predicted as the next window's
first frames, exactly as the authors' whole-sequence merge drops them. `flush()` runs the final,
partial window (or returns the pending tail). Streaming therefore reproduces
`LoGeR.reconstruct` frame for frame.

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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

import numpy as np
import torch

from loger_core.model.fast_paths import eager_regions
from loger_core.model.prediction import WindowPrediction, finish_raw_camera
from loger_core.model.state import MemoryOptions
from loger_core.model.window_graphs import WindowGraphs, graph_autocast
from loger_core.model.windowing import WindowAligner

from .config import StreamConfig
from .errors import StreamInputError
from .frames import BufferedFrame, CommittedView
from .gpu_share import GpuShare, GpuShareStats, install_yield_points, yield_point
from .intrinsics import check_intrinsics, estimate_intrinsics_batch, model_to_original
from .model_loading import load_stream_model
from .provisional_graphs import ProvisionalGraphs
from .preprocess import (
    ImageGeometry, PreparedImage, check_image, check_resolution, demo_resolution, image_geometry, prepare_image,
    resample_depth, rgb_batch,
)
from .results import FrameResult, StreamStats
from .scale import ScaleEstimate, ScaleObservation, make_scale_source
from .session_state import capture_stream, restore_stream, stream_settings
from .window_worker import WindowStages, WindowWorker

log = logging.getLogger(__name__)


@dataclass
class _Job:
    """A completed window for the worker: `frames` in window order, the first `head` of them shared
    with the window before; `final` for the sequence's last (possibly partial) window."""

    frames: list[BufferedFrame]
    head: int
    final: bool
    # The frames' (n, h, w, 3) uint8 images stacked in pinned memory by the caller's thread (CUDA),
    # so the worker's gap between two windows holds no host copy.
    rgb: Optional[torch.Tensor] = None


@dataclass
class _Queued:
    """A window whose forward is queued on the device (worker side)."""

    job: _Job
    frames: list[BufferedFrame]
    head: int
    pred: Optional[WindowPrediction]
    new_state: Any
    rgb: Optional[torch.Tensor]
    t0: float


@dataclass
class _Emit:
    """Arguments of one `_emit_start` call, made on the worker after the next window is queued."""

    frames: list[BufferedFrame]
    pred: WindowPrediction
    rgb: torch.Tensor
    start: int
    window_index: int
    provisional: bool


@dataclass
class _Outputs:
    """Per-frame outputs of `frames` whose device-to-host copies were queued; `event` (CUDA) fires
    when they are in host memory."""

    frames: list[BufferedFrame]
    host: dict
    event: Any
    window_index: int
    provisional: bool


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


def _usable(pred: WindowPrediction) -> bool:
    """A window is usable when every pose is finite and every frame has some finite point;
    partially non-finite point maps are masked per pixel instead."""
    finite = torch.isfinite(pred.local_points).all(dim=-1).flatten(2)  # (B, N, h*w)
    # One host sync for both checks.
    return bool(torch.isfinite(pred.camera_poses).all() & finite.any(dim=-1).all())


class StreamingReconstructor:
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
                                None if pred.points is None else pred.points.float())
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
        if not _usable(pred):
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

    def _provisional_due(self, scheduled: bool, caller_allows: bool) -> bool:
        """Whether a provisional pass runs now: one is scheduled (or was deferred by the caller),
        the caller allows it, and the budget is not spent."""
        if not self.config.provisional_every or not (scheduled or self._prov_owed):
            return False
        if not caller_allows:
            if scheduled:
                self.stats.provisional_deferred += 1
            self._prov_owed = True
            return False
        self._prov_owed = False
        return self._provisional_allowed()

    def _provisional_allowed(self) -> bool:
        """A provisional pass is due; False (and counted) while `provisional_budget` is spent."""
        if time.perf_counter() >= self._prov_next_s:
            return True
        self.stats.provisional_skipped_budget += 1
        return False

    def _spend_provisional(self, t0: float) -> None:
        now = time.perf_counter()
        cost, budget = now - t0, self.config.provisional_budget
        self.stats.provisional_s_total += cost
        self._prov_next_s = now + cost * (1.0 - budget) / budget

    def _provisional(self) -> list[FrameResult]:
        """An uncommitted pass over anchor frames plus the `provisional_every` newest frames, not
        the whole partial window, so its cost is bounded and does not grow as the window fills.
        The anchors are the frames shared with the last committed window (they carry the alignment
        into the map), or in a map's first window its first frame (the world origin). Returns
        results for the newest frames (and for the first frame while it is among them)."""
        t0 = time.perf_counter()
        try:
            return self._provisional_pass()
        finally:
            self._spend_provisional(t0)

    def _anchor_count(self, available: int) -> int:
        """How many of `available` anchor frames a provisional pass carries (`provisional_anchors`)."""
        wanted = self.config.provisional_anchors
        return min(wanted, available) if wanted > 0 else available

    def _provisional_pass(self) -> list[FrameResult]:
        buffer, head = self._buffer, self._head
        anchor = self._anchor_count(head) if head else 1
        first_new = max(head or 1, len(buffer) - self.config.provisional_every)
        frames = buffer[:anchor] + buffer[first_new:]
        emit_from = 0 if head == 0 and len(buffer) <= self.config.provisional_every else anchor
        # forward_window applies a due TTT reset to provisional passes too.
        pred, _, rgb = self._forward(frames, self._state, commit=False, anchor_frames=emit_from or None)
        self.stats.provisional_runs += 1
        if not _usable(pred):
            self.stats.provisional_dropped_nonfinite += 1
            return []
        # The real aligner must see only committed windows.
        aligned = self._aligner.peek(pred)
        return self._emit(frames[emit_from:], aligned, rgb, emit_from, self._aligner.window_index, provisional=True)

    # ------------------------------------------------------------------ async windows
    def _push_async(self, allow_provisional: bool) -> list[FrameResult]:
        """push() with async_windows: a completed window goes to the worker; provisional passes run
        here against the last committed window while it computes."""
        cfg = self.config
        every = cfg.provisional_every
        provisional: list[FrameResult] = []
        new = self._buffer[self._head :]
        if len(self._buffer) >= cfg.window_size:
            # The frames since the last provisional pass get a pose now, not when the window is in.
            if self._provisional_due(True, allow_provisional):
                provisional = self._provisional_async(new[-every:])
            self._submit(final=False)
        elif self._provisional_due(bool(every) and len(new) % every == 0, allow_provisional):
            provisional = self._provisional_async(new[-every:])
        return self._worker.drain() + provisional

    def _submit(self, final: bool) -> None:
        job = _Job(self._buffer, self._head, final, self._stack(self._buffer) if self._buffer else None)
        overlap = self.config.overlap_size
        if final or overlap == 0:
            self._buffer, self._head = [], 0
        else:
            # As if the window will be usable; the worker re-heads the next one if it is not.
            self._buffer, self._head = list(job.frames[-overlap:]), overlap
        self._worker.submit(job)

    def _provisional_async(self, newest: list[BufferedFrame]) -> list[FrameResult]:
        """The provisional pass of `_provisional_pass` against the last committed window (which
        may be older than the frames at the head of the buffer while a window is in flight), on
        the high-priority stream. A failure is logged and loses nothing: the frames stay buffered."""
        t0 = time.perf_counter()
        try:
            view = self._view
            anchors = view.anchors[: self._anchor_count(len(view.anchors))]
            if not anchors:
                anchors = [self._first_frame] if view.state is None else self._buffer[:1]
            if newest and anchors[0] is newest[0]:
                frames, emit_from = list(newest), 0  # the map's first frame is among the newest
            else:
                frames, emit_from = anchors + list(newest), len(anchors)
            stream = torch.cuda.stream(self._prov_stream) if self._prov_stream is not None else nullcontext()
            urgent = self._share.urgent() if self._share is not None else nullcontext()
            with urgent, stream:
                pred = rgb = None
                if self._graphs is not None and self._graphs.usable_for(view.state):
                    rgb = self._device_images(frames)
                    # A first capture only while no window computes (its allocations stay apart).
                    pred = self._graphs.run(rgb, view.state, capture_allowed=self._capture_allowed,
                                            anchor_frames=emit_from or None)
                if pred is None:
                    # Eager blocks: the worker thread may be compiling a window shape at this moment.
                    with eager_regions():
                        pred, _, rgb = self._forward(frames, view.state, commit=False, rgb=rgb,
                                                     anchor_frames=emit_from or None)
                self.stats.provisional_runs += 1
                if not _usable(pred):
                    self.stats.provisional_dropped_nonfinite += 1
                    return []
                aligned = view.aligner.peek(pred)
                return self._emit(frames[emit_from:], aligned, rgb, emit_from, view.aligner.window_index,
                                  provisional=True)
        except Exception as err:  # noqa: BLE001 - the committed window still gives these frames poses
            msg = f"provisional pass failed ({type(err).__name__}: {err}); the frames wait for their window"
            log.warning(msg)
            self._errors.append(msg)
            return []
        finally:
            self._spend_provisional(t0)

    def _capture_allowed(self) -> bool:
        """Whether a provisional pass may capture its CUDA graph now: while no window computes, or
        while the window worker is stopped between two blocks for this pass (`pass_priority`; a
        camera that never pauses keeps the worker busy, and its passes would never get a graph)."""
        if not self._worker.busy:
            return True
        return self._share is not None and self._share.wait_bulk_paused(0.1)

    @contextmanager
    def _worker_context(self, commit_stream) -> Iterator[None]:
        """The window worker thread's context: its CUDA stream and its side of the GPU share."""
        with ExitStack() as stack:
            if commit_stream is not None:
                stack.enter_context(torch.cuda.stream(commit_stream))
            if self._share is not None:
                stack.enter_context(self._share.bulk())
            yield

    @property
    def provisional_graphs(self) -> Optional[ProvisionalGraphs]:
        """The CUDA graphs of the provisional passes, with their capture / replay counts (None: no
        async windows on CUDA, or `cuda_graphs` off)."""
        return self._graphs

    @property
    def gpu_share_stats(self) -> Optional[GpuShareStats]:
        """How often committed windows stopped for provisional passes (None: `pass_priority` off)."""
        return self._share.stats if self._share is not None else None

    # Worker stages (window_worker.WindowWorker), all on the worker thread, in window order.
    def _w_enqueue(self, job: _Job) -> _Queued:
        frames, head = job.frames, job.head
        if self._broken:
            # The window before was dropped: go on from the last good window's shared frames, as the
            # synchronous path keeps them at the head of its buffer.
            frames, head = self._good_tail + frames[head:], len(self._good_tail)
        t0 = time.perf_counter()
        if len(frames) <= head:  # a final job with no new frame: only the pending tail is left
            return _Queued(job, frames, head, None, None, None, t0)
        # With no provisional pass to make room for, a full window replays its CUDA graph (one
        # launch instead of thousands from this thread); with passes it runs block by block, so
        # that it can stop for them (`gpu_share`). Raw camera output: the camera head's SVD waits
        # for the device, and this stage must return as soon as the window is queued, so that the
        # previous window's outputs are built while the device computes this one (`WindowWorker`).
        full = len(frames) == self.config.window_size
        graphs = self._window_graphs if self.config.provisional_every == 0 and full else None
        pred, new_state, rgb = self._forward(frames, self._state, commit=True, rgb=None if self._broken else job.rgb,
                                             graphs=graphs, raw_camera=True)
        return _Queued(job, frames, head, pred, new_state, rgb, t0)

    def _w_settle(self, q: _Queued) -> tuple[Optional[float], list[_Emit], Any]:
        """Accepts the window's memory and alignment; its outputs are only described here and made
        in `_w_finish`, after the worker queued the next window's forward, so the device does not
        wait on them between two windows."""
        settled = self._settle(q)
        event = None
        if self._out_stream is not None:
            # Marks the window's forward and alignment on the worker's stream; the outputs' stream
            # waits for this, not for the next window queued behind it.
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        return settled[0], settled[1], event

    def _settle(self, q: _Queued) -> tuple[Optional[float], list[_Emit]]:
        cfg = self.config
        if q.pred is None:
            return None, self._pending_outputs()
        self.stats.windows_run += 1
        pred = _finish_camera(q.pred)
        if not _usable(pred):
            lost = q.frames[q.head :]
            self.stats.windows_dropped_nonfinite += 1
            self.stats.frames_dropped_nonfinite += len(lost)
            log.warning("window of frames %d..%d gave non-finite poses/points: dropped (%d frames), memory kept",
                        q.frames[0].index, q.frames[-1].index, len(lost))
            self._broken = True
            return q.t0, (self._pending_outputs() if q.job.final else [])
        self._state = q.new_state
        self._broken = False
        aligned = self._aligner.align(pred)
        window_index = self._aligner.window_index - 1
        n, overlap, final = len(q.frames), cfg.overlap_size, q.job.final
        keep = n if (final or overlap == 0) else n - overlap
        outs = [_Emit(q.frames[:keep], aligned, q.rgb, 0, window_index, False)]
        tail: list[BufferedFrame] = []
        if final or overlap == 0:
            self._pending = None
        else:
            tail = q.frames[n - overlap :]
            self._pending = (tail, aligned.frames(n - overlap), q.rgb[n - overlap :], window_index)
            if cfg.provisional_every > 0:
                outs.append(_Emit(tail, aligned, q.rgb, n - overlap, window_index, True))
        self._good_tail = list(tail)
        self._view = CommittedView(self._state, self._aligner.snapshot(), list(tail))
        self.stats.state_bytes = self.state_nbytes()
        return q.t0, outs

    def _w_finish(self, settled: tuple[Optional[float], list[_Emit], Any]) -> list[FrameResult]:
        t0, emits, event = settled
        context = nullcontext()
        if event is not None:
            self._out_stream.wait_event(event)
            context = torch.cuda.stream(self._out_stream)
        with context:
            outs = [self._emit_start(e.frames, e.pred, e.rgb, e.start, e.window_index, e.provisional) for e in emits]
        # The window's tensors (made on the worker's stream) stay referenced until these copies are
        # waited for, so the allocator cannot hand their memory to the next window meanwhile.
        results = [r for o in outs for r in self._emit_finish(o)]
        if t0 is not None:
            self.stats.last_window_s = time.perf_counter() - t0
            self.stats.commit_s_total += self.stats.last_window_s
        return results

    def _w_error(self, job: _Job, err: BaseException) -> list[FrameResult]:
        # As the synchronous path: the window's new frames are lost, the memory and alignment of
        # the last good window are kept, and the stream goes on.
        lost = max(len(job.frames) - job.head, 0)
        self.stats.windows_failed_error += 1
        self.stats.frames_dropped_error += lost
        self._broken = True
        first = job.frames[0].index if job.frames else -1
        last = job.frames[-1].index if job.frames else -1
        msg = f"window of frames {first}..{last} failed ({type(err).__name__}: {err}): its {lost} new frame(s) are dropped"
        log.error(msg)
        self._errors.append(msg)
        if job.final:
            return [r for e in self._pending_outputs() for r in self._emit(e.frames, e.pred, e.rgb, e.start,
                                                                          e.window_index, e.provisional)]
        return []

    def _pending_outputs(self) -> list[_Emit]:
        if self._pending is None:
            return []
        frames, pred, rgb, window_index = self._pending
        self._pending = None
        return [_Emit(frames, pred, rgb, 0, window_index, False)]

    # ------------------------------------------------------------------ output
    def _emit(
        self, frames: list[BufferedFrame], pred: WindowPrediction, rgb: torch.Tensor, start: int, window_index: int,
        provisional: bool,
    ) -> list[FrameResult]:
        """Results for `frames`, which are the window frames start, start + 1, ... of `pred`;
        `rgb` holds the window's (n, h, w, 3) uint8 images on the model's device.

        Masks, confidence cuts, intrinsics fits, point selection and colours are computed for all
        frames at once on the model's device; the host gets them in one transfer per call."""
        return self._emit_finish(self._emit_start(frames, pred, rgb, start, window_index, provisional))

    def _emit_start(
        self, frames: list[BufferedFrame], pred: WindowPrediction, rgb: torch.Tensor, start: int, window_index: int,
        provisional: bool,
    ) -> _Outputs:
        """Computes the outputs of `frames` on the device and queues their copies to the host."""
        end = start + len(frames)
        if provisional and self.config.provisional_outputs == "pose":
            out_t = {}
        else:
            out_t = self._device_outputs(pred, rgb, start, end)
        out_t["poses"] = pred.camera_poses[0, start:end].double()
        event = None
        if self.device.type == "cuda":
            # Asynchronous copies into pinned host memory; one event marks them all.
            host = {k: v.to("cpu", non_blocking=True) for k, v in out_t.items()}
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        else:
            host = {k: v.cpu() for k, v in out_t.items()}
        return _Outputs(frames, host, event, window_index, provisional)

    def _emit_finish(self, outputs: _Outputs) -> list[FrameResult]:
        """Waits for the copies of `_emit_start` and builds the frames' results."""
        frames, host, window_index, provisional = outputs.frames, outputs.host, outputs.window_index, outputs.provisional
        if outputs.event is not None:
            outputs.event.synchronize()
        if "depth" not in host:
            return self._pose_results(outputs)
        depth_all = host["depth"].numpy()
        conf_all = host["confidence"].numpy()
        valid_all = host["valid"].numpy()
        K_all = host["K_model"].numpy()
        poses = host["poses"].numpy()
        counts = host["counts"].numpy()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        pts_all, col_all, pconf_all = host["points"].numpy(), host["colors"].numpy(), host["point_confidence"].numpy()
        weights_all = host["weights"].numpy() if "weights" in host else None
        out: list[FrameResult] = []
        for i, fr in enumerate(frames):
            depth, confidence, valid = depth_all[i], conf_all[i], valid_all[i]
            a, b = offsets[i], offsets[i + 1]
            with self._scale_lock:
                if not provisional:
                    self._scale.observe(ScaleObservation(depth, valid, poses[i, :3, 3], fr.depth, fr.odom))
                est = self._scale.estimate()
            s = est.scale
            out.append(self._result(
                fr, poses[i], est, K_all[i], window_index, provisional,
                depth=depth * np.float32(s) if s != 1.0 else depth,
                confidence=confidence,
                valid=valid,
                points=pts_all[a:b] * np.float32(s) if s != 1.0 else pts_all[a:b],
                colors=col_all[a:b],
                point_confidence=pconf_all[a:b],
                point_weights=None if weights_all is None else weights_all[a:b],
            ))
        if not provisional:
            self.stats.frames_committed += len(out)
            if out:
                self._last_K_model = out[-1].K_model
        return out

    def _pose_results(self, outputs: _Outputs) -> list[FrameResult]:
        """Pose-only provisional results (`StreamConfig.provisional_outputs` 'pose')."""
        poses = outputs.host["poses"].numpy()
        with self._scale_lock:
            est = self._scale.estimate()
        return [self._result(
            fr, poses[i], est, self._last_K_model.copy(), outputs.window_index, True,
            depth=np.zeros((0, 0), np.float32), confidence=np.zeros((0, 0), np.float32),
            valid=np.zeros((0, 0), bool), points=np.zeros((0, 3), np.float32),
            colors=np.zeros((0, 3), np.uint8), point_confidence=np.zeros((0,), np.float32), point_weights=None,
        ) for i, fr in enumerate(outputs.frames)]

    def _result(self, fr: BufferedFrame, pose: np.ndarray, est: ScaleEstimate, K_model: np.ndarray, window_index: int,
                provisional: bool, **geometry: Any) -> FrameResult:
        """The FrameResult of frame `fr`: `pose` (4, 4) in model scale, scaled by `est`; `geometry`
        the per-pixel / per-point fields, already scaled."""
        T = pose.copy()
        T[:3, 3] *= est.scale
        known = fr.K is not None and self.config.use_known_intrinsics
        return FrameResult(
            index=fr.index, stamp_ns=fr.stamp_ns, T_world_cam=T,
            K=fr.K.copy() if known else model_to_original(K_model, fr.geometry), K_model=K_model,
            image_size=fr.geometry.original_size, model_size=fr.geometry.model_size,
            scale=est.scale, scale_std=est.std, scale_valid=est.valid, window_index=window_index,
            provisional=provisional, intrinsics_known=known, **geometry,
        )

    def _device_outputs(self, pred: WindowPrediction, rgb: torch.Tensor, start: int, end: int) -> dict:
        """Per-frame outputs of window frames [start, end) as tensors on the model's device:
        depth / confidence / valid (n, h, w), K_model (n, 3, 3) float64, and the valid pixels'
        points (M, 3), colors (M, 3) uint8, point_confidence (M,) with per-frame `counts` (n,) —
        or, with `point_voxel_size`, their per-frame voxel merge plus `weights` (M,)."""
        cfg = self.config
        yield_point()  # the masks and the point selection are a window's worth of kernels too
        local = pred.local_points[0, start:end]
        world = pred.points[0, start:end]
        conf = torch.nan_to_num(torch.sigmoid(pred.conf[0, start:end, ..., 0]), nan=0.0)
        finite = torch.isfinite(world).all(dim=-1) & torch.isfinite(local).all(dim=-1) & (local[..., 2] > 0)
        valid = finite & (conf >= cfg.conf_threshold)
        if cfg.conf_percentile > 0:
            valid &= conf >= _percentile_cuts(conf, finite, cfg.conf_percentile)[:, None, None]
        depth = local[..., 2]
        out = {
            "depth": torch.where(torch.isfinite(depth), depth, torch.full_like(depth, float("nan"))),
            "confidence": conf,
            "valid": valid,
            "K_model": estimate_intrinsics_batch(local, valid),
        }
        colors = rgb[start:end]
        if cfg.point_voxel_size > 0:
            from loger_core.mapping.voxel_downsample import downsample_frames

            vox = downsample_frames(world, colors, conf, valid, cfg.point_voxel_size)
            out.update(points=vox.points, colors=vox.colors, point_confidence=vox.confidence,
                       weights=vox.weights, counts=vox.frame_counts)
        else:
            out.update(points=world[valid], colors=colors[valid], point_confidence=conf[valid],
                       counts=valid.flatten(1).sum(1))
        return out


def _finish_camera(pred: WindowPrediction) -> WindowPrediction:
    """`pred` with poses and world points, from a raw camera output (`raw_camera`) if it has one."""
    if pred.points is not None:
        return pred
    poses, points = finish_raw_camera(pred.local_points, pred.camera_poses)
    return WindowPrediction(pred.local_points, pred.conf, poses, points)


def _percentile_cuts(values: torch.Tensor, mask: torch.Tensor, q: float, by_sort: Optional[bool] = None) -> torch.Tensor:
    """(n,) float64: for each frame the q-th percentile of `values[i][mask[i]]` (numpy's linear
    rule), -inf where the mask is empty, so that every value passes. values, mask: (n, h, w).
    One host read (the per-frame counts); the selections stay on the device.
    by_sort: one sort of all frames (default on CUDA, where a k-th value selection costs about
    1.3 ms per 141k-value frame on an H100, a quarter of the stream's GPU time at 504x280) instead of
    two selections per frame (the CPU default: there a sort costs more). Both give the same values."""
    flat = values.flatten(1)
    masked = torch.where(mask.flatten(1), flat, torch.full_like(flat, float("inf")))
    counts = mask.flatten(1).sum(1).tolist()
    if by_sort if by_sort is not None else flat.is_cuda:
        return _sorted_percentiles(masked.sort(dim=1).values, q, counts)
    cuts = torch.full((flat.shape[0],), float("-inf"), dtype=torch.float64, device=flat.device)
    for i, n in enumerate(counts):
        if n:
            cuts[i] = _percentile(masked[i], q, n)
    return cuts


def _sorted_percentiles(ordered: torch.Tensor, q: float, counts: list[int]) -> torch.Tensor:
    """`_percentile` of each row of `ordered` (n, m) (ascending, +inf padding after the first
    counts[i]) in one gather; -inf for empty rows."""
    n = np.asarray(counts, dtype=np.int64)
    pos = (q / 100.0) * np.maximum(n - 1, 0)
    lo = pos.astype(np.int64)
    frac = pos - lo
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    idx = torch.from_numpy(np.stack([lo, hi], axis=1)).to(ordered.device)
    v = ordered.gather(1, idx).double()
    frac_t = torch.from_numpy(frac).to(ordered.device)
    cuts = torch.where(frac_t == 0.0, v[:, 0], v[:, 0] + (v[:, 1] - v[:, 0]) * frac_t)
    return torch.where(torch.from_numpy(n > 0).to(ordered.device), cuts, torch.full_like(cuts, float("-inf")))


def _percentile(values: torch.Tensor, q: float, n: Optional[int] = None) -> torch.Tensor:
    """Linear-interpolated q-th percentile of the `n` smallest entries of a 1-D tensor (all of
    them by default; larger entries may be +inf padding) by numpy's default rule, with two O(n)
    selections: torch.quantile sorts, which costs more than the rest of a frame on the CPU."""
    n = values.numel() if n is None else n
    pos = (q / 100.0) * (n - 1)
    lo = int(pos)
    frac = pos - lo
    v_lo = values.kthvalue(lo + 1).values.double()
    if frac == 0.0 or lo + 1 >= n:
        return v_lo
    v_hi = values.kthvalue(lo + 2).values.double()
    return v_lo + (v_hi - v_lo) * frac


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
