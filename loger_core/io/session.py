"""Mapping sessions on disk: everything needed to continue a map exactly where it stopped.

A session is one file in the safetensors format (every array is a named tensor) whose header
metadata carries one JSON document under the key ``loger_session``::

    {"format": "loger_session", "version": 1, "created_unix": ...,
     "model": {"name", "config", "weights_sha256"},      # which network made the memory
     "settings": {...},                                   # options that resuming needs unchanged
     "components": {name: {...JSON meta...}},             # e.g. "stream", "map", "trajectory"
     "tensors_sha256": "...", "tensor_count": N}

The session is a set of named :class:`SessionComponent` s (tensors plus a JSON meta), so a part of
the system that keeps state (the streaming reconstructor, the voxel map, the node's trajectory, a
2D grid ...) adds its own component without changing the format. The component helpers for the
voxel map and trajectories live here; the streaming reconstructor's is
:mod:`loger_core.stream.session_state`.

Writing is atomic: the file is written to a temporary name in the same folder, flushed to disk
(fsync), then renamed over the target (``os.replace``) and the folder is fsynced, so a crash or
``kill -9`` at any moment leaves either the previous file or the new one, never a mix. Reading
refuses, with a :class:`SessionError` subclass naming the file and the reason, a missing file,
garbage or a truncated file (the safetensors header and the checksum over every tensor),
another format version, a session made by another model (config or weights differ) and one
made with window/alignment/resolution settings the current run does not share.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch

from loger_core.io.atomic import IN_PROGRESS, fsync_path

__all__ = [
    "SESSION_FORMAT",
    "SESSION_VERSION",
    "ModelIdentity",
    "Session",
    "SessionComponent",
    "SessionConfigMismatchError",
    "SessionCorruptError",
    "SessionError",
    "SessionModelMismatchError",
    "SessionNotFoundError",
    "SessionStateError",
    "SessionVersionError",
    "check_session",
    "load_session",
    "model_identity",
    "read_session",
    "save_session",
    "trajectory_component",
    "trajectory_from_component",
    "voxel_map_component",
    "restore_voxel_map",
]

PathLike = Union[str, "os.PathLike[str]"]

SESSION_FORMAT = "loger_session"
SESSION_VERSION = 1
_META_KEY = "loger_session"
_TMP_MARK = ".tmp-"


# ====================================================================== errors
class SessionError(Exception):
    """A session file that cannot be used (or state that cannot be saved): ``path`` and ``reason``."""

    kind = "unusable"

    def __init__(self, path: Optional[PathLike], reason: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        where = f"session file {self.path!r}" if self.path is not None else "session"
        super().__init__(f"{where}: {reason}")


class SessionNotFoundError(SessionError):
    kind = "not_found"


class SessionCorruptError(SessionError):
    """Garbage, a truncated file, or tensors whose checksum does not match the header."""

    kind = "corrupt"


class SessionVersionError(SessionError):
    kind = "version"


class SessionModelMismatchError(SessionError):
    """The session's memory was made by another network (config or weights)."""

    kind = "model_mismatch"


class SessionConfigMismatchError(SessionError):
    """The session was made with settings (window, overlap, alignment, ...) this run does not share."""

    kind = "config_mismatch"


class SessionStateError(SessionError):
    """The live state cannot be captured or restored now (e.g. a finished stream, a non-fresh target)."""

    kind = "state"


