"""Writing output files so that an interruption never leaves a torn one.

Each file is written under a temporary name beside the target (same folder, so the rename stays on
one file system; same suffix, so writers that choose a format by it still work), flushed to disk and
moved into place with ``os.replace`` (atomic on POSIX): readers see the old file or the new one,
never half of one. A temporary file whose writer fails or is interrupted is removed; the paths being
written are listed in :data:`IN_PROGRESS`, so that a process exiting at once (a second Ctrl-C,
:mod:`loger_core.cli.interrupt`) can remove them too.
"""
from __future__ import annotations

import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ["IN_PROGRESS", "atomic_path", "remove_in_progress", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic"]

PathLike = Union[str, "os.PathLike[str]"]

# Temporary paths being written right now (files or folders).
IN_PROGRESS: set[Path] = set()


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder: makes a rename in it durable); silently not where the
    platform cannot open it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path to write ``path``'s content to; on a normal exit it is fsynced and
    renamed over ``path``, on any exception (KeyboardInterrupt included) removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}{path.suffix}")
    IN_PROGRESS.add(tmp)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        IN_PROGRESS.discard(tmp)
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, data: Any, **dump_kw: Any) -> Path:
    """``data`` as indented JSON (``dump_kw`` as :func:`json.dumps`, e.g. ``default=str``)."""
    return write_text_atomic(path, json.dumps(data, indent=2, **dump_kw))


def remove_in_progress() -> None:
    """Removes the temporary files of writes still in progress (before an immediate exit)."""
    import shutil

    for tmp in list(IN_PROGRESS):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
