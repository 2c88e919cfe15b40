"""``GeometricBackend``: the back end behind one small interface, run on its own thread so the frame
path never waits on it. Frames go in with :meth:`GeometricBackend.submit`; corrected poses for every
frame, the keyframes' clouds for re-fusion and the counters come out."""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy.spatial.transform import Rotation

from loger_core.backend.config import BackendConfig
from loger_core.backend.core import BackendCore, FrameRecord
from loger_core.backend.keyframes import FrameInput

__all__ = ["GeometricBackend", "KeyframeCloud", "frame_input"]

log = logging.getLogger(__name__)

# Back ends whose thread still runs: stopped at interpreter exit, so that no worker is inside
# OpenCV or GTSAM while the interpreter tears down (that aborts the process: "terminate called
# without an active exception").
_LIVE: "weakref.WeakSet[GeometricBackend]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for backend in list(_LIVE):
        backend.close()


@dataclass
class KeyframeCloud:
    """A keyframe's points in the world under the optimised pose.

    points: (M, 3) float32 world points; colors (M, 3) uint8; confidence (M,) float32;
    T_world_cam: (4, 4) float64; origin: (3,) camera centre.
    """

    key: int
    points: np.ndarray
    colors: np.ndarray
    confidence: np.ndarray
    T_world_cam: np.ndarray

    @property
    def origin(self) -> np.ndarray:
        return self.T_world_cam[:3, 3]


@dataclass(frozen=True)
class _View:
    """What readers need from the back end, published by the worker (a new object, swapped in
    whole) after each frame that changed the keyframes or the graph: readers on the frame path
    (the pipeline's correction poll, diagnostics) never wait for the worker's lock, which it holds
    for a whole frame's work (hundreds of ms on a busy CPU).

    kf_poses: key -> (T_world_kf (4, 4), Sim(3) scale); kf_index: key -> (frame index, T_net (4, 4),
    q); clouds: key -> (points (M, 3) float32 in the keyframe's camera frame, colours, confidence);
    correction: (4, 4) see :meth:`GeometricBackend.world_correction`; loops: (N, 2, 3) float64.
    """

    keyframes: int = 0
    version: int = 0
    kf_poses: dict = field(default_factory=dict)
    kf_index: dict = field(default_factory=dict)
    clouds: dict = field(default_factory=dict)
    correction: np.ndarray = field(default_factory=lambda: np.eye(4))
    loops: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 3)))
    graph: dict = field(default_factory=dict)


def frame_input(result: Any, image: Optional[np.ndarray], crop: Optional[tuple[int, int, int, int]] = None) -> FrameInput:
    """A :class:`FrameInput` from a stream ``FrameResult`` and the original image. ``crop``: the box
    of the image the network saw (None = the whole image, the default 'resize' mode)."""
    W, H = result.image_size
    return FrameInput(stamp_ns=int(result.stamp_ns), index=int(result.index), T_world_cam=np.asarray(result.T_world_cam),
                      depth=result.depth, confidence=result.confidence, K=np.asarray(result.K, np.float64), image=image,
                      crop=crop if crop is not None else (0, 0, int(W), int(H)), points=result.points,
                      colors=result.colors, point_confidence=result.point_confidence,
                      valid=getattr(result, "valid", None), intrinsics_known=bool(getattr(result, "intrinsics_known", False)),
                      descriptor=getattr(result, "descriptor", None))