# ==================================================================== identity
@dataclass(frozen=True)
class ModelIdentity:
    """Which network a session's memory belongs to.

    name: model config name ('tiny', 'loger', ...); config: the full model config as JSON;
    weights_sha256: SHA-256 over every state-dict tensor (name, dtype, shape, bytes) in name order.
    """

    name: str
    config: dict
    weights_sha256: str

    def to_json(self) -> dict:
        return {"name": self.name, "config": self.config, "weights_sha256": self.weights_sha256}

    @classmethod
    def from_json(cls, d: Any) -> "ModelIdentity":
        return cls(str(d["name"]), dict(d["config"]), str(d["weights_sha256"]))

    def describe(self) -> str:
        return f"model {self.name!r} (weights sha256 {self.weights_sha256[:12]})"

    def mismatch(self, other: "ModelIdentity") -> Optional[str]:
        """Why a session made with ``self`` cannot continue with ``other`` (None when it can)."""
        if self.config != other.config:
            keys = sorted(k for k in set(self.config) | set(other.config) if self.config.get(k) != other.config.get(k))
            return (f"it was made by {self.describe()} but this run uses {other.describe()}: the model configs "
                    f"differ in {keys[:6]}")
        if self.weights_sha256 != other.weights_sha256:
            return (f"it was made by {self.describe()} but this run uses {other.describe()}: same architecture, "
                    "different weights")
        return None


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def _hash_tensors(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    h = hashlib.sha256()
    for name, t in items:
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{list(t.shape)}|".encode())
        h.update(_tensor_bytes(t.cpu()))
    return h.hexdigest()


def model_identity(model: Any) -> ModelIdentity:
    """The identity of ``model`` (computed once per model object: hashing a full model's ~1.5 GB of
    weights takes seconds). A test double without a config or state dict gets its class name."""
    cached = getattr(model, "_loger_session_identity", None)
    if isinstance(cached, ModelIdentity):
        return cached
    cfg = getattr(model, "cfg", None)
    config = cfg.to_dict() if hasattr(cfg, "to_dict") else {}
    name = str(getattr(cfg, "name", type(model).__name__))
    if isinstance(model, torch.nn.Module):
        sd = model.state_dict()
        digest = _hash_tensors((k, sd[k]) for k in sorted(sd))
    else:
        digest = "none"
    identity = ModelIdentity(name, json.loads(json.dumps(config)), digest)
    try:
        object.__setattr__(model, "_loger_session_identity", identity)
    except (AttributeError, TypeError):
        pass
    return identity


# ==================================================================== session
@dataclass
class SessionComponent:
    """One named part of a session: ``tensors`` (name -> CPU tensor) and a JSON-able ``meta``."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


@dataclass
class Session:
    """A mapping session (see the module docstring). ``settings``: what must match to resume."""

    identity: ModelIdentity
    settings: dict
    components: dict[str, SessionComponent]
    created_unix: float = field(default_factory=time.time)
    version: int = SESSION_VERSION

    def component(self, name: str, path: Optional[PathLike] = None) -> SessionComponent:
        if name not in self.components:
            raise SessionCorruptError(path, f"has no {name!r} component (it holds {sorted(self.components)})")
        return self.components[name]


def _check_name(name: str, what: str) -> None:
    if not name or "/" in name:
        raise ValueError(f"{what} name {name!r} must be non-empty and contain no '/'")


def save_session(path: PathLike, session: Session) -> Path:
    """Write ``session`` to ``path`` atomically (see the module docstring); returns the path.

    Temporary folders of writers that were killed (``.<name>.tmp-<pid>-...``) are removed first.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(path)
    tensors: dict[str, torch.Tensor] = {}
    for cname, comp in session.components.items():
        _check_name(cname, "component")
        for tname, t in comp.tensors.items():
            if not isinstance(t, torch.Tensor):
                t = torch.from_numpy(np.ascontiguousarray(t))
            tensors[f"{cname}/{tname}"] = t.detach().cpu().contiguous()
    header = {
        "format": SESSION_FORMAT,
        "version": session.version,
        "created_unix": session.created_unix,
        "model": session.identity.to_json(),
        "settings": session.settings,
        "components": {name: comp.meta for name, comp in session.components.items()},
        "tensor_count": len(tensors),
        "tensors_sha256": _hash_tensors((k, tensors[k]) for k in sorted(tensors)),
    }
    # A private folder beside the target: safetensors may itself write through a temporary file,
    # and whatever a killed writer leaves is in one place that the next save removes.
    tmp_dir = path.parent / f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = tmp_dir / "session.safetensors"
    IN_PROGRESS.add(tmp_dir)  # removed by a process that exits at once (a second Ctrl-C)
    try:
        tmp_dir.mkdir()
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(header, allow_nan=True)})
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        IN_PROGRESS.discard(tmp_dir)
    fsync_path(path.parent)
    return path


