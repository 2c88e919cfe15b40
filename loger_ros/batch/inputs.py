"""Which inputs a batch maps: bags, image folders and videos, named uniquely for ``OUT/<name>/``."""
from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from loger_core.io.frames import IMAGE_EXTENSIONS
from loger_ros.bag.reader import ROSBAG2_STORAGE_SUFFIXES, ReplayError, discover_bags, resolve_bag_path

__all__ = ["BatchInput", "BatchInputError", "VIDEO_EXTENSIONS", "classify", "collect_inputs"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
KINDS = ("bag", "images", "video")


class BatchInputError(ValueError):
    """An INPUTS argument that names nothing mappable (missing path, empty glob, unknown file type)."""


@dataclass(frozen=True)
class BatchInput:
    """One recording: ``kind`` 'bag' (run by loger-replay) or 'images' / 'video' (loger-reconstruct).

    path: absolute; for a rosbag2 recording its directory. name: the output folder's name, unique
    within a batch.
    """

    path: Path
    kind: str
    name: str


def _is_image_folder(path: Path) -> bool:
    """The layouts loger-reconstruct reads: ``rgb/`` (dataset / TUM) or images directly inside."""
    if (path / "rgb").is_dir():
        return True
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def classify(path: Path) -> list[tuple[Path, str]]:
    """(path, kind) of every input ``path`` holds: itself when it is a bag, image folder or video,
    else the bags, image folders and videos below it. Raises BatchInputError when there is none."""
    path = Path(path)
    if not path.exists():
        raise BatchInputError(f"input {str(path)!r} does not exist")
    if path.is_file():
        if path.suffix == ".bag" or path.suffix in ROSBAG2_STORAGE_SUFFIXES:
            try:
                return [(resolve_bag_path(path), "bag")]
            except ReplayError as err:
                raise BatchInputError(str(err)) from None
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            return [(path, "video")]
        raise BatchInputError(f"input {str(path)!r} is not a bag (.bag, .mcap, .db3) or a video {VIDEO_EXTENSIONS}")
    if (path / "metadata.yaml").is_file():
        return [(path, "bag")]
    if _is_image_folder(path):
        return [(path, "images")]
    found: list[tuple[Path, str]] = [(bag, "bag") for bag in discover_bags(path)]
    taken = {p for p, _ in found}
    for sub in sorted(path.rglob("*")):
        if any(t == sub or t in sub.parents for t in taken):
            continue
        if sub.is_dir() and not (sub / "metadata.yaml").is_file() and _is_image_folder(sub) \
                and not any(p in sub.parents for p, k in found if k == "images"):
            found.append((sub, "images"))
        elif sub.is_file() and sub.suffix.lower() in VIDEO_EXTENSIONS:
            found.append((sub, "video"))
    if not found:
        raise BatchInputError(f"no bag, image folder or video in {str(path)!r}")
    # A bag storage file inside a recording directory is the recording itself, not a second input.
    return sorted(set(found), key=lambda item: str(item[0]))


def _expand(pattern: str) -> list[Path]:
    if glob.has_magic(pattern):
        matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
        if not matches:
            raise BatchInputError(f"the pattern {pattern!r} matches nothing")
        return matches
    return [Path(pattern)]


def _base_name(path: Path) -> str:
    name = path.name
    for suffix in (".bag", *ROSBAG2_STORAGE_SUFFIXES, *VIDEO_EXTENSIONS):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def collect_inputs(patterns: Iterable[str]) -> list[BatchInput]:
    """Every input named by ``patterns`` (paths, folders of inputs, globs), each once, in a stable
    order. Names are the recordings' names; two inputs with the same name get a short hash of their
    path appended, so outputs never collide and stay put when other inputs come and go."""
    seen: dict[Path, str] = {}
    for pattern in patterns:
        for path in _expand(str(pattern)):
            for found, kind in classify(path):
                seen.setdefault(found.resolve(), kind)
    if not seen:
        raise BatchInputError("no inputs given")
    bases: dict[str, int] = {}
    for path in seen:
        bases[_base_name(path)] = bases.get(_base_name(path), 0) + 1
    inputs = []
    for path, kind in sorted(seen.items(), key=lambda item: str(item[0])):
        name = _base_name(path)
        if bases[name] > 1:
            name = f"{name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        inputs.append(BatchInput(path, kind, name))
    return inputs
