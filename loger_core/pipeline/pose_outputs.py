"""Pose outputs of the mapping pipeline: odometry records (``odom -> base`` or ``map -> base``,
per ``tf_mode``) with latency / rate bookkeeping, the TF record, and the external ``odom -> base``
lookup that ``tf_mode`` 'map_to_odom' needs. Poses are (4, 4) float64 rigid transforms T_parent_child.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from loger_core.pipeline.checks import validate_rigid_transform
from loger_core.pipeline.pose_tracker import TrackedPose

__all__ = ["PoseOutputs"]

Publication = Any  # what the emitter returns (see loger_core.pipeline.core)

# Pose confidence handed to the covariance model: committed poses are nominal, provisional ones
# (one uncommitted pass, later superseded) get twice the standard deviation.
_CONFIDENCE = {False: 1.0, True: 0.5}


class PoseOutputs:
    """Mixin of :class:`~loger_core.pipeline.core.MappingPipeline`: odometry and TF records. Uses its
    params, builder, ``_lookup``, ``_last_odom``, ``_receive_ns``, counters, meters and ``_lock``."""

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
