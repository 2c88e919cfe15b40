"""Saving the map (PLY) and the trajectory (TUM) so that an interruption never leaves a torn file.

Each file is written under a temporary name in the target folder and moved into place with
``os.replace`` (atomic on POSIX): readers see the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from loger_core.io.trajectory import Trajectory, write_tum
from loger_ros.core.errors import CoreError

__all__ = ["SavedOutputs", "save_map_and_trajectory", "write_ply_atomic", "write_tum_atomic"]

PathLike = Union[str, "os.PathLike[str]"]


_EMPTY_PLY = (
    b"ply\nformat binary_little_endian 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
    b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
    b"property float confidence\nend_header\n"
)


@dataclass
class SavedOutputs:
    """Paths written by :func:`save_map_and_trajectory` and what they hold."""

    map_ply: Path
    trajectory_tum: Path
    points: int
    poses: int


def write_ply_atomic(path: PathLike, points: np.ndarray, colors: np.ndarray, confidence: np.ndarray) -> Path:
    """Binary PLY through open3d: float xyz ``(N, 3)``, uchar RGB ``(N, 3)`` and a float ``confidence`` ``(N,)``."""
    import open3d as o3d

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")  # open3d picks the format from the suffix
    if len(points) == 0:
        # open3d refuses to write an empty cloud; an empty map is still a valid (header-only) PLY.
        tmp.write_bytes(_EMPTY_PLY)
        os.replace(tmp, path)
        return path
    cloud = o3d.t.geometry.PointCloud()
    cloud.point.positions = o3d.core.Tensor(np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3))
    cloud.point.colors = o3d.core.Tensor(np.ascontiguousarray(colors, dtype=np.uint8).reshape(-1, 3))
    cloud.point.confidence = o3d.core.Tensor(np.ascontiguousarray(confidence, dtype=np.float32).reshape(-1, 1))
    if not o3d.t.io.write_point_cloud(str(tmp), cloud):
        raise CoreError(f"open3d could not write the map PLY {str(tmp)!r}")
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
