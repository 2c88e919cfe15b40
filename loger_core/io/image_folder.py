"""Image sequences on disk: the dataset folder layout (read + write), plain image
folders and video files, all yielding the same :class:`Frame`.

Dataset layout (written by :func:`write_image_folder`, TUM RGB-D style)::

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
import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import cv2
import numpy as np
import yaml

from .errors import ImageFolderError
from .groundtruth import frame_poses_from_file
from .trajectory import Trajectory, TrajectoryFormatError, read_tum, write_kitti, write_tum

__all__ = [
    "Frame",
    "ImageFolderError",
    "ImageFolderSequence",
    "ImageFolderWriter",
    "VideoSequence",
    "write_image_folder",
    "read_intrinsics_yaml",
    "write_intrinsics_yaml",
    "natural_key",
    "depth_to_mm",
    "IMAGE_EXTENSIONS",
]

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SCALE_MM = 1000.0
_NS = 1_000_000_000
# Ground-truth poses farther than this from a frame's stamp are not associated (TUM
# RGB-D ground truth runs at 100+ Hz, so a real match is always much closer).
_GT_MAX_DT_NS = 20_000_000


@dataclass
class Frame:
    """One image of a sequence.

    Attributes:
        rgb: ``(H, W, 3) uint8`` colour image.
        stamp_ns: timestamp in integer nanoseconds.
        K: ``(3, 3) float64`` pinhole intrinsics, or ``None`` when unknown.
        depth: ``(H, W) float32`` z-depth in metres (``inf`` = no valid depth), or ``None``.
        T_world_cam: ``(4, 4) float64`` ground-truth camera-to-world pose (OpenCV
            camera axes), or ``None``.
        path: file the colour image came from (``None`` for video frames).
    """

    rgb: np.ndarray
    stamp_ns: int
    K: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    T_world_cam: Optional[np.ndarray] = None
    path: Optional[str] = None


def natural_key(name: str) -> list:
    """Sort key that orders embedded integers numerically (``a2`` < ``a10``)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _format_stamp(ns: int) -> str:
    sec, frac = divmod(int(ns), _NS)
    return f"{sec}.{frac:09d}"


def _parse_stamp(token: str, where: str) -> int:
    try:
        return int((Decimal(token) * _NS).to_integral_value())
    except (InvalidOperation, ValueError):
        raise ImageFolderError(f"{where}: bad timestamp {token!r}") from None


def depth_to_mm(depth: np.ndarray) -> np.ndarray:
    """Metres ``(H, W)`` -> ``uint16`` millimetres; no depth (non-finite, <= 0, or beyond
    65.535 m) becomes 0 rather than a wrong value."""
    d = np.asarray(depth, dtype=np.float64)  # float32 * 1000 would round badly beyond ~16 m
    mm = np.where(np.isfinite(d) & (d > 0), np.round(d * DEPTH_SCALE_MM), 0.0)
    mm[mm > 65535] = 0
    return mm.astype(np.uint16)


# ----------------------------------------------------------------- intrinsics
def write_intrinsics_yaml(path: PathLike, K: np.ndarray, width: int, height: int, **extra) -> None:
    """Write ``K (3, 3)`` and the image size (plus ``extra`` scalar keys) as YAML."""
    K = np.asarray(K, dtype=np.float64)
    data = {
        "width": int(width),
        "height": int(height),
        "fx": float(K[0, 0]),
        "fy": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "distortion_model": "none",
    }
    data.update(extra)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)


def read_intrinsics_yaml(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read an ``intrinsics.yaml``; returns ``(K (3, 3) float64, all keys as a dict)``."""
    try:
        with open(path, "r", encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ImageFolderError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ImageFolderError(f"{path}: expected a mapping with fx, fy, cx, cy, got {type(data).__name__}")
    missing = [k for k in ("fx", "fy", "cx", "cy") if k not in data]
    if missing:
        raise ImageFolderError(f"{path}: missing intrinsics key(s) {missing}")
    try:
        fx, fy, cx, cy = (float(data[k]) for k in ("fx", "fy", "cx", "cy"))
    except (TypeError, ValueError):
        values = [data[k] for k in ("fx", "fy", "cx", "cy")]
        raise ImageFolderError(f"{path}: fx, fy, cx, cy must be numbers, got {values}") from None
    if not (fx > 0 and fy > 0 and all(math.isfinite(v) for v in (cx, cy))):
        raise ImageFolderError(f"{path}: focal lengths must be positive, got fx={fx} fy={fy}")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K, data


# -------------------------------------------------------------------- reading
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
            out.append((_parse_stamp(parts[0], f"{path}:{line_no}"), parts[1]))
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
        self._K = None if K is None else self._check_K(K)
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

    @staticmethod
    def _check_K(K) -> np.ndarray:
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise ImageFolderError(f"K must be a finite (3, 3) matrix, got shape {K.shape}")
        return K

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


# ---------------------------------------------------------------------- video
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
        self._K = None if K is None else ImageFolderSequence._check_K(K)
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
        :meth:`ImageFolderSequence.use_groundtruth_file`); TUM stamps are seconds from the first frame."""

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


# -------------------------------------------------------------------- writing
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
        self._rgb_lines.append(f"{_format_stamp(stamp)} {rgb_rel}")
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
            self._depth_lines.append(f"{_format_stamp(stamp)} {depth_rel}")
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
