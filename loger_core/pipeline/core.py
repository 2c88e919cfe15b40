"""The mapping node's logic without ROS: queueing, dropping, frame bookkeeping, scale wiring,
map updates and what to publish when.

Data flow
    ROS callbacks call ``MappingCore.on_image`` (loger_ros; :meth:`MappingPipeline.on_frame` without ROS) (and ``on_camera_info`` / ``on_depth`` /
    ``on_odometry``). They never block and never raise: an image is put on a bounded
    drop-oldest queue with its receive time; side inputs are validated into small buffers.
    The inference thread (:meth:`start`, or a caller looping :meth:`process_next`, as replay
    does) takes one queued image at a time: decode -> pair depth/odometry -> push into the
    :class:`~loger_core.stream.StreamingReconstructor` -> turn the returned provisional and
    committed results into odometry and TF :class:`Publication` records at once and extend the
    committed trajectory. Fusing committed points into the :class:`~loger_core.mapping.voxel_map.VoxelMap`
    costs about as much CPU as the network's window on a GPU, so it runs on a second thread
    (the mapping thread) fed by a short queue of committed windows; that thread also builds the
    path and latest-window cloud messages and publishes the map when :meth:`periodic` finds it
    due. Without threads (replay, tests) the same work runs inline, in the same order.

Failures
    A bad message, a refused frame or an inference error is a logged, counted drop
    (:data:`DROP_REASONS`); map and trajectory are only changed by committed results, so a
    bad frame never loses map data. Nothing escapes the callbacks or the worker loop.

Latency
    Frame-to-odometry latency is measured from the image callback (receive time on the
    monotonic clock) to the moment that frame's first odometry message is handed to the sink.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from loger_core.io.trajectory import Trajectory
from loger_core.model.selection import ModelSelection
from loger_core.io.session import SessionError
from loger_core.stream import FrameResult, StreamingReconstructor, StreamInputError, WarmUpReport, warm_up, warm_up_wanted
from loger_core.pipeline.errors import DROP_REASONS, CoreError
from loger_core.pipeline.extrinsics import CameraMount, LookupFn
from loger_core.pipeline.frame_queue import DropOldestQueue
from loger_core.pipeline.grid_mapping import GridMapping
from loger_core.pipeline.inputs import DecodedImage, FrameDecoder, FrameInput, NumpyDecoder
from loger_core.pipeline.mapper import FrameConsumer, Mapper
from loger_core.pipeline.checks import TransformError, validate_rigid_transform
from loger_core.pipeline.map_fusion import MapFusion, MapJob
from loger_core.pipeline.outputs import SavedOutputs, save_map_and_trajectory
from loger_core.pipeline.pose_tracker import PoseTracker, TrackedPose
from loger_core.pipeline.records import Emitter, RecordEmitter
from loger_core.pipeline.session_keeper import SessionKeeper
from loger_core.pipeline.telemetry import LatencyStats, RateMeter, gpu_memory_mb

__all__ = ["CoreCounters", "MappingPipeline"]

Publication = Any  # what the emitter returns (a loger_ros Publication in the node, an OutputRecord without ROS)

# Pose confidence handed to the covariance model: committed poses are nominal, provisional ones
# (one uncommitted pass, later superseded) get twice the standard deviation.
_CONFIDENCE = {False: 1.0, True: 0.5}
_WARN_PERIOD_S = 5.0


@dataclass
class _QueuedImage:
    msg: Any
    compressed: bool
    receive_ns: int


@dataclass
class CoreCounters:
    """Cumulative counters (reported in diagnostics; ``dropped`` keys are :data:`DROP_REASONS`)."""

    received: int = 0
    processed: int = 0
    committed: int = 0
    odom_published: int = 0
    provisional_published: int = 0
    odometry_skipped: int = 0
    dropped: dict = field(default_factory=lambda: {reason: 0 for reason in DROP_REASONS})
    invalid_camera_info: int = 0
    invalid_depth: int = 0
    invalid_odometry: int = 0
    camera_info_mismatch: int = 0
    result_errors: int = 0
    resets: int = 0

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class _Throttled:
    """Logs each key at most once per period (repeated drops would flood the log)."""

    def __init__(self, logger: Any, period_s: float, clock: Callable[[], int]) -> None:
        self._log, self._period_ns, self._clock = logger, int(period_s * 1e9), clock
        self._last: dict[str, int] = {}

    def __call__(self, level: str, key: str, text: str) -> None:
        now = self._clock()
        if key in self._last and now - self._last[key] < self._period_ns:
            return
        self._last[key] = now
        getattr(self._log, level)(text)


class MappingPipeline:
    """ROS-free core of ``loger_node``, ``loger-replay`` and ``loger-batch`` (see the module docstring).

    ``loger_ros.mapping_core.MappingCore`` is this pipeline with ROS messages in (its callbacks)
    and out (its emitter builds the messages).

    Args:
        params: node parameters (``loger_ros.params.NodeParams`` or an object with its fields).
        emitter: makes the output records (:class:`~loger_core.pipeline.records.Emitter`; default
            :class:`~loger_core.pipeline.records.RecordEmitter`).
        decoder: turns queued payloads into numpy frames (default :class:`NumpyDecoder`, for
            :meth:`on_frame`).
        selection: the model selection (None: a caller-built reconstructor brings its model).
        consumer: the back end offered every committed frame (:class:`~loger_core.pipeline.mapper.FrameConsumer`).
        reconstructor: a ready streaming reconstructor (tests, replay); default: built from
            ``params.stream_config()`` (loads the checkpoint).
        lookup: TF lookup ``(target, source, stamp_ns or None) -> T_target_source or None``.
        logger: ``debug/info/warning/error`` methods taking one string (rclpy logger or logging).
        monotonic_ns: clock for latency and rates (injectable for tests).
    """

    def __init__(
        self,
        params: Any,
        emitter: Optional[Emitter] = None,
        *,
        decoder: Optional[FrameDecoder] = None,
        selection: Optional[ModelSelection] = None,
        consumer: Optional[FrameConsumer] = None,
        reconstructor: Optional[StreamingReconstructor] = None,
        lookup: Optional[LookupFn] = None,
        logger: Any = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.params = params
        self.log = logger if logger is not None else logging.getLogger("loger_ros.core")
        self._now = monotonic_ns
        self._warn = _Throttled(self.log, _WARN_PERIOD_S, monotonic_ns)
        self.builder = emitter if emitter is not None else RecordEmitter()
        self.selection = selection
        self.reconstructor = (
            reconstructor if reconstructor is not None else StreamingReconstructor(params.stream_config(self.selection))
        )
        options = getattr(self.reconstructor, "options", None)
        self.window_size = int(getattr(options, "window_size", 0)) or params.effective_window_size(self.selection)
        warning = self.selection.warning() if self.selection is not None else None
        if warning:
            self.log.warning(warning)
        self._lookup = lookup
        self.queue: DropOldestQueue[_QueuedImage] = DropOldestQueue(params.queue_size)
        self.decoder = decoder if decoder is not None else NumpyDecoder()
        self.mount = CameraMount(params.base_frame, lookup, self.log)
        self.tracker = PoseTracker(params.tf_mode)
        self.fusion = MapFusion(params.map_config(), self.builder, params.map_frame, params.cloud_max_points, self.log,
                                device=params.resolved_map_device())
        self.grid: Optional[GridMapping] = None
        if params.grid_enabled:
            self.grid = GridMapping(params.grid_config(), self.builder, params.map_frame, params.grid_publish_period_s)
            self.fusion.grid = self.grid
        # The one commit path (trajectory, map fusion, grid, back-end hook) that every tool shares.
        self.mapper = Mapper(self.fusion, path_max_poses=params.path_max_poses, consumer=consumer)
        self._grid_mount_warned = False
        self.counters = CoreCounters()
        self.latency = LatencyStats()
        self.rate_in = RateMeter()
        self.rate_odom = RateMeter()
        self.rate_processed = RateMeter()
        self.scale_source = params.resolved_scale_source
        self._lock = threading.RLock()  # map, trajectory, counters, stamps
        self.warm_up_report: Optional[WarmUpReport] = None
        self._receive_ns: dict[int, int] = {}
        self._last_stamp: Optional[int] = None
        self._scale_estimate: Any = None
        self._last_odom: Optional[tuple[int, np.ndarray]] = None
        self._camera_frame: Optional[str] = None
        self._finished = False
        self._intake_closed = False
        self._reset_requested = threading.Event()
        self._last_diag_dropped = 0
        self._last_diag_errors = 0
        # Input watchdog: the last image's arrival and since when images are expected (None: not now).
        self._last_image_ns: Optional[int] = None
        self._watch_since_ns: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        # Mapping sessions: each part of the state is a named component; a part registered here
        # (before the resume below) is saved and restored with the others.
        self.sessions = SessionKeeper(self)
        self.session_parts = self.sessions.default_parts()
        self.sessions.resume(params.resume_session)

    # ================================================================ callbacks
    def on_frame(self, frame: FrameInput) -> None:
        """Queue a numpy frame (with :class:`NumpyDecoder`; never blocks; a full queue drops its
        oldest frame; after :meth:`stop_intake` every frame is dropped)."""
        self._enqueue(frame, False)

    def _enqueue(self, payload: Any, compressed: bool, check: Optional[Callable[[Any], Any]] = None) -> None:
        """Queue a payload for the decoder; ``check(payload)`` (raising one of ``decoder.errors``)
        refuses an undecodable one before it takes a queue slot."""
        now = self._now()
        self.rate_in.tick(now)
        with self._lock:
            self.counters.received += 1
            self._last_image_ns = now
        if self._intake_closed:
            self._count_drop("shutdown", "dropped an image that arrived while the node is shutting down")
            return
        if check is not None:
            try:
                check(payload)
            except self.decoder.errors as err:
                self._count_drop("decode", f"dropped an undecodable image: {err}", getattr(err, "field", None) or "")
                return
        if self.queue.put(_QueuedImage(payload, bool(compressed), now)) is not None:
            self._count_drop("queue_full", f"input queue full ({self.params.queue_size} frames): "
                             "dropped the oldest waiting frame (inference is slower than the camera)")

    def request_reset(self) -> str:
        """Ask the inference thread to restart the reconstruction before its next frame."""
        self._reset_requested.set()
        what = "network memory, map and path" if self.params.reset_clears_map else "network memory (map kept)"
        return f"reset of the {what} scheduled before the next frame"

    # =============================================================== processing
    def process_next(self, timeout_s: Optional[float] = 0.0) -> list[Publication]:
        """Process one queued image (waiting up to ``timeout_s``); returns what to publish."""
        pubs: list[Publication] = []
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            pubs += self._apply_reset()
        item = self.queue.get(timeout_s)
        if item is not None:
            pubs += self._process(item)
        pubs += self._poll_windows()
        if not self.fusion.threaded:  # no mapping thread: fuse inline, after this frame's odometry
            pubs += self.fusion.run_pending()
        return pubs + self.sessions.maybe_autosave()

    def process_all(self) -> list[Publication]:
        """Process every queued image (synchronous use: replay, tests)."""
        pubs: list[Publication] = []
        while len(self.queue) or self._reset_requested.is_set():
            pubs += self.process_next(0.0)
        return pubs + (self.fusion.run_pending() if not self.fusion.threaded else [])

    def flush(self) -> list[Publication]:
        """End of stream: process what is queued, commit the frames still in the network's window and
        publish the final map.

        Afterwards images are dropped ('after_flush') until :meth:`request_reset`.
        """
        pubs = self.process_all()
        return pubs + self._finish(commit_window=True)

    def stop_intake(self) -> int:
        """Shutdown, step 1: take no more images (later ones are dropped as 'shutdown') and drop the
        queued ones; returns how many were dropped from the queue. Never blocks for long."""
        self._intake_closed = True
        dropped = self.queue.clear()
        if dropped:
            with self._lock:
                self.counters.dropped["shutdown"] += dropped
        return dropped

    def finish(self, partial_window: str = "finish") -> list[Publication]:
        """Shutdown, step 3 (after :meth:`stop_intake` and :meth:`stop`): without processing queued
        images, either commit the frames in the network's incomplete window with one last window
        pass (``partial_window`` 'finish') or discard them ('drop'); wait for the map fusion and
        return what is left to publish (the last poses and the final map)."""
        if partial_window not in ("finish", "drop"):
            raise CoreError(f"partial_window {partial_window!r} must be 'finish' or 'drop'")
        dropped = self.queue.clear()
        if dropped:
            with self._lock:
                self.counters.dropped["shutdown"] += dropped
        pubs: list[Publication] = []
        if self.sessions.enabled and not self._finished:
            # Before the last window pass: the session keeps the incomplete window's frames, so a
            # resumed node commits them exactly as an uninterrupted one would have.
            pubs += self.save_session(reason="shutdown")[0]
        return pubs + self._finish(commit_window=partial_window == "finish")

    def resume_session(self, path: str) -> bool:
        """Continue the session at ``path`` (as the ``resume_session`` parameter does at start-up), e.g.
        after registering another part in :attr:`session_parts`; only before the first frame. False
        when it was refused (the reason is logged and kept in ``sessions.resume_error``)."""
        if self.counters.received or self.sessions.resumed_from is not None:
            raise CoreError("resume_session: the core has already taken frames or resumed a session")
        return self.sessions.resume(path)

    def save_session(self, path: Optional[str] = None, reason: str = "request") -> tuple[list[Publication], Any]:
        """Capture the mapping session and write it to ``path`` (default: the autosave target) on the
        calling thread; returns the publications of windows drained for it and the
        :class:`~loger_core.pipeline.session_keeper.SavedSession` (None when it could not be captured or
        written: the reason is logged). Call between frames (inference thread, or after :meth:`stop`)."""
        try:
            return self.sessions.save(path, reason)
        except SessionError as err:
            self.log.error(f"session not saved ({reason}): {err}")
        except Exception as err:  # never let a save break the shutdown
            self.log.error(f"session not saved ({reason}): {err!r}\n{traceback.format_exc()}")
        return [], None

    def _finish(self, commit_window: bool) -> list[Publication]:
        pubs: list[Publication] = []
        if self._finished:
            return pubs
        self._finished = True
        results = []
        if commit_window:
            try:
                results = self.reconstructor.flush()
            except Exception as err:  # a failing final window must not lose the map built so far
                self.log.error(f"flushing the last window failed, its frames are lost: {err!r}")
            self._count_window_errors()
        else:
            lost = int(getattr(self.reconstructor, "buffered_frames", 0))
            if lost:
                self.log.info(f"shutdown: discarding the {lost} frame(s) of the incomplete window (partial window 'drop')")
        pubs += self._safe_handle(results)
        if self.fusion.threaded:
            self.fusion.wait_idle()
        else:
            pubs += self.fusion.run_pending()
        if self.grid is not None:
            pubs.append(self.grid.publication(self._last_stamp or 0, force=True))
        final_map = self.fusion.publication(self._last_stamp or 0, force=True)  # last: the map is what counts
        return pubs + ([final_map] if final_map is not None else [])

    def _process(self, item: _QueuedImage) -> list[Publication]:
        try:
            image = self.decoder.decode_image(item.msg, item.compressed)
        except self.decoder.errors as err:
            # Throttled per offending field, so a new kind of problem is always reported once.
            self._count_drop("decode", f"dropped an undecodable image: {err}", getattr(err, "field", None) or "")
            return []
        if image.camera_info_mismatch:
            with self._lock:
                self.counters.camera_info_mismatch += 1
            camera = getattr(self.decoder, "camera", None)
            self._warn("warning", "camera_info_mismatch",
                       f"CameraInfo is {camera.width}x{camera.height} but the image is "
                       f"{image.rgb.shape[1]}x{image.rgb.shape[0]}: its intrinsics are not used")
        if self._finished:
            self._count_drop("after_flush", "dropped an image that arrived after the stream was finished")
            return []
        if self._last_stamp is not None and image.stamp_ns <= self._last_stamp:
            self._count_drop("out_of_order", f"dropped an out-of-order image: stamp {image.stamp_ns} ns is not "
                             f"after the previous frame's {self._last_stamp} ns")
            return []
        self._camera_frame = self.params.camera_frame or image.frame_id
        T_base_cam = self.mount.current(self._camera_frame)
        depth, odom = self._side_inputs(image, T_base_cam)
        with self._lock:
            self._receive_ns[image.stamp_ns] = item.receive_ns
        self.mapper.remember_image(image.stamp_ns, image.rgb)
        try:
            # Frames waiting behind this one come first: a low-latency pass now would delay them,
            # and a full queue drops camera frames. The pass runs once the queue is drained.
            results = self.reconstructor.push(image.rgb, image.stamp_ns, K=image.K, depth=depth, odom=odom,
                                              provisional=len(self.queue) == 0)
        except StreamInputError as err:
            self._forget_receive(image.stamp_ns)
            self.mapper.forget_image(image.stamp_ns)
            self._count_drop("rejected", f"the streaming core refused the image at {image.stamp_ns} ns: {err}")
            return []
        except Exception as err:  # e.g. CUDA out of memory: drop the frame, keep the node alive
            self._forget_receive(image.stamp_ns)
            self.mapper.forget_image(image.stamp_ns)
            self._count_drop("inference_error", f"inference failed on the image at {image.stamp_ns} ns: {err!r}",
                             type(err).__name__, level="error")
            self.log.debug(traceback.format_exc())
            return self._recover_after_error()
        self._last_stamp = image.stamp_ns
        self.rate_processed.tick(self._now())
        # Read here, on the inference thread: the scale source is not safe to read while it updates.
        scale = self.reconstructor.scale_estimate() if hasattr(self.reconstructor, "scale_estimate") else None
        with self._lock:
            self.counters.processed += 1
            self._scale_estimate = scale
        return self._safe_handle(results)

    def _poll_windows(self) -> list[Publication]:
        """Committed windows that finished on the reconstructor's worker (async_windows) since the
        last frame, and the windows that failed there (their new frames are counted as dropped)."""
        poll = getattr(self.reconstructor, "poll", None)
        if poll is None:
            return []
        try:
            results = poll()
        except Exception as err:  # noqa: BLE001 - must not kill the inference loop
            self.log.error(f"polling the streaming core failed: {err!r}")
            return []
        self._count_window_errors()
        return self._safe_handle(results) if results else []

    def _count_window_errors(self) -> None:
        take = getattr(self.reconstructor, "take_errors", None)
        for message in take() if take is not None else []:
            self._count_drop("inference_error", f"inference failed: {message}", "window", level="error")

    def _side_inputs(self, image: DecodedImage, T_base_cam: np.ndarray) -> tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        depth = odom = None
        if self.scale_source == "depth":
            try:
                depth = self.decoder.depth_for(image)
            except self.decoder.errors as err:
                with self._lock:
                    self.counters.invalid_depth += 1
                self._warn("warning", "depth_pair", f"depth image ignored for scale: {err}")
        elif self.scale_source == "odometry":
            T_odom_base = self.decoder.odometry_for(image.stamp_ns)
            if T_odom_base is not None:
                odom = T_odom_base @ T_base_cam  # the camera's pose in the external odometry frame
        return depth, odom

    def _recover_after_error(self) -> list[Publication]:
        # An exception inside a window pass can leave the reconstructor holding a full window it
        # will never run; restarting the network memory is the only way forward then.
        buffered = getattr(self.reconstructor, "buffered_frames", 0)
        if buffered >= self.window_size:
            self.log.warning("the streaming core is stuck with a full window after the error: restarting its memory")
            return self._apply_reset(clear_map=False)
        return []

    def _forget_receive(self, stamp_ns: int) -> None:
        with self._lock:
            self._receive_ns.pop(stamp_ns, None)

    def _count_drop(self, reason: str, text: str, detail: str = "", level: str = "warning") -> None:
        with self._lock:
            self.counters.dropped[reason] += 1
            total = self.counters.dropped[reason]
        self._warn(level, f"drop_{reason}_{detail}", f"{text} [dropped_{reason} = {total}]")

    # ================================================================= results
    def _safe_handle(self, results: list[FrameResult]) -> list[Publication]:
        try:
            return self._handle_results(results)
        except Exception as err:  # e.g. a pose that is not a rotation: lose these messages, not the node
            with self._lock:
                self.counters.result_errors += 1
            self._warn("error", f"results_{type(err).__name__}", f"could not publish a result: {err!r}")
            self.log.debug(traceback.format_exc())
            return []

    def _valid_pose(self, result: FrameResult) -> bool:
        try:
            validate_rigid_transform(result.T_world_cam, f"T_world_cam of the frame at {result.stamp_ns} ns")
            return True
        except TransformError as err:
            with self._lock:
                self.counters.result_errors += 1
            self._warn("error", "invalid_pose", f"ignoring a network result: {err}")
            return False

    def _handle_results(self, results: list[FrameResult]) -> list[Publication]:
        # A pose that is not rigid would poison the trajectory, the path and every later odometry.
        results = [r for r in results if self._valid_pose(r)]
        if not results:
            return []
        p = self.params
        camera_frame = self._camera_frame or p.camera_frame
        if not self.tracker.anchored:
            first = min(results, key=lambda r: r.stamp_ns)
            self.tracker.anchor(first.T_world_cam, self.mount.freeze(camera_frame))
        T_base_cam = self.mount.current(camera_frame)
        update = self.tracker.update(
            [(r.stamp_ns, r.T_world_cam, r.provisional) for r in results], T_base_cam, self._external_odom
        )
        pubs = self._odometry_publications(update.new)
        if update.skipped:
            with self._lock:
                self.counters.odometry_skipped += len(update.skipped)
        if p.publish_tf:
            tf = self._tf_publication(update.new, update.T_map_odom)
            if tf is not None:
                pubs.append(tf)
        committed = [r for r in results if not r.provisional]
        if committed:
            pubs += self._commit(committed, T_base_cam)
        return pubs

    def _external_odom(self, stamp_ns: int) -> Optional[np.ndarray]:
        if self._lookup is None:
            return None
        p = self.params
        try:
            T = self._lookup(p.odom_frame, p.base_frame, stamp_ns)
            return None if T is None else validate_rigid_transform(T, f"TF {p.odom_frame} <- {p.base_frame}")
        except Exception as err:
            self._warn("warning", "external_odom", f"no {p.odom_frame} -> {p.base_frame} transform at {stamp_ns} ns "
                       f"(tf_mode map_to_odom needs another node to publish it): {err}")
            return None

    def _odometry_publications(self, poses: list[TrackedPose]) -> list[Publication]:
        p = self.params
        pubs = []
        for pose in poses:
            if p.tf_mode == "odom_to_base":
                frame, T = p.odom_frame, pose.T_odom_base
            else:
                frame, T = p.map_frame, pose.T_map_base
            T_prev = dt = None
            if self._last_odom is not None and pose.stamp_ns > self._last_odom[0]:
                T_prev, dt = self._last_odom[1], (pose.stamp_ns - self._last_odom[0]) * 1e-9
            pubs.append(self.builder.odometry(pose.stamp_ns, frame, p.base_frame, T, T_prev, dt,
                                              _CONFIDENCE[pose.provisional]))
            self._last_odom = (pose.stamp_ns, T)
            now = self._now()
            self.rate_odom.tick(now)
            with self._lock:
                self.counters.odom_published += 1
                self.counters.provisional_published += int(pose.provisional)
                received = self._receive_ns.pop(pose.stamp_ns, None)
            if received is not None:
                self.latency.add(now - received)
        return pubs

    def _tf_publication(self, poses: list[TrackedPose], T_map_odom: Optional[np.ndarray]) -> Optional[Publication]:
        if not poses:
            return None
        p = self.params
        items = []
        if p.tf_mode == "odom_to_base":
            items += [(pose.stamp_ns, p.odom_frame, p.base_frame, pose.T_odom_base) for pose in poses]
        if T_map_odom is not None:
            items.append((poses[-1].stamp_ns, p.map_frame, p.odom_frame, T_map_odom))
        return self.builder.transforms(items)

    def _commit(self, committed: list[FrameResult], T_base_cam: np.ndarray) -> list[Publication]:
        """Extend the trajectory now; queue the points (and the path/cloud messages) for the mapper."""
        with self._lock:
            for r in committed:
                self._receive_ns.pop(r.stamp_ns, None)
            self.counters.committed += len(committed)
            newest = max(int(r.stamp_ns) for r in committed)
            # Frames older than the newest commit can no longer get odometry: forget their receive times.
            for stamp in [s for s in self._receive_ns if s <= newest]:
                del self._receive_ns[stamp]
        self._warn_grid_without_mount()
        self.mapper.commit(committed, self.tracker.T_map_world, T_base_cam)
        return self._correction_publications()

    def _correction_publications(self) -> list[Publication]:
        """A back end's new correction (applied to the trajectory and map by the mapper) moves the map
        frame's view of the network's world: map -> odom absorbs it (odom -> base_link stays continuous)."""
        if self.mapper.consumer is None or not self.tracker.set_correction(self.mapper.correction):
            return []
        last = self.tracker.last_published
        T_map_odom = self.tracker.T_map_odom
        if not self.params.publish_tf or last is None or T_map_odom is None:
            return []
        return [self.builder.transforms([(last.stamp_ns, self.params.map_frame, self.params.odom_frame, T_map_odom)])]

    def _warn_grid_without_mount(self) -> None:
        if self.grid is not None and self.mount.source == "identity_fallback" and not self._grid_mount_warned:
            self._grid_mount_warned = True
            self.log.warning(f"~/grid measures heights along {self.params.base_frame}'s z axis, but the camera mount "
                             f"is unknown ({self.params.base_frame} is the camera optical frame, z forward): the grid "
                             "is not meaningful until TF has the mount (publish base_frame -> camera frame)")

    # ================================================================== resets
    def _apply_reset(self, clear_map: Optional[bool] = None) -> list[Publication]:
        clear_map = self.params.reset_clears_map if clear_map is None else clear_map
        # Windows of the old world still running on the worker are mapped before the world restarts.
        pending = self.reconstructor.reset() or []
        early = self._safe_handle(pending) if pending else []
        self.tracker.restart_world()
        consumer = self.mapper.consumer
        if consumer is not None and hasattr(consumer, "reset"):
            consumer.reset(keep_map=not clear_map)  # the back end starts again in the new world
        self.mapper.correction = np.eye(4)
        self._finished = False
        pubs: list[Publication] = []
        with self._lock:
            self.counters.resets += 1
            if clear_map:
                self.fusion.clear()
                self.mapper.clear()
        self.log.info(f"reconstruction reset ({'map and path cleared' if clear_map else 'map kept'})")
        pubs += early
        if clear_map and self._last_stamp is not None:
            pubs.append(self.builder.path(self._last_stamp, self.params.map_frame, [], np.zeros((0, 4, 4))))
            cleared = self.fusion.publication(self._last_stamp, force=True)
            if cleared is not None:
                pubs.append(cleared)
            if self.grid is not None:
                pubs.append(self.grid.publication(self._last_stamp, force=True))
        return pubs

    # ============================================================ map / output
    def periodic(self, now_ns: int) -> list[Publication]:
        """The map when ``map_publish_period_s`` of the node clock (``now_ns``) has passed, the grid when
        ``grid_publish_period_s`` has (synchronous use)."""
        pubs = self.fusion.periodic(now_ns, self.params.map_publish_period_s)
        return pubs + (self.grid.periodic(now_ns) if self.grid is not None else [])

    def trajectory(self, body: str = "base") -> Trajectory:
        """Committed poses in the map frame: ``body`` 'base' (T_map_base) or 'camera' (T_map_cam)."""
        if body not in ("base", "camera"):
            raise CoreError(f"trajectory body {body!r} must be 'base' or 'camera'")
        return self.mapper.trajectory(body)

    def map_snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``points (M, 3) float32`` (map frame), ``colors (M, 3) uint8``, ``confidence (M,) float32``."""
        return self.fusion.snapshot()

    def save_map(self, directory: Optional[str] = None) -> SavedOutputs:
        """Write ``map.ply`` and ``trajectory.tum`` (base_link in the map frame) to ``directory``
        (default ``output_dir``), and with the grid on ``map.pgm`` + ``map.yaml`` (nav2_map_server;
        not while the grid is empty). The map is copied under the lock and written outside it."""
        if self.fusion.threaded:
            self.fusion.wait_idle()  # committed windows still queued for fusion belong in the saved map
        points, colors, conf = self.map_snapshot()
        trajectory = self.trajectory("base")
        target = directory if directory is not None else self.params.resolved_output_dir
        saved = save_map_and_trajectory(target, points, colors, conf, trajectory)
        if self.grid is not None:
            written = self.grid.save(saved.map_ply.parent)
            if written is not None:
                saved.grid_pgm, saved.grid_yaml = written
        return saved

    # ============================================================= diagnostics
    def apply_live_params(self, params: Any) -> None:
        """Takes the `LIVE_PARAMETERS` of ``params`` (checked NodeParams) while the node runs: the
        low-latency passes' rate, budget and anchors go to the stream from the next frame on."""
        stream = self.reconstructor
        if hasattr(stream, "set_provisional"):
            stream.set_provisional(params.provisional_every, params.provisional_budget, params.provisional_anchors)
        self.params = params

    def diagnostics_values(self) -> dict[str, Any]:
        """Every diagnostics key and value (rates in Hz, latencies in ms, memory in MiB)."""
        now = self._now()
        lat = self.latency.summary()
        with self._lock:
            c = self.counters
            values: dict[str, Any] = {
                "frames_received": c.received,
                "frames_processed": c.processed,
                "frames_committed": c.committed,
                "odometry_published": c.odom_published,
                "odometry_provisional": c.provisional_published,
                "odometry_skipped": c.odometry_skipped,
                "rate_in_hz": self.rate_in.rate(now),
                "rate_processed_hz": self.rate_processed.rate(now),
                "rate_odometry_hz": self.rate_odom.rate(now),
                "latency_last_ms": lat.last_ms,
                "latency_mean_ms": lat.mean_ms,
                "latency_p95_ms": lat.p95_ms,
                "latency_max_ms": lat.max_ms,
                "queue_depth": len(self.queue),
                "queue_size": self.params.queue_size,
                "dropped_total": c.dropped_total,
                **{f"dropped_{k}": v for k, v in c.dropped.items()},
                "invalid_camera_info": c.invalid_camera_info,
                "invalid_depth": c.invalid_depth,
                "invalid_odometry": c.invalid_odometry,
                "camera_info_mismatch": c.camera_info_mismatch,
                "result_errors": c.result_errors,
                "resets": c.resets,
                "map_points": len(self.fusion),
                "map_device": str(getattr(self.fusion.map, "device", "cpu")),
                "map_backlog_windows": self.fusion.backlog(),
                "trajectory_poses": len(self.mapper),
                "warm_up_s": round(self.warm_up_report.seconds, 2) if self.warm_up_report is not None else float("nan"),
                "last_image_age_s": (round((now - self._last_image_ns) / 1e9, 3) if self._last_image_ns is not None
                                     else float("nan")),
            }
        if self.grid is not None:
            values.update(self.grid.diagnostics())
        backend_stats = getattr(self.mapper.consumer, "stats", None)
        if backend_stats is not None:
            b = backend_stats()
            values.update({f"backend_{k}": b[k] for k in (
                "keyframes", "loop_closures", "loop_candidates", "loop_verified", "steps_pnp", "steps_essential",
                "steps_network_only", "frames_skipped", "keyframe_ms_mean", "optimize_ms_mean") if k in b})
        stats = getattr(self.reconstructor, "stats", None)
        if stats is not None:
            values["stream_windows_run"] = stats.windows_run
            values["stream_frames_dropped_nonfinite"] = stats.frames_dropped_nonfinite
            values["stream_memory_state_mib"] = stats.state_bytes / 2**20
            # Why odometry comes less often than provisional_every asks: passes held back while
            # frames were queued, and passes thinned out by provisional_budget.
            values["stream_provisional_runs"] = stats.provisional_runs
            values["stream_provisional_deferred"] = stats.provisional_deferred
            values["stream_provisional_skipped_budget"] = stats.provisional_skipped_budget
        share = getattr(self.reconstructor, "gpu_share_stats", None)
        if share is not None:
            # What the passes' priority costs the committed windows.
            values["stream_window_holds"] = share.holds
            values["stream_window_held_s"] = round(share.held_s, 3)
        with self._lock:
            est = self._scale_estimate
        if est is not None:
            values.update(scale=est.scale, scale_std=est.std, scale_source=est.source, scale_valid=est.valid)
        allocated, reserved = gpu_memory_mb(str(getattr(self.reconstructor, "device", "cpu")))
        if self.selection is not None:
            values.update(model=self.selection.model, weights=self.selection.describe())
        resolution = getattr(self.reconstructor, "resolution", None)
        values.update(window_size=self.window_size,
                      input_size=f"{resolution[0]}x{resolution[1]}" if resolution else "from the first frame")
        values.update(gpu_memory_allocated_mib=allocated, gpu_memory_reserved_mib=reserved,
                      camera_mount=self.mount.source, camera_info_received=self.decoder.camera is not None)
        return values

    def warm_up(self) -> Optional[WarmUpReport]:
        """Runs the stream's model over throwaway frames when ``params.warm_up`` asks for it ('auto':
        on CUDA), before any camera frame, so that compiling and graph capture do not cost live
        frames. A failure is logged and the node starts anyway (its first windows then compile
        live). Returns the report, or None when nothing ran."""
        rec = self.reconstructor
        if not isinstance(rec, StreamingReconstructor) or not warm_up_wanted(self.params.warm_up, rec.device):
            return None
        self.log.info("warm-up: running the model over throwaway frames before the first camera frame")
        try:
            # Without a fixed network size the camera's decides it: assume the configured camera size.
            size = None if rec.config.resolution is not None else (self.params.warm_up_image_width,
                                                                   self.params.warm_up_image_height)
            report = warm_up(rec.config, rec.model, image_size=size)
        except Exception as err:  # e.g. out of memory: the node is still useful without it
            self.log.warning(f"warm-up failed ({err!r}); the first windows will compile while frames arrive")
            return None
        self.warm_up_report = report
        self.log.info(f"warm-up done in {report.seconds:.1f} s: {report.windows} windows, {report.provisional_passes} "
                      f"provisional passes, {report.window_graph_replays} CUDA-graph replays")
        return report

    def watch_input(self, on: bool) -> None:
        """Images are expected from now on (``on``: the node is active) or not (inactive): see
        `input_silence`. `start` switches it on."""
        with self._lock:
            self._watch_since_ns = self._now() if on else None

    def input_silence(self) -> Optional[str]:
        """Why no image came for longer than ``input_timeout_s`` while images are expected, naming
        the topic; None when images flow (or the watchdog is off / the node inactive)."""
        timeout = self.params.input_timeout_s
        with self._lock:
            since, last = self._watch_since_ns, self._last_image_ns
        if since is None or timeout <= 0:
            return None
        now = self._now()
        topic = self.params.image_topic
        if last is None or last < since:
            waited = (now - since) / 1e9
            if waited <= timeout:
                return None
            if last is None:
                return (f"no image received on {topic} in {waited:.1f} s: is the camera publishing there "
                        "(ros2 topic hz), or does image_topic need a remapping?")
            return f"no image on {topic} for {waited:.1f} s since the node was activated"
        silent = (now - last) / 1e9
        return f"no image on {topic} for {silent:.1f} s (the camera stopped?)" if silent > timeout else None

    def diagnostics(self, stamp_ns: int) -> Publication:
        """``/diagnostics`` message: ERROR when inference failed since the last call; WARN when no image
        came for ``input_timeout_s`` (also logged), when frames were dropped since the last call, the
        camera mount fell back to identity or the weights are the bundled demo model (or synthetic);
        else OK."""
        values = self.diagnostics_values()
        errors = values["dropped_inference_error"]
        dropped = values["dropped_total"]
        silence = self.input_silence()
        if silence is not None:
            self._warn("warning", "input_silence", silence)
        if errors > self._last_diag_errors:
            level, message = "ERROR", f"inference failed on {errors - self._last_diag_errors} frame(s)"
        elif silence is not None:
            level, message = "WARN", silence
        elif dropped > self._last_diag_dropped:
            level, message = "WARN", f"{dropped - self._last_diag_dropped} frame(s) dropped"
        elif self.mount.source == "identity_fallback":
            level, message = "WARN", "camera mount unknown in TF: publishing the camera pose as base_link"
        elif self.selection is not None and self.selection.bundled:
            level, message = "WARN", "bundled demo model (small, synthetic training): poses not fit for navigation"
        elif self.selection is not None and self.selection.synthetic:
            level, message = "WARN", "synthetic (untrained) weights: poses are not meaningful"
        else:
            level, message = "OK", "mapping"
        self._last_diag_errors, self._last_diag_dropped = errors, dropped
        return self.builder.diagnostics(stamp_ns, "loger_node: mapping", "loger", level, message, values)

    # ================================================================ threading
    def start(self, sink: Callable[[Publication], None], clock_ns: Callable[[], int]) -> None:
        """Run the inference loop and the mapping loop on daemon threads; publications go to ``sink``.

        ``clock_ns``: the node clock (ROS time, sim time aware) used for the map period.
        """
        if self._thread is not None:
            raise CoreError(f"{type(self).__name__}.start called twice")
        self._stop.clear()
        self.watch_input(True)
        self.fusion.start(sink, clock_ns, self.params.map_publish_period_s)
        self._thread = threading.Thread(target=self._run, args=(sink,), name="loger-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: Optional[float] = None) -> bool:
        """Stop inference after the current frame, then let the mapper fuse what is queued and stop.
        True when both threads ended in time (afterwards the core runs synchronously again)."""
        self._stop.set()
        self.queue.close()
        ok = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            ok = not self._thread.is_alive()
        return self.fusion.stop(timeout_s) and ok

    def _run(self, sink: Callable[[Publication], None]) -> None:
        while not self._stop.is_set():
            try:
                pubs = self.process_next(timeout_s=0.05)
            except Exception as err:  # a bug must not kill the inference thread
                self.log.error(f"unexpected error in the inference loop: {err!r}\n{traceback.format_exc()}")
                continue
            for pub in pubs:
                try:
                    sink(pub)
                except Exception as err:
                    self._warn("error", f"sink_{pub.channel}", f"publishing on {pub.channel} failed: {err!r}")
