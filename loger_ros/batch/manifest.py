"""What makes a batch output current: the job key, and ``OUT/manifest.json`` recording it per input."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["Manifest", "ManifestError", "input_fingerprint", "job_key", "model_identity", "write_json_atomic"]

MANIFEST_VERSION = 1
_HASH_CHUNK = 1 << 22


class ManifestError(ValueError):
    """A manifest file that is not one of ours (the message names the file)."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Writes ``data`` as JSON through a temporary file + rename: a crash leaves the old file or the
    new one, never a torn one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def input_fingerprint(path: Path) -> dict:
    """Size (bytes) and newest mtime (ns) of a file, or of every file below a folder (a rosbag2
    directory, an image folder): a re-recorded or edited input gets a new fingerprint."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    size, mtime, count = 0, 0, 0
    for f in files:
        st = f.stat()
        size += st.st_size
        mtime = max(mtime, st.st_mtime_ns)
        count += 1
    return {"size": size, "mtime_ns": mtime, "files": count}


def model_identity(model: str, checkpoint: Optional[str]) -> str:
    """``model:sha256-of-the-checkpoint-file`` (the weights themselves, wherever they lie), or
    ``model:synthetic`` for deterministic untrained weights."""
    if not checkpoint:
        return f"{model}:synthetic"
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return f"{model}:{digest.hexdigest()}"


def job_key(path: Path, fingerprint: dict, tool: str, parameters: Any, model: str) -> str:
    """sha256 over input path + size + mtime + the tool and its parameters + the model identity."""
    record = {"path": str(Path(path).resolve()), "fingerprint": fingerprint, "tool": tool,
              "parameters": parameters, "model": model}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Manifest:
    """``OUT/manifest.json``: input name -> {key, input, status, ...} of the last run of each input.

    An entry with status 'ok' and the current key, whose output folder exists, is done.
    """

    path: Path
    entries: dict

    @classmethod
    def load(cls, out_dir: Path) -> "Manifest":
        path = Path(out_dir) / "manifest.json"
        if not path.exists():
            return cls(path, {})
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ManifestError(f"{path}: not a loger-batch manifest ({err}); move it away to start afresh") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION or not isinstance(data.get("inputs"), dict):
            raise ManifestError(f"{path}: not a loger-batch manifest of version {MANIFEST_VERSION}; move it away")
        return cls(path, data["inputs"])

    def is_done(self, name: str, key: str) -> bool:
        entry = self.entries.get(name)
        return (entry is not None and entry.get("status") == "ok" and entry.get("key") == key
                and (self.path.parent / name).is_dir())

    def record(self, name: str, entry: dict) -> None:
        self.entries[name] = entry
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, {"version": MANIFEST_VERSION, "inputs": self.entries})
