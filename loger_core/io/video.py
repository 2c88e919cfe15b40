"""Video files (anything OpenCV/FFmpeg decodes) read as a sequence of
:class:`~loger_core.io.frames.Frame` (``rgb (H, W, 3) uint8``, stamps ``index / fps``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from .errors import ImageFolderError
from .frames import Frame, PathLike, check_K
from .groundtruth import frame_poses_from_file
from .trajectory import Trajectory

__all__ = ["VideoSequence"]


class VideoSequence:
    """Frames of a video file (anything OpenCV/FFmpeg decodes).

    Args:
        path: video file.
        fps: frame rate for stamps (``index / fps``); ``None`` uses the container's rate
            (30 when the container does not say).
        K: optional ``(3, 3)`` intrinsics attached to every frame.
    """

    def __init__(self, path: PathLike, fps: Optional[float] = None, K: Optional[np.ndarray] = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ImageFolderError(f"video {str(self.path)!r} does not exist")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise ImageFolderError(f"{self.path}: cannot open video")
            container_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._count_hint = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        if fps is None:
            fps = container_fps if math.isfinite(container_fps) and container_fps > 0 else 30.0
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ImageFolderError(f"fps must be a positive number, got {fps!r}")
        self.fps = float(fps)
        self._K = None if K is None else check_K(K)
        self._count: Optional[int] = None

    @property
    def K(self) -> Optional[np.ndarray]:
        return None if self._K is None else self._K.copy()

    _frame_poses: Optional[list] = None

    @property
    def stamps_ns(self) -> np.ndarray:
        """``(N,) int64`` frame stamps (``index / fps``; counts the frames once)."""
        return np.array([round(i * 1e9 / self.fps) for i in range(len(self))], dtype=np.int64)

    @property
    def has_groundtruth(self) -> bool:
        return self._frame_poses is not None and any(p is not None for p in self._frame_poses)

    def groundtruth(self) -> Trajectory:
        """Ground truth given by :meth:`use_groundtruth_file` at the frame stamps (a video has none itself)."""
        if not self.has_groundtruth:
            raise ImageFolderError(f"{self.path}: a video file has no ground truth (pass a pose file)")
        idx = [i for i, p in enumerate(self._frame_poses) if p is not None]
        return Trajectory(self.stamps_ns[idx], np.stack([self._frame_poses[i] for i in idx]))

    def use_groundtruth_file(self, path: PathLike) -> None:
        """Attach a TUM or KITTI pose file's ``T_world_cam`` as ground truth (see
        :meth:`~loger_core.io.image_folder.ImageFolderSequence.use_groundtruth_file`); TUM stamps are seconds from the first frame."""

        self._frame_poses = frame_poses_from_file(path, self.stamps_ns)

    def __len__(self) -> int:
        # Container frame counts can be estimates; count by decoding once, then cache.
        if self._count is None:
            cap = cv2.VideoCapture(str(self.path))
            n = 0
            while cap.grab():
                n += 1
            cap.release()
            self._count = n
        return self._count

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                pose = None
                if self._frame_poses is not None and i < len(self._frame_poses):
                    pose = self._frame_poses[i]
                yield Frame(
                    rgb=np.ascontiguousarray(bgr[..., ::-1]),
                    stamp_ns=round(i * 1e9 / self.fps),
                    K=self.K,
                    T_world_cam=None if pose is None else pose.copy(),
                )
                i += 1
            self._count = i
        finally:
            cap.release()
