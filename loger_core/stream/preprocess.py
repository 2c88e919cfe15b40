"""Frame preprocessing exactly as the authors' demo: PIL LANCZOS resize to a size whose sides are
multiples of the patch size, RGB scaled to [0, 1] (ImageNet normalisation happens inside the model).

Pixel convention (OpenCV, also PIL's resampling): pixel (u, v) has its centre at integer
coordinates, so a continuous image coordinate x maps as `x_model + 0.5 = (x_orig - x0 + 0.5) / sx`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from .errors import StreamInputError


@dataclass(frozen=True)
class ImageGeometry:
    """How an original image maps onto the network input: crop, then resize.

    original_size: (W, H) of the image given to `push`.
    model_size: (w, h) of the network input.
    crop: (x0, y0, cw, ch) box of the original image that was resized, in original pixels
        (the whole image in 'resize' mode).
    """

    original_size: tuple[int, int]
    model_size: tuple[int, int]
    crop: tuple[int, int, int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        """Original pixels per model pixel along x and y."""
        return self.crop[2] / self.model_size[0], self.crop[3] / self.model_size[1]


@dataclass
class PreparedImage:
    """A frame ready for the network.
    rgb: (h, w, 3) uint8, the resized image (network input and point colours).
    geometry: the original -> model mapping.
    """
    rgb: np.ndarray
    geometry: ImageGeometry

    @property
    def tensor(self) -> torch.Tensor:
        """(3, h, w) float32 RGB in [0, 1] (CPU); the stream does this conversion on its device."""
        return rgb_to_tensor(torch.from_numpy(self.rgb))


def rgb_to_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """(..., h, w, 3) uint8 -> (..., 3, h, w) float32 in [0, 1] on the same device (exact on every
    device: one correctly rounded division)."""
    return rgb.movedim(-1, -3).float().div_(255.0)


def rgb_batch(rgb: torch.Tensor) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> the (1, n, 3, h, w) float32 images the network takes."""
    return rgb_to_tensor(rgb).unsqueeze(0)


def demo_resolution(width: int, height: int, pixel_limit: int, patch: int = 14) -> tuple[int, int]:
    """The authors' demo rule: scale to `pixel_limit` pixels, round both sides to multiples of
    `patch`, then shrink the side that is relatively too long until the budget holds. Returns (W, H)."""
    scale = math.sqrt(pixel_limit / (width * height))
    w_target, h_target = width * scale, height * scale
    k, m = round(w_target / patch), round(h_target / patch)
    while (k * patch) * (m * patch) > pixel_limit:
        if k / m > w_target / h_target:
            k -= 1
        else:
            m -= 1
    return max(1, k) * patch, max(1, m) * patch


def check_resolution(resolution: tuple[int, int], patch: int) -> None:
    w, h = resolution
    if w % patch or h % patch or w < patch or h < patch:
        raise StreamInputError(f"resolution must be (W, H) multiples of the patch size {patch}, got {tuple(resolution)!r}")


def check_image(image) -> np.ndarray:
    """Refuses anything but an (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray):
        raise StreamInputError(f"image must be a numpy (H, W, 3) uint8 RGB array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise StreamInputError(f"image must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise StreamInputError(f"image must have shape (H, W, 3), got {image.shape}")
    return image


def center_crop_box(width: int, height: int, aspect: float) -> tuple[int, int, int, int]:
    """Largest centred (x0, y0, cw, ch) box of aspect ratio `aspect` (= w / h) inside the image."""
    if width / height > aspect:
        cw, ch = max(1, round(height * aspect)), height
    else:
        cw, ch = width, max(1, round(width / aspect))
    return (width - cw) // 2, (height - ch) // 2, cw, ch


def image_geometry(width: int, height: int, resolution: tuple[int, int], mode: str) -> ImageGeometry:
    if mode == "crop":
        crop = center_crop_box(width, height, resolution[0] / resolution[1])
    else:
        crop = (0, 0, width, height)
    return ImageGeometry((width, height), (int(resolution[0]), int(resolution[1])), crop)


def prepare_image(image: np.ndarray, resolution: tuple[int, int], mode: str = "resize") -> PreparedImage:
    """(H, W, 3) uint8 RGB -> network input of size `resolution` (W, H)."""
    image = check_image(image)
    height, width = image.shape[:2]
    geo = image_geometry(width, height, resolution, mode)
    x0, y0, cw, ch = geo.crop
    pil = Image.fromarray(np.ascontiguousarray(image[y0 : y0 + ch, x0 : x0 + cw]))
    # PIL returns an exact copy when the size already matches, as in the demo.
    rgb = np.array(pil.resize(geo.model_size, Image.Resampling.LANCZOS), dtype=np.uint8)
    return PreparedImage(rgb, geo)


def resample_depth(depth: np.ndarray, geometry: ImageGeometry, unit_m: float) -> np.ndarray:
    """A metric depth image aligned with the original RGB image -> (h, w) float32 metres at model
    resolution. Nearest-neighbour sampling, so depths are never blended across object borders.

    depth: (H, W) float (metres) or integer (multiplied by `unit_m`); 0 / non-finite = invalid.
    """
    if not isinstance(depth, np.ndarray) or depth.ndim != 2:
        raise StreamInputError(f"depth must be a 2-D numpy array, got {getattr(depth, 'shape', type(depth).__name__)}")
    W, H = geometry.original_size
    if depth.shape != (H, W):
        raise StreamInputError(f"depth must have the image's shape {(H, W)}, got {depth.shape}")
    if np.issubdtype(depth.dtype, np.integer):
        metres = depth.astype(np.float32) * np.float32(unit_m)
    elif np.issubdtype(depth.dtype, np.floating):
        metres = depth.astype(np.float32)
    else:
        raise StreamInputError(f"depth must have an integer or float dtype, got {depth.dtype}")
    x0, y0, cw, ch = geometry.crop
    crop = np.ascontiguousarray(metres[y0 : y0 + ch, x0 : x0 + cw])
    return cv2.resize(crop, geometry.model_size, interpolation=cv2.INTER_NEAREST_EXACT)
