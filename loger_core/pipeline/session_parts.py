"""What goes into a node mapping session (when and where it is saved: ``session_keeper``). A node
session holds named components, each captured and restored by one :class:`SessionPart`:

- ``stream``: the streaming reconstructor (network memory, aligner, buffered frames, scale);
- ``map``: the voxel map, hash table included;
- ``trajectory``: committed stamps with ``T_map_base`` and ``T_map_cam``;
- ``tracker``: ``T_map_world``, ``map -> odom`` and the published odometry the tracker revises;
- ``core``: the camera mount, the last stamp, the last odometry and the counters.

Other parts of the node that keep state (e.g. a 2D occupancy grid) register their own part in
``MappingCore.session_parts`` under a new name; a session without that component restores the
others and leaves the new part empty (logged).

Arrays in the components are float64 poses ``(N, 4, 4)`` (``T_map_base``, ``T_map_cam``,
``T_map_world``) and the voxel map's / grid's own arrays.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, fields
from typing import Any, Optional, Protocol

import numpy as np
import torch

from loger_core.mapping.occupancy_grid import GridError
from loger_core.mapping.torch_storage import TorchVoxelMap
from loger_core.mapping.voxel_map import VoxelMap

from loger_core.io.session import (
    SessionComponent, SessionCorruptError, SessionStateError, restore_voxel_map, trajectory_component, trajectory_from_component,
    voxel_map_component,
)
from loger_core.pipeline.pose_tracker import TrackedPose

# The pipeline whose state the parts hold (MappingPipeline); typed loosely so that this module and
# core.py do not import each other.
MappingCore = Any

__all__ = ["BackendPart", "CorePart", "GridPart", "MapPart", "SessionPart", "StreamPart", "TrackerPart", "TrajectoryPart"]


class SessionPart(Protocol):
    """Captures and restores one named component of a node session.

    ``capture`` runs on the inference thread between frames (after the stream is drained and the
    map fusion caught up) and returns copies; ``restore`` runs at start-up, before any thread, and
    should check everything before changing anything (raise a SessionError subclass naming
    ``path`` to refuse the whole session). A part may also have ``reset()``: called when another
    part refused the session after this one was restored, to get back to a fresh state.

    E.g. a 2D grid: ``core.session_parts["grid"] = GridPart(core)`` in ``MappingCore.__init__``
    before ``self.sessions.resume(...)``.
    """

    def capture(self) -> SessionComponent: ...

    def restore(self, component: SessionComponent, path: Optional[str]) -> None: ...


class StreamPart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        rec = self.core.reconstructor
        if not hasattr(rec, "session_component"):
            raise SessionStateError(None, f"the streaming core ({type(rec).__name__}) cannot save its state")
        return rec.session_component()

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        self.core.reconstructor.restore_session(component, path)


class MapPart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        fusion = self.core.fusion
        with fusion._lock:
            vmap = fusion.map
            # The GPU map is saved as the CPU map it equals: a session resumes on either.
            return voxel_map_component(vmap.to_voxel_map() if isinstance(vmap, TorchVoxelMap) else vmap)

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        fusion = self.core.fusion
        with fusion._lock:
            if isinstance(fusion.map, TorchVoxelMap):
                restored = VoxelMap(fusion.map.cfg)
                restore_voxel_map(restored, component, path)
                fusion.map.load_voxel_map(restored)
            else:
                restore_voxel_map(fusion.map, component, path)
            fusion._version += 1  # the restored map is published at the next period


class GridPart:
    """The 2D occupancy grid's evidence. A session from a run with other grid settings (or none)
    leaves the grid empty with a warning; the rest of the session still resumes."""

    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        gm = self.core.grid
        with gm._lock:
            st = gm.grid.state()
        return SessionComponent(
            tensors={"log_odds": torch.from_numpy(st["log_odds"]), "seen": torch.from_numpy(st["seen"])},
            meta={"origin_cell": list(st["origin_cell"]), "updates": st["updates"], "config": asdict(gm.config)})

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        gm = self.core.grid
        if component.meta.get("config") != asdict(gm.config):
            self.core.log.warning(f"session {path}: its grid was made with other grid_* settings; the grid starts empty")
            return
        try:
            state = {"log_odds": component.tensors["log_odds"].numpy(), "seen": component.tensors["seen"].numpy(),
                     "origin_cell": tuple(component.meta["origin_cell"]), "updates": component.meta["updates"]}
            with gm._lock:
                gm.grid.load_state(state)
                gm._version += 1  # published at the next period
        except (KeyError, TypeError, ValueError, GridError) as err:
            raise SessionCorruptError(path, f"its grid component is unreadable ({err})") from None

    def reset(self) -> None:
        gm = self.core.grid
        with gm._lock:
            gm.grid.clear()


class TrajectoryPart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        m = self.core.mapper
        with m.lock:
            n = len(m.stamps)
            base = np.asarray(m.poses_base, dtype=np.float64).reshape(n, 4, 4)
            cam = np.asarray(m.poses_cam, dtype=np.float64).reshape(n, 4, 4)
            return trajectory_component(m.stamps, {"T_map_base": base, "T_map_cam": cam})

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        stamps, poses = trajectory_from_component(component, path)
        if set(poses) != {"T_map_base", "T_map_cam"}:
            raise SessionCorruptError(path, f"its trajectory holds {sorted(poses)}, not T_map_base and T_map_cam")
        m = self.core.mapper
        with m.lock:
            m.stamps[:] = [int(s) for s in stamps]
            m.poses_base[:] = list(poses["T_map_base"])
            m.poses_cam[:] = list(poses["T_map_cam"])


def _opt(tensors: dict, name: str, value: Optional[np.ndarray]) -> bool:
    """Puts an optional float64 array into ``tensors``; returns whether it was there (for the meta)."""
    if value is None:
        return False
    tensors[name] = torch.from_numpy(np.asarray(value, dtype=np.float64).copy())
    return True


class TrackerPart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        tr = self.core.tracker
        t: dict = {}
        meta: dict[str, Any] = {"tf_mode": tr.tf_mode}
        for name in ("_T_map_world", "_continue_from", "_T_map_odom"):
            meta[name] = _opt(t, name, getattr(tr, name))
        meta["last_T_map_cam"] = _opt(t, "last_T_map_cam", tr.last_T_map_cam)
        published = list(tr._published.values())
        meta["published"] = [[int(p.stamp_ns), bool(p.provisional), p.T_odom_base is not None] for p in published]
        if published:
            t["published.T_map_cam"] = torch.from_numpy(np.stack([p.T_map_cam for p in published]).astype(np.float64))
            t["published.T_map_base"] = torch.from_numpy(np.stack([p.T_map_base for p in published]).astype(np.float64))
            t["published.T_odom_base"] = torch.from_numpy(np.stack(
                [p.T_odom_base if p.T_odom_base is not None else np.full((4, 4), np.nan) for p in published]))
        last = tr.last_published
        meta["last_published_is_last"] = bool(published and last is published[-1])
        return SessionComponent(t, meta)

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        tr = self.core.tracker
        t, meta = component.tensors, component.meta
        try:
            if meta["tf_mode"] != tr.tf_mode:
                from loger_core.io.session import SessionConfigMismatchError

                raise SessionConfigMismatchError(path, f"was made with tf_mode {meta['tf_mode']!r}, this run uses "
                                                 f"{tr.tf_mode!r}")
            values = {name: (t[name].numpy().copy() if meta[name] else None)
                      for name in ("_T_map_world", "_continue_from", "_T_map_odom")}
            last_cam = t["last_T_map_cam"].numpy().copy() if meta["last_T_map_cam"] else None
            published: OrderedDict[int, TrackedPose] = OrderedDict()
            for i, (stamp, provisional, has_odom) in enumerate(meta["published"]):
                odom = t["published.T_odom_base"][i].numpy().copy() if has_odom else None
                published[int(stamp)] = TrackedPose(int(stamp), bool(provisional), t["published.T_map_cam"][i].numpy().copy(),
                                                    t["published.T_map_base"][i].numpy().copy(), odom)
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise SessionCorruptError(path, f"its tracker component is malformed ({type(err).__name__}: {err})") from None
        tr._T_map_world, tr._continue_from, tr._T_map_odom = (values["_T_map_world"], values["_continue_from"],
                                                              values["_T_map_odom"])
        tr.last_T_map_cam = last_cam
        tr._published = published
        tr.last_published = next(reversed(published.values())) if published and meta["last_published_is_last"] else None


class BackendPart:
    """A back end's keyframes and graph (``consumer.capture`` / ``restore``), the similarity the
    mapper and tracker apply, and the images of frames pushed but not yet committed."""

    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        c = self.core
        tensors, meta = c.mapper.consumer.capture(c.mapper.correction)
        tensors.update(c.mapper.images_state())
        return SessionComponent(tensors, meta)

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        c = self.core
        try:
            correction = c.mapper.consumer.restore(component.tensors, component.meta, path)
        except (ValueError, KeyError) as err:
            raise SessionCorruptError(path, f"its back-end state cannot be used ({err})") from None
        c.mapper.correction = correction
        c.tracker.restore_correction(correction)
        c.mapper.restore_images(component.tensors)


class CorePart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        c = self.core
        m = c.mount
        t: dict = {}
        meta = {
            "mount": {"frozen": m.frozen, "source": m.source, "camera_frame": m.camera_frame,
                      "T": _opt(t, "mount.T", m._T)},
            "camera_frame": c._camera_frame,
        }
        with c._lock:
            meta["last_stamp"] = c._last_stamp
            meta["counters"] = asdict(c.counters)
            meta["last_odom_stamp"] = None if c._last_odom is None else int(c._last_odom[0])
            if c._last_odom is not None:
                _opt(t, "last_odom.T", c._last_odom[1])
        return SessionComponent(t, meta)

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        c = self.core
        t, meta = component.tensors, component.meta
        try:
            mm = meta["mount"]
            T = t["mount.T"].numpy().copy() if mm["T"] else None
            last_odom = None
            if meta["last_odom_stamp"] is not None:
                last_odom = (int(meta["last_odom_stamp"]), t["last_odom.T"].numpy().copy())
            counters = dict(meta["counters"])
        except (KeyError, TypeError, ValueError) as err:
            raise SessionCorruptError(path, f"its core component is malformed ({type(err).__name__}: {err})") from None
        m = c.mount
        m._T, m._frozen, m.source, m.camera_frame = T, bool(mm["frozen"]) and T is not None, mm["source"], mm["camera_frame"]
        c._camera_frame = meta["camera_frame"]
        with c._lock:
            c._last_stamp = None if meta["last_stamp"] is None else int(meta["last_stamp"])
            c._last_odom = last_odom
            known = {f.name for f in fields(c.counters)}
            for key, value in counters.items():
                if key == "dropped":
                    c.counters.dropped.update({k: int(v) for k, v in value.items() if k in c.counters.dropped})
                elif key in known:
                    setattr(c.counters, key, value)
            # Diagnostics report drops and errors since their last message, not the previous run's.
            c._last_diag_dropped = c.counters.dropped_total
            c._last_diag_errors = c.counters.dropped["inference_error"]
