"""Mapping sessions of the node core: capture, autosave, resume (see :mod:`loger_core.io.session`).

A node session holds named components, each captured and restored by one :class:`SessionPart`:

- ``stream``: the streaming reconstructor (network memory, aligner, buffered frames, scale);
- ``map``: the voxel map, hash table included;
- ``trajectory``: committed stamps with ``T_map_base`` and ``T_map_cam``;
- ``tracker``: ``T_map_world``, ``map -> odom`` and the published odometry the tracker revises;
- ``core``: the camera mount, the last stamp, the last odometry and the counters.

Other parts of the node that keep state (e.g. a 2D occupancy grid) register their own part in
``MappingCore.session_parts`` under a new name; a session without that component restores the
others and leaves the new part empty (logged).

Consistency: a session is captured on the inference thread between frames. Windows still in
flight on the reconstructor's worker are drained first and their results mapped, and the map
fusion is brought up to date, so the map, the trajectory and the network memory all end at the
same committed frame. Frames buffered for the next window are inside the ``stream`` component:
nothing is lost and nothing is counted twice.

Files: autosaves go to ``session_path`` (default ``<output_dir>/session.loger.safetensors``)
unless that file exists and this run did not resume from it: then to
``<session_path>.new-<UTC time>``, so a session that was refused or belongs to another run is
never deleted or overwritten. The file write runs on a background thread (the capture itself is
a copy); a new autosave waits for the next period while one is still being written.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Optional, Protocol

import numpy as np
import torch

from loger_core.mapping.occupancy_grid import GridError
from loger_core.mapping.voxel_map import VoxelMap
from loger_core.mapping.torch_storage import TorchVoxelMap

from loger_core.io.session import (
    Session, SessionComponent, SessionCorruptError, SessionError, SessionNotFoundError, SessionStateError, check_session,
    model_identity,
    read_session, restore_voxel_map, save_session, trajectory_component, trajectory_from_component,
    voxel_map_component,
)
from loger_core.pipeline.pose_tracker import TrackedPose

# The pipeline that owns the keeper (MappingPipeline); typed loosely so that this module and
# core.py do not import each other.
MappingCore = Any

__all__ = ["SavedSession", "SessionKeeper", "SessionPart"]

# How long a capture waits for windows in flight on the reconstructor's worker.
DRAIN_TIMEOUT_S = 60.0


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


@dataclass
class SavedSession:
    """A written session: ``path``, committed ``frames`` (trajectory poses), file ``bytes`` and ``seconds``."""

    path: Path
    frames: int
    bytes: int
    seconds: float


# ------------------------------------------------------------------ the parts
class _StreamPart:
    def __init__(self, core: "MappingCore") -> None:
        self.core = core

    def capture(self) -> SessionComponent:
        rec = self.core.reconstructor
        if not hasattr(rec, "session_component"):
            raise SessionStateError(None, f"the streaming core ({type(rec).__name__}) cannot save its state")
        return rec.session_component()

    def restore(self, component: SessionComponent, path: Optional[str]) -> None:
        self.core.reconstructor.restore_session(component, path)


class _MapPart:
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


class _GridPart:
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


class _TrajectoryPart:
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


class _TrackerPart:
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


class _CorePart:
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


# ------------------------------------------------------------------ the keeper
class SessionKeeper:
    """Resume at start-up, periodic autosave and the shutdown save of one :class:`MappingCore`."""

    def __init__(self, core: "MappingCore") -> None:
        self.core = core
        p = core.params
        self.period_s = float(p.autosave_period_s)
        self.enabled = self.period_s > 0
        self.resumed_from: Optional[Path] = None
        self.resume_error: Optional[SessionError] = None
        self.last_saved: Optional[SavedSession] = None
        self.target: Path = p.resolved_session_path
        self._writer: Optional[threading.Thread] = None
        self._write_lock = threading.Lock()
        self._last_save_ns = core._now()
        self._saved_at_processed = -1

    # ------------------------------------------------------------------ parts
    def default_parts(self) -> "OrderedDict[str, SessionPart]":
        c = self.core
        parts = OrderedDict(stream=_StreamPart(c), map=_MapPart(c), trajectory=_TrajectoryPart(c),
                            tracker=_TrackerPart(c), core=_CorePart(c))
        if c.grid is not None:
            parts["grid"] = _GridPart(c)
        return parts

    def identity_and_settings(self):
        rec = self.core.reconstructor
        model = getattr(rec, "model", None)
        identity = model_identity(model) if model is not None else None
        settings = dict(rec.session_settings()) if hasattr(rec, "session_settings") else {}
        p = self.core.params
        settings.update({"map.voxel_size": p.voxel_size, "node.tf_mode": p.tf_mode})
        return identity, settings

    # ------------------------------------------------------------------ resume
    def resume(self, path_text: str) -> bool:
        """Continue from ``path_text``; on any refusal log why, leave the file alone and keep the
        fresh map. Then pick the autosave target (never a file this run did not resume from)."""
        log = self.core.log
        path = Path(os.path.expanduser(path_text)) if path_text else None
        if path is not None:
            try:
                session = read_session(path)
                identity, settings = self.identity_and_settings()
                check_session(session, path, identity, settings)
                self._restore(session, path)
                self.resumed_from = path
                frames = len(self.core.mapper)
                log.info(f"resumed the mapping session {str(path)!r}: {frames} committed poses, "
                         f"{len(self.core.fusion)} map points; continuing in the same map frame")
            except SessionError as err:
                self.resume_error = err
                # A missing file is the normal first start of a robot configured to resume its last session.
                level = log.warning if isinstance(err, SessionNotFoundError) else log.error
                level(f"not resuming: {err}. Starting a fresh map; {str(path)!r} is left untouched.")
        if self.enabled:
            try:
                self.identity_and_settings()  # hash the weights now, not on the first autosave
            except Exception as err:  # noqa: BLE001 - reported again when a save is tried
                log.warning(f"the model cannot be identified for sessions: {err!r}")
        self._choose_target()
        return self.resumed_from is not None

    def _restore(self, session: Session, path: Path) -> None:
        parts = self.core.session_parts
        missing = [name for name in parts if name not in session.components]
        required = [name for name in ("stream", "map", "trajectory", "tracker", "core") if name in missing]
        if required:
            raise SessionCorruptError(path, f"lacks the component(s) {required}")
        try:
            for name, part in parts.items():
                if name in session.components:
                    part.restore(session.components[name], str(path))
        except SessionError:
            self._fresh_again()
            raise
        except Exception as err:  # a part failing half-way must not leave a mixed state
            self._fresh_again()
            self.core.log.debug(traceback.format_exc())
            raise SessionCorruptError(path, f"could not be restored ({type(err).__name__}: {err})") from None
        for name in missing:
            self.core.log.warning(f"session {str(path)!r} has no {name!r} component (made by an older version?): "
                                  f"{name} starts empty")
        extra = sorted(set(session.components) - set(parts))
        if extra:
            self.core.log.warning(f"session {str(path)!r}: ignoring component(s) {extra} this node does not know")

    def _fresh_again(self) -> None:
        from loger_core.pipeline.pose_tracker import PoseTracker

        c = self.core
        for name, part in c.session_parts.items():
            reset = getattr(part, "reset", None)
            if reset is not None:
                reset()
        rec = c.reconstructor
        rec.reset()
        rec.stats = type(rec.stats)()
        c.fusion.clear()
        c.tracker = PoseTracker(c.params.tf_mode)
        c.mount.unfreeze()
        c.mapper.clear()
        with c._lock:
            c._last_stamp, c._last_odom, c._camera_frame = None, None, None
            c.counters = type(c.counters)()
            c._last_diag_dropped = c._last_diag_errors = 0

    def _choose_target(self) -> None:
        base = self.core.params.resolved_session_path
        self.target = base
        same = self.resumed_from is not None and _same_file(self.resumed_from, base)
        if base.exists() and not same:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            self.target = base.with_name(f"{base.name}.new-{stamp}")
            if self.enabled:
                self.core.log.warning(f"session file {str(base)!r} exists and this run did not resume from it: "
                                      f"autosaves go to {str(self.target)!r} (the existing file is kept)")

    # ------------------------------------------------------------------ saving
    def capture(self) -> tuple[list, Session]:
        """Drain the stream, bring the map up to date and capture every part (inference thread).
        Returns the publications of the drained windows and the session."""
        c = self.core
        pubs: list = []
        rec = c.reconstructor
        drain = getattr(rec, "drain", None)
        if drain is not None:
            results = drain(DRAIN_TIMEOUT_S)
            c._count_window_errors()
            if results:
                pubs += c._safe_handle(results)
            if getattr(rec, "windows_in_flight", False):
                raise SessionStateError(None, f"a window pass did not end within {DRAIN_TIMEOUT_S:.0f} s")
        if c.fusion.threaded:
            if not c.fusion.wait_idle(DRAIN_TIMEOUT_S):
                raise SessionStateError(None, "the map fusion did not catch up in time")
        else:
            pubs += c.fusion.run_pending()
        identity, settings = self.identity_and_settings()
        if identity is None:
            raise SessionStateError(None, "the streaming core has no model to identify")
        components = {name: part.capture() for name, part in c.session_parts.items()}
        return pubs, Session(identity, settings, components)

    def _write(self, session: Session, path: Path, reason: str) -> Optional[SavedSession]:
        t0 = time.perf_counter()
        with self._write_lock:
            try:
                save_session(path, session)
            except (OSError, ValueError, RuntimeError) as err:
                self.core.log.error(f"writing the session ({reason}) to {str(path)!r} failed: {err}")
                return None
        frames = int(session.components["trajectory"].meta.get("count", 0)) if "trajectory" in session.components else 0
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        saved = SavedSession(path, frames, size, time.perf_counter() - t0)
        self.last_saved = saved
        self.core.log.info(f"session saved ({reason}) to {str(path)!r}: {frames} poses, {size / 2**20:.1f} MiB in "
                           f"{saved.seconds:.2f} s")
        return saved

    def maybe_autosave(self) -> list:
        """The periodic autosave when due and something changed (inference thread); returns the
        publications of windows drained for it. The file is written on a background thread."""
        if not self.enabled:
            return []
        now = self.core._now()
        if now - self._last_save_ns < int(self.period_s * 1e9):
            return []
        if self._writer is not None and self._writer.is_alive():
            return []  # the previous autosave is still being written: try at the next frame
        self._last_save_ns = now
        processed = self.core.counters.processed
        if processed == self._saved_at_processed:
            return []
        try:
            pubs, session = self.capture()
        except SessionError as err:
            self.core.log.warning(f"autosave skipped: {err}")
            return []
        except Exception as err:  # never let a save break mapping
            self.core.log.error(f"autosave failed: {err!r}\n{traceback.format_exc()}")
            return []
        self._saved_at_processed = processed
        self._writer = threading.Thread(target=self._write, args=(session, self.target, "autosave"),
                                        name="loger-session-writer", daemon=True)
        self._writer.start()
        return pubs

    def save(self, path: Optional[str] = None, reason: str = "request") -> tuple[list, Optional[SavedSession]]:
        """Capture and write now, on the calling thread (after the inference thread stopped, or on it);
        waits for an autosave still being written. ``path``: default the autosave target."""
        if self._writer is not None:
            self._writer.join()
        pubs, session = self.capture()
        target = Path(os.path.expanduser(path)) if path else self.target
        saved = self._write(session, target, reason)
        if saved is not None:
            self._saved_at_processed = self.core.counters.processed
        return pubs, saved

    def wait(self, timeout_s: Optional[float] = None) -> None:
        """Wait for an autosave being written."""
        if self._writer is not None:
            self._writer.join(timeout_s)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False