class GeometricBackend:
    """Keyframes, verified poses, loop closure and the pose graph over a stream's committed frames.

    ``metric``: the stream's scale is metric (depth or odometry scale source): SE(3) graph; else
    Sim(3). With ``cfg.threaded`` the work runs on a daemon thread; :meth:`finish` waits for it.
    ``cpu_share``: the largest share of wall time that thread works (see ``BackendConfig.cpu_share``;
    it applies only with ``cfg.max_queue`` > 0, the live setting).
    """

    def __init__(self, cfg: BackendConfig, metric: bool = False, core: Optional[BackendCore] = None,
                 cpu_share: float = 1.0) -> None:
        self.cfg = cfg
        self.cpu_share = float(cpu_share)
        self.core = core if core is not None else BackendCore(cfg, metric=metric)
        self._lock = threading.Lock()
        self._queue: "queue.Queue[Optional[FrameInput]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._view = _View()
        self._publish()  # a restored core is readable at once
        if cfg.threaded:
            self._thread = threading.Thread(target=self._run, name="loger-backend", daemon=True)
            self._thread.start()
            _LIVE.add(self)

    # -- input ------------------------------------------------------------------------------
    def submit(self, frame: FrameInput) -> None:
        """Hand one committed frame over (stream order); never blocks on the back end's work."""
        if self._thread is None:
            with self._lock:
                self._add(frame, track=True)
            return
        self._queue.put(frame)

    def _add(self, frame: FrameInput, track: bool) -> None:
        track = track and frame.image is not None  # no image (not pushed through this pipeline): record only
        try:
            before = (self.core.stats.keyframes, self.core.version)
            self.core.add(frame, track=track)
            if (self.core.stats.keyframes, self.core.version) != before:
                self._publish()
        except Exception as err:  # noqa: BLE001 - the back end must never take the mapping down
            # A frame the back end cannot use (degenerate geometry, a numerical failure) keeps its
            # network pose; the error is logged once per kind.
            if self._error is None or type(self._error) is not type(err):
                log.warning("back end: frame %d not used (%s: %s); its network pose is kept", frame.index,
                            type(err).__name__, err, exc_info=log.isEnabledFor(logging.DEBUG))
            self._error = err
            self.core.frames.append(FrameRecord(frame.stamp_ns, frame.index, np.asarray(frame.T_world_cam), None))

    def _run(self) -> None:
        live = self.cfg.max_queue > 0
        rest_until = 0.0  # monotonic seconds: frames before this are recorded untracked
        while True:
            frame = self._queue.get()
            try:
                if frame is None:
                    return
                track = not live or (self._queue.qsize() < self.cfg.max_queue and time.monotonic() >= rest_until)
                with self._lock:
                    t0 = time.monotonic()
                    self._add(frame, track)
                    busy = time.monotonic() - t0
                if live and track and self.cpu_share < 1.0:
                    # Rest in proportion to the work just done: over any stretch the worker is busy
                    # at most cpu_share of the time, whatever a frame or a keyframe costs here.
                    rest_until = time.monotonic() + busy * (1.0 / self.cpu_share - 1.0)
            finally:
                self._queue.task_done()

    def finish(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until every submitted frame is processed; False if ``timeout_s`` ran out first."""
        if self._thread is None:
            return True
        done = threading.Event()

        def _wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=_wait, daemon=True).start()
        return done.wait(timeout_s)

    def finalize(self) -> None:
        """The end of a run: the whole graph solved in batch (see :meth:`PoseGraph.finalize`)."""
        with self._lock:
            try:
                self.core.graph.finalize()
            except RuntimeError as err:
                log.warning("back end: the final batch solve failed (%s); the incremental estimate stays", err)
            self._publish()

    def close(self) -> None:
        """Stop the worker after the frames already handed over (at most a few seconds)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5.0)
        _LIVE.discard(self)

    # -- output (lock-free: from the published view) ------------------------------------------
    def _publish(self) -> None:
        """Build and swap in a new :class:`_View` (the worker, or a caller holding the core alone)."""
        core = self.core
        kf_poses = core.keyframe_poses()
        kf_index = {k: (kf.index, kf.T_net, kf.q) for k, kf in core.keyframes.items()}
        clouds = {k: (kf.points, kf.colors, kf.conf) for k, kf in core.keyframes.items()}
        correction = np.eye(4)
        if core.keyframes and core.last_key in kf_poses:
            kf = core.keyframes[core.last_key]
            T, s = kf_poses[core.last_key]
            scale = s * kf.q
            R = T[:3, :3] @ kf.T_net[:3, :3].T
            correction[:3, :3] = scale * R
            correction[:3, 3] = T[:3, 3] - scale * R @ kf.T_net[:3, 3]
        segs = [(kf_poses[a][0][:3, 3], kf_poses[b][0][:3, 3]) for a, b in core.stats.loops
                if a in kf_poses and b in kf_poses]
        graph = {"nodes": core.graph.nodes, "factors": core.graph.factors, "loop_factors": core.graph.loop_factors,
                 "metric": core.metric}
        self._view = _View(core.stats.keyframes, core.version, kf_poses, kf_index, clouds, correction,
                           np.asarray(segs, np.float64).reshape(-1, 2, 3), graph)

    @property
    def version(self) -> int:
        """Bumped each time a loop closure moved the keyframes (outputs built before are stale)."""
        return self._view.version

    @property
    def keyframe_count(self) -> int:
        """Keyframes taken so far (as published)."""
        return self._view.keyframes

    def stats(self) -> dict:
        """Counters and timings (read without the worker's lock: a snapshot, not a transaction)."""
        view = self._view
        d = self.core.stats.to_dict()
        d["chain"] = self.core.chain.state()
        d["graph"] = dict(view.graph)
        return d

    def poses(self, since: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(stamps (N,) int64, T_world_cam (N, 4, 4) float64) for every frame seen (from the
        ``since``-th on), corrected.

        Keyframes take their optimised poses; a frame between two keyframes is interpolated between
        them by frame number (rotation slerp, position linear); frames after the last keyframe follow
        it with the network's relative motion (in the keyframe's map units)."""
        view = self._view
        frames = self.core.frames[since:]  # the worker only appends (or replaces the newest): a copy is consistent
        return _interpolate(frames, view.kf_poses, view.kf_index)

    def world_correction(self) -> np.ndarray:
        """(4, 4) the similarity ``[s R | t]`` moving the network's world into the optimised one at the
        newest keyframe (identity before the first): what frames not yet seen by the back end get."""
        return self._view.correction.copy()

    def loop_segments(self) -> np.ndarray:
        """(N, 2, 3) float64 the optimised camera centres of the two keyframes of each closed loop."""
        return self._view.loops.copy()

    def keyframe_clouds(self) -> list[KeyframeCloud]:
        """Every keyframe's stored points under its optimised pose (for re-fusing the map)."""
        view = self._view
        out = []
        for key, (points, colors, conf) in view.clouds.items():
            if key not in view.kf_poses:
                continue
            T, s = view.kf_poses[key]
            local = points.astype(np.float64) * (view.kf_index[key][2] * s)
            world = local @ T[:3, :3].T + T[:3, 3]
            out.append(KeyframeCloud(key, world.astype(np.float32), colors, conf, T))
        return out


