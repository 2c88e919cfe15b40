"""The mapping node's logic without ROS: queueing, dropping, frame bookkeeping, scale wiring,
map updates and what to publish when. (About 560 lines: intake, processing, commit and the
threads belong together; diagnostics, resets, warm-up and outputs live in their own modules.)

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

Modules
    This one holds intake, processing, commits and threads; :class:`MappingPipeline` gets its other
    jobs from mixins: ``diagnostics`` (counters, diagnostics values, input watchdog), ``warm_up``,
    ``resets``, ``pose_outputs`` (odometry / TF records), ``map_outputs`` (map, grid, trajectory).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from loger_core.model.selection import ModelSelection
from loger_core.io.session import SessionError
from loger_core.stream import FrameResult, StreamingReconstructor, StreamInputError, WarmUpReport
from loger_core.pipeline.diagnostics import CoreCounters, PipelineDiagnostics
from loger_core.pipeline.errors import CoreError
from loger_core.pipeline.extrinsics import CameraMount, LookupFn
from loger_core.pipeline.backpressure import BackPressure
from loger_core.pipeline.frame_queue import DropOldestQueue
from loger_core.pipeline.grid_mapping import GridMapping
from loger_core.pipeline.inputs import DecodedImage, FrameDecoder, FrameInput, NumpyDecoder
from loger_core.pipeline.mapper import FrameConsumer, Mapper
from loger_core.pipeline.checks import TransformError, validate_rigid_transform
from loger_core.pipeline.map_fusion import MapFusion
from loger_core.pipeline.map_outputs import MapOutputs
from loger_core.pipeline.pose_outputs import PoseOutputs
from loger_core.pipeline.pose_tracker import PoseTracker
from loger_core.pipeline.records import Emitter, RecordEmitter
from loger_core.pipeline.resets import PipelineResets
from loger_core.pipeline.session_keeper import SessionKeeper
from loger_core.pipeline.telemetry import LatencyStats, RateMeter, ThrottledLog
from loger_core.pipeline.warm_up import PipelineWarmUp

__all__ = ["CoreCounters", "MappingPipeline"]

Publication = Any  # what the emitter returns (a loger_ros Publication in the node, an OutputRecord without ROS)

_WARN_PERIOD_S = 5.0


@dataclass
class _QueuedImage:
    msg: Any
    compressed: bool
    receive_ns: int


class MappingPipeline(PipelineDiagnostics, PipelineWarmUp, PipelineResets, PoseOutputs, MapOutputs):
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
        self._warn = ThrottledLog(self.log, _WARN_PERIOD_S, monotonic_ns)
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
        # Lossless (replaying a bag): the queue never drops; set_flow_control pauses the source instead.
        self.queue: DropOldestQueue[_QueuedImage] = DropOldestQueue(params.queue_size, lossless=params.lossless)
        self.backpressure: Optional[BackPressure] = BackPressure.for_queue(params.queue_size) if params.lossless else None
        self._flow_sink: Optional[Callable[[str], None]] = None
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
        self._loop_marker_version: tuple = (0, 0)
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
        depth = len(self.queue)
        if self.queue.lossless and depth > self.params.queue_size:
            # Nothing is dropped, but nothing bounds the queue either unless the source pauses.
            self._warn("warning", "lossless_overflow",
                       f"lossless: {depth} frames waiting (queue_size {self.params.queue_size}): the source is "
                       "not pausing (no rosbag2 player services?); the queue grows instead of dropping")
        self._flow(depth)

    # ============================================================ flow control
    def set_flow_control(self, sink: Callable[[str], None]) -> None:
        """Lossless mode: call ``sink("pause")`` when the input queue reaches half of ``queue_size``
        and ``sink("resume")`` when it has drained to a quarter (``self.backpressure``, a
        :class:`BackPressure`). The sink is called from the callback and the inference threads and
        must not block (the node sends asynchronous service requests to the rosbag2 player); a
        request that fails is reported with ``self.backpressure.failed(action)`` and asked again on a
        later update."""
        if self.backpressure is None:
            raise CoreError("flow control needs lossless mode (parameter lossless: true)")
        self._flow_sink = sink

    def _flow(self, depth: int) -> None:
        policy, sink = self.backpressure, self._flow_sink
        if policy is None or sink is None or self._intake_closed:  # shutting down: leave the source alone
            return
        action = policy.update(depth)
        if action is not None:
            try:
                sink(action)
            except Exception as err:  # the frame path must not fail on a flow-control request
                policy.failed(action)
                self._warn("warning", "flow_control", f"lossless: could not {action} the source: {err!r}")

    # =============================================================== processing
    def process_next(self, timeout_s: Optional[float] = 0.0) -> list[Publication]:
        """Process one queued image (waiting up to ``timeout_s``); returns what to publish."""
        pubs: list[Publication] = []
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            pubs += self._apply_reset()
        item = self.queue.get(timeout_s)
        # Also on an empty get: a resume that failed is asked again while the source stays paused.
        self._flow(len(self.queue))
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

    def stop_intake(self, keep_queued: bool = False) -> int:
        """Shutdown, step 1: take no more images (later ones are dropped as 'shutdown') and drop the
        queued ones (unless ``keep_queued``: lossless mode, see :meth:`wait_drained`); returns how
        many were dropped from the queue. Never blocks for long."""
        self._intake_closed = True
        if keep_queued:
            return 0
        dropped = self.queue.clear()
        if dropped:
            with self._lock:
                self.counters.dropped["shutdown"] += dropped
        return dropped

    def wait_drained(self, timeout_s: float) -> bool:
        """Shutdown in lossless mode, step 2 (after ``stop_intake(keep_queued=True)``): wait up to
        ``timeout_s`` for the inference thread to take every queued frame (:meth:`stop` then waits
        for the last one); True when the queue is empty."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while len(self.queue) and time.monotonic() < deadline:
            if self._thread is None or not self._thread.is_alive():
                break  # nobody is taking frames: waiting would only cost the timeout
            time.sleep(0.02)
        return not len(self.queue)

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
        pubs += self._final_correction()
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

    def _final_correction(self) -> list[Publication]:
        """End of stream: the back end finishes the frames it was given, then every pose and the map
        take its final estimate (bounded by ``shutdown_timeout_s``)."""
        final = getattr(self.mapper.consumer, "final", None)
        if final is None:
            return []
        try:
            timeout = float(getattr(self.params, "shutdown_timeout_s", 0.0)) or None
            self.mapper.apply_correction(final(timeout))
        except Exception as err:  # noqa: BLE001 - the map built so far must survive a back-end failure
            self.log.error(f"the back end's final correction failed; the map keeps its last correction: {err!r}")
            return []
        finally:
            # The stream is finished: its thread goes (a reset starts a new back end).
            close = getattr(self.mapper.consumer, "close", None)
            if close is not None:
                close()
        return self._correction_publications()

    def _correction_publications(self) -> list[Publication]:
        """A back end's new correction (applied to the trajectory and map by the mapper) moves the map
        frame's view of the network's world: map -> odom absorbs it (odom -> base_link stays continuous)."""
        consumer = self.mapper.consumer
        if consumer is None:
            return []
        pubs = self._loop_markers()
        if not self.tracker.set_correction(self.mapper.correction):
            return pubs
        last = self.tracker.last_published
        T_map_odom = self.tracker.T_map_odom
        if not self.params.publish_tf or last is None or T_map_odom is None:
            return pubs
        return pubs + [self.builder.transforms([(last.stamp_ns, self.params.map_frame, self.params.odom_frame, T_map_odom)])]

    def _loop_markers(self) -> list[Publication]:
        """The closed loops as lines in the map frame, when a new loop was closed or the graph moved them."""
        segments = getattr(self.mapper.consumer, "loop_segments", None)
        if segments is None or not self.tracker.anchored:
            return []
        seg = segments()
        if not len(seg):
            return []
        stats = getattr(self.mapper.consumer, "stats", lambda: {})()
        version = (len(seg), stats.get("keyframes", 0))
        if version == self._loop_marker_version:
            return []
        self._loop_marker_version = version
        T = self.tracker.T_map_world
        pts = seg.reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
        return [self.builder.loop_closures(self._last_stamp or 0, self.params.map_frame, pts.reshape(-1, 2, 3))]

    def _warn_grid_without_mount(self) -> None:
        if self.grid is not None and self.mount.source == "identity_fallback" and not self._grid_mount_warned:
            self._grid_mount_warned = True
            self.log.warning(f"~/grid measures heights along {self.params.base_frame}'s z axis, but the camera mount "
                             f"is unknown ({self.params.base_frame} is the camera optical frame, z forward): the grid "
                             "is not meaningful until TF has the mount (publish base_frame -> camera frame)")

    # ============================================================ live params
    def apply_live_params(self, params: Any) -> None:
        """Takes the `LIVE_PARAMETERS` of ``params`` (checked NodeParams) while the node runs: the
        low-latency passes' rate, budget and anchors go to the stream from the next frame on."""
        stream = self.reconstructor
        if hasattr(stream, "set_provisional"):
            stream.set_provisional(params.provisional_every, params.provisional_budget, params.provisional_anchors)
        self.params = params

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
