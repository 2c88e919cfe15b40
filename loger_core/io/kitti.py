"""KITTI odometry sequences.

Layout of one sequence (``dataset/sequences/<seq>/`` in the official download)::

    SEQ/image_0/000000.png      left grayscale camera (mono8), rectified
    SEQ/image_1/                right grayscale camera
    SEQ/image_2/                left colour camera
    SEQ/image_3/                right colour camera
    SEQ/calib.txt               "P0: 12 numbers" ... "P3:" (3x4 projection matrices, row-major), "Tr: ..."
    SEQ/times.txt               seconds since the start, one line per frame
    SEQ/poses.txt               ground truth (not in the official sequence folder; see below)

The camera is ``image_0`` when present, else ``image_2`` (or the one passed as ``camera=``, or the
folder given: pointing at ``SEQ/image_2`` reads the colour camera). Its intrinsics are the left
3x3 block of its projection matrix ``P<camera>`` (KITTI images are rectified: no distortion).
Without ``times.txt`` the stamps are ``index / fps`` (KITTI records at about 10 Hz).

Ground truth (one line per frame, the 12 row-major numbers of the 3x4 pose ``T_cam0_camk``: frame
``k``'s left grayscale camera in the first frame's, x right, y down, z forward, metres) is read from
the first that exists of: ``groundtruth=`` (a TUM or KITTI file), ``SEQ/poses.txt``, and the
official ``dataset/poses/<seq>.txt`` two levels above ``SEQ`` (``dataset/sequences/<seq>``).
KITTI ground truth is of camera 0; for ``image_2`` it is used as is (camera 2 sits ~6 cm to the
side of camera 0 with the same orientation, far below the trajectory error of a monocular method).
"""

from __future__ import annotations

import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .groundtruth import SequenceFormatError, read_groundtruth_file
from .frames import IMAGE_EXTENSIONS, natural_key
from .indexed import IndexedImageSequence

__all__ = ["KittiSequence", "read_kitti_calib", "is_kitti_sequence", "KITTI_DEFAULT_FPS"]

PathLike = Union[str, "os.PathLike[str]"]
KITTI_DEFAULT_FPS = 10.0
# Preferred cameras: the grayscale left one (the benchmark's ground truth is of it), then colour.
_DEFAULT_CAMERAS = (0, 2)
_CAMERA_DIR = re.compile(r"^image_([0-3])$")
_NS = 1_000_000_000


def _camera_of(folder: Path) -> Optional[int]:
    m = _CAMERA_DIR.match(folder.name)
    return int(m.group(1)) if m else None


def is_kitti_sequence(path: PathLike) -> bool:
    """True for a KITTI sequence folder (one holding ``image_0/`` .. ``image_3/``; its ``calib.txt``
    may be missing, which the reader then reports) or an ``image_<k>`` folder with ``calib.txt``,
    ``times.txt`` or ``poses.txt`` beside it."""
    p = Path(path)
    if not p.is_dir():
        return False
    if _camera_of(p) is not None:
        return any((p.parent / name).is_file() for name in ("calib.txt", "times.txt", "poses.txt"))
    return any((p / f"image_{k}").is_dir() for k in range(4))


def read_kitti_calib(path: PathLike) -> dict[str, np.ndarray]:
    """Read a KITTI ``calib.txt``: ``{"P0": (3, 4) float64, ..., "Tr": (3, 4)}`` (every ``NAME: 12 numbers`` line).

    Raises:
        SequenceFormatError: missing file, or a line that is not ``NAME: 12 numbers`` (file and line named).
    """
    path = Path(path)
    if not path.is_file():
        raise SequenceFormatError(
            f"{path}: missing (the KITTI layout needs calib.txt with the P0..P3 projection matrices)"
        )
    out: dict[str, np.ndarray] = {}
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, rest = line.partition(":")
            tokens = rest.split()
            if not sep or not name.strip() or len(tokens) != 12:
                raise SequenceFormatError(
                    f"{path}:{line_no}: expected 'NAME: 12 numbers' (a 3x4 matrix, row-major), got {line!r}"
                )
            try:
                vals = np.array([float(t) for t in tokens], dtype=np.float64)
            except ValueError:
                raise SequenceFormatError(f"{path}:{line_no}: non-numeric value in {line!r}") from None
            if not np.all(np.isfinite(vals)):
                raise SequenceFormatError(f"{path}:{line_no}: non-finite value in {line!r}")
            out[name.strip()] = vals.reshape(3, 4)
    return out


def _intrinsics_from_P(P: np.ndarray, where: str) -> np.ndarray:
    # Rectified KITTI cameras: P = K [I | t], so K is P's left 3x3 block (t only moves the centre).
    K = P[:, :3].copy()
    ok = K[0, 0] > 0 and K[1, 1] > 0 and abs(K[2, 2] - 1.0) < 1e-6 and np.allclose(K[[1, 2, 2], [0, 0, 1]], 0)
    if not ok:
        raise SequenceFormatError(
            f"{where}: not a rectified pinhole projection (expected [[fx 0 cx],[0 fy cy],[0 0 1]]): {K.tolist()}"
        )
    return K


