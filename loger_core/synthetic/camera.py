"""Pinhole intrinsics and camera poses in the OpenCV optical convention.

Camera axes: x right, y down, z forward. Pixel ``(u, v)`` has its centre at integer
coordinates (OpenCV), so a symmetric field of view puts the principal point at
``((W - 1) / 2, (H - 1) / 2)``.
"""

from __future__ import annotations

import math

import numpy as np

from .config import SynthError

__all__ = ["intrinsics_from_fov", "camera_rays", "look_rotation"]


def intrinsics_from_fov(width: int, height: int, fov_deg: float) -> np.ndarray:
    """Pinhole ``K (3, 3) float64`` with horizontal field of view ``fov_deg`` and square pixels."""
    if width < 1 or height < 1:
        raise SynthError(f"image size must be positive, got width={width!r} height={height!r}")
    if not 0.0 < fov_deg < 180.0:
        raise SynthError(f"fov_deg must be in (0, 180), got {fov_deg!r}")
    focal = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array(
        [[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


def camera_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Ray directions through every pixel centre, camera frame, ``(H, W, 3) float64``.

    Each ray has ``z == 1``, so a ray parameter ``t`` is directly the z-depth.
    """
    u = np.arange(width, dtype=np.float64)
    v = np.arange(height, dtype=np.float64)
    uu, vv = np.meshgrid(u, v)
    x = (uu - K[0, 2] - K[0, 1] * (vv - K[1, 2]) / K[1, 1]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], axis=-1)


def look_rotation(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Camera-to-world rotations ``(N, 3, 3) float64`` for a z-up world.

    ``yaw`` is the heading of the optical axis, counter-clockwise from world +x;
    ``pitch`` tilts the optical axis down (positive looks down); ``roll`` rotates the
    camera about its optical axis, turning its x axis (right) towards its y axis
    (down). The columns are the camera x (right), y (down) and z (forward) axes in
    world coordinates. Angles in radians, shape (N,).
    """
    yaw, pitch, roll = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (yaw, pitch, roll))
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    forward = np.stack([cy * cp, sy * cp, -sp], axis=-1)
    right0 = np.stack([sy, -cy, np.zeros_like(yaw)], axis=-1)
    down0 = np.cross(forward, right0)
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right = cr * right0 + sr * down0
    down = cr * down0 - sr * right0
    return np.stack([right, down, forward], axis=-1)
