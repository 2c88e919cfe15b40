"""Keyframes and the per-frame data the back end keeps: features, the network's depth at them, the
network's pose, and a bounded set of local map points for re-fusion after an optimisation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from loger_core.backend.features import Features

__all__ = ["FrameInput", "Keyframe", "sample_depth", "model_pixels"]


@dataclass
class FrameInput:
    """What the back end needs of one committed frame.

    stamp_ns, index: the frame's stamp and number in the stream.
    T_world_cam: (4, 4) float64 the front end's (network's) pose.
    depth: (h, w) float32 the network's z-depth at model resolution (map units, NaN = none).
    confidence: (h, w) float32 in [0, 1].
    K: (3, 3) float64 intrinsics of the original image; image: (H, W[, 3]) uint8 original image.
    crop: (x0, y0, cw, ch) box of the original image that was resized to the model input (w, h).
    points, colors, point_confidence: the frame's world points (M, 3) float32 / (M, 3) uint8 / (M,)
    (network pose), kept at keyframes for re-fusion.
    descriptor: (C,) float32 unit global descriptor from the network's encoder tokens
    (``FrameResult.descriptor``), or None; place recognition with ``place_descriptor`` 'tokens'.
    """

    stamp_ns: int
    index: int
    T_world_cam: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    K: np.ndarray
    image: Optional[np.ndarray]  # None: not tracked (its pose is interpolated)
    crop: tuple[int, int, int, int]
    points: np.ndarray
    colors: np.ndarray
    point_confidence: np.ndarray
    valid: Optional[np.ndarray] = None  # (h, w) bool: the pixels ``points`` come from (row-major)
    intrinsics_known: bool = False  # ``K`` is the camera's, not one implied by the network's points
    descriptor: Optional[np.ndarray] = None


def model_pixels(uv: np.ndarray, crop: tuple[int, int, int, int], model_size: tuple[int, int]) -> np.ndarray:
    """(N, 2) float32 model-input pixel coordinates of original-image pixels ``uv`` (N, 2)."""
    x0, y0, cw, ch = crop
    w, h = model_size
    out = np.empty_like(np.asarray(uv, np.float32))
    out[:, 0] = (uv[:, 0] - x0 + 0.5) * (w / cw) - 0.5
    out[:, 1] = (uv[:, 1] - y0 + 0.5) * (h / ch) - 0.5
    return out


def sample_depth(depth: np.ndarray, uv: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """(N,) float32 bilinear network depth at original pixels ``uv``; NaN outside the model input
    or where a neighbour has none."""
    h, w = depth.shape
    if len(uv) == 0:
        return np.zeros(0, np.float32)
    m = model_pixels(uv, crop, (w, h))
    return cv2.remap(np.ascontiguousarray(depth, np.float32), np.ascontiguousarray(m[:, :1]), np.ascontiguousarray(m[:, 1:]),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=float("nan")).ravel()


@dataclass
class Keyframe:
    """One keyframe.

    key: node id in the pose graph; index, stamp_ns: its frame.
    T_net: (4, 4) float64 the network's pose of the frame.
    K: (3, 3) float64; feats: all its features while it may still be tracked against (None after);
    place: the bounded subset kept for loop verification; depth_place: (P,) float32 network depth at them.
    q: map units per network unit at this keyframe (the scale chain against the network's depth).
    points: (M, 3) float32 camera-frame points in network units; colors (M, 3) uint8; conf (M,) float32.
    descriptor: (C,) float32 the frame's encoder-token descriptor, or None (see FrameInput).
    """

    key: int
    index: int
    stamp_ns: int
    T_net: np.ndarray
    K: np.ndarray
    feats: Optional[Features]
    depth_feats: Optional[np.ndarray]
    place: Features
    depth_place: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    conf: np.ndarray
    median_depth: float
    q: float = 1.0
    path_length: float = 0.0  # along the estimate from the first keyframe, at insertion (map units)
    extra: dict = field(default_factory=dict)
    descriptor: Optional[np.ndarray] = None

    def forget_tracking(self) -> None:
        """Drop what only tracking needed (bounded memory: old keyframes keep their place subset)."""
        self.feats = None
        self.depth_feats = None


def local_points(frame: FrameInput, limit: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame's world points moved into its camera frame (network pose), at most ``limit`` of them
    (a fixed-seed subset, so reruns fuse the same map)."""
    pts = np.asarray(frame.points, np.float32)
    cols = np.asarray(frame.colors, np.uint8)
    conf = np.asarray(frame.point_confidence, np.float32)
    pix = None
    valid = frame.valid
    if frame.intrinsics_known and valid is not None and int(valid.sum()) == len(pts) and frame.depth.shape == valid.shape:
        pix = np.argwhere(valid)  # (M, 2) row, column in the model input, the points' order
    if len(pts) > limit:
        idx = np.sort(rng.choice(len(pts), size=limit, replace=False))
        pts, cols, conf = pts[idx], cols[idx], conf[idx]
        pix = None if pix is None else pix[idx]
    if pix is not None:
        # The camera's own intrinsics with the network's depth: the network's points carry the
        # focal length it implied, and a wrong one fans walls out into arcs.
        return _backproject(frame, pix), cols, conf
    T = np.asarray(frame.T_world_cam, np.float64)
    local = (pts.astype(np.float64) - T[:3, 3]) @ T[:3, :3]
    return local.astype(np.float32), cols, conf


def _backproject(frame: FrameInput, pix: np.ndarray) -> np.ndarray:
    """(M, 3) float32 camera-frame points of model pixels ``pix`` (row, col) at the network's depth,
    through the known intrinsics of the original image (``crop`` and resize undone)."""
    h, w = frame.depth.shape
    x0, y0, cw, ch = frame.crop
    v, u = pix[:, 0].astype(np.float64), pix[:, 1].astype(np.float64)
    uo = (u + 0.5) * (cw / w) - 0.5 + x0
    vo = (v + 0.5) * (ch / h) - 0.5 + y0
    z = frame.depth[pix[:, 0], pix[:, 1]].astype(np.float64)
    K = frame.K
    return np.column_stack([(uo - K[0, 2]) / K[0, 0] * z, (vo - K[1, 2]) / K[1, 1] * z, z]).astype(np.float32)
