"""Diagnostics of the mapping pipeline: its cumulative counters (:class:`CoreCounters`), every
diagnostics key and value (rates in Hz, latencies in ms, memory in MiB), the ``/diagnostics``
level and message, and the input-silence watchdog (no image for ``input_timeout_s``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from loger_core.pipeline.errors import DROP_REASONS
from loger_core.pipeline.telemetry import gpu_memory_mb

__all__ = ["CoreCounters", "PipelineDiagnostics"]

Publication = Any  # what the emitter returns (see loger_core.pipeline.core)


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


class PipelineDiagnostics:
    """Mixin of :class:`~loger_core.pipeline.core.MappingPipeline`: diagnostics and the input
    watchdog. Reads the pipeline's counters, meters, queue, fusion / grid / mapper, reconstructor
    stats, decoder and mount under its ``_lock``; ``_last_image_ns`` / ``_watch_since_ns`` are
    monotonic-clock ns."""

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
        policy = getattr(self, "backpressure", None)
        if policy is not None:  # lossless mode: how often the source was paused, how full the queue got
            values.update({f"lossless_{k}": v for k, v in policy.stats().items()})
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
        policy = getattr(self, "backpressure", None)
        if policy is not None and policy.paused:  # lossless: the node paused the source itself
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
