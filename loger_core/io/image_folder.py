"""Image folders on disk: the dataset folder layout and plain image folders, read as a sequence of
:class:`~loger_core.io.frames.Frame` (:class:`ImageFolderSequence`). Videos: ``io.video``;
writing the layout: ``io.image_folder_writer``; the shared small formats: ``io.frames``.

Dataset layout (written by ``image_folder_writer.write_image_folder``, TUM RGB-D style)::

    DIR/rgb/000000.png          colour, 8-bit RGB PNG
    DIR/depth/000000.png        z-depth, 16-bit PNG in millimetres (0 = no depth), or
    DIR/depth/000000.npy        z-depth, float32 metres (inf = no hit)
    DIR/rgb.txt, DIR/depth.txt  "stamp path" per frame (stamps in seconds, 9 decimals)
    DIR/groundtruth.txt         TUM poses "stamp tx ty tz qx qy qz qw" (T_world_cam)
    DIR/poses_kitti.txt         the same poses in KITTI format (one 3x4 row per frame)
    DIR/intrinsics.yaml         width, height, fx, fy, cx, cy, depth_scale, fps, frames

A *plain folder* is any directory of images (png/jpg/jpeg/bmp/tif/tiff/webp), read in
natural order (``frame-2`` before ``frame-10``); when names follow the 7-Scenes
pattern ``*.color.png`` only those are used, and ``*.pose.txt`` files next to them
(4x4 ``T_world_cam``) become the ground truth. Stamps: ``rgb.txt`` when present, else
the ground-truth stamps when there is one pose per image, else ``index / fps``.

Depth in a :class:`Frame` is float32 metres with ``inf`` where there is no valid depth
(sky, no hit, or beyond the 65.535 m range of a 16-bit PNG).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from .errors import ImageFolderError
from .frames import DEPTH_SCALE_MM, IMAGE_EXTENSIONS, Frame, PathLike, check_K, natural_key, parse_stamp, read_intrinsics_yaml
from .groundtruth import frame_poses_from_file
from .trajectory import Trajectory, TrajectoryFormatError, read_tum

__all__ = ["ImageFolderError", "ImageFolderSequence"]

# Ground-truth poses farther than this from a frame's stamp are not associated (TUM
# RGB-D ground truth runs at 100+ Hz, so a real match is always much closer).
_GT_MAX_DT_NS = 20_000_000


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageFolderError(f"{path}: cannot decode image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img[..., ::-1])


def _read_depth(path: Path, scale: float) -> np.ndarray:
    if path.suffix == ".npy":
        depth = np.load(path)
        if depth.ndim != 2:
            raise ImageFolderError(f"{path}: depth must be a 2-D array, got shape {depth.shape}")
        return depth.astype(np.float32, copy=False)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        raise ImageFolderError(f"{path}: depth PNG must be single-channel 16-bit")
    depth = raw.astype(np.float32) / np.float32(scale)
    depth[raw == 0] = np.inf
    return depth


def _read_list_file(path: Path) -> list[tuple[int, str]]:
    """TUM association list: ``stamp relative/path`` per line, ``#`` comments."""
    out = []
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ImageFolderError(f"{path}:{line_no}: expected 'stamp path', got {line!r}")
            out.append((parse_stamp(parts[0], f"{path}:{line_no}"), parts[1]))
    return out


