"""One entry point for every input layout: :func:`open_sequence`.

Detection, in this order:

1. a ROS bag (``*.mcap``, ``*.db3``, ``*.bag``, or a rosbag2 folder with ``metadata.yaml``): refused,
   ``loger-replay`` reads bags;
2. KITTI odometry (:class:`~loger_core.io.kitti.KittiSequence`): a folder with ``image_0/`` ..
   ``image_3/``, or such an ``image_<k>`` folder with ``calib.txt`` / ``times.txt`` / ``poses.txt`` beside;
3. EuRoC MAV (:class:`~loger_core.io.euroc.EurocSequence`): a folder holding ``mav0/``, or ``mav0`` itself;
4. any other folder: the dataset / TUM RGB-D layout or a plain image folder
   (:class:`~loger_core.io.image_folder.ImageFolderSequence`);
5. any other file: a video (:class:`~loger_core.io.video.VideoSequence`).

Every reader yields :class:`~loger_core.io.frames.Frame` objects (``rgb (H, W, 3) uint8``,
``stamp_ns``, ``K``, ``depth``, ``T_world_cam``) and has ``len()``, ``K``, ``stamps_ns``,
``has_groundtruth`` and ``groundtruth()`` (a :class:`~loger_core.io.trajectory.Trajectory` of
``T_world_cam`` at the frame stamps).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .euroc import EurocSequence, is_euroc_sequence
from .groundtruth import SequenceFormatError
from .image_folder import ImageFolderError, ImageFolderSequence
from .video import VideoSequence
from .kitti import KittiSequence, is_kitti_sequence

__all__ = ["open_sequence", "detect_layout", "BAG_SUFFIXES"]

PathLike = Union[str, "os.PathLike[str]"]
BAG_SUFFIXES = (".mcap", ".db3", ".bag")
DEFAULT_FOLDER_FPS = 30.0


def _is_bag(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in BAG_SUFFIXES
    return (path / "metadata.yaml").is_file() and any(p.suffix.lower() in BAG_SUFFIXES for p in path.iterdir())


def detect_layout(path: PathLike) -> str:
    """``'bag'``, ``'kitti'``, ``'euroc'``, ``'folder'`` or ``'video'`` for an existing ``path``.

    Raises:
        ImageFolderError: ``path`` is neither a folder nor a file.
    """
    p = Path(path)
    if not (p.is_dir() or p.is_file()):
        raise ImageFolderError(f"INPUT {str(p)!r} is neither a folder nor a file")
    if _is_bag(p):
        return "bag"
    if p.is_file():
        return "video"
    if is_kitti_sequence(p):
        return "kitti"
    if is_euroc_sequence(p):
        return "euroc"
    return "folder"


def _sequence_hint(path: Path) -> str:
    """For a folder of sequences (``dataset/sequences``, a EuRoC download): name a few to pick from."""
    try:
        subs = sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return ""
    seqs = [p.name for p in subs if is_kitti_sequence(p) or is_euroc_sequence(p)]
    return f"; it holds sequences, pick one: {', '.join(seqs[:5])}{' ...' if len(seqs) > 5 else ''}" if seqs else ""


def open_sequence(path: PathLike, fps: Optional[float] = None, groundtruth: Optional[PathLike] = None):
    """Open ``path`` with the reader its layout needs (see the module docstring).

    Args:
        path: sequence folder, ``image_<k>`` / ``mav0`` folder, image folder or video file.
        fps: frame rate for stamps when the input has none (folders: 30, KITTI: 10, video: the container's).
        groundtruth: a TUM (``stamp tx ty tz qx qy qz qw``) or KITTI (12 numbers per frame) file of
            ``T_world_cam`` replacing the input's own ground truth.

    Returns:
        :class:`KittiSequence`, :class:`EurocSequence`, :class:`ImageFolderSequence` or :class:`VideoSequence`.

    Raises:
        ImageFolderError (or its subclass SequenceFormatError): missing input, a ROS bag, a broken
            layout or ground-truth file; the message names the file at fault.
    """
    p = Path(path)
    layout = detect_layout(p)
    if layout == "bag":
        raise ImageFolderError(
            f"INPUT {str(p)!r} is a ROS bag; loger-reconstruct reads image folders (KITTI, EuRoC, TUM, "
            "plain images) and videos. Use loger-replay to run a bag (no ROS install needed)."
        )
    if layout == "kitti":
        return KittiSequence(p, fps=fps, groundtruth=groundtruth)
    if layout == "euroc":
        return EurocSequence(p, fps=fps, groundtruth=groundtruth)
    if layout == "video":
        seq = VideoSequence(p, fps=fps)
    else:
        try:
            seq = ImageFolderSequence(p, fps=fps if fps is not None else DEFAULT_FOLDER_FPS)
        except ImageFolderError as exc:
            hint = _sequence_hint(p)
            if hint:
                raise SequenceFormatError(f"{exc}{hint}") from None
            raise
    if groundtruth is not None:
        seq.use_groundtruth_file(groundtruth)
    return seq
