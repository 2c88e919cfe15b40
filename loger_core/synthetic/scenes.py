"""Procedural scene builders: room, corridor, street canyon and block loop.

All builders are deterministic in their ``numpy`` generator and produce a
:class:`~loger_core.synthetic.scene.Scene` in the z-up world frame (floor at z = 0)
together with the route the camera follows:

* ``room``: a closed room ``[0, X] x [0, Y] x [0, Z]`` with furniture against the walls
  (cabinets, tables, shelves, crate stacks), pictures, a door, a rug and a coffee
  table; the route is an ellipse around the centre.
* ``corridor``: a long corridor along +x centred on y = 0 with wall panels, doors,
  pilasters, cabinets, ceiling lights and a pipe; the route is a gentle S-curve.
* ``street``: an open city canyon along a staircase of straight roads (alternating
  +x and +-y legs, so it never crosses itself) with buildings, sidewalks, lamp posts,
  trees, parked cars and lane marks, under sky; sized for kilometre-scale drives.
* ``loop``: the same city elements around one rectangular block; the route is the
  closed rectangle, so the camera returns to where it started.
"""

from __future__ import annotations

import math

import numpy as np

from .config import SceneConfig, SynthError
from .scene import Material, Route, Scene
from .textures import ASPHALT

__all__ = ["build_scene"]


class _Materials:
    """Hands out materials; base textures are dealt from a shuffled deck so that
    consecutive surfaces never share one until the deck is used up."""

    def __init__(self, rng: np.random.Generator, n_textures: int, n_detail: int, repeat: bool = False) -> None:
        self.rng = rng
        self.n_textures = n_textures
        self.n_detail = n_detail
        self._deck: list[int] = []
        # With ``repeat``, a fixed palette of identical materials is handed out in turn.
        self._palette: list[Material] | None = None
        self._turn = 0
        if repeat:
            palette = [self.make((0.5, 2.0)) for _ in range(n_textures - 1)]
            self._palette = palette

    def _texture(self) -> int:
        if not self._deck:
            # Texture 0 (asphalt) is reserved for roads.
            self._deck = [int(i) + 1 for i in self.rng.permutation(self.n_textures - 1)]
        return self._deck.pop()

    def make(
        self, scale: tuple, aspect: float = 1.0, brightness: tuple = (0.8, 1.2), texture: int | None = None
    ) -> Material:
        if self._palette and texture is None:
            self._turn += 1
            return self._palette[self._turn % len(self._palette)]
        rng = self.rng
        s = float(rng.uniform(*scale))
        tint = np.exp(rng.normal(0.0, 0.15, size=3)) * rng.uniform(*brightness)
        return Material(
            texture=self._texture() if texture is None else texture,
            scale_m=(s, s * aspect * float(rng.uniform(0.8, 1.25))),
            offset=(float(rng.uniform()), float(rng.uniform())),
            tint=tuple(float(c) for c in tint),
            detail=int(rng.integers(self.n_detail)),
            detail_scale_m=s * float(rng.uniform(3.0, 9.0)),
            detail_strength=float(rng.uniform(0.15, 0.5)),
        )

    def jitter(self, m: Material) -> Material:
        """Same look with a new texture phase and slightly different tint (a sibling face)."""
        if self._palette:
            return m
        rng = self.rng
        tint = np.asarray(m.tint) * np.exp(rng.normal(0.0, 0.05, size=3))
        return Material(
            texture=m.texture,
            scale_m=m.scale_m,
            offset=(float(rng.uniform()), float(rng.uniform())),
            tint=tuple(float(c) for c in tint),
            detail=m.detail,
            detail_scale_m=m.detail_scale_m,
            detail_strength=m.detail_strength,
        )

    def box(self, side_scale: tuple, top_scale: tuple | None = None, aspect: float = 1.0) -> list:
        """Six materials (-x, +x, -y, +y, -z, +z): sides share a look, top/bottom another."""
        side = self.make(side_scale, aspect)
        top = self.make(top_scale or side_scale)
        return [self.jitter(side) for _ in range(4)] + [self.jitter(top), self.jitter(top)]


