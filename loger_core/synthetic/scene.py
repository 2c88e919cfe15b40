"""Scene geometry: axis-aligned textured boxes, an optional ground plane, and a route.

World frame: right-handed, metres, **z up**; the floor/ground is the plane ``z = 0``.
Routes (where a camera may travel) are polylines in the ``xy`` plane.

A box contributes six faces; each face is an axis-aligned rectangle with its own
material. A face's texture axes are the two world axes it spans, in increasing
order with the vertical axis second on walls: x-faces use (y, z), y-faces (x, z),
z-faces (x, y).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import SynthError

__all__ = ["Material", "Route", "Scene", "FaceTable", "FACE_TANGENTS"]

# Texture (u, v) world axes for faces whose normal is along x, y, z.
FACE_TANGENTS = np.array([[1, 2], [0, 2], [0, 1]], dtype=np.int64)


@dataclass
class Material:
    """Appearance of one face.

    Attributes:
        texture: index into the scene's texture bank.
        scale_m: (u, v) metres per texture period.
        offset: (u, v) texture offset in periods (decorrelates faces sharing a texture).
        tint: (3,) RGB multiplier.
        detail: index into the detail (brightness modulation) bank.
        detail_scale_m: metres per detail period.
        detail_strength: 0 (none) .. 1 (full modulation).
    """

    texture: int
    scale_m: tuple
    offset: tuple
    tint: tuple
    detail: int = 0
    detail_scale_m: float = 10.0
    detail_strength: float = 0.3


@dataclass
class Route:
    """Where the camera may travel: an ``xy`` polyline at floor level.

    Attributes:
        points: ``(K, 2) float64`` waypoints in the world ``xy`` plane.
        closed: the last point connects back to the first.
        start_s: arc length (m) at which the camera starts.
        corner_radius_m: radius used to round the polyline's corners.
        clearance_m: how far (m) the camera may stray sideways from the route.
    """

    points: np.ndarray
    closed: bool = False
    start_s: float = 0.0
    corner_radius_m: float = 0.0
    clearance_m: float = 0.3


@dataclass
class FaceTable:
    """Flat per-face arrays (F faces), float64 unless stated.

    Attributes:
        axis: ``(F,) int64`` axis of the face normal (0 x, 1 y, 2 z).
        normal_sign: ``(F,) float64`` +1 if the normal points along +axis, else -1.
        plane: ``(F,)`` face position along ``axis``.
        lo, hi: ``(F, 2)`` bounds along the tangent axes ``FACE_TANGENTS[axis]``
            (+-inf for the infinite ground plane).
        tex_origin: ``(F, 2)`` world coordinate of texture (u, v) = 0 along the tangents.
        texture, detail: ``(F,) int64`` bank indices.
        inv_scale: ``(F, 2)`` texture periods per metre along (u, v).
        tex_offset: ``(F, 2)`` texture offset in periods.
        inv_detail_scale, detail_strength: ``(F,)``.
        tint: ``(F, 3)`` RGB multiplier.
        shade: ``(F,)`` Lambert factor of the face under the scene light.
        box: ``(F,) int64`` box index (-1 for the ground plane).
    """

    axis: np.ndarray
    normal_sign: np.ndarray
    plane: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    tex_origin: np.ndarray
    texture: np.ndarray
    detail: np.ndarray
    inv_scale: np.ndarray
    tex_offset: np.ndarray
    inv_detail_scale: np.ndarray
    detail_strength: np.ndarray
    tint: np.ndarray
    shade: np.ndarray
    box: np.ndarray

    def __len__(self) -> int:
        return int(self.axis.shape[0])


@dataclass
class Scene:
    """Boxes, optional ground plane and a route in a z-up world.

    Attributes:
        kind: scene name (``room``, ``corridor``, ``street``, ``loop`` or ``custom``).
        box_lo, box_hi: ``(M, 3) float64`` min/max corners of the boxes.
        materials: six :class:`Material` per box, ordered -x, +x, -y, +y, -z, +z.
        ground: an infinite plane ``z = 0`` facing up, with ``ground_material``.
        outdoor: rays that hit nothing show sky (depth ``inf``); indoor scenes are closed.
        light_dir: ``(3,)`` unit vector towards the light.
        route: where cameras travel.
    """

    kind: str
    box_lo: np.ndarray
    box_hi: np.ndarray
    materials: list
    route: Route
    ground: bool = False
    ground_material: Material | None = None
    outdoor: bool = False
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.35, -0.5, 0.79]))
    ambient: float = 0.45

    def __post_init__(self) -> None:
        self.box_lo = np.asarray(self.box_lo, dtype=np.float64).reshape(-1, 3)
        self.box_hi = np.asarray(self.box_hi, dtype=np.float64).reshape(-1, 3)
        if self.box_lo.shape != self.box_hi.shape:
            raise SynthError(f"Scene.box_lo shape {self.box_lo.shape} != box_hi shape {self.box_hi.shape}")
        if np.any(self.box_hi <= self.box_lo):
            bad = int(np.argwhere(np.any(self.box_hi <= self.box_lo, axis=1))[0, 0])
            raise SynthError(
                f"Scene box {bad} is empty: lo={self.box_lo[bad].tolist()} hi={self.box_hi[bad].tolist()}"
            )
        if len(self.materials) != 6 * len(self.box_lo):
            raise SynthError(
                f"Scene.materials needs 6 per box ({6 * len(self.box_lo)}), got {len(self.materials)}"
            )
        if self.ground and self.ground_material is None:
            raise SynthError("Scene.ground_material is required when ground=True")
        light = np.asarray(self.light_dir, dtype=np.float64)
        self.light_dir = light / np.linalg.norm(light)

    @property
    def num_boxes(self) -> int:
        return int(self.box_lo.shape[0])

    def faces(self) -> FaceTable:
        """All faces of all boxes (+ the ground plane last), as a :class:`FaceTable`."""
        n_box = self.num_boxes
        axis = np.tile(np.array([0, 0, 1, 1, 2, 2]), n_box)
        sign = np.tile(np.array([-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]), n_box)
        box = np.repeat(np.arange(n_box), 6)
        lo3, hi3 = self.box_lo[box], self.box_hi[box]
        rows = np.arange(axis.size)
        plane = np.where(sign > 0, hi3[rows, axis], lo3[rows, axis])
        tang = FACE_TANGENTS[axis]
        lo = np.take_along_axis(lo3, tang, axis=1)
        hi = np.take_along_axis(hi3, tang, axis=1)
        origin = lo.copy()
        mats = list(self.materials)
        if self.ground:
            axis = np.append(axis, 2)
            sign = np.append(sign, 1.0)
            box = np.append(box, -1)
            plane = np.append(plane, 0.0)
            lo = np.vstack([lo, [-np.inf, -np.inf]])
            hi = np.vstack([hi, [np.inf, np.inf]])
            origin = np.vstack([origin, [0.0, 0.0]])
            mats.append(self.ground_material)
        normals = np.zeros((axis.size, 3))
        normals[np.arange(axis.size), axis] = sign
        lambert = np.clip(normals @ self.light_dir, 0.0, None)
        # Faces turned away from the light still differ by orientation, so a little of
        # the light's direction leaks in as sky light from above.
        skylight = 0.12 * normals[:, 2]
        shade = self.ambient + (1.0 - self.ambient) * lambert + skylight
        return FaceTable(
            axis=axis.astype(np.int64),
            normal_sign=sign.astype(np.float64),
            plane=plane.astype(np.float64),
            lo=lo.astype(np.float64),
            hi=hi.astype(np.float64),
            tex_origin=origin.astype(np.float64),
            texture=np.array([m.texture for m in mats], dtype=np.int64),
            detail=np.array([m.detail for m in mats], dtype=np.int64),
            inv_scale=1.0 / np.array([m.scale_m for m in mats], dtype=np.float64).reshape(-1, 2),
            tex_offset=np.array([m.offset for m in mats], dtype=np.float64).reshape(-1, 2),
            inv_detail_scale=1.0 / np.array([m.detail_scale_m for m in mats], dtype=np.float64),
            detail_strength=np.array([m.detail_strength for m in mats], dtype=np.float64),
            tint=np.array([m.tint for m in mats], dtype=np.float64).reshape(-1, 3),
            shade=np.clip(shade, 0.05, 1.2),
            box=box.astype(np.int64),
        )