class ImageFolderSequence:
    """A sequence stored as a folder of images (dataset layout or plain folder).

    Args:
        path: the folder.
        fps: frame rate used for stamps when the folder has none (``index / fps``).
        K: ``(3, 3)`` intrinsics overriding ``intrinsics.yaml`` (plain folders have none).
        load_depth: read depth images when the folder has them.

    Iterating yields :class:`Frame` objects; ``seq[i]`` reads frame ``i``.
    """

    def __init__(
        self, path: PathLike, fps: float = 30.0, K: Optional[np.ndarray] = None, load_depth: bool = True
    ) -> None:
        self.root = Path(path)
        if not self.root.is_dir():
            raise ImageFolderError(f"path {str(self.root)!r} is not a directory")
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ImageFolderError(f"fps must be a positive number, got {fps!r}")
        self.fps = float(fps)
        self._meta: dict = {}
        self._K = None if K is None else check_K(K)
        self._depth_paths: Optional[list] = None
        self._depth_scale = DEPTH_SCALE_MM
        self._gt_stamps: Optional[np.ndarray] = None
        self._gt_poses: Optional[np.ndarray] = None
        if (self.root / "rgb").is_dir():
            self.layout = "dataset"
            self._init_dataset(load_depth)
        else:
            self.layout = "plain"
            self._init_plain()
        if not self._rgb_paths:
            raise ImageFolderError(f"{self.root}: no images found (extensions {IMAGE_EXTENSIONS})")
        self._frame_poses = self._associate_groundtruth()

    def _list_images(self, folder: Path) -> list[Path]:
        files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        return sorted(files, key=lambda p: natural_key(p.name))

    def _init_dataset(self, load_depth: bool) -> None:
        root = self.root
        intr = root / "intrinsics.yaml"
        if intr.exists():
            K, self._meta = read_intrinsics_yaml(intr)
            if self._K is None:
                self._K = K
            self._depth_scale = float(self._meta.get("depth_scale", DEPTH_SCALE_MM))
        rgb_list = root / "rgb.txt"
        if rgb_list.exists():
            entries = _read_list_file(rgb_list)
            self._rgb_paths = [root / rel for _, rel in entries]
            self._stamps = np.array([s for s, _ in entries], dtype=np.int64)
            missing = [str(p) for p in self._rgb_paths if not p.exists()]
            if missing:
                raise ImageFolderError(f"{rgb_list}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
        else:
            self._rgb_paths = self._list_images(root / "rgb")
            self._stamps = None
        gt = root / "groundtruth.txt"
        if gt.exists():
            try:
                traj = read_tum(gt)
            except TrajectoryFormatError as exc:
                raise ImageFolderError(f"bad ground truth: {exc}") from exc
            self._gt_stamps, self._gt_poses = traj.stamps_ns, traj.poses
        if self._stamps is None:
            self._stamps = self._default_stamps()
        depth_dir = root / "depth"
        if load_depth and depth_dir.is_dir():
            self._depth_paths = self._match_depth(depth_dir)

    def _match_depth(self, depth_dir: Path) -> Optional[list]:
        depth_list = self.root / "depth.txt"
        if depth_list.exists():
            entries = _read_list_file(depth_list)
            by_stamp = {s: self.root / rel for s, rel in entries}
            paths = [by_stamp.get(int(s)) for s in self._stamps]
        else:
            by_stem = {}
            for p in depth_dir.iterdir():
                if p.suffix in (".png", ".npy"):
                    by_stem[p.stem] = p
            paths = [by_stem.get(p.stem) for p in self._rgb_paths]
        return paths if any(p is not None for p in paths) else None

    def _init_plain(self) -> None:
        images = self._list_images(self.root)
        colour = [p for p in images if ".color." in p.name]
        if colour:
            images = colour
            poses = [p.with_name(p.name.split(".color.")[0] + ".pose.txt") for p in images]
            if all(p.exists() for p in poses):
                mats = []
                for p in poses:
                    try:
                        m = np.loadtxt(p, dtype=np.float64)
                    except ValueError:
                        raise ImageFolderError(f"{p}: pose file must hold a 4x4 matrix of numbers") from None
                    if m.shape != (4, 4):
                        raise ImageFolderError(f"{p}: pose file must hold a 4x4 matrix, got shape {m.shape}")
                    mats.append(m)
                self._gt_poses = np.stack(mats)
        self._rgb_paths = images
        self._stamps = self._default_stamps()
        if self._gt_poses is not None:
            self._gt_stamps = self._stamps.copy()

    def _default_stamps(self) -> np.ndarray:
        n = len(self._rgb_paths)
        if self._gt_stamps is not None and len(self._gt_stamps) == n:
            return self._gt_stamps.copy()
        return np.array([round(i * 1e9 / self.fps) for i in range(n)], dtype=np.int64)

    def _associate_groundtruth(self) -> Optional[list]:
        if self._gt_poses is None:
            return None
        gt_stamps = self._gt_stamps
        order = np.argsort(gt_stamps, kind="stable")
        sorted_stamps = gt_stamps[order]
        out = []
        for s in self._stamps:
            j = int(np.searchsorted(sorted_stamps, s))
            best = None
            for k in (j - 1, j):
                if 0 <= k < len(sorted_stamps):
                    dt = abs(int(sorted_stamps[k]) - int(s))
                    if dt <= _GT_MAX_DT_NS and (best is None or dt < best[0]):
                        best = (dt, order[k])
            out.append(None if best is None else self._gt_poses[best[1]])
        return out

    # ------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._rgb_paths)

    @property
    def K(self) -> Optional[np.ndarray]:
        """``(3, 3) float64`` intrinsics, or ``None`` when the folder does not say."""
        return None if self._K is None else self._K.copy()

    @property
    def stamps_ns(self) -> np.ndarray:
        """``(N,) int64`` frame stamps."""
        return self._stamps.copy()

    @property
    def metadata(self) -> dict:
        """Keys of ``intrinsics.yaml`` (empty for plain folders)."""
        return dict(self._meta)

    @property
    def has_depth(self) -> bool:
        return self._depth_paths is not None

    @property
    def has_groundtruth(self) -> bool:
        return self._frame_poses is not None and any(p is not None for p in self._frame_poses)

    def groundtruth(self) -> Trajectory:
        """Ground-truth poses associated with the frames (frames without one are skipped).

        Raises:
            ImageFolderError: the folder has no ground truth.
        """
        if not self.has_groundtruth:
            raise ImageFolderError(f"{self.root}: no ground truth (groundtruth.txt or *.pose.txt)")
        idx = [i for i, p in enumerate(self._frame_poses) if p is not None]
        return Trajectory(self._stamps[idx].copy(), np.stack([self._frame_poses[i] for i in idx]))

    def use_groundtruth_file(self, path: PathLike) -> None:
        """Replace the folder's ground truth with a TUM or KITTI pose file's ``T_world_cam``
        (``--groundtruth``): KITTI needs one pose per frame, TUM is sampled at the frame stamps
        (:func:`loger_core.io.groundtruth.frame_poses_from_file`, whose errors it raises)."""

        self._frame_poses = frame_poses_from_file(path, self._stamps)

    def __getitem__(self, index: int) -> Frame:
        n = len(self)
        if not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"frame index {index!r} out of range for {n} frames")
        i = int(index) % n
        path = self._rgb_paths[i]
        rgb = _read_rgb(path)
        depth = None
        if self._depth_paths is not None and self._depth_paths[i] is not None:
            depth = _read_depth(self._depth_paths[i], self._depth_scale)
            if depth.shape != rgb.shape[:2]:
                raise ImageFolderError(
                    f"{self._depth_paths[i]}: depth shape {depth.shape} != image shape {rgb.shape[:2]}"
                )
        pose = None if self._frame_poses is None else self._frame_poses[i]
        return Frame(
            rgb=rgb,
            stamp_ns=int(self._stamps[i]),
            K=self.K,
            depth=depth,
            T_world_cam=None if pose is None else pose.copy(),
            path=str(path),
        )

    def __iter__(self) -> Iterator[Frame]:
        for i in range(len(self)):
            yield self[i]
