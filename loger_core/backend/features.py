"""Image features for the back end: OpenCV SIFT or ORB keypoints and descriptors, ratio-test matching."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["Features", "extract_features", "match_features", "to_gray"]


@dataclass
class Features:
    """Keypoints of one image, in the pixel frame of the ORIGINAL image (downscaling undone).

    uv: (N, 2) float32 pixel coordinates; desc: (N, D) float32 (SIFT) or uint8 (ORB) descriptors;
    kind: 'sift' or 'orb' (decides the matcher's norm).
    """

    uv: np.ndarray
    desc: np.ndarray
    kind: str

    def __len__(self) -> int:
        return int(self.uv.shape[0])

    def subset(self, idx: np.ndarray) -> "Features":
        return Features(self.uv[idx], self.desc[idx], self.kind)


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 from (H, W), (H, W, 1) or (H, W, 3) RGB uint8."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


_DETECTORS: dict[tuple[str, int], cv2.Feature2D] = {}


def _detector(kind: str, n: int, contrast: float) -> cv2.Feature2D:
    # OpenCV detectors are cheap to keep and not free to build; one per setting, used by the back
    # end's single worker.
    key = (kind, n, contrast)
    if key not in _DETECTORS:
        _DETECTORS[key] = (cv2.SIFT_create(nfeatures=n, contrastThreshold=contrast) if kind == "sift"
                           else cv2.ORB_create(nfeatures=n))
    return _DETECTORS[key]


def extract_features(image: np.ndarray, kind: str = "sift", max_features: int = 2000,
                     max_width: int = 800, contrast: float = 0.02) -> Features:
    """Detect and describe keypoints of ``image`` ((H, W[, 3]) uint8); wide images are downscaled
    to ``max_width`` first (features of a 1241-pixel KITTI frame at 800 match as well, at half the
    cost). ``contrast``: SIFT's contrast threshold (OpenCV's default 0.04 finds 2-4x fewer
    keypoints on smooth indoor and street images at 320x240)."""
    gray = to_gray(image)
    f = 1.0
    if gray.shape[1] > max_width:
        f = max_width / gray.shape[1]
        gray = cv2.resize(gray, (max_width, max(1, round(gray.shape[0] * f))), interpolation=cv2.INTER_AREA)
    kps, desc = _detector(kind, max_features, contrast).detectAndCompute(gray, None)
    if desc is None or not kps:
        dim, dt = (128, np.float32) if kind == "sift" else (32, np.uint8)
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, dim), dt), kind)
    # Keypoint centres: OpenCV pixel centres are at integer coordinates at both scales, so undo
    # the resize about the pixel centre.
    uv = (np.float32([k.pt for k in kps]) + 0.5) / f - 0.5
    return Features(uv.astype(np.float32), desc, kind)


def match_features(a: Features, b: Features, ratio: float = 0.8) -> np.ndarray:
    """(M, 2) int64 index pairs (into a, into b) passing Lowe's ratio test, one match per b keypoint
    (the closest, when several a keypoints chose it)."""
    if len(a) < 2 or len(b) < 2:
        return np.zeros((0, 2), np.int64)
    norm = cv2.NORM_L2 if a.kind == "sift" else cv2.NORM_HAMMING
    knn = cv2.BFMatcher(norm).knnMatch(a.desc, b.desc, k=2)
    pairs, dist = [], []
    for m in knn:
        if len(m) == 2 and m[0].distance < ratio * m[1].distance:
            pairs.append((m[0].queryIdx, m[0].trainIdx))
            dist.append(m[0].distance)
    if not pairs:
        return np.zeros((0, 2), np.int64)
    pairs = np.asarray(pairs, np.int64)
    order = np.argsort(np.asarray(dist), kind="stable")
    _, first = np.unique(pairs[order, 1], return_index=True)
    return pairs[np.sort(order[first])]