class _Builder:
    def __init__(self, mats: _Materials) -> None:
        self.mats = mats
        self.lo: list = []
        self.hi: list = []
        self.materials: list = []

    def add(self, lo, hi, materials: list) -> None:
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        self.lo.append(np.minimum(lo, hi))
        self.hi.append(np.maximum(lo, hi))
        self.materials.extend(materials)

    def add_box(self, lo, hi, side_scale=(0.3, 1.2), top_scale=None, aspect=1.0) -> None:
        self.add(lo, hi, self.mats.box(side_scale, top_scale, aspect))

    def scene(self, kind: str, route: Route, **kw) -> Scene:
        lo = np.array(self.lo).reshape(-1, 3)
        hi = np.array(self.hi).reshape(-1, 3)
        return Scene(kind=kind, box_lo=lo, box_hi=hi, materials=self.materials, route=route, **kw)


# ---------------------------------------------------------------------- room
def _wall_box(W: float, D: float, wall: int, a0: float, a1: float, d0: float, d1: float, z0: float, z1: float):
    """Box against wall ``wall`` (0: y=0, 1: y=D, 2: x=0, 3: x=W), spanning ``[a0, a1]``
    along the wall and ``[d0, d1]`` out from it."""
    if wall == 0:
        return (a0, d0, z0), (a1, d1, z1)
    if wall == 1:
        return (a0, D - d1, z0), (a1, D - d0, z1)
    if wall == 2:
        return (d0, a0, z0), (d1, a1, z1)
    return (W - d1, a0, z0), (W - d0, a1, z1)


def _furniture(b: _Builder, rng: np.random.Generator, W: float, D: float, H: float, wall: int) -> None:
    length = W if wall in (0, 1) else D
    kind = rng.choice(["cabinet", "table", "shelf", "stack"])
    width = float(rng.uniform(0.5, min(1.8, length - 0.6)))
    a0 = float(rng.uniform(0.2, max(0.21, length - width - 0.2)))
    a1 = a0 + width

    def put(x0, x1, y0, y1, z0, z1, scale=(0.15, 0.8)):
        lo, hi = _wall_box(W, D, wall, x0, x1, y0, y1, z0, z1)
        b.add_box(lo, hi, scale)

    if kind == "cabinet":
        put(a0, a1, 0.0, float(rng.uniform(0.35, 0.7)), 0.0, float(rng.uniform(0.5, min(2.1, H - 0.3))))
    elif kind == "table":
        depth, h = float(rng.uniform(0.5, 0.8)), float(rng.uniform(0.68, 0.78))
        put(a0, a1, 0.02, depth, h - 0.04, h)
        leg = 0.05
        for la in (a0 + 0.03, a1 - 0.03 - leg):
            for lb in (0.05, depth - 0.03 - leg):
                put(la, la + leg, lb, lb + leg, 0.0, h - 0.04, (0.1, 0.3))
    elif kind == "shelf":
        depth, h = float(rng.uniform(0.3, 0.45)), float(rng.uniform(1.2, min(2.2, H - 0.2)))
        put(a0, a1, 0.0, 0.02, 0.0, h)
        put(a0, a0 + 0.03, 0.0, depth, 0.0, h)
        put(a1 - 0.03, a1, 0.0, depth, 0.0, h)
        for z in np.linspace(0.05, h - 0.03, int(rng.integers(3, 6))):
            put(a0 + 0.03, a1 - 0.03, 0.02, depth, float(z), float(z) + 0.025)
    else:
        z = 0.0
        w0, w1, d = a0, a1, float(rng.uniform(0.4, 0.75))
        for _ in range(int(rng.integers(2, 4))):
            h = float(rng.uniform(0.25, 0.55))
            put(w0, w1, 0.0, d, z, z + h, (0.1, 0.5))
            z += h
            shrink = (w1 - w0) * float(rng.uniform(0.05, 0.25))
            w0, w1, d = w0 + shrink * float(rng.uniform()), w1 - shrink * float(rng.uniform()), d * 0.85
            if w1 - w0 < 0.15 or z > H - 0.6:
                break


