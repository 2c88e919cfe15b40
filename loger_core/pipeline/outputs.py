"""Saving the map (PLY) and the trajectory (TUM) so that an interruption never leaves a torn file.

Each file is written under a temporary name in the target folder and moved into place with
``os.replace`` (atomic on POSIX): readers see the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from loger_core.io.trajectory import Trajectory, write_tum
from loger_core.pipeline.errors import CoreError

__all__ = ["SavedOutputs", "save_map_and_trajectory", "write_ply_atomic", "write_tum_atomic"]

PathLike = Union[str, "os.PathLike[str]"]


_PLY_HEADER = (
    "ply\nformat binary_little_endian 1.0\nelement vertex {count}\nproperty float x\nproperty float y\n"
    "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
    "property float confidence\nend_header\n"
)
_PLY_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                        ("confidence", "<f4")])


@dataclass
class SavedOutputs:
    """Paths written by :func:`save_map_and_trajectory` and what they hold (``grid_*``: the
    nav2_map_server files the core adds when its occupancy grid is on and not empty)."""

    map_ply: Path
    trajectory_tum: Path
    points: int
    poses: int
    grid_pgm: Optional[Path] = None
    grid_yaml: Optional[Path] = None


def write_ply_atomic(path: PathLike, points: np.ndarray, colors: np.ndarray, confidence: np.ndarray) -> Path:
    """Binary little-endian PLY: float xyz ``(N, 3)``, uchar RGB ``(N, 3)`` and a float ``confidence`` ``(N,)``
    (the layout open3d reads and writes), written with numpy: no open3d import on the shutdown path."""
    path = Path(path)
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    confidence = np.asarray(confidence, dtype=np.float32).reshape(-1)
    if not (len(points) == len(colors) == len(confidence)):
        raise CoreError(f"map arrays disagree: {len(points)} points, {len(colors)} colours, "
                        f"{len(confidence)} confidences")
    vertices = np.empty(len(points), dtype=_PLY_VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = points[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = colors[:, i]
    vertices["confidence"] = confidence
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with open(tmp, "wb") as f:
        f.write(_PLY_HEADER.format(count=len(points)).encode("ascii"))
        f.write(vertices.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_tum_atomic(path: PathLike, trajectory: Trajectory) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write_tum(tmp, trajectory)
    os.replace(tmp, path)
    return path


def save_map_and_trajectory(
    directory: PathLike,
    points: np.ndarray,
    colors: np.ndarray,
    confidence: np.ndarray,
    trajectory: Trajectory,
    map_name: str = "map.ply",
    trajectory_name: str = "trajectory.tum",
) -> SavedOutputs:
    """Write ``<directory>/map.ply`` and ``<directory>/trajectory.tum`` (the folder is created)."""
    directory = Path(os.path.expanduser(str(directory)))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CoreError(f"output_dir {str(directory)!r} cannot be created: {err}") from None
    ply = write_ply_atomic(directory / map_name, points, colors, confidence)
    tum = write_tum_atomic(directory / trajectory_name, trajectory)
    return SavedOutputs(ply, tum, int(len(points)), len(trajectory))
