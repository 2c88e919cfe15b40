"""Mapping sessions of the node core: capture, autosave, resume (see :mod:`loger_core.io.session`).

The components (``stream``, ``map``, ``trajectory``, ``tracker``, ``core``, ``grid``) and the
:class:`SessionPart` protocol for new ones are in :mod:`loger_core.pipeline.session_parts`.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from loger_core.io.session import (
    Session, SessionCorruptError, SessionError, SessionNotFoundError, SessionStateError, check_session, model_identity,
    read_session, save_session,
)
from loger_core.pipeline.session_parts import (
    BackendPart, CorePart, GridPart, MapPart, SessionPart, StreamPart, TrackerPart, TrajectoryPart,
)

# The pipeline that owns the keeper (MappingPipeline); typed loosely so that this module and
# core.py do not import each other.
MappingCore = Any

__all__ = ["SavedSession", "SessionKeeper"]

# How long a capture waits for windows in flight on the reconstructor's worker.
DRAIN_TIMEOUT_S = 60.0


@dataclass
class SavedSession:
    """A written session: ``path``, committed ``frames`` (trajectory poses), file ``bytes`` and ``seconds``."""

    path: Path
    frames: int
    bytes: int
    seconds: float



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
        parts = OrderedDict(stream=StreamPart(c), map=MapPart(c), trajectory=TrajectoryPart(c),
                            tracker=TrackerPart(c), core=CorePart(c))
        if c.grid is not None:
            parts["grid"] = GridPart(c)
        if hasattr(c.mapper.consumer, "capture"):
            parts["backend"] = BackendPart(c)
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