def _read_times(path: Path) -> np.ndarray:
    stamps = []
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                value = Decimal(line)  # exact: "1.036e-01" -> 103600000 ns, no float rounding
                if not value.is_finite():
                    raise InvalidOperation
            except InvalidOperation:
                raise SequenceFormatError(f"{path}:{line_no}: expected one time in seconds, got {line!r}") from None
            stamps.append(int((value * _NS).to_integral_value()))
    return np.asarray(stamps, dtype=np.int64)


class KittiSequence(IndexedImageSequence):
    """A KITTI odometry sequence (see the module docstring for the layout and the ground truth).

    Args:
        path: the sequence folder, or one of its ``image_<k>`` folders.
        fps: frame rate for stamps when there is no ``times.txt`` (default 10 Hz).
        groundtruth: a TUM or KITTI pose file replacing the sequence's ground truth.
        camera: 0..3 to pick ``image_<camera>``; default: the folder given, else 0, else 2.

    Frames: ``rgb (H, W, 3) uint8`` (grey repeated for ``image_0`` / ``image_1``; :meth:`gray`
    gives the mono8 image), ``K`` from ``P<camera>``, stamps from ``times.txt``.
    """

    layout = "kitti"

    def __init__(
        self,
        path: PathLike,
        fps: Optional[float] = None,
        groundtruth: Optional[PathLike] = None,
        camera: Optional[int] = None,
    ) -> None:
        given = Path(path)
        if not given.is_dir():
            raise SequenceFormatError(f"KITTI sequence {str(given)!r} is not a directory")
        if _camera_of(given) is not None:
            self.root = given.parent
            camera = _camera_of(given) if camera is None else camera
        else:
            self.root = given
        self.camera = self._pick_camera(camera)
        image_dir = self.root / f"image_{self.camera}"
        self._paths = sorted(
            (p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=lambda p: natural_key(p.name),
        )
        if not self._paths:
            raise SequenceFormatError(f"{image_dir}: no images found")

        calib_path = self.root / "calib.txt"
        calib = read_kitti_calib(calib_path)
        key = f"P{self.camera}"
        if key not in calib:
            raise SequenceFormatError(f"{calib_path}: no '{key}:' line (projection matrix of image_{self.camera})")
        self._K = _intrinsics_from_P(calib[key], f"{calib_path} {key}")
        self._stamps = self._stamps_for(fps)
        self._meta = {"camera": self.camera, "calib": str(calib_path), "P": calib[key].tolist(),
                      "times": str(self._stamps_source)}

        self._frame_poses = None
        if groundtruth is None:
            gt_path = self._find_poses()
            if gt_path is not None:
                self._frame_poses = self._read_poses(gt_path)
                self.groundtruth_source = str(gt_path)
        self._check_frames()
        if groundtruth is not None:
            self._use_groundtruth_file(groundtruth)

    def _pick_camera(self, camera: Optional[int]) -> int:
        present = [k for k in range(4) if (self.root / f"image_{k}").is_dir()]
        if camera is not None:
            if camera not in present:
                raise SequenceFormatError(f"{self.root}: no image_{camera}/ folder (found: {present or 'none'})")
            return camera
        for k in _DEFAULT_CAMERAS:
            if k in present:
                return k
        raise SequenceFormatError(
            f"{self.root}: no image_0/ or image_2/ folder (a KITTI sequence has image_0 .. image_3"
            + (f"; found image_{present[0]}: point at it to use it)" if present else ")")
        )

    def _stamps_for(self, fps: Optional[float]) -> np.ndarray:
        times = self.root / "times.txt"
        n = len(self._paths)
        if times.is_file():
            stamps = _read_times(times)
            if len(stamps) != n:
                raise SequenceFormatError(f"{times}: {len(stamps)} times but image_{self.camera}/ has {n} images")
            self._stamps_source = str(times)
            return stamps
        rate = KITTI_DEFAULT_FPS if fps is None else float(fps)
        if not (np.isfinite(rate) and rate > 0):
            raise SequenceFormatError(f"fps must be a positive number, got {fps!r}")
        self._stamps_source = f"index / {rate:g} Hz (no times.txt)"
        return np.array([round(i * 1e9 / rate) for i in range(n)], dtype=np.int64)

    def _find_poses(self) -> Optional[Path]:
        beside = self.root / "poses.txt"
        if beside.is_file():
            return beside
        # Official download: dataset/sequences/<seq>/ and dataset/poses/<seq>.txt.
        official = self.root.parent.parent / "poses" / f"{self.root.name}.txt"
        if self.root.parent.name == "sequences" and official.is_file():
            return official
        return None

    def _read_poses(self, path: Path) -> list[np.ndarray]:
        poses = read_groundtruth_file(path)
        if not isinstance(poses, np.ndarray):
            raise SequenceFormatError(f"{path}: expected KITTI poses (12 numbers per line), got a TUM file")
        if len(poses) != len(self._paths):
            raise SequenceFormatError(
                f"{path}: {len(poses)} poses but image_{self.camera}/ has {len(self._paths)} images "
                "(KITTI ground truth has one pose per frame)"
            )
        return [p for p in poses]