def _interpolate(frames: list[FrameRecord], kf_poses: dict, kf_index: dict) -> tuple[np.ndarray, np.ndarray]:
    """Corrected poses of ``frames`` (see :meth:`GeometricBackend.poses`), vectorised: a full
    correction after a loop closure covers every frame of the run, on the frame path."""
    stamps = np.asarray([f.stamp_ns for f in frames], np.int64)
    out = np.stack([f.T_net for f in frames]) if frames else np.zeros((0, 4, 4))
    if not kf_poses or not frames:
        return stamps, out
    keys = sorted(kf_poses)
    kf_frame = np.asarray([kf_index[k][0] for k in keys])
    T_kf = np.stack([kf_poses[k][0] for k in keys])
    index = np.asarray([f.index for f in frames])
    position = {k: i for i, k in enumerate(keys)}
    own = np.asarray([position[f.keyframe] if f.is_keyframe and f.keyframe in position else -1 for f in frames])
    j = np.searchsorted(kf_frame, index)  # first keyframe at or after each frame
    inside = (own < 0) & (j > 0) & (j < len(keys))
    if inside.any():
        # Between keyframes a and b: R_a exp(w log(R_a^T R_b)) (slerp), position linear in w.
        a, b = j[inside] - 1, j[inside]
        w = (index[inside] - kf_frame[a]) / np.maximum(kf_frame[b] - kf_frame[a], 1)
        Ra, Rb = T_kf[a, :3, :3], T_kf[b, :3, :3]
        rel = Rotation.from_matrix(np.einsum("nji,njk->nik", Ra, Rb)).as_rotvec()
        T = np.tile(np.eye(4), (len(a), 1, 1))
        T[:, :3, :3] = Ra @ Rotation.from_rotvec(rel * w[:, None]).as_matrix()
        T[:, :3, 3] = (1 - w)[:, None] * T_kf[a, :3, 3] + w[:, None] * T_kf[b, :3, 3]
        out[inside] = T
    outside = (own < 0) & ~inside
    if outside.any():
        # Before the first or after the last keyframe: follow the nearest one with the network's motion.
        k = np.where(j[outside] == 0, 0, len(keys) - 1)
        T_net_kf = np.stack([kf_index[keys[i]][1] for i in k])
        scale = np.asarray([kf_index[keys[i]][2] * kf_poses[keys[i]][1] for i in k])
        rel = np.linalg.inv(T_net_kf) @ out[outside]
        rel[:, :3, 3] *= scale[:, None]
        out[outside] = T_kf[k] @ rel
    mine = own >= 0
    out[mine] = T_kf[own[mine]]
    return stamps, out
