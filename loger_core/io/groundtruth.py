"""Ground truth for image sequences: reading a TUM or KITTI pose file and putting poses at frame stamps.

Every sequence reader reports ground truth the same way: one ``T_world_cam (4, 4) float64`` (or
``None``) per frame, at the frame's own stamp, so :func:`loger_core.eval.evaluate` associates the
estimate with it exactly.

* :func:`read_groundtruth_file` detects the format from the first pose line: 8 numbers is TUM
  (``stamp tx ty tz qx qy qz qw``), 12 numbers is KITTI (3x4 row-major, one line per frame, no stamps).
* :func:`poses_at_stamps` samples a stamped trajectory at the frame stamps: linear interpolation of
  the position and slerp of the rotation between the two poses around a stamp (when they are close
  enough in time), else the nearest pose within a tolerance, else nothing.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from .errors import ImageFolderError
from .trajectory import Trajectory, TrajectoryFormatError, read_kitti, read_tum

__all__ = [
    "SequenceFormatError",
    "read_groundtruth_file",
    "poses_at_stamps",
    "frame_poses_from_file",
    "DEFAULT_MAX_DT_NS",
    "DEFAULT_MAX_GAP_NS",
]

PathLike = Union[str, "os.PathLike[str]"]
# Nearest-pose association tolerance, as ImageFolderSequence and loger_core.eval use.
DEFAULT_MAX_DT_NS = 20_000_000
# Interpolate only between poses this close in time: across a longer gap (tracking loss in a
# motion-capture recording) an interpolated pose would be invented, not measured. 250 ms still
# bridges ground truth at the frame rate of a 4+ Hz camera (KITTI's is 10 Hz).
DEFAULT_MAX_GAP_NS = 250_000_000


class SequenceFormatError(ImageFolderError):
    """A dataset layout (KITTI, EuRoC, ground-truth file) is broken; the message names the file."""


def _first_pose_columns(path: PathLike) -> int:
    with open(path, "r", encoding="utf-8") as fh:
        for raw in fh:
            line = raw.strip()
            if line and not line.startswith("#"):
                return len(line.replace(",", " ").split())
    raise SequenceFormatError(f"{path}: no pose lines found")


def read_groundtruth_file(path: PathLike) -> Union[Trajectory, np.ndarray]:
    """Read a ground-truth pose file, TUM or KITTI format (detected from the column count).

    Returns:
        a :class:`Trajectory` (TUM: stamped ``T_world_cam``) or ``(N, 4, 4) float64`` poses (KITTI:
        one per frame, no stamps).

    Raises:
        SequenceFormatError: missing file, unknown format or malformed line (the message names the file).
    """
    if not os.path.isfile(path):
        raise SequenceFormatError(f"ground-truth file {str(path)!r} does not exist")
    cols = _first_pose_columns(path)
    try:
        if cols == 8:
            return read_tum(path)
        if cols == 12:
            return read_kitti(path)
    except TrajectoryFormatError as exc:
        raise SequenceFormatError(f"bad ground truth: {exc}") from None
    raise SequenceFormatError(
        f"{path}: unknown ground-truth format: first pose line has {cols} numbers; expected 8 (TUM: "
        "stamp tx ty tz qx qy qz qw) or 12 (KITTI: 3x4 row-major T_world_cam per frame)"
    )


def poses_at_stamps(
    stamps_ns: np.ndarray,
    traj: Trajectory,
    max_dt_ns: int = DEFAULT_MAX_DT_NS,
    max_gap_ns: int = DEFAULT_MAX_GAP_NS,
) -> list[Optional[np.ndarray]]:
    """Sample ``traj`` at ``stamps_ns (N,) int64``.

    A stamp between two poses at most ``max_gap_ns`` apart gets the interpolated pose (position
    linear, rotation slerp); otherwise the nearest pose within ``max_dt_ns``, otherwise ``None``.

    Returns:
        ``N`` entries, each ``(4, 4) float64`` (the frame of ``traj.poses``) or ``None``.
    """
    traj = traj.sorted_by_time()
    t = traj.stamps_ns
    out: list[Optional[np.ndarray]] = []
    if len(t) == 0:
        return [None] * len(stamps_ns)
    rots = Rotation.from_matrix(traj.poses[:, :3, :3])
    for s in np.asarray(stamps_ns, dtype=np.int64):
        s = int(s)
        j = int(np.searchsorted(t, s, side="left"))
        if j < len(t) and int(t[j]) == s:
            out.append(traj.poses[j].copy())
            continue
        if 0 < j < len(t) and int(t[j]) - int(t[j - 1]) <= max_gap_ns:
            t0, t1 = int(t[j - 1]), int(t[j])
            a = (s - t0) / (t1 - t0)
            pose = np.eye(4)
            pose[:3, :3] = Slerp([0.0, 1.0], rots[[j - 1, j]])([a]).as_matrix()[0]
            pose[:3, 3] = (1.0 - a) * traj.poses[j - 1, :3, 3] + a * traj.poses[j, :3, 3]
            out.append(pose)
            continue
        near = [k for k in (j - 1, j) if 0 <= k < len(t) and abs(int(t[k]) - s) <= max_dt_ns]
        if near:
            k = min(near, key=lambda k: abs(int(t[k]) - s))
            out.append(traj.poses[k].copy())
        else:
            out.append(None)
    return out


def frame_poses_from_file(path: PathLike, stamps_ns: np.ndarray) -> list[Optional[np.ndarray]]:
    """Ground truth of a ``--groundtruth FILE`` at the frame stamps ``(N,) int64``.

    A KITTI file must have exactly one pose per frame; a TUM file is sampled with
    :func:`poses_at_stamps`. The poses are taken as ``T_world_cam`` of the sequence's camera.

    Raises:
        SequenceFormatError: bad file, pose count != frame count (KITTI), or no frame stamp near
            any of its stamps (TUM).
    """
    data = read_groundtruth_file(path)
    n = len(stamps_ns)
    if isinstance(data, np.ndarray):
        if len(data) != n:
            raise SequenceFormatError(
                f"{path}: {len(data)} poses (KITTI format, one per frame) but the sequence has {n} frames"
            )
        return [p for p in data]
    poses = poses_at_stamps(stamps_ns, data)
    if not any(p is not None for p in poses):
        raise SequenceFormatError(
            f"{path}: none of its {len(data)} stamps ({_span(data.stamps_ns)}) is near a frame stamp "
            f"({_span(np.asarray(stamps_ns))}); check that both use the same clock and units (seconds)"
        )
    return poses


def _span(stamps: np.ndarray) -> str:
    if len(stamps) == 0:
        return "none"
    return f"{stamps.min() / 1e9:.3f}..{stamps.max() / 1e9:.3f} s"