def _remove_stale_tmp(path: Path) -> None:
    prefix = f".{path.name}{_TMP_MARK}"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid_text = entry.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue  # another live writer's file
        if pid_text.isdigit() and int(pid_text) == os.getpid():
            continue  # one of ours in flight on another thread
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_session(path: PathLike) -> Session:
    """Read and verify a session file (format, version, checksum); no compatibility check.

    Raises SessionNotFoundError, SessionCorruptError or SessionVersionError naming ``path``.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise SessionNotFoundError(path, "does not exist")
    if not path.is_file():
        raise SessionNotFoundError(path, "is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            raw = metadata.get(_META_KEY)
            if raw is None:
                raise SessionCorruptError(path, "is a safetensors file but not a LoGeR session (no "
                                          f"'{_META_KEY}' header; a model checkpoint?)")
            header = _parse_header(path, raw)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as err:
        raise SessionCorruptError(path, f"is not a readable session file (truncated or garbage: {err})") from None
    except OSError as err:
        raise SessionCorruptError(path, f"cannot be read: {err}") from None
    if len(tensors) != header["tensor_count"]:
        raise SessionCorruptError(path, f"holds {len(tensors)} tensors, its header says {header['tensor_count']}")
    digest = _hash_tensors((k, tensors[k]) for k in sorted(tensors))
    if digest != header["tensors_sha256"]:
        raise SessionCorruptError(path, "its tensors do not match the checksum in its header (the file is damaged)")
    metas = header["components"]
    components: dict[str, SessionComponent] = {name: SessionComponent({}, dict(meta)) for name, meta in metas.items()}
    for key, t in tensors.items():
        cname, _, tname = key.partition("/")
        if cname not in components or not tname:
            raise SessionCorruptError(path, f"tensor {key!r} belongs to no component")
        components[cname].tensors[tname] = t
    try:
        identity = ModelIdentity.from_json(header["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise SessionCorruptError(path, f"has a malformed model identity: {err!r}") from None
    return Session(identity, dict(header.get("settings") or {}), components, float(header.get("created_unix", 0.0)),
                   int(header["version"]))


def _parse_header(path: Path, raw: str) -> dict:
    try:
        header = json.loads(raw)
    except ValueError as err:
        raise SessionCorruptError(path, f"has an unreadable JSON header: {err}") from None
    if not isinstance(header, dict) or header.get("format") != SESSION_FORMAT:
        raise SessionCorruptError(path, f"its header is not a '{SESSION_FORMAT}' header")
    version = header.get("version")
    if version != SESSION_VERSION:
        raise SessionVersionError(path, f"has format version {version!r}; this build reads version {SESSION_VERSION} "
                                  "only")
    for key, kind in (("components", dict), ("tensor_count", int), ("tensors_sha256", str), ("model", dict)):
        if not isinstance(header.get(key), kind):
            raise SessionCorruptError(path, f"its header lacks a valid {key!r}")
    return header


def check_session(session: Session, path: Optional[PathLike], identity: Optional[ModelIdentity] = None,
                  settings: Optional[Mapping[str, Any]] = None) -> None:
    """Raise SessionModelMismatchError / SessionConfigMismatchError when ``session`` cannot continue
    with the model ``identity`` and the ``settings`` of this run (keys absent from either side are
    not compared)."""
    if identity is not None:
        reason = session.identity.mismatch(identity)
        if reason is not None:
            raise SessionModelMismatchError(path, reason)
    if settings is not None:
        diffs = [f"{k}: session {session.settings[k]!r}, this run {_jsonable(v)!r}"
                 for k, v in settings.items() if k in session.settings and session.settings[k] != _jsonable(v)]
        if diffs:
            raise SessionConfigMismatchError(path, "was made with other settings (" + "; ".join(diffs) + ")")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value))


def load_session(path: PathLike, identity: Optional[ModelIdentity] = None,
                 settings: Optional[Mapping[str, Any]] = None) -> Session:
    """:func:`read_session` plus :func:`check_session`."""
    session = read_session(path)
    check_session(session, path, identity, settings)
    return session


# ========================================================= common components
_MAP_ARRAYS = ("keys", "pos", "col", "conf", "count", "seen")


def voxel_map_component(vmap: Any) -> SessionComponent:
    """The complete state of a :class:`~loger_core.mapping.voxel_map.VoxelMap`, hash table included, so that a
    restored map merges later frames exactly as the original would (same slots, same order)."""
    n = vmap._n
    tensors = {name: torch.from_numpy(getattr(vmap, f"_{name}")[:n].copy()) for name in _MAP_ARRAYS}
    tensors["table_keys"] = torch.from_numpy(vmap._table_keys.copy())
    tensors["table_slot"] = torch.from_numpy(vmap._table_slot.copy())
    cfg = vmap.cfg
    meta = {
        "config": {"voxel_size": cfg.voxel_size, "min_confidence": cfg.min_confidence, "max_points": int(cfg.max_points),
                   "policy": cfg.policy, "evict_headroom": cfg.evict_headroom,
                   "confidence_reduce": cfg.confidence_reduce},
        "n": int(n), "frame": int(vmap._frame), "evicted_total": int(vmap._evicted_total),
        "dropped": {k: int(v) for k, v in vmap._dropped.items()},
        "origin": None if vmap._origin is None else [float(v) for v in vmap._origin],
        "origin_given": bool(vmap._origin_given), "bits": int(vmap._bits), "capacity": int(len(vmap._keys)),
    }
    return SessionComponent(tensors, meta)


def restore_voxel_map(vmap: Any, comp: SessionComponent, path: Optional[PathLike] = None) -> None:
    """Load ``comp`` (from :func:`voxel_map_component`) into ``vmap``; its voxel size must match."""
    from loger_core.mapping.voxel_map import MapConfig

    meta = comp.meta
    try:
        saved_cfg = MapConfig(**meta["config"])
        if saved_cfg.voxel_size != vmap.cfg.voxel_size:
            raise SessionConfigMismatchError(path, f"its map has voxel size {saved_cfg.voxel_size} m, this run "
                                             f"{vmap.cfg.voxel_size} m")
        n, capacity, bits = int(meta["n"]), int(meta["capacity"]), int(meta["bits"])
        arrays = {name: comp.tensors[name].numpy() for name in _MAP_ARRAYS}
        table_keys, table_slot = comp.tensors["table_keys"].numpy(), comp.tensors["table_slot"].numpy()
        if any(len(a) != n for a in arrays.values()) or len(table_keys) != 1 << bits or capacity < n:
            raise SessionCorruptError(path, "its map arrays do not match their sizes")
    except KeyError as err:
        raise SessionCorruptError(path, f"its map component lacks {err}") from None
    vmap.clear()
    vmap._alloc_storage(max(capacity, 1))
    for name, arr in arrays.items():
        getattr(vmap, f"_{name}")[:n] = arr
    vmap._n = n
    vmap._bits = bits
    vmap._table_keys = table_keys.copy()
    vmap._table_slot = table_slot.copy()
    vmap._frame = int(meta["frame"])
    vmap._evicted_total = int(meta["evicted_total"])
    vmap._dropped = {k: int(v) for k, v in meta["dropped"].items()}
    vmap._origin = None if meta["origin"] is None else np.asarray(meta["origin"], dtype=np.float64)
    vmap._origin_given = bool(meta["origin_given"])


def trajectory_component(stamps_ns: Any, poses: Mapping[str, Any]) -> SessionComponent:
    """Stamped poses: ``stamps_ns (N,) int64`` and named ``(N, 4, 4) float64`` pose arrays."""
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    tensors = {"stamps_ns": torch.from_numpy(stamps.copy())}
    for name, arr in poses.items():
        tensors[name] = torch.from_numpy(np.asarray(arr, dtype=np.float64).reshape(len(stamps), 4, 4).copy())
    return SessionComponent(tensors, {"poses": sorted(poses), "count": int(len(stamps))})


def trajectory_from_component(comp: SessionComponent, path: Optional[PathLike] = None
                              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(stamps_ns (N,) int64, {name: (N, 4, 4) float64})`` of :func:`trajectory_component`."""
    try:
        stamps = comp.tensors["stamps_ns"].numpy().astype(np.int64)
        poses = {name: comp.tensors[name].numpy().astype(np.float64) for name in comp.meta["poses"]}
    except KeyError as err:
        raise SessionCorruptError(path, f"its trajectory component lacks {err}") from None
    if any(p.shape != (len(stamps), 4, 4) for p in poses.values()):
        raise SessionCorruptError(path, "its trajectory arrays do not match their sizes")
    return stamps, poses
