"""Camera trajectories and their TUM / KITTI text formats.

A :class:`Trajectory` is a list of timestamped camera-to-world poses
``T_world_cam (N, 4, 4) float64`` (OpenCV camera axes: x right, y down, z forward)
with integer nanosecond stamps ``(N,) int64``.

File formats
------------
* TUM RGB-D: one pose per line, ``stamp tx ty tz qx qy qz qw`` (stamp in seconds,
  quaternion scalar-last), ``#`` starts a comment line. Stamps are written as exact
  decimal seconds with 9 fractional digits and parsed with :class:`decimal.Decimal`,
  so integer nanoseconds survive a write/read round trip (a float64 only holds ~16
  significant digits, not the 19 a wall-clock ns stamp needs).
* KITTI odometry: one pose per line, the 12 numbers of the top 3x4 block of
  ``T_world_cam`` in row-major order; no stamps.

Malformed files raise :class:`TrajectoryFormatError` naming the file, the 1-based line
number and the offending content.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Union

import numpy as np
from scipy.spatial.transform import Rotation

PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "Trajectory",
    "TrajectoryFormatError",
    "read_tum",
    "write_tum",
    "read_kitti",
    "write_kitti",
]

_NS_PER_S = 1_000_000_000
# Bottom row of a rigid transform; writers refuse poses whose last row differs, since
# neither TUM nor KITTI can represent it and the information would silently vanish.
_BOTTOM_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_BOTTOM_ROW_TOL = 1e-9
# A quaternion this far from unit norm is almost surely a corrupt line, not rounding.
_QUAT_NORM_TOL = 1e-3


class TrajectoryFormatError(ValueError):
    """Bad trajectory data: malformed file line, wrong array shape/dtype, non-finite pose."""


@dataclass
class Trajectory:
    """Timestamped camera poses.

    Attributes:
        stamps_ns: ``(N,) int64`` timestamps in nanoseconds.
        poses: ``(N, 4, 4) float64`` camera-to-world transforms ``T_world_cam``.

    Inputs are converted to the stated dtypes; shapes, lengths and finiteness are
    checked and violations raise :class:`TrajectoryFormatError`.
    """

    stamps_ns: np.ndarray
    poses: np.ndarray

    def __post_init__(self) -> None:
        stamps = np.asarray(self.stamps_ns)
        if stamps.ndim != 1:
            raise TrajectoryFormatError(f"stamps_ns must have shape (N,), got {stamps.shape}")
        if stamps.size and not np.issubdtype(stamps.dtype, np.integer):
            # Float stamps would silently lose ns precision; make the caller convert.
            raise TrajectoryFormatError(f"stamps_ns must be integer nanoseconds, got dtype {stamps.dtype}")
        self.stamps_ns = stamps.astype(np.int64, copy=False)
        self.poses = _check_poses(self.poses, name="poses")
        if len(self.poses) != len(self.stamps_ns):
            raise TrajectoryFormatError(
                f"stamps_ns has {len(self.stamps_ns)} entries but poses has {len(self.poses)}"
            )

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @property
    def positions(self) -> np.ndarray:
        """Camera centres in the world frame, ``(N, 3) float64``."""
        return self.poses[:, :3, 3]

    def sorted_by_time(self) -> "Trajectory":
        """Copy ordered by increasing stamp (stable for equal stamps)."""
        order = np.argsort(self.stamps_ns, kind="stable")
        return Trajectory(self.stamps_ns[order].copy(), self.poses[order].copy())


def _check_poses(poses: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 4):
        raise TrajectoryFormatError(f"{name} must have shape (N, 4, 4), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise TrajectoryFormatError(f"{name}[{bad}] contains non-finite values: {arr[bad].tolist()}")
    return arr


def _check_bottom_rows(poses: np.ndarray, name: str) -> None:
    dev = np.abs(poses[:, 3, :] - _BOTTOM_ROW).max(axis=1) if len(poses) else np.zeros(0)
    bad = np.flatnonzero(dev > _BOTTOM_ROW_TOL)
    if bad.size:
        i = int(bad[0])
        raise TrajectoryFormatError(
            f"{name}[{i}] bottom row must be [0, 0, 0, 1], got {poses[i, 3].tolist()}"
        )


def _parse_stamp_ns(token: str) -> int:
    """Exact seconds -> int ns (round half to even at the ns digit)."""
    value = Decimal(token)
    if not value.is_finite():
        raise InvalidOperation(token)
    return int((value * _NS_PER_S).to_integral_value())


def _format_stamp_s(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(int(ns)), _NS_PER_S)
    return f"{sign}{sec}.{frac:09d}"


def _format_float(x: float) -> str:
    # repr is the shortest string that parses back to the same float64.
    return repr(float(x))


def _data_lines(path: PathLike):
    """Yield ``(line_no, stripped_line)`` for non-empty, non-comment lines."""
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if line and not line.startswith("#"):
                yield line_no, line


def _split_numbers(path: PathLike, line_no: int, line: str, expected: int, what: str) -> list[str]:
    # TUM tools also accept comma-separated lines; tolerate them.
    tokens = line.replace(",", " ").split()
    if len(tokens) != expected:
        raise TrajectoryFormatError(
            f"{path}:{line_no}: expected {expected} numbers ({what}), got {len(tokens)}: {line!r}"
        )
    return tokens


def _to_floats(path: PathLike, line_no: int, line: str, tokens: list[str]) -> list[float]:
    try:
        vals = [float(t) for t in tokens]
    except ValueError:
        raise TrajectoryFormatError(f"{path}:{line_no}: non-numeric value in line {line!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise TrajectoryFormatError(f"{path}:{line_no}: non-finite value in line {line!r}")
    return vals


def read_tum(path: PathLike) -> Trajectory:
    """Read a TUM trajectory file (``stamp tx ty tz qx qy qz qw`` per line).

    Quaternions are normalised; one whose norm is off by more than 1e-3 is treated as
    corrupt. Lines need not be sorted; the returned order is the file order.

    Returns:
        :class:`Trajectory` with ``stamps_ns (N,) int64`` and ``poses (N, 4, 4) float64``.

    Raises:
        TrajectoryFormatError: wrong column count, non-numeric/non-finite values,
            bad quaternion, or a file without any pose line.
    """
    stamps: list[int] = []
    trans: list[list[float]] = []
    quats: list[list[float]] = []
    for line_no, line in _data_lines(path):
        tokens = _split_numbers(path, line_no, line, 8, "stamp tx ty tz qx qy qz qw")
        try:
            stamp = _parse_stamp_ns(tokens[0])
        except InvalidOperation:
            raise TrajectoryFormatError(
                f"{path}:{line_no}: bad timestamp {tokens[0]!r} in line {line!r}"
            ) from None
        vals = _to_floats(path, line_no, line, tokens[1:])
        q = np.asarray(vals[3:7])
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > _QUAT_NORM_TOL:
            raise TrajectoryFormatError(
                f"{path}:{line_no}: quaternion norm {norm:.6g} is not 1 in line {line!r}"
            )
        stamps.append(stamp)
        trans.append(vals[:3])
        quats.append((q / norm).tolist())
    if not stamps:
        raise TrajectoryFormatError(f"{path}: no pose lines found")
    poses = np.tile(np.eye(4), (len(stamps), 1, 1))
    poses[:, :3, :3] = Rotation.from_quat(np.asarray(quats)).as_matrix()
    poses[:, :3, 3] = np.asarray(trans)
    return Trajectory(np.asarray(stamps, dtype=np.int64), poses)


def write_tum(path: PathLike, traj: Trajectory) -> None:
    """Write ``traj`` as a TUM file (exact ns stamps, quaternion with ``qw >= 0``).

    The rotation block is projected to the nearest rotation by scipy, so slightly
    non-orthonormal rotations are written as their closest proper rotation.

    Raises:
        TrajectoryFormatError: a pose's bottom row is not ``[0, 0, 0, 1]``.
    """
    _check_bottom_rows(traj.poses, "traj.poses")
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    if len(traj):
        quats = Rotation.from_matrix(traj.poses[:, :3, :3]).as_quat()
        # q and -q are the same rotation; a fixed sign keeps files diff-friendly.
        quats[quats[:, 3] < 0] *= -1.0
        for stamp, t, q in zip(traj.stamps_ns, traj.poses[:, :3, 3], quats):
            nums = " ".join(_format_float(v) for v in (*t, *q))
            lines.append(f"{_format_stamp_s(int(stamp))} {nums}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def read_kitti(path: PathLike) -> np.ndarray:
    """Read a KITTI pose file (12 row-major numbers of the 3x4 ``T_world_cam`` per line).

    Returns:
        ``(N, 4, 4) float64`` poses with bottom row ``[0, 0, 0, 1]``.

    Raises:
        TrajectoryFormatError: wrong column count, non-numeric/non-finite values, or a
            file without any pose line.
    """
    rows: list[list[float]] = []
    for line_no, line in _data_lines(path):
        tokens = _split_numbers(path, line_no, line, 12, "row-major 3x4 pose")
        rows.append(_to_floats(path, line_no, line, tokens))
    if not rows:
        raise TrajectoryFormatError(f"{path}: no pose lines found")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = np.asarray(rows).reshape(-1, 3, 4)
    return poses


def write_kitti(path: PathLike, poses: np.ndarray) -> None:
    """Write ``poses (N, 4, 4)`` as KITTI lines (top 3x4 block, row-major).

    Raises:
        TrajectoryFormatError: wrong shape, non-finite values, or a bottom row that is
            not ``[0, 0, 0, 1]``.
    """
    arr = _check_poses(poses, name="poses")
    _check_bottom_rows(arr, "poses")
    with open(path, "w", encoding="utf-8") as fh:
        for pose in arr:
            fh.write(" ".join(_format_float(v) for v in pose[:3, :].reshape(-1)) + "\n")