def _room(cfg: SceneConfig, rng: np.random.Generator, mats: _Materials) -> Scene:
    W, D, H = (float(v) for v in cfg.room_size_m)
    th = 0.25
    b = _Builder(mats)
    b.add_box((-th, -th, -th), (W + th, D + th, 0.0), (0.4, 1.2))  # floor
    b.add_box((-th, -th, H), (W + th, D + th, H + th), (0.5, 1.5))  # ceiling
    for wall in range(4):
        length = W if wall in (0, 1) else D
        lo, hi = _wall_box(W, D, wall, 0.0, length, -th, 0.0, 0.0, H)
        b.add_box(lo, hi, (0.4, 1.6))
        top = float(rng.uniform(0.08, 1.0))  # skirting board or wainscot
        lo, hi = _wall_box(W, D, wall, 0.0, length, 0.0, 0.02, 0.0, top)
        b.add_box(lo, hi, (0.2, 0.8))
        for _ in range(int(rng.integers(1, 4))):  # pictures and boards
            w = float(rng.uniform(0.3, min(1.4, length / 3)))
            a0 = float(rng.uniform(0.3, length - w - 0.3))
            zlo, zhi = max(top, 0.9) + 0.05, H - 0.45
            if zhi - zlo < 0.3:
                continue
            z0 = float(rng.uniform(zlo, zhi - 0.25))
            h = float(rng.uniform(0.25, max(0.26, min(1.0, zhi - z0))))
            lo, hi = _wall_box(W, D, wall, a0, a0 + w, 0.0, 0.025, z0, z0 + h)
            b.add_box(lo, hi, (0.1, 0.6))
    door_wall = int(rng.integers(4))
    length = W if door_wall in (0, 1) else D
    a0 = float(rng.uniform(0.3, length - 1.3))
    lo, hi = _wall_box(W, D, door_wall, a0, a0 + 0.9, 0.0, 0.04, 0.0, min(2.05, H - 0.1))
    b.add_box(lo, hi, (0.3, 1.0), aspect=2.0)
    for _ in range(cfg.furniture):
        _furniture(b, rng, W, D, H, int(rng.integers(4)))
    # The route keeps ~0.75 m from anything standing against the walls (<= 0.8 m deep).
    a = max(0.3, W / 2 - 1.55)
    e = max(0.3, D / 2 - 1.55)
    cx, cy = W / 2, D / 2
    rug = (a * 0.9, e * 0.9)
    b.add_box((cx - rug[0], cy - rug[1], 0.0), (cx + rug[0], cy + rug[1], 0.01), (0.2, 0.8))
    ha, he = a / math.sqrt(2) - 0.7, e / math.sqrt(2) - 0.7
    if min(ha, he) >= 0.2:
        h = 0.45
        b.add_box((cx - ha, cy - he, h - 0.04), (cx + ha, cy + he, h), (0.2, 0.6))
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = cx + sx * (ha - 0.06), cy + sy * (he - 0.06)
                b.add_box((x - 0.03, y - 0.03, 0.0), (x + 0.03, y + 0.03, h - 0.04), (0.1, 0.3))
    lamp = (float(rng.uniform(0.2, 0.35)), float(rng.uniform(0.2, 0.35)))
    b.add_box((cx - lamp[0], cy - lamp[1], H - 0.12), (cx + lamp[0], cy + lamp[1], H), (0.1, 0.4))
    phase = float(rng.uniform(0, 2 * math.pi))
    ang = phase + np.linspace(0.0, 2 * math.pi, 361)[:-1]
    pts = np.stack([cx + a * np.cos(ang), cy + e * np.sin(ang)], axis=1)
    route = Route(points=pts, closed=True, start_s=0.0, corner_radius_m=0.0, clearance_m=0.3)
    return b.scene("room", route, light_dir=np.array([0.3, 0.45, 0.84]), ambient=0.5)


