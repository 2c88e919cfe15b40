"""Writing sequences in the dataset layout (see ``loger_core.io.image_folder``): colour PNGs,
depth (16-bit millimetre PNG or float32 metre ``.npy``), list files, ground truth (TUM + KITTI) and
``intrinsics.yaml``, streamed frame by frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from .errors import ImageFolderError
from .frames import DEPTH_SCALE_MM, PathLike, depth_to_mm, format_stamp, write_intrinsics_yaml
from .trajectory import Trajectory, write_kitti, write_tum

__all__ = ["ImageFolderWriter", "write_image_folder"]


class ImageFolderWriter:
    """Streams frames into the dataset layout; call :meth:`close` (or use ``with``).

    Frames are any objects with ``rgb (H, W, 3) uint8``, ``stamp_ns``, and optionally
    ``K (3, 3)``, ``depth (H, W)`` (metres) and ``T_world_cam (4, 4)``. Ground-truth
    files are written only when every frame has a pose; ``intrinsics.yaml`` when the
    frames carry ``K``.

    Args:
        out_dir: target folder; its ``rgb/`` must not already hold images.
        depth_format: ``'png'`` (16-bit millimetres; depths that do not fit become 0),
            ``'npy'`` (float32 metres, exact) or ``None`` (no depth).
        fps: recorded in ``intrinsics.yaml`` (informational).
    """

    def __init__(self, out_dir: PathLike, depth_format: Optional[str] = "png", fps: Optional[float] = None) -> None:
        if depth_format not in ("png", "npy", None):
            raise ImageFolderError(f"depth_format must be 'png', 'npy' or None, got {depth_format!r}")
        self.root = Path(out_dir)
        rgb_dir = self.root / "rgb"
        if rgb_dir.is_dir() and any(rgb_dir.iterdir()):
            raise ImageFolderError(f"{rgb_dir} already holds files; refusing to mix sequences")
        rgb_dir.mkdir(parents=True, exist_ok=True)
        self.depth_format = depth_format
        self.fps = fps
        self._stamps: list[int] = []
        self._poses: list = []
        self._rgb_lines: list[str] = []
        self._depth_lines: list[str] = []
        self._K: Optional[np.ndarray] = None
        self._size: Optional[tuple] = None
        self._closed = False

    def add(self, frame) -> None:
        if self._closed:
            raise ImageFolderError("ImageFolderWriter is closed")
        i = len(self._stamps)
        rgb = np.asarray(frame.rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ImageFolderError(f"frame {i}: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        size = rgb.shape[:2]
        if self._size is None:
            self._size = size
        elif size != self._size:
            raise ImageFolderError(f"frame {i}: image size {size} differs from the first frame's {self._size}")
        stamp = int(frame.stamp_ns)
        if self._stamps and stamp <= self._stamps[-1]:
            raise ImageFolderError(f"frame {i}: stamp_ns {stamp} is not after the previous {self._stamps[-1]}")
        name = f"{i:06d}"
        rgb_rel = f"rgb/{name}.png"
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if not cv2.imwrite(str(self.root / rgb_rel), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise ImageFolderError(f"cannot write {self.root / rgb_rel}")
        self._rgb_lines.append(f"{format_stamp(stamp)} {rgb_rel}")
        depth = getattr(frame, "depth", None)
        if self.depth_format is not None and depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != size:
                raise ImageFolderError(f"frame {i}: depth shape {depth.shape} != image shape {size}")
            (self.root / "depth").mkdir(exist_ok=True)
            if self.depth_format == "npy":
                depth_rel = f"depth/{name}.npy"
                np.save(self.root / depth_rel, depth)
            else:
                depth_rel = f"depth/{name}.png"
                cv2.imwrite(str(self.root / depth_rel), depth_to_mm(depth), [cv2.IMWRITE_PNG_COMPRESSION, 1])
            self._depth_lines.append(f"{format_stamp(stamp)} {depth_rel}")
        K = getattr(frame, "K", None)
        if K is not None and self._K is None:
            self._K = np.asarray(K, dtype=np.float64)
        pose = getattr(frame, "T_world_cam", None)
        self._poses.append(None if pose is None else np.asarray(pose, dtype=np.float64))
        self._stamps.append(stamp)

    def close(self) -> Path:
        """Write the list, ground-truth and intrinsics files; returns the folder."""
        if self._closed:
            return self.root
        self._closed = True
        header = "# timestamp filename\n"
        (self.root / "rgb.txt").write_text(header + "".join(line + "\n" for line in self._rgb_lines), encoding="utf-8")
        if self._depth_lines:
            (self.root / "depth.txt").write_text(
                header + "".join(line + "\n" for line in self._depth_lines), encoding="utf-8"
            )
        if self._poses and all(p is not None for p in self._poses):
            poses = np.stack(self._poses)
            write_tum(self.root / "groundtruth.txt", Trajectory(np.array(self._stamps, dtype=np.int64), poses))
            write_kitti(self.root / "poses_kitti.txt", poses)
        if self._K is not None and self._size is not None:
            extra = {
                "depth_scale": DEPTH_SCALE_MM,
                "depth_format": self.depth_format or "none",
                "frames": len(self._stamps),
            }
            if self.fps is not None:
                extra["fps"] = float(self.fps)
            write_intrinsics_yaml(self.root / "intrinsics.yaml", self._K, self._size[1], self._size[0], **extra)
        return self.root

    def __enter__(self) -> "ImageFolderWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def write_image_folder(
    out_dir: PathLike, frames: Iterable, depth_format: Optional[str] = "png", fps: Optional[float] = None
) -> Path:
    """Write ``frames`` (streamed; e.g. a generator) in the dataset layout; returns the folder.

    See :class:`ImageFolderWriter` for the accepted frames and options.
    """
    with ImageFolderWriter(out_dir, depth_format=depth_format, fps=fps) as writer:
        for frame in frames:
            writer.add(frame)
    return writer.root
