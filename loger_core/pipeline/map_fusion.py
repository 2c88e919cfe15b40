"""The global map: committed windows queued for fusion into a :class:`~loger_core.mapping.voxel_map.VoxelMap`.

Why a separate stage: fusing a full-resolution window (29 frames x ~110k points at 504x280)
costs about as much CPU time as the network needs for the window on a GPU. Done on the
inference thread it would halve the frame rate and delay odometry; so the inference thread only
queues committed windows (:meth:`MapFusion.submit`) and a mapping thread (:meth:`start`) fuses
them, builds the latest-window cloud and path messages and publishes the map periodically.
Without the thread (replay, tests) :meth:`run_pending` does the same work inline.

The queue is short (``max_backlog`` windows): when the mapper falls that far behind,
``submit`` waits rather than drop committed points (a map must not lose data). Points are
world-frame points of the network with the map anchor ``T_map_world`` valid when they were
committed. A ``clear`` (reset) discards queued windows of the old map by a generation count.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from loger_core.mapping.voxel_map import MapConfig, MapError, VoxelMap
from loger_core.mapping.torch_storage import TorchVoxelMap
from loger_core.pipeline.records import Emitter

__all__ = ["MapFusion", "MapJob"]

Sink = Callable[[Any], None]


@dataclass
class MapJob:
    """One committed window.

    frames: per frame ``(points (N, 3) float32 world, colors (N, 3) uint8, confidence (N,) float32,
    camera centre (3,) map frame, weights (N,) int32 or None)``; weights are ``FrameResult.point_weights``
    (points already merged per voxel on the model's device, each standing for that many pixels) or
    None (one pixel per point). path: ``(stamps_ns, T_map_base (M, 4, 4))`` of the path message.
    base_poses: ``T_map_base (4, 4)`` of each frame (for the occupancy grid's heights) or None.
    T_map_world None: the points are already in the map frame (no transform, bit for bit).
    """

    T_map_world: Optional[np.ndarray]
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]]
    newest_stamp: int
    path: tuple[list[int], np.ndarray]
    generation: int = 0
    base_poses: Optional[list[np.ndarray]] = None


def make_map(config: MapConfig, device: str = "cpu"):
    """The :class:`VoxelMap` for ``device``: the numpy storage on 'cpu', the torch storage on CUDA."""
    return VoxelMap(config, device)


class MapFusion:
    """Owns the voxel map; see the module docstring.

    Args:
        config: voxel map settings.
        builder: message builder (cloud, path, map messages).
        map_frame: frame of every published cloud and path.
        cloud_max_points: the latest-window cloud is subsampled to this many points.
        logger: ``error``/``warning`` methods taking one string.
        max_backlog: committed windows that may wait for fusion before ``submit`` blocks.
        device: 'cpu' (numpy :class:`VoxelMap`) or a CUDA device (:class:`TorchVoxelMap` there).
        strict: a failing window raises instead of being logged (offline tools, run inline).
        skip_empty: frames without points are not inserted (False: they are, and count as frames
            of the map's recency order, as ``loger-reconstruct`` always did).

    ``builder`` None: no cloud / path records (a tool that only wants the map).
    """

    def __init__(self, config: MapConfig, builder: Optional[Emitter], map_frame: str, cloud_max_points: int,
                 logger: Any, max_backlog: int = 4, device: str = "cpu", strict: bool = False,
                 skip_empty: bool = True) -> None:
        self.map = make_map(config, device)
        self.skip_empty = skip_empty  # False: a frame without points still counts as a map insert
        self.strict = strict  # re-raise fusion errors (offline tools) instead of logging them
        self.builder = builder
        self.map_frame = map_frame
        self.cloud_max_points = cloud_max_points
        self.max_backlog = max_backlog
        self.log = logger
        self._lock = threading.RLock()  # the voxel map (VoxelMap itself is not thread-safe)
        self._cond = threading.Condition()  # the job queue and the 'fusing' flag
        self._jobs: deque[MapJob] = deque()
        self._fusing = False
        self._generation = 0
        self._version = 0
        self._published_version = 0  # nothing to publish before the first fusion
        self._last_map_ns: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self.grid: Optional[Any] = None  # a GridMapping fed with every fused frame (set by the core)

    # ------------------------------------------------------------------ queue
    @property
    def generation(self) -> int:
        return self._generation

    @property
    def threaded(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, job: MapJob) -> None:
        """Queue a committed window (waits while ``max_backlog`` windows wait and the thread runs)."""
        with self._cond:
            while self.threaded and len(self._jobs) >= self.max_backlog:
                self._cond.wait(0.1)
            self._jobs.append(job)
            self._cond.notify_all()

    def backlog(self) -> int:
        """Committed windows not yet fused."""
        with self._cond:
            return len(self._jobs)

    def run_pending(self) -> list:
        """Fuse every queued window now (on the calling thread); returns their cloud and path messages."""
        pubs: list = []
        while True:
            job = self._next_job(wait_s=0.0)
            if job is None:
                return pubs
            pubs += self._fuse_claimed(job)

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until no window is queued or being fused; False on timeout or when the thread died."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._jobs or self._fusing:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.threaded:
                    return not self._jobs and not self._fusing
                self._cond.wait(min(remaining, 0.1))
        return True

    def _next_job(self, wait_s: float) -> Optional[MapJob]:
        with self._cond:
            if not self._jobs and wait_s > 0:
                self._cond.wait(wait_s)
            job = self._jobs.popleft() if self._jobs else None
            self._fusing = job is not None
            self._cond.notify_all()
            return job

    # ------------------------------------------------------------------ fusion
    def _fuse_claimed(self, job: MapJob) -> list:
        try:
            return self._fuse(job)
        except Exception as err:  # one bad window must not stop the map (nor the inline caller)
            if self.strict:
                raise
            self.log.error(f"fusing the window ending at {job.newest_stamp} ns failed: {err!r}\n"
                           f"{traceback.format_exc()}")
            return []
        finally:
            with self._cond:
                self._fusing = False
                self._cond.notify_all()

    def _fuse(self, job: MapJob) -> list:
        if job.generation != self._generation:
            return []  # committed before a reset that cleared the map
        identity = job.T_map_world is None  # the map frame is the network's world frame
        if not identity:
            R = job.T_map_world[:3, :3].astype(np.float32)
            t = job.T_map_world[:3, 3].astype(np.float32)
        clouds = []
        for points_world, colors, confidence, origin, weights in job.frames:
            points = points_world if identity else points_world @ R.T + t
            with self._lock:
                if job.generation != self._generation:
                    return []
                if len(points) or not self.skip_empty:
                    self._insert(points, colors, confidence, origin, weights)
                self._version += 1
            clouds.append((points, colors, confidence))
        if self.grid is not None and job.base_poses is not None:
            try:
                self.grid.insert_window([(c[0], f[3], T) for c, f, T in zip(clouds, job.frames, job.base_poses)])
            except Exception as err:  # the grid must not cost the map its cloud and path messages
                if self.strict:
                    raise
                self.log.error(f"updating the occupancy grid with the window ending at {job.newest_stamp} ns "
                               f"failed: {err!r}")
        if self.builder is None:
            return []
        points = np.concatenate([c[0] for c in clouds])
        colors = np.concatenate([c[1] for c in clouds])
        confidence = np.concatenate([c[2] for c in clouds])
        if len(points) > self.cloud_max_points:
            keep = np.linspace(0, len(points) - 1, self.cloud_max_points).astype(np.int64)
            points, colors, confidence = points[keep], colors[keep], confidence[keep]
        cloud = self.builder.cloud("cloud", job.newest_stamp, self.map_frame, points, colors, confidence)
        path = self.builder.path(job.newest_stamp, self.map_frame, job.path[0], job.path[1])
        return [cloud, path]

    def _insert(self, points, colors, confidence, origin, weights) -> None:
        try:
            self.map.insert(points, colors, confidence, sensor_origin=origin, weights=weights)
        except MapError:
            raise
        except Exception as err:  # noqa: BLE001 - a failing GPU must not cost the map
            if not isinstance(self.map, TorchVoxelMap):
                raise
            self.log.error(f"the GPU voxel map failed ({err!r}); moving the map ({len(self.map)} voxels) to the "
                           "CPU and going on there")
            self.map = self.map.to_voxel_map()
            self.map.insert(points, colors, confidence, sensor_origin=origin, weights=weights)

    def clear(self) -> None:
        """Empty the map and drop queued windows of the old map."""
        with self._cond, self._lock:
            self._generation += 1
            self._jobs.clear()
            self.map.clear()
            self._version += 1
            if self.grid is not None:
                self.grid.clear()

    # ------------------------------------------------------------------ output
    def __len__(self) -> int:
        with self._lock:
            return len(self.map)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``points (M, 3) float32`` (map frame), ``colors (M, 3) uint8``, ``confidence (M,) float32``."""
        with self._lock:
            return self.map.snapshot()

    def publication(self, stamp_ns: int, force: bool = False) -> Optional[Any]:
        """The map as a PointCloud2; None when unchanged since the last one (unless ``force``)."""
        with self._lock:
            if not force and self._version == self._published_version:
                return None
            points, colors, confidence = self.map.snapshot()
            self._published_version = self._version
        if self.builder is None:
            return None
        return self.builder.cloud("map", int(stamp_ns), self.map_frame, points, colors, confidence)

    def periodic(self, now_ns: int, period_s: float) -> list:
        """The map when ``period_s`` of the node clock (``now_ns``) passed since the last one."""
        if self._last_map_ns is not None and now_ns < self._last_map_ns:
            self._last_map_ns = now_ns  # the clock went back (a replayed bag looped): restart the period
        if self._last_map_ns is not None and now_ns - self._last_map_ns < int(period_s * 1e9):
            return []
        self._last_map_ns = now_ns
        pub = self.publication(now_ns)
        return [pub] if pub is not None else []

    # ------------------------------------------------------------------ thread
    def start(self, sink: Sink, clock_ns: Callable[[], int], period_s: float) -> None:
        """Fuse queued windows and publish the map every ``period_s`` on a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(sink, clock_ns, period_s), name="loger-mapping",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: Optional[float] = None) -> bool:
        """Fuse what is queued, then end the thread; True when it ended in time."""
        if self._thread is None:
            return True
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        self._thread = None
        return True

    def _run(self, sink: Sink, clock_ns: Callable[[], int], period_s: float) -> None:
        while True:
            job = self._next_job(wait_s=0.0 if self._stop.is_set() else 0.1)
            if job is None and self._stop.is_set():
                return
            try:
                pubs = self._fuse_claimed(job) if job is not None else []
                pubs += self.periodic(clock_ns(), period_s)
                if self.grid is not None:
                    pubs += self.grid.periodic(clock_ns())
            except Exception as err:  # a bug must not kill the mapping thread
                self.log.error(f"unexpected error in the mapping loop: {err!r}\n{traceback.format_exc()}")
                continue
            for pub in pubs:
                try:
                    sink(pub)
                except Exception as err:
                    self.log.error(f"publishing on {pub.channel} failed: {err!r}")