# ------------------------------------------------------------------ corridor
def _corridor(cfg: SceneConfig, rng: np.random.Generator, mats: _Materials, route_len: float) -> Scene:
    w, h = float(cfg.corridor_width_m), float(cfg.corridor_height_m)
    start, end_margin = 1.5, 3.5
    L = (cfg.length_m if cfg.length_m is not None else route_len) + start + end_margin
    hw, th = w / 2, 0.25
    b = _Builder(mats)

    def panels(lo_len: float, hi_len: float):
        x = 0.0
        while x < L:
            x1 = min(L, x + float(rng.uniform(lo_len, hi_len)))
            yield x, x1
            x = x1

    for x0, x1 in panels(3.0, 8.0):
        b.add_box((x0, -hw - th, -th), (x1, hw + th, 0.0), (0.3, 1.0))
    for x0, x1 in panels(2.0, 6.0):
        b.add_box((x0, -hw - th, h), (x1, hw + th, h + th), (0.4, 1.2))
    for side in (-1, 1):
        for x0, x1 in panels(2.0, 6.0):
            b.add_box((x0, side * hw, 0.0), (x1, side * (hw + th), h), (0.4, 1.6))
    b.add_box((-th, -hw - th, -th), (0.0, hw + th, h + th), (0.3, 1.0))
    b.add_box((L, -hw - th, -th), (L + th, hw + th, h + th), (0.3, 1.0))
    protrude = 0.32
    x = float(rng.uniform(1.0, 4.0))
    while x < L - 1.5:  # doors, alternating sides
        side = 1 if rng.uniform() < 0.5 else -1
        dw = float(rng.uniform(0.85, 1.3))
        b.add_box((x, side * hw, 0.0), (x + dw, side * (hw - 0.04), min(2.1, h - 0.2)), (0.3, 1.0), aspect=2.0)
        b.add_box((x, side * hw, min(2.15, h - 0.15)), (x + dw, side * (hw - 0.03), min(2.35, h - 0.02)), (0.1, 0.5))
        x += dw + float(rng.uniform(2.5, 9.0))
    x = float(rng.uniform(3.0, 8.0))
    while x < L - 1.0:  # pilasters in pairs
        pw = float(rng.uniform(0.3, 0.5))
        for side in (-1, 1):
            b.add_box((x, side * hw, 0.0), (x + pw, side * (hw - protrude), h), (0.3, 1.0))
        x += float(rng.uniform(6.0, 12.0))
    x = float(rng.uniform(2.0, 6.0))
    while x < L - 1.0:  # cabinets and benches
        side = 1 if rng.uniform() < 0.5 else -1
        cw = float(rng.uniform(0.6, 1.8))
        ch = float(rng.uniform(0.45, 1.9))
        b.add_box((x, side * hw, 0.0), (x + cw, side * (hw - protrude + 0.02), ch), (0.2, 0.8))
        x += cw + float(rng.uniform(3.0, 10.0))
    x = float(rng.uniform(0.5, 2.5))
    while x < L - 0.6:  # ceiling lights
        b.add_box((x, -0.15, h - 0.06), (x + 0.6, 0.15, h), (0.1, 0.3))
        x += float(rng.uniform(2.5, 4.0))
    pipe_side = 1 if rng.uniform() < 0.5 else -1
    b.add_box((0.0, pipe_side * (hw - 0.05), h - 0.3), (L, pipe_side * (hw - 0.2), h - 0.18), (0.2, 0.6))
    amp = min(0.15 * w, 0.3)
    wavelength = float(rng.uniform(8.0, 15.0))
    phase = float(rng.uniform(0, 2 * math.pi))
    xs = np.arange(start, L - end_margin + 0.125, 0.25)
    pts = np.stack([xs, amp * np.sin(2 * math.pi * xs / wavelength + phase)], axis=1)
    clearance = max(0.05, hw - protrude - amp - 0.3)
    route = Route(points=pts, closed=False, start_s=0.0, corner_radius_m=0.0, clearance_m=clearance)
    return b.scene("corridor", route, light_dir=np.array([0.2, 0.35, 0.91]), ambient=0.5)


