"""The back end plugged into the pipeline's one commit path: a
:class:`~loger_core.pipeline.mapper.FrameConsumer` that feeds committed frames to a
:class:`~loger_core.backend.backend.GeometricBackend` and hands its corrections back to the
:class:`~loger_core.pipeline.mapper.Mapper` (so every tool that maps gets them)."""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from loger_core.backend.backend import GeometricBackend, frame_input
from loger_core.backend.config import BackendConfig, resolved_cpu_share
from loger_core.pipeline.mapper import CommittedFrame, PoseCorrection

__all__ = ["BackendConsumer"]


class BackendConsumer:
    """Committed frames in, :class:`PoseCorrection` s out.

    After each new keyframe: the similarity that moves the network's world into the optimised one
    at the newest keyframe (applied to the frames committed from then on) and the corrected poses
    of the frames since the previous poll. After a loop closure (or :meth:`final`): every frame's
    corrected pose and the keyframes' clouds, from which the map and grid are fused again.
    """

    provides_clouds = True  # the mapper need not keep every frame's points

    def __init__(self, cfg: BackendConfig, metric: bool = False, crop_of=None, network_on_cpu: bool = False) -> None:
        self.cfg = cfg
        self.metric = metric
        # Live, the back end yields the cores to a network that runs on them (BackendConfig.cpu_share).
        self.cpu_share = resolved_cpu_share(cfg, network_on_cpu)
        self.backend = GeometricBackend(cfg, metric=metric, cpu_share=self.cpu_share)
        self._crop_of = crop_of  # result -> (x0, y0, w, h) of the image the network saw, or None
        self._lock = threading.Lock()
        self._seen_keyframes = 0
        self._seen_version = 0
        self._poll_from = 0  # frames before this index have had their corrected pose handed out
        # Clouds of earlier worlds (before a reset that kept the map), fused with every rebuild.
        self._frozen: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []

    def on_committed(self, frame: CommittedFrame) -> None:
        crop = self._crop_of(frame.result) if self._crop_of is not None else None
        self.backend.submit(frame_input(frame.result, frame.image, crop))

    def poll_correction(self) -> Optional[PoseCorrection]:
        with self._lock:
            # The back end's published view: read without waiting for its worker.
            keyframes, version = self.backend.keyframe_count, self.backend.version
            if keyframes == self._seen_keyframes and version == self._seen_version:
                return None
            loop = version != self._seen_version
            self._seen_keyframes, self._seen_version = keyframes, version
        return self._correction(full=loop)

    def final(self, timeout_s: Optional[float] = None) -> PoseCorrection:
        """Wait for the back end to finish the frames it was given, then the full correction."""
        if self.backend.finish(timeout_s):
            self.backend.finalize()
        return self._correction(full=True)

    def _correction(self, full: bool) -> PoseCorrection:
        start = 0 if full else max(0, self._poll_from - self.cfg.keyframe_max_gap)
        stamps, poses = self.backend.poses(since=start)
        corrected = {int(s): poses[i] for i, s in enumerate(stamps)}
        self._poll_from = start + len(stamps)
        clouds = None
        if full:
            clouds = self._frozen + [(c.points, c.colors, c.confidence, c.T_world_cam) for c in self.backend.keyframe_clouds()]
        return PoseCorrection(poses=corrected, transform=self.backend.world_correction(), clouds=clouds)

    def reset(self, keep_map: bool = True) -> None:
        """The network restarted in a new world: start a new back end (its graph cannot relate the
        two worlds); with ``keep_map`` the old keyframes' clouds stay in every later map rebuild."""
        old = self.backend
        old.finish(5.0)
        if keep_map:
            self._frozen += [(c.points, c.colors, c.confidence, c.T_world_cam) for c in old.keyframe_clouds()]
        else:
            self._frozen = []
        old.close()
        self.backend = GeometricBackend(self.cfg, metric=self.metric, cpu_share=self.cpu_share)
        with self._lock:
            self._seen_keyframes = self._seen_version = self._poll_from = 0

    def stats(self) -> dict:
        return self.backend.stats()

    def loop_segments(self) -> np.ndarray:
        """(N, 2, 3) the closed loops' keyframe centres in the corrected world (markers)."""
        return self.backend.loop_segments()

    # -- sessions ---------------------------------------------------------------------------
    def capture(self, correction: np.ndarray) -> tuple[dict, dict]:
        """(tensors, meta) of the whole back end, after it finished the frames it was given;
        ``correction``: the similarity the mapper applies now (restored as it was)."""
        import torch

        from loger_core.backend.session_state import pack_ragged, capture_backend

        self.backend.finish()
        with self.backend._lock:
            tensors, meta = capture_backend(self.backend.core)
        tensors["mapper_correction"] = torch.from_numpy(np.asarray(correction, np.float64).copy())
        pack_ragged("frozen.points", [c[0] for c in self._frozen], (3,), np.float32, tensors)
        pack_ragged("frozen.colors", [c[1] for c in self._frozen], (3,), np.uint8, tensors)
        pack_ragged("frozen.confidence", [c[2] for c in self._frozen], (), np.float32, tensors)
        tensors["frozen.T_world_cam"] = torch.from_numpy(
            np.stack([c[3] for c in self._frozen]) if self._frozen else np.zeros((0, 4, 4)))
        with self._lock:
            meta["consumer"] = {"seen_keyframes": self._seen_keyframes, "seen_version": self._seen_version,
                                "poll_from": self._poll_from, "frozen": len(self._frozen)}
        return tensors, meta

    def restore(self, tensors: dict, meta: dict, path: Optional[str] = None) -> np.ndarray:
        """Continue a captured back end; returns the mapper's correction at capture time."""
        from loger_core.backend.session_state import unpack_ragged, restore_backend

        core = restore_backend(self.cfg, tensors, meta, path)
        old = self.backend
        self.backend = GeometricBackend(self.cfg, metric=core.metric, core=core, cpu_share=self.cpu_share)
        old.close()
        c = meta["consumer"]
        with self._lock:
            self._seen_keyframes, self._seen_version, self._poll_from = c["seen_keyframes"], c["seen_version"], c["poll_from"]
        T = tensors["frozen.T_world_cam"].numpy()
        frozen = list(zip(unpack_ragged("frozen.points", tensors), unpack_ragged("frozen.colors", tensors),
                          unpack_ragged("frozen.confidence", tensors), list(T)))
        self._frozen = frozen
        return tensors["mapper_correction"].numpy().copy()

    def close(self) -> None:
        self.backend.close()
