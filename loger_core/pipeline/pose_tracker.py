"""REP-105 pose bookkeeping: network poses -> ``map``/``odom``/``base_link`` with a continuous odom.

Frames
    The network reports ``T_world_cam`` in its own world (the first camera of the current
    reconstruction). The map frame is anchored on the first pose so that ``base_link`` starts
    at the map origin: ``T_map_world = T_base_cam @ inv(T_world_cam_first)``; then
    ``T_map_cam = T_map_world @ T_world_cam`` and ``T_map_base = T_map_cam @ inv(T_base_cam)``.
    After a reset of the network the new world is anchored where the camera last was, so the
    map frame (and the path) continue.

Odometry continuity (tf_mode ``odom_to_base``)
    REP-105 requires ``odom -> base_link`` to be continuous; corrections belong in
    ``map -> odom``. Each stamp's odom pose is published once, when its first (often
    provisional) estimate arrives: ``T_odom_base = inv(T_map_odom) @ T_map_base``. When a
    later estimate revises already published stamps (the committed window superseding the
    provisional poses, or a scale update), ``map -> odom`` absorbs the difference at the
    NEWEST revised stamp ``j``: ``T_map_odom = T_map_base_j(new) @ inv(T_odom_base_j(published))``.
    The published odom never changes, and odom for the following frames continues from
    ``j`` with the new estimate's relative motion. Estimates of stamps older than the newest
    published one that were never published are not turned into odometry (odometry is
    published in time order); the core still maps them.

Back-end corrections
    A back end (``loger_core.backend``) moves the network's world into its optimised one by a
    similarity ``S``: ``T_map_cam = T_map_world @ S(T_world_cam)``. A new ``S``
    (:meth:`PoseTracker.set_correction`) is absorbed into ``map -> odom`` at the newest published
    stamp, like a revision: ``odom -> base_link`` stays continuous.

External odometry (tf_mode ``map_to_odom``)
    Another node owns ``odom -> base_link``; ``map -> odom`` is
    ``T_map_base @ inv(T_odom_base_external)`` at the newest stamp of each update for which
    the external transform is known.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from loger_core.pipeline.errors import CoreError
from loger_core.pipeline.geometry import similarity_pose

__all__ = ["TrackedPose", "TrackerUpdate", "PoseTracker", "invert"]


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid ``(4, 4)`` transform."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


@dataclass(eq=False)
class TrackedPose:
    """One stamp's pose in every frame (all ``(4, 4)`` float64).

    ``T_odom_base`` is this node's continuous odometry (``odom_to_base``) or the external
    odometry at the stamp (``map_to_odom``; None when TF did not have it).
    """

    stamp_ns: int
    provisional: bool
    T_map_cam: np.ndarray
    T_map_base: np.ndarray
    T_odom_base: Optional[np.ndarray]


@dataclass
class TrackerUpdate:
    """Result of :meth:`PoseTracker.update`.

    new: poses of stamps published for the first time (oldest first).
    revised: superseding poses of already published stamps.
    skipped: stamps older than the newest published one that were never published.
    T_map_odom: ``map -> odom`` after the update (None while unknown in ``map_to_odom``).
    map_odom_changed: True when this update changed ``T_map_odom``.
    """

    new: list[TrackedPose]
    revised: list[TrackedPose]
    skipped: list[int]
    T_map_odom: Optional[np.ndarray]
    map_odom_changed: bool


class PoseTracker:
    """See the module docstring. ``history``: published stamps remembered for revisions."""

    def __init__(self, tf_mode: str, history: int = 1024) -> None:
        if tf_mode not in ("odom_to_base", "map_to_odom"):
            raise CoreError(f"tf_mode {tf_mode!r} must be 'odom_to_base' or 'map_to_odom'")
        self.tf_mode = tf_mode
        self._history = history
        self._T_map_world: Optional[np.ndarray] = None
        self._continue_from: Optional[np.ndarray] = None  # T_map_cam to continue from after a restart
        self._T_map_odom: Optional[np.ndarray] = np.eye(4) if tf_mode == "odom_to_base" else None
        self._published: OrderedDict[int, TrackedPose] = OrderedDict()
        self.last_published: Optional[TrackedPose] = None
        self.last_T_map_cam: Optional[np.ndarray] = None
        self._S = np.eye(4)  # the back end's similarity from the network's world to the optimised one

    # ------------------------------------------------------------------ anchor
    @property
    def anchored(self) -> bool:
        return self._T_map_world is not None

    @property
    def T_map_world(self) -> np.ndarray:
        if self._T_map_world is None:
            raise CoreError("PoseTracker.T_map_world is not set: no pose has anchored the map yet")
        return self._T_map_world.copy()

    @property
    def T_map_odom(self) -> Optional[np.ndarray]:
        return None if self._T_map_odom is None else self._T_map_odom.copy()

    def anchor(self, T_world_cam: np.ndarray, T_base_cam: np.ndarray) -> None:
        """Fix ``T_map_world`` from the first pose of a reconstruction (see module docstring)."""
        target = self._continue_from if self._continue_from is not None else T_base_cam
        self._T_map_world = target @ invert(np.asarray(T_world_cam, dtype=np.float64))
        self._continue_from = None

    def restart_world(self) -> None:
        """The network restarted (new world): the next pose anchors at the last known camera pose
        (the back end starts again too: no correction in the new world)."""
        self._continue_from = None if self.last_T_map_cam is None else self.last_T_map_cam.copy()
        self._T_map_world = None
        self._S = np.eye(4)

    # ------------------------------------------------------------------ update
    def to_map(self, T_world_cam: np.ndarray) -> np.ndarray:
        """``T_map_cam`` of a network pose (through the back end's correction)."""
        return self.T_map_world @ similarity_pose(self._S, np.asarray(T_world_cam, dtype=np.float64))

    @property
    def correction(self) -> np.ndarray:
        return self._S.copy()

    def restore_correction(self, S: np.ndarray) -> None:
        """Put back a saved correction (a resumed session; map -> odom is restored as saved)."""
        self._S = np.asarray(S, dtype=np.float64).copy()

    def set_correction(self, S: np.ndarray) -> bool:
        """Take the back end's new similarity ``S`` (4, 4); returns True when ``map -> odom`` changed
        (the newest published pose moved; its odometry is kept, map -> odom absorbs the move)."""
        S = np.asarray(S, dtype=np.float64)
        if np.allclose(S, self._S, rtol=0.0, atol=1e-12):
            return False
        change = S @ np.linalg.inv(self._S)
        self._S = S.copy()
        last = self.last_published
        if last is None or self._T_map_world is None:
            return False
        M = self._T_map_world @ change @ np.linalg.inv(self._T_map_world)  # the move, in the map frame
        T_cam_base = invert(last.T_map_cam) @ last.T_map_base
        last.T_map_cam = similarity_pose(M, last.T_map_cam)
        last.T_map_base = last.T_map_cam @ T_cam_base
        self.last_T_map_cam = last.T_map_cam.copy()
        if last.T_odom_base is None:
            return False
        self._T_map_odom = last.T_map_base @ invert(last.T_odom_base)
        return True

    def update(
        self,
        poses: Sequence[tuple[int, np.ndarray, bool]],
        T_base_cam: np.ndarray,
        external_odom: Optional[Callable[[int], Optional[np.ndarray]]] = None,
    ) -> TrackerUpdate:
        """Take one estimate: ``poses`` = ``(stamp_ns, T_world_cam, provisional)`` of one network pass.

        ``external_odom(stamp_ns) -> T_odom_base or None`` is used in ``map_to_odom`` mode.
        """
        if not self.anchored:
            raise CoreError("PoseTracker.update before anchor(): call anchor() with the first pose")
        T_cam_base = invert(np.asarray(T_base_cam, dtype=np.float64))
        items = []
        for stamp, T_world_cam, provisional in sorted(poses, key=lambda p: p[0]):
            T_map_cam = self.to_map(T_world_cam)
            items.append(TrackedPose(int(stamp), bool(provisional), T_map_cam, T_map_cam @ T_cam_base, None))
        if items:
            self.last_T_map_cam = items[-1].T_map_cam.copy()
        newest = self.last_published.stamp_ns if self.last_published is not None else None
        revised = [p for p in items if p.stamp_ns in self._published]
        fresh = [p for p in items if newest is None or p.stamp_ns > newest]
        taken = {p.stamp_ns for p in revised} | {p.stamp_ns for p in fresh}
        skipped = [p.stamp_ns for p in items if p.stamp_ns not in taken]
        if self.tf_mode == "odom_to_base":
            changed = self._update_odom(revised, fresh)
        else:
            changed = self._update_external(revised, fresh, external_odom)
        return TrackerUpdate(fresh, revised, skipped, self.T_map_odom, changed)

    def _update_odom(self, revised: list[TrackedPose], fresh: list[TrackedPose]) -> bool:
        changed = False
        if revised:
            j = revised[-1]
            published = self._published[j.stamp_ns]
            self._T_map_odom = j.T_map_base @ invert(published.T_odom_base)  # type: ignore[arg-type]
            changed = True
        for pose in fresh:
            pose.T_odom_base = invert(self._T_map_odom) @ pose.T_map_base  # type: ignore[arg-type]
            self._remember(pose)
        for pose in revised:
            pose.T_odom_base = self._published[pose.stamp_ns].T_odom_base
        return changed

    def _update_external(self, revised, fresh, external_odom) -> bool:
        for pose in revised + fresh:
            pose.T_odom_base = external_odom(pose.stamp_ns) if external_odom is not None else None
        for pose in fresh:
            self._remember(pose)
        for pose in sorted(revised + fresh, key=lambda p: p.stamp_ns, reverse=True):
            if pose.T_odom_base is not None:
                self._T_map_odom = pose.T_map_base @ invert(pose.T_odom_base)
                return True
        return False

    def _remember(self, pose: TrackedPose) -> None:
        self._published[pose.stamp_ns] = pose
        while len(self._published) > self._history:
            self._published.popitem(last=False)
        self.last_published = pose