# --------------------------------------------------------------------- city
def _road_rects(pts: np.ndarray, closed: bool, half: float, extend: float) -> np.ndarray:
    """Axis-aligned rectangles ``(S, 4)`` xmin, xmax, ymin, ymax around each leg."""
    legs = list(zip(pts[:-1], pts[1:]))
    if closed:
        legs.append((pts[-1], pts[0]))
    out = []
    for p, q in legs:
        lo, hi = np.minimum(p, q), np.maximum(p, q)
        out.append((lo[0] - extend if p[0] != q[0] else lo[0] - half, hi[0] + extend if p[0] != q[0] else hi[0] + half,
                    lo[1] - extend if p[1] != q[1] else lo[1] - half, hi[1] + extend if p[1] != q[1] else hi[1] + half))
    return np.array(out, dtype=np.float64)


def _hits(lo: np.ndarray, hi: np.ndarray, rects: np.ndarray, skip: int | None = None) -> bool:
    ok = (lo[0] < rects[:, 1]) & (hi[0] > rects[:, 0]) & (lo[1] < rects[:, 3]) & (hi[1] > rects[:, 2])
    if skip is not None:
        ok[skip] = False
    return bool(ok.any())


def _city(
    cfg: SceneConfig, rng: np.random.Generator, mats: _Materials, pts: np.ndarray, closed: bool,
    road_half: float, sidewalk: float, scale: float,
) -> tuple:
    """Buildings, sidewalks, posts, trees, parked cars and lane marks along the legs of
    ``pts``; returns (builder, ground material, lateral clearance of the route)."""
    b = _Builder(mats)
    corridor = road_half + sidewalk
    roads = _road_rects(pts, closed, road_half, road_half)
    canyons = _road_rects(pts, closed, corridor, corridor)
    legs = list(zip(pts[:-1], pts[1:]))
    if closed:
        legs.append((pts[-1], pts[0]))
    hmin, hmax = cfg.building_height_m
    lamp_mat = mats.make((0.2, 0.6))
    mark_mat = mats.make((0.5, 1.0), brightness=(2.6, 3.0), texture=ASPHALT)

    def world(p, d, n, s, lat):
        return p + d * s + n * lat

    for leg_i, (p, q) in enumerate(legs):
        d = (q - p) / np.linalg.norm(q - p)
        n = np.array([-d[1], d[0]])  # left normal
        length = float(np.linalg.norm(q - p))
        for side in (-1.0, 1.0):
            # Buildings: a row of boxes set back behind the sidewalk.
            s = -corridor
            while s < length + corridor:
                bw = float(rng.uniform(8.0, 28.0)) * scale
                setback = corridor + float(rng.uniform(0.0, 1.5)) * scale
                depth = float(rng.uniform(8.0, 20.0)) * scale
                top = hmax if rng.uniform() < 0.8 else (hmin + hmax) / 2
                height = float(rng.uniform(hmin, top))
                c0 = world(p, d, n, s, side * setback)
                c1 = world(p, d, n, s + bw, side * (setback + depth))
                lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
                if not _hits(lo, hi, canyons):
                    b.add_box((lo[0], lo[1], 0.0), (hi[0], hi[1], height), (2.0, 7.0), (3.0, 8.0))
                    if rng.uniform() < 0.5:  # ground-floor shop front / awning band
                        c2 = world(p, d, n, s + 0.5 * scale, side * (setback - 0.35))
                        c3 = world(p, d, n, s + bw - 0.5 * scale, side * setback)
                        lo2, hi2 = np.minimum(c2, c3), np.maximum(c2, c3)
                        z0 = float(rng.uniform(2.6, 3.4))
                        if not _hits(lo2, hi2, canyons, skip=leg_i):
                            b.add_box((lo2[0], lo2[1], z0), (hi2[0], hi2[1], z0 + 0.5), (0.5, 2.0))
                s += bw + (float(rng.uniform(2.0, 8.0)) * scale if rng.uniform() < 0.25 else 0.0)
            # Sidewalk slabs (curb height), cut where another road crosses.
            s = -corridor
            while s < length + corridor:
                sl = float(rng.uniform(4.0, 12.0)) * scale
                c0 = world(p, d, n, s, side * road_half)
                c1 = world(p, d, n, min(s + sl, length + corridor), side * corridor)
                lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
                if not _hits(lo, hi, roads):
                    b.add_box((lo[0], lo[1], 0.0), (hi[0], hi[1], 0.15), (0.5, 2.5))
                s += sl
            # Lamp posts and trees on the sidewalk.
            s = float(rng.uniform(2.0, 15.0)) * scale
            while s < length:
                c = world(p, d, n, s, side * (road_half + 0.6 * scale))
                if rng.uniform() < 0.6:
                    lo, hi = c - 0.09, c + 0.09
                    ph = float(rng.uniform(4.0, 6.5)) * max(scale, 0.5)
                    if not _hits(lo, hi, roads):
                        b.add(np.append(lo, 0.0), np.append(hi, ph), [mats.jitter(lamp_mat) for _ in range(6)])
                        hc = world(p, d, n, s, side * (road_half + 0.3 * scale))
                        head = 0.25 * scale
                        b.add_box(np.append(hc - head, ph - 0.15), np.append(hc + head, ph + 0.05), (0.2, 0.5))
                else:
                    tc = world(p, d, n, s, side * (road_half + sidewalk * 0.5))
                    lo, hi = tc - 0.15 * scale, tc + 0.15 * scale
                    r = float(rng.uniform(1.0, 2.0)) * scale
                    if not _hits(tc - r, tc + r, roads):
                        z0 = float(rng.uniform(2.2, 3.0)) * max(scale, 0.5)
                        b.add_box(np.append(lo, 0.0), np.append(hi, z0 + 0.3), (0.3, 1.0))
                        crown = z0 + r * float(rng.uniform(1.2, 2.0))
                        b.add_box(np.append(tc - r, z0), np.append(tc + r, crown), (0.5, 2.0))
                s += float(rng.uniform(15.0, 35.0)) * scale
            # Parked cars along the curb, away from corners so turns stay clear.
            s = float(rng.uniform(15.0, 30.0)) * scale
            while s < length - 20.0 * scale and scale > 0.6:
                if rng.uniform() < 0.5:
                    c0 = world(p, d, n, s, side * (road_half - 0.3))
                    c1 = world(p, d, n, s + 4.3, side * (road_half - 2.1))
                    lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
                    if not _hits(lo, hi, roads, skip=leg_i):
                        b.add_box(np.append(lo, 0.2), np.append(hi, 1.0), (0.5, 2.0))
                        k0 = world(p, d, n, s + 1.2, side * (road_half - 0.45))
                        k1 = world(p, d, n, s + 3.3, side * (road_half - 1.95))
                        klo, khi = np.minimum(k0, k1), np.maximum(k0, k1)
                        b.add_box(np.append(klo, 1.0), np.append(khi, 1.5), (0.3, 1.0))
                s += float(rng.uniform(5.0, 14.0))
        # Dashed centre line.
        s = float(rng.uniform(0.0, 6.0))
        while s < length - 3.0:
            c0 = world(p, d, n, s, -0.08)
            c1 = world(p, d, n, s + 3.0, 0.08)
            lo, hi = np.minimum(c0, c1), np.maximum(c0, c1)
            b.add(np.append(lo, 0.0), np.append(hi, 0.01), [mats.jitter(mark_mat) for _ in range(6)])
            s += 9.0
    ground = mats.make((3.0, 6.0), brightness=(0.9, 1.2), texture=ASPHALT)
    route_clear = max(0.1, road_half - 2.1 - 0.6)
    return b, ground, route_clear


