"""Common base of the dataset readers (KITTI, EuRoC): a list of image files with stamps, one K
and per-frame ground truth, with the interface of :class:`~loger_core.io.image_folder.ImageFolderSequence`.

Grayscale images (KITTI ``image_0``, EuRoC ``cam0``) are given to the network as 3-channel RGB (the
grey value repeated) so the model and the coloured map work unchanged; :meth:`IndexedImageSequence.gray`
returns the single-channel image as stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from .groundtruth import SequenceFormatError, frame_poses_from_file
from .frames import Frame
from .trajectory import Trajectory

__all__ = ["IndexedImageSequence"]


class IndexedImageSequence:
    """Frames from image files; subclasses set ``root``, ``_paths``, ``_stamps``, ``_K`` and
    ``_frame_poses`` and may override :meth:`_load` (e.g. to undistort).

    Iterating yields :class:`Frame` objects (``rgb (H, W, 3) uint8``, ``stamp_ns``, ``K (3, 3)``,
    ``depth`` None, ``T_world_cam (4, 4)`` or None); ``seq[i]`` reads frame ``i``.
    """

    root: Path
    layout: str = "images"
    has_depth = False
    _paths: list[Path]
    _stamps: np.ndarray
    _K: Optional[np.ndarray] = None
    _frame_poses: Optional[list] = None
    _meta: dict

    # ------------------------------------------------------------ for subclasses
    def _check_frames(self) -> None:
        """Checks shared by the readers once ``_paths`` / ``_stamps`` are set (images exist, stamps
        increase, the first image decodes); sets ``image_size`` and ``grayscale``."""
        if not self._paths:
            raise SequenceFormatError(f"{self.root}: no images found")
        if len(self._stamps) != len(self._paths):
            raise SequenceFormatError(f"{self.root}: {len(self._stamps)} stamps for {len(self._paths)} images")
        steps = np.diff(self._stamps)
        if np.any(steps <= 0):
            i = int(np.flatnonzero(steps <= 0)[0])
            raise SequenceFormatError(
                f"{self._stamps_source}: frame stamps must increase, but frame {i + 1} ({self._stamps[i + 1]} ns) "
                f"is not after frame {i} ({self._stamps[i]} ns)"
            )
        first = self._decode(self._paths[0])
        self.image_size = (int(first.shape[1]), int(first.shape[0]))  # (width, height)
        self.grayscale = first.ndim == 2

    def _use_groundtruth_file(self, path) -> None:
        """Replace the layout's ground truth with a TUM / KITTI file's (``--groundtruth``)."""
        self._frame_poses = frame_poses_from_file(path, self._stamps)
        self.groundtruth_source = str(path)

    _stamps_source = "stamps"
    groundtruth_source: Optional[str] = None

    @staticmethod
    def _decode(path: Path) -> np.ndarray:
        """``(H, W) uint8`` grey or ``(H, W, 3) uint8`` RGB, as stored (16-bit images keep their top byte)."""
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise SequenceFormatError(f"{path}: cannot decode image")
        if img.dtype == np.uint16:
            img = (img >> 8).astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if img.ndim == 3:
            img = np.ascontiguousarray(img[..., 2::-1])  # BGR(A) -> RGB
        return img

    def _load(self, i: int) -> np.ndarray:
        """Image ``i`` as the sequence presents it (``(H, W)`` grey or ``(H, W, 3)`` RGB, uint8)."""
        return self._decode(self._paths[i])

    # ---------------------------------------------------------------- public API
    def __len__(self) -> int:
        return len(self._paths)

    @property
    def K(self) -> Optional[np.ndarray]:
        """``(3, 3) float64`` pinhole intrinsics of the images as yielded."""
        return None if self._K is None else self._K.copy()

    @property
    def stamps_ns(self) -> np.ndarray:
        """``(N,) int64`` frame stamps."""
        return self._stamps.copy()

    @property
    def metadata(self) -> dict:
        """Layout-specific facts (camera, calibration file, distortion...)."""
        return dict(self._meta)

    @property
    def paths(self) -> list[Path]:
        """The image files, in frame order."""
        return list(self._paths)

    @property
    def has_groundtruth(self) -> bool:
        return self._frame_poses is not None and any(p is not None for p in self._frame_poses)

    def groundtruth(self) -> Trajectory:
        """Ground-truth ``T_world_cam`` at the frame stamps (frames without one are skipped).

        Raises:
            SequenceFormatError: the sequence has no ground truth.
        """
        if not self.has_groundtruth:
            raise SequenceFormatError(f"{self.root}: no ground truth")
        idx = [i for i, p in enumerate(self._frame_poses) if p is not None]
        return Trajectory(self._stamps[idx].copy(), np.stack([self._frame_poses[i] for i in idx]))

    def _index(self, index) -> int:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"frame index {index!r} out of range for {n} frames")
        return int(index) % n

    def gray(self, index: int) -> np.ndarray:
        """Frame ``index`` as a single-channel ``(H, W) uint8`` image: the stored grey image for
        grayscale sequences (after undistortion where the reader undistorts), else RGB converted."""
        img = self._load(self._index(index))
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    def __getitem__(self, index: int) -> Frame:
        i = self._index(index)
        img = self._load(i)
        # The network and the coloured map take 3 channels; a grey image becomes grey RGB.
        rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
        pose = None if self._frame_poses is None else self._frame_poses[i]
        return Frame(
            rgb=rgb,
            stamp_ns=int(self._stamps[i]),
            K=self.K,
            depth=None,
            T_world_cam=None if pose is None else pose.copy(),
            path=str(self._paths[i]),
        )

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r}, {len(self)} frames)"
