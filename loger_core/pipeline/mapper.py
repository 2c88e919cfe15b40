"""The one commit path: committed frames -> trajectory, voxel map, grid (and a back end).

Every tool that maps drives a :class:`Mapper`: the node core (and so ``loger-replay`` and
``loger-batch``'s bags) through :class:`~loger_core.pipeline.core.MappingPipeline`, and
``loger-reconstruct`` (and ``loger-batch``'s folders and videos) directly. The mapper takes the
committed :class:`~loger_core.stream.FrameResult` s of the streaming reconstructor
(:meth:`Mapper.commit`), extends the trajectory, hands the points to the
:class:`~loger_core.pipeline.map_fusion.MapFusion` (voxel map + occupancy grid; on the mapping
thread in the node, inline offline) and offers each frame to the back-end hook.

Back-end hook (:class:`FrameConsumer`)
    ``Mapper(..., consumer=c)``: each committed frame is offered once, in commit order, as a
    :class:`CommittedFrame` (the FrameResult, the ORIGINAL input image of that stamp and its
    map-frame pose) to ``c.on_committed(frame)``. The images come from a small bounded
    stamp -> image buffer that the pipeline fills when it pushes a frame into the stream
    (:meth:`Mapper.remember_image`) and that commit empties. After each commit the mapper asks
    ``c.poll_correction()``; a :class:`PoseCorrection` (per-stamp corrected ``T_world_cam``, or
    one transform applied to every pose) is applied to the trajectory and the map and grid are
    fused again from the frames' points (kept, in camera coordinates, while a consumer is
    attached). Without a consumer nothing is buffered or kept: the commit path is the old one.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np

from loger_core.io.trajectory import Trajectory
from loger_core.pipeline.geometry import similarity_pose
from loger_core.pipeline.map_fusion import MapFusion, MapJob
from loger_core.stream.results import FrameResult

__all__ = ["CommittedFrame", "FrameConsumer", "Mapper", "PoseCorrection", "similarity_pose"]

# Frames pushed but not yet committed: a window (up to 32) plus the frames queued behind it.
IMAGE_BUFFER_FRAMES = 128


@dataclass
class CommittedFrame:
    """What the back-end hook sees of one committed frame.

    result: the stream's committed FrameResult (poses in the network's world frame).
    image: the original ``(H, W, 3)`` uint8 input image of ``result.stamp_ns`` (before the
        network's resize), or None when it was not pushed through this pipeline.
    T_map_cam: the frame's pose in the map frame (``T_map_world @ result.T_world_cam``).
    """

    result: FrameResult
    image: Optional[np.ndarray]
    T_map_cam: np.ndarray


@dataclass
class PoseCorrection:
    """Pose corrections from a back end, in the network's world frame.

    poses: stamp -> corrected ``T_world_cam (4, 4)`` (rigid; stamps not listed keep their pose);
    transform: ``S_corrected_world (4, 4)``, a similarity (``s R | t``) mapping the network's world
        into the corrected one: applied to every pose not in ``poses`` (now) and to every frame
        committed from now on (poses and points), until the next correction replaces it; or None.
    clouds: when given, the map and grid are fused again from these clouds alone (the back end's
        keyframes under their optimised poses): ``(points (M, 3) float32 corrected world,
        colors (M, 3) uint8, confidence (M,) float32, T_world_cam (4, 4) corrected)``.
    """

    poses: dict[int, np.ndarray] = field(default_factory=dict)
    transform: Optional[np.ndarray] = None
    clouds: Optional[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = None


class FrameConsumer(Protocol):
    """A back end plugged into the :class:`Mapper` (see the module docstring).

    ``on_committed`` runs on the committing thread (the node's inference thread): keep it short
    (queue the work). ``poll_correction`` returns None when there is nothing to apply.
    """

    def on_committed(self, frame: CommittedFrame) -> None: ...

    def poll_correction(self) -> Optional[PoseCorrection]: ...


def _provides_clouds(consumer: Optional[FrameConsumer]) -> bool:
    """A consumer that hands back the clouds to fuse (``provides_clouds = True``): the mapper need
    not keep every frame's points (bounded memory)."""
    return bool(getattr(consumer, "provides_clouds", False))


class Mapper:
    """Trajectory + voxel map fusion + grid of one mapping run, and the back-end hook.

    Args:
        fusion: the map fusion (its ``grid`` is fed with the same frames), or None to build it
            at the first commit with ``make_fusion(first_result)`` (automatic voxel size).
        path_max_poses: the path record holds the last this many poses (0: all).
        consumer: the back end (:class:`FrameConsumer`) or None.
    """

    def __init__(self, fusion: Optional[MapFusion] = None, *,
                 make_fusion: Optional[Callable[[FrameResult], MapFusion]] = None,
                 path_max_poses: int = 0, consumer: Optional[FrameConsumer] = None) -> None:
        if fusion is None and make_fusion is None:
            raise ValueError("Mapper needs a fusion or make_fusion")
        self.fusion = fusion
        self._make_fusion = make_fusion
        self.path_max_poses = int(path_max_poses)
        self.consumer = consumer
        self.lock = threading.RLock()  # the trajectory
        self.stamps: list[int] = []
        self.poses_cam: list[np.ndarray] = []  # T_map_cam
        self.poses_base: list[np.ndarray] = []  # T_map_base
        self.last_K: Optional[np.ndarray] = None
        self._images: "OrderedDict[int, np.ndarray]" = OrderedDict()
        # With a consumer: per stamp (points in camera coordinates, colours, confidence, weights,
        # T_world_cam, T_cam_base), to fuse the map again after a correction.
        self._kept: "OrderedDict[int, tuple]" = OrderedDict()
        self._T_map_world: Optional[np.ndarray] = None
        self._T_cam_base: Optional[np.ndarray] = None
        # The back end's current similarity from the network's world into the corrected one.
        self.correction = np.eye(4)

    # ------------------------------------------------------------------ input
    def remember_image(self, stamp_ns: int, image: np.ndarray) -> None:
        """Keep the input image of a frame pushed into the stream until it is committed (only
        with a consumer attached; the oldest go when more than IMAGE_BUFFER_FRAMES wait)."""
        if self.consumer is None:
            return
        self._images[int(stamp_ns)] = image
        while len(self._images) > IMAGE_BUFFER_FRAMES:
            self._images.popitem(last=False)

    def images_state(self) -> dict:
        """The buffered input images (frames pushed, not yet committed) as session tensors."""
        import torch

        return {f"image.{stamp}": torch.from_numpy(np.ascontiguousarray(img)) for stamp, img in self._images.items()}

    def restore_images(self, tensors: dict) -> None:
        """Put back the images :meth:`images_state` saved (a resumed session commits those frames)."""
        for name in sorted((n for n in tensors if n.startswith("image.")), key=lambda n: int(n.split(".", 1)[1])):
            self._images[int(name.split(".", 1)[1])] = tensors[name].numpy().copy()

    def forget_image(self, stamp_ns: int) -> None:
        """A pushed frame the stream refused: it will never be committed."""
        self._images.pop(int(stamp_ns), None)

    def commit(self, results: Sequence[FrameResult], T_map_world: Optional[np.ndarray] = None,
               T_base_cam: Optional[np.ndarray] = None) -> int:
        """Commit frames (provisional ones are skipped): extend the trajectory, queue the points
        for fusion, offer each frame to the consumer, apply its correction. Returns the newest
        committed stamp (-1 when none).

        ``T_map_world`` None: the map frame is the network's world frame (points are not
        transformed). ``T_base_cam`` None: the base is the camera.
        """
        committed = [r for r in results if not r.provisional]
        if not committed:
            return -1
        if self.fusion is None:
            self.fusion = self._make_fusion(committed[0])
        T_cam_base = None if T_base_cam is None else np.linalg.inv(T_base_cam)
        self._T_cam_base = T_cam_base
        corrected = not np.array_equal(self.correction, np.eye(4))
        frames, base_poses = [], []
        with self.lock:
            for r in committed:
                T_world_cam = similarity_pose(self.correction, r.T_world_cam) if corrected else r.T_world_cam
                T_map_cam = T_world_cam if T_map_world is None else T_map_world @ T_world_cam
                T_map_base = T_map_cam if T_cam_base is None else T_map_cam @ T_cam_base
                origin = T_world_cam[:3, 3] if T_map_world is None else T_map_cam[:3, 3].copy()
                points = r.points
                if corrected and len(points):
                    S = self.correction
                    points = (np.asarray(points, np.float64) @ S[:3, :3].T + S[:3, 3]).astype(np.float32)
                frames.append((points, r.colors, r.point_confidence, origin, r.point_weights))
                self.stamps.append(int(r.stamp_ns))
                self.poses_cam.append(T_map_cam)
                self.poses_base.append(T_map_base)
                base_poses.append(T_map_base)
                self.last_K = r.K
            newest = max(int(r.stamp_ns) for r in committed)
            first = max(0, len(self.stamps) - self.path_max_poses) if self.path_max_poses else 0
            path = (self.stamps[first:], np.asarray(self.poses_base[first:]))
            generation = self.fusion.generation
        self._T_map_world = T_map_world
        self.fusion.submit(MapJob(T_map_world, frames, newest, path, generation, base_poses))
        if self.consumer is not None:
            self._offer(committed, T_map_world, T_cam_base)
        return newest

    # ------------------------------------------------------------- back end
    def _offer(self, committed: list[FrameResult], T_map_world, T_cam_base) -> None:
        for r in committed:
            stamp = int(r.stamp_ns)
            T_world_cam = similarity_pose(self.correction, r.T_world_cam)
            T_map_cam = T_world_cam if T_map_world is None else T_map_world @ T_world_cam
            image = self._images.pop(stamp, None)
            for older in [s for s in self._images if s < stamp]:  # never committed (dropped by the stream)
                del self._images[older]
            if not _provides_clouds(self.consumer):
                R, t = r.T_world_cam[:3, :3], r.T_world_cam[:3, 3]
                points_cam = ((np.asarray(r.points, np.float64) - t) @ R).astype(np.float32)
                self._kept[stamp] = (points_cam, r.colors, r.point_confidence, r.point_weights, T_world_cam.copy(),
                                     None if T_cam_base is None else T_cam_base.copy())
            self.consumer.on_committed(CommittedFrame(r, image, T_map_cam))
        correction = self.consumer.poll_correction()
        if correction is not None:
            self.apply_correction(correction)

    def apply_correction(self, correction: PoseCorrection) -> None:
        """Apply a back end's correction: the trajectory takes the corrected poses (listed ones
        as given, the others moved by ``transform``), later commits are moved by ``transform``,
        and the map and grid are fused again from the correction's clouds or, without them, from
        the kept frames' points (in commit order)."""
        if self.fusion is None:
            return
        T_map_world = self._T_map_world
        with self.lock:
            previous = self.correction
            if correction.transform is not None:
                self.correction = np.asarray(correction.transform, np.float64).copy()
            # Poses not listed move by the change of the world correction.
            change = None
            if correction.transform is not None and not np.allclose(previous, self.correction):
                change = self.correction @ np.linalg.inv(previous)
            for i, stamp in enumerate(self.stamps):
                T_cam_base = self._T_cam_base
                if stamp in correction.poses:
                    T_world_cam = np.asarray(correction.poses[stamp], np.float64)
                elif change is not None:
                    T_world_cam = similarity_pose(change, self._world_pose(self.poses_cam[i], T_map_world))
                else:
                    continue
                T_map_cam = T_world_cam if T_map_world is None else T_map_world @ T_world_cam
                self.poses_cam[i] = T_map_cam
                self.poses_base[i] = T_map_cam if T_cam_base is None else T_map_cam @ T_cam_base
            first = max(0, len(self.stamps) - self.path_max_poses) if self.path_max_poses else 0
            path = (self.stamps[first:], np.asarray(self.poses_base[first:]))
            newest = self.stamps[-1] if self.stamps else -1
        frames, base_poses = [], []
        if correction.clouds is not None:
            for points, colors, conf, T_world_cam in correction.clouds:
                T_map_cam = T_world_cam if T_map_world is None else T_map_world @ T_world_cam
                frames.append((points, colors, conf, T_map_cam[:3, 3].copy(), None))
                base_poses.append(T_map_cam if self._T_cam_base is None else T_map_cam @ self._T_cam_base)
        elif self._kept:
            for stamp, (points_cam, colors, conf, weights, T_world_cam, T_cam_base) in self._kept.items():
                if stamp in correction.poses:
                    T_world_cam = np.asarray(correction.poses[stamp], np.float64)
                elif change is not None:
                    T_world_cam = similarity_pose(change, T_world_cam)
                self._kept[stamp] = (points_cam, colors, conf, weights, T_world_cam, T_cam_base)
                T_map_cam = T_world_cam if T_map_world is None else T_map_world @ T_world_cam
                points = (points_cam.astype(np.float64) @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]).astype(np.float32)
                frames.append((points, colors, conf, T_map_cam[:3, 3].copy(), weights))
                base_poses.append(T_map_cam if T_cam_base is None else T_map_cam @ T_cam_base)
        else:
            return
        self.fusion.clear()
        self.fusion.submit(MapJob(T_map_world, frames, newest, path, self.fusion.generation, base_poses))

    @staticmethod
    def _world_pose(T_map_cam: np.ndarray, T_map_world: Optional[np.ndarray]) -> np.ndarray:
        return T_map_cam if T_map_world is None else np.linalg.inv(T_map_world) @ T_map_cam

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        """Forget the trajectory (a reset that clears the map; the fusion is cleared by its owner)."""
        with self.lock:
            self.stamps.clear()
            self.poses_cam.clear()
            self.poses_base.clear()
            self._kept.clear()
            self.correction = np.eye(4)

    def __len__(self) -> int:
        with self.lock:
            return len(self.stamps)

    def trajectory(self, body: str = "camera") -> Trajectory:
        """Committed poses in the map frame: ``body`` 'camera' (T_map_cam) or 'base' (T_map_base)."""
        with self.lock:
            poses = self.poses_base if body == "base" else self.poses_cam
            stamps = np.asarray(self.stamps, dtype=np.int64)
            return Trajectory(stamps, np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4))

    def path_tail(self) -> tuple[list[int], np.ndarray]:
        with self.lock:
            first = max(0, len(self.stamps) - self.path_max_poses) if self.path_max_poses else 0
            return self.stamps[first:], np.asarray(self.poses_base[first:])