def _street(cfg: SceneConfig, rng: np.random.Generator, mats: _Materials, route_len: float) -> Scene:
    total = (cfg.length_m if cfg.length_m is not None else route_len)
    lead_in, lead_out = 30.0, 80.0
    need = total + lead_in + lead_out
    pts = [np.array([-lead_in, 0.0])]
    heading = np.array([1.0, 0.0])
    acc = 0.0
    while acc < need:
        seg = float(rng.uniform(120.0, 320.0)) if heading[0] else float(rng.uniform(60.0, 180.0))
        if acc == 0.0:
            seg = max(seg, lead_in + 60.0)
        pts.append(pts[-1] + heading * seg)
        acc += seg
        heading = np.array([0.0, 1.0 if rng.uniform() < 0.5 else -1.0]) if heading[0] else np.array([1.0, 0.0])
    pts = np.array(pts)
    road_half = cfg.road_width_m / 2
    b, ground, clear = _city(cfg, rng, mats, pts, False, road_half, cfg.sidewalk_width_m, 1.0)
    route = Route(
        points=pts, closed=False, start_s=lead_in, corner_radius_m=max(3.0, 2 * road_half - 2.0), clearance_m=clear
    )
    return b.scene("street", route, ground=True, ground_material=ground, outdoor=True,
                   light_dir=np.array([0.45, -0.55, 0.7]), ambient=0.45)


