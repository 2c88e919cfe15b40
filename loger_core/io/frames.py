"""The :class:`Frame` every sequence reader yields (``rgb (H, W, 3) uint8``, ``stamp_ns``, optional
``K (3, 3)``, ``depth (H, W)`` float32 metres, ``T_world_cam (4, 4)``) and the dataset layout's
small formats shared by the readers and the writer: stamps (seconds, 9 decimals), depth PNG
millimetres, ``intrinsics.yaml``, natural file order.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Optional, Union

import numpy as np
import yaml

from .errors import ImageFolderError

__all__ = [
    "DEPTH_SCALE_MM",
    "Frame",
    "IMAGE_EXTENSIONS",
    "PathLike",
    "check_K",
    "depth_to_mm",
    "format_stamp",
    "natural_key",
    "parse_stamp",
    "read_intrinsics_yaml",
    "write_intrinsics_yaml",
]

PathLike = Union[str, "os.PathLike[str]"]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEPTH_SCALE_MM = 1000.0
_NS = 1_000_000_000


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


def format_stamp(ns: int) -> str:
    """Integer nanoseconds -> seconds with 9 decimals (the list files' stamps)."""
    sec, frac = divmod(int(ns), _NS)
    return f"{sec}.{frac:09d}"


def parse_stamp(token: str, where: str) -> int:
    """Seconds (decimal text) -> integer nanoseconds, exactly; ``where`` names the line in errors."""
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


def check_K(K) -> np.ndarray:
    """``K`` as a finite ``(3, 3) float64`` matrix, else ImageFolderError."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise ImageFolderError(f"K must be a finite (3, 3) matrix, got shape {K.shape}")
    return K


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