def _loop(cfg: SceneConfig, rng: np.random.Generator, mats: _Materials, route_len: float) -> Scene:
    perimeter = cfg.length_m if cfg.length_m is not None else route_len / cfg.loop_laps
    perimeter = max(perimeter, 24.0)
    sx, sy = 0.3 * perimeter, 0.2 * perimeter
    road_half = min(cfg.road_width_m / 2, max(1.5, perimeter / 50))
    sidewalk = min(cfg.sidewalk_width_m, max(0.8, perimeter / 120))
    scale = float(np.clip(perimeter / 400.0, 0.2, 1.0))
    pts = np.array([[0.0, 0.0], [sx, 0.0], [sx, sy], [0.0, sy]])
    b, ground, clear = _city(cfg, rng, mats, pts, True, road_half, sidewalk, scale)
    inset = road_half + sidewalk + 1.0 * scale
    if sx - 2 * inset > 0.5 and sy - 2 * inset > 0.5:  # the block's core, so it is not hollow
        b.add_box((inset + 2.0 * scale, inset + 2.0 * scale, 0.0), (sx - inset - 2.0 * scale, sy - inset - 2.0 * scale,
                  float(rng.uniform(*cfg.building_height_m)) * 0.7), (2.0, 6.0))
    # Start mid-way along the first leg, driving counter-clockwise around the block.
    # Small loops have no parked cars; their turns may use the whole road width.
    big = scale > 0.6
    route = Route(
        points=pts,
        closed=True,
        start_s=sx / 2,
        corner_radius_m=max(1.0, 2 * road_half - 2.0) if big else road_half,
        clearance_m=clear if big else max(0.1, road_half - 1.0),
    )
    return b.scene("loop", route, ground=True, ground_material=ground, outdoor=True,
                   light_dir=np.array([0.45, -0.55, 0.7]), ambient=0.45)


def build_scene(kind: str, cfg: SceneConfig, rng: np.random.Generator, n_textures: int, n_detail: int,
                route_len: float) -> Scene:
    """Build scene ``kind`` whose route is at least ``route_len`` metres (camera travel).

    Args:
        kind: ``room``, ``corridor``, ``street`` or ``loop``.
        cfg: scene tuning.
        rng: source of all randomness (layout and materials).
        n_textures, n_detail: sizes of the texture banks the materials index.
        route_len: metres the camera will travel (sizes corridors, streets and loops).
    """
    mats = _Materials(rng, n_textures, n_detail, repeat=cfg.repeat_materials)
    if kind == "room":
        return _room(cfg, rng, mats)
    if kind == "corridor":
        return _corridor(cfg, rng, mats, route_len)
    if kind == "street":
        return _street(cfg, rng, mats, route_len)
    if kind == "loop":
        return _loop(cfg, rng, mats, route_len)
    raise SynthError(f"scene kind must be room, corridor, street or loop, got {kind!r}")
