"""Vectorised ray caster for axis-aligned box scenes (torch, CPU or CUDA). One job in about 560
lines: culling, intersection and shading share their tile layout and are read together.

Per frame:

1. *Face culling* (numpy, float64): keep faces that face the camera, lie within
   ``far_m`` and whose near-plane-clipped projection overlaps the image; their
   projected bounding rectangles are binned into screen tiles.
2. *Intersection* (torch): for each tile, every ray against every face binned to it,
   analytic ray/plane hit ``t = (plane - o_axis) / d_axis`` and a bounds test on the
   two tangent coordinates; the nearest hit wins (ties go to the lower face index,
   so the result does not depend on the tiling).
3. *Shading* (torch): texture lookup with a per-pixel mip level (footprint from
   distance and incidence), brightness modulation by a large-scale detail field,
   per-face tint and a Lambert factor from a fixed light, sky gradient for misses.

Rays have camera-frame ``z == 1``, so the hit parameter ``t`` is the z-depth itself.
All geometry is shifted to the camera centre in float64 before the float32 cast, so
depth keeps float32 precision even kilometres from the world origin.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence, Union

import numpy as np
import torch

from .camera import camera_rays
from .config import SynthError
from .scene import FACE_TANGENTS, Scene
from .textures import TextureBank

__all__ = ["Renderer", "RenderOutput", "resolve_device"]

_NEAR = 1e-3
# Largest float32 below 1: keeps a wrapped texture coordinate's texel index in range.
_FRAC_MAX = 0.99999994
# Elements per (rays x faces) intersection block; bounds temporary memory.
_BLOCK_ELEMS = {"cpu": 1 << 21, "cuda": 1 << 25}

SKY_ZENITH = (0.30, 0.50, 0.85)
SKY_HORIZON = (0.82, 0.88, 0.95)


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``None`` -> CUDA when available else CPU; strings are checked."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SynthError(f"device must be a torch device string, got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SynthError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise SynthError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


@dataclass
class RenderOutput:
    """One rendered view (tensors on the renderer's device).

    Attributes:
        rgb: ``(H, W, 3) uint8``.
        depth: ``(H, W) float32`` z-depth in metres, ``inf`` where nothing is hit.
        face: ``(H, W) int64`` index into ``scene.faces()``, -1 where nothing is hit.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    face: torch.Tensor


class Renderer:
    """Renders a :class:`Scene` through a fixed pinhole camera from arbitrary poses.

    Args:
        scene: geometry and materials.
        textures: RGB texture bank referenced by the materials.
        detail: single-channel detail bank referenced by the materials.
        K: ``(3, 3)`` intrinsics (OpenCV).
        width, height: image size in pixels.
        device: ``'cpu'``, ``'cuda'`` or ``None`` (CUDA when available).
        tile: (width, height) of the screen tiles used for culling; ``None`` picks
            64x48 on CPU (less wasted work) and the whole image on CUDA (fewer launches).
        far_m: faces whose nearest point is farther are not drawn (``inf``: all).
        threads: torch CPU threads while rendering (restored afterwards); ``None``
            keeps torch's setting. The default 1 is usually fastest: the per-op
            tensors are small, and on a busy machine OpenMP workers waiting for a
            core make multi-threaded ops many times slower.
    """

    def __init__(
        self,
        scene: Scene,
        textures: TextureBank,
        detail: TextureBank,
        K: np.ndarray,
        width: int,
        height: int,
        device: Union[str, torch.device, None] = None,
        tile: Optional[tuple] = None,
        far_m: float = math.inf,
        threads: Optional[int] = 1,
    ) -> None:
        self.device = resolve_device(device)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise SynthError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.scene = scene
        self.width, self.height = int(width), int(height)
        self.K = np.asarray(K, dtype=np.float64)
        if self.K.shape != (3, 3):
            raise SynthError(f"K must have shape (3, 3), got {self.K.shape}")
        if tile is None:
            tile = (64, 48) if self.device.type == "cpu" else (self.width, self.height)
        if len(tile) != 2 or min(tile) < 1:
            raise SynthError(f"tile must be (width, height) >= 1, got {tile!r}")
        self.tile = (min(int(tile[0]), self.width), min(int(tile[1]), self.height))
        self.far_m = float(far_m)
        self.faces = scene.faces()
        self._max_faces_block = max(1, _BLOCK_ELEMS[self.device.type] // (self.tile[0] * self.tile[1]))
        self._setup_textures(textures, detail)
        self._setup_pixels()
        self._setup_faces()

    # ----------------------------------------------------------------- setup
    def _setup_textures(self, textures: TextureBank, detail: TextureBank) -> None:
        dev = self.device
        if textures.texels.shape[1] != 3 or detail.texels.shape[1] != 1:
            raise SynthError("textures must have 3 channels and detail 1 channel")
        if int(self.faces.texture.max(initial=0)) >= textures.count:
            raise SynthError(f"a material references texture {int(self.faces.texture.max())} >= {textures.count}")
        if int(self.faces.detail.max(initial=0)) >= detail.count:
            raise SynthError(f"a material references detail {int(self.faces.detail.max())} >= {detail.count}")
        self._tex = textures
        self._det = detail
        self._tex_texels = torch.from_numpy(textures.texels).to(dev)
        self._det_texels = torch.from_numpy(detail.texels[:, 0].copy()).to(dev)
        sizes = [textures.size >> lvl for lvl in range(textures.levels)]
        self._tex_sizes = torch.tensor(sizes, dtype=torch.int32, device=dev)
        self._tex_offsets = torch.from_numpy(textures.level_offsets.astype(np.int32)).to(dev)
        dsizes = [detail.size >> lvl for lvl in range(detail.levels)]
        self._det_sizes = torch.tensor(dsizes, dtype=torch.int32, device=dev)
        self._det_offsets = torch.from_numpy(detail.level_offsets.astype(np.int32)).to(dev)

    def _setup_pixels(self) -> None:
        """Pixels are kept tile-major so every tile is one contiguous slice."""
        W, H = self.width, self.height
        tw, th = self.tile
        rays = camera_rays(self.K, W, H)  # (H, W, 3), z == 1
        order, spans, rects = [], [], []
        raster = np.arange(H * W).reshape(H, W)
        start = 0
        for v0 in range(0, H, th):
            for u0 in range(0, W, tw):
                block = raster[v0 : v0 + th, u0 : u0 + tw].reshape(-1)
                order.append(block)
                spans.append((start, start + block.size))
                rects.append((u0, min(u0 + tw, W), v0, min(v0 + th, H)))
                start += block.size
        order = np.concatenate(order)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(order.size)
        self._spans = spans
        self._tile_rects = np.array(rects, dtype=np.int64)  # (T, 4) u0, u1, v0, v1
        rays_tm = rays.reshape(-1, 3)[order]
        self._rays_cam = torch.from_numpy(rays_tm.astype(np.float32)).to(self.device)
        norm = np.linalg.norm(rays_tm, axis=1)
        self._ray_norm = torch.from_numpy(norm.astype(np.float32)).to(self.device)
        self._inverse = torch.from_numpy(inverse).to(self.device)
        self._focal = float(math.sqrt(abs(self.K[0, 0] * self.K[1, 1])))
        self._foot_k = torch.from_numpy((norm**1.5 / self._focal).astype(np.float32)).to(self.device)

    def _setup_faces(self) -> None:
        f = self.faces
        n = len(f)
        tang = FACE_TANGENTS[f.axis]
                # Last row of each table stands for "no hit".
        axes = np.column_stack([f.axis, tang])
        self._face_axes = np.vstack([axes, np.zeros((1, 3), np.int64)])
        base = np.column_stack([f.texture * self._tex.texels_per_texture, f.detail * self._det.texels_per_texture])
        self._face_base = np.vstack([base, np.zeros((1, 2), np.int64)]).astype(np.int32)
        tex_lvl_scale = np.max(f.inv_scale, axis=1) * self._tex.size
        det_lvl_scale = f.inv_detail_scale * self._det.size
        static = np.column_stack(
            [
                f.inv_scale,
                f.inv_detail_scale,
                f.detail_strength,
                f.tint * f.shade[:, None],
                tex_lvl_scale,
                det_lvl_scale,
            ]
        )
        self._face_static = np.vstack([static, np.zeros((1, static.shape[1]))])
        corners = np.zeros((n, 4, 3))
        rows = np.arange(n)
        for k, (i, j) in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
            corners[rows, k, f.axis] = f.plane
            corners[rows, k, tang[:, 0]] = np.where(i, f.hi[:, 0], f.lo[:, 0])
            corners[rows, k, tang[:, 1]] = np.where(j, f.hi[:, 1], f.lo[:, 1])
        self._corners = corners
        self._infinite = ~np.all(np.isfinite(np.concatenate([f.lo, f.hi], axis=1)), axis=1)
        sky = torch.tensor([SKY_HORIZON, SKY_ZENITH], dtype=torch.float32, device=self.device)
        self._sky = sky

    # --------------------------------------------------------------- culling
    def _visible_faces(self, R: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of drawable faces and their pixel rectangles ``(F, 4)`` u0, u1, v0, v1."""
        f = self.faces
        rel = o[f.axis] - f.plane
        cand = np.flatnonzero(f.normal_sign * rel > 0.0)
        if math.isfinite(self.far_m) and cand.size:
            tang = FACE_TANGENTS[f.axis[cand]]
            o_t = o[tang]
            closest = np.clip(o_t, f.lo[cand], f.hi[cand])
            dist2 = rel[cand] ** 2 + np.sum((o_t - closest) ** 2, axis=1)
            cand = cand[dist2 <= self.far_m**2]
        W, H = self.width, self.height
        rect = np.zeros((cand.size, 4), dtype=np.int64)
        rect[:] = (0, W, 0, H)
        finite = ~self._infinite[cand]
        fin = cand[finite]
        if fin.size:
            pc = (self._corners[fin] - o) @ R  # camera coordinates (F, 4, 3)
            z = pc[..., 2]
            nxt = np.roll(pc, -1, axis=1)
            zn = nxt[..., 2]
            crosses = (z - _NEAR) * (zn - _NEAR) < 0.0
            with np.errstate(divide="ignore", invalid="ignore"):
                a = np.where(crosses, (_NEAR - z) / (zn - z), 0.0)
            cross_pts = pc + a[..., None] * (nxt - pc)
            cross_pts[..., 2] = np.where(crosses, _NEAR, cross_pts[..., 2])
            pts = np.concatenate([pc, cross_pts], axis=1)  # (F, 8, 3)
            ok = np.concatenate([z >= _NEAR, crosses], axis=1)
            zz = np.where(ok, pts[..., 2], 1.0)
            K = self.K
            u = (K[0, 0] * pts[..., 0] + K[0, 1] * pts[..., 1]) / zz + K[0, 2]
            v = K[1, 1] * pts[..., 1] / zz + K[1, 2]
            big = 1e9
            u = np.clip(u, -big, big)
            v = np.clip(v, -big, big)
            umin = np.where(ok, u, big).min(axis=1)
            umax = np.where(ok, u, -big).max(axis=1)
            vmin = np.where(ok, v, big).min(axis=1)
            vmax = np.where(ok, v, -big).max(axis=1)
            # One pixel of slack: the rectangle must contain every pixel centre the
            # face covers, and float rounding must not drop a boundary pixel.
            r = np.stack(
                [
                    np.floor(umin) - 1,
                    np.ceil(umax) + 2,
                    np.floor(vmin) - 1,
                    np.ceil(vmax) + 2,
                ],
                axis=1,
            )
            r[:, 0:2] = np.clip(r[:, 0:2], 0, W)
            r[:, 2:4] = np.clip(r[:, 2:4], 0, H)
            r = np.where(ok.any(axis=1)[:, None], r, 0)
            rect[finite] = r.astype(np.int64)
        keep = (rect[:, 1] > rect[:, 0]) & (rect[:, 3] > rect[:, 2])
        return cand[keep], rect[keep]

    # ----------------------------------------------------------- intersection
    def _intersect_tile(
        self, rays: torch.Tensor, inv: torch.Tensor, params: torch.Tensor, axes: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest hit of ``rays (n, 3)`` (``inv = 1 / rays``) with faces ``params (F, 5)``
        = (plane, mid_u, half_u, mid_v, half_v) relative to the camera; returns (t, id)."""
        best_t = best_id = None
        step = self._max_faces_block
        for s in range(0, params.shape[0], step):
            p = params[s : s + step]
            ax = axes[s : s + step]
            t = p[:, 0] * inv.index_select(1, ax[:, 0])
            q1 = torch.addcmul(-p[:, 1], t, rays.index_select(1, ax[:, 1])).abs_()
            q2 = torch.addcmul(-p[:, 3], t, rays.index_select(1, ax[:, 2])).abs_()
            ok = (q1 <= p[:, 2]).logical_and_(q2 <= p[:, 4]).logical_and_(t > _NEAR)
            t.masked_fill_(ok.logical_not_(), math.inf)
            tmin, arg = t.min(dim=1)
            if best_t is None:
                best_t, best_id = tmin, ids[s : s + step][arg]
            else:
                better = tmin < best_t
                best_t = torch.where(better, tmin, best_t)
                best_id = torch.where(better, ids[s : s + step][arg], best_id)
        best_id = torch.where(torch.isinf(best_t), -1, best_id)
        return best_t, best_id

    # ------------------------------------------------------------------ main
    def render(self, T_world_cam: np.ndarray) -> RenderOutput:
        """Render the view from camera-to-world pose ``T_world_cam (4, 4)`` (OpenCV axes)."""
        T = np.asarray(T_world_cam, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise SynthError(f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
        with self._rendering():
            return self._render(T)

    @contextmanager
    def _rendering(self):
        """No autograd, and on the CPU the renderer's thread count (restored afterwards)."""
        previous = torch.get_num_threads()
        if self.device.type == "cpu" and self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.no_grad():
                yield
        finally:
            torch.set_num_threads(previous)

    def _render(self, T: np.ndarray) -> RenderOutput:
        R, o = T[:3, :3], T[:3, 3]
        dev = self.device
        f = self.faces
        vis, rect = self._visible_faces(R, o)
        rays = self._rays_cam @ torch.from_numpy(R.T.astype(np.float32)).to(dev)  # world dirs (N, 3)
        inv = 1.0 / rays
        n_pix = rays.shape[0]
        depth = torch.full((n_pix,), math.inf, device=dev)
        local = torch.full((n_pix,), -1, dtype=torch.int64, device=dev)

        if vis.size:
            tang = FACE_TANGENTS[f.axis[vis]]
            params_t = torch.from_numpy(self._face_params(vis, o)).to(dev)
            axes_t = torch.from_numpy(np.column_stack([f.axis[vis], tang])).to(dev)
            tr = self._tile_rects
            overlap = (
                (tr[:, None, 0] < rect[None, :, 1])
                & (tr[:, None, 1] > rect[None, :, 0])
                & (tr[:, None, 2] < rect[None, :, 3])
                & (tr[:, None, 3] > rect[None, :, 2])
            )
            all_local = torch.arange(vis.size, device=dev)
            for tile, (a, b) in enumerate(self._spans):
                sel = np.flatnonzero(overlap[tile])
                if sel.size == 0:
                    continue
                if sel.size == vis.size:
                    p, ax, ids = params_t, axes_t, all_local
                else:
                    sel_t = torch.from_numpy(sel).to(dev)
                    p, ax, ids = params_t[sel_t], axes_t[sel_t], sel_t
                t, i = self._intersect_tile(rays[a:b], inv[a:b], p, ax, ids)
                depth[a:b] = t
                local[a:b] = i

        rgb = self._shade(rays, depth, local, vis, o)
        raster = self._inverse  # tile-major -> raster order
        H, W = self.height, self.width
        face = torch.from_numpy(np.append(vis, -1)).to(dev)[local]  # local -1 picks the trailing -1
        return RenderOutput(
            rgb=rgb[raster].reshape(H, W, 3),
            depth=depth[raster].reshape(H, W),
            face=face[raster].reshape(H, W),
        )

    # ------------------------------------------------------------------ batch
    def render_many(self, poses: Sequence[np.ndarray], batch: int = 16) -> Iterator[RenderOutput]:
        """The views of ``poses`` in order: batched (:meth:`render_batch`, ``batch`` views per call)
        on CUDA, one by one with screen tiles on the CPU, where that is faster. Same images."""
        if self.device.type == "cpu" or batch <= 1:
            for pose in poses:
                yield self.render(pose)
            return
        poses = list(poses)
        for s in range(0, len(poses), batch):
            yield from self.render_batch(poses[s : s + batch])

    def render_batch(self, poses: Sequence[np.ndarray]) -> list[RenderOutput]:
        """Render several views at once: the same images as :meth:`render` one by one, with one set
        of kernels for the whole batch instead of one per view (on a GPU the per-view work is too
        small to fill the device: launches, not arithmetic, set the speed). Every view is
        intersected with its own visible faces, padded to the batch's largest set; no screen
        tiles. Memory: about ``len(poses) * pixels`` x (13 floats) plus the face blocks."""
        Ts = [np.asarray(T, dtype=np.float64) for T in poses]
        for T in Ts:
            if T.shape != (4, 4) or not np.all(np.isfinite(T)):
                raise SynthError(f"T_world_cam must be a finite (4, 4) matrix, got shape {T.shape}")
        if not Ts:
            return []
        with self._rendering():
            return self._render_batch(Ts)

    def _render_batch(self, Ts: list[np.ndarray]) -> list[RenderOutput]:
        dev, f = self.device, self.faces
        B, N = len(Ts), self._rays_cam.shape[0]
        views = []
        for T in Ts:
            R, o = T[:3, :3], T[:3, 3]
            vis, _ = self._visible_faces(R, o)
            views.append((R, o, vis, self._face_params(vis, o)))
        F_max = max(1, max(v[2].size for v in views))
        params = np.zeros((B, F_max, 5), np.float32)
        params[:, :, 2] = params[:, :, 4] = -1.0  # padding faces: a negative half-width is never hit
        axes = np.zeros((B, F_max, 3), np.int64)
        for b, (_, _, vis, p) in enumerate(views):
            params[b, : vis.size] = p
            axes[b, : vis.size, 0] = f.axis[vis]
            axes[b, : vis.size, 1:] = FACE_TANGENTS[f.axis[vis]]
        R_t = torch.from_numpy(np.stack([v[0].T for v in views]).astype(np.float32)).to(dev)
        rays = torch.matmul(self._rays_cam, R_t)  # (B, N, 3) world directions, as render()'s
        inv = 1.0 / rays
        depth, local = self._intersect_batch(rays, inv, torch.from_numpy(params).to(dev),
                                             torch.from_numpy(axes).to(dev))
        rgb = self._shade_batch(rays, depth, local, [(v[2], v[1]) for v in views], F_max)
        raster = self._inverse
        H, W = self.height, self.width
        out = []
        for b, (_, _, vis, _) in enumerate(views):
            face = torch.from_numpy(np.append(vis, -1)).to(dev)[local[b]]
            out.append(RenderOutput(rgb=rgb[b][raster].reshape(H, W, 3), depth=depth[b][raster].reshape(H, W),
                                    face=face[raster].reshape(H, W)))
        return out

    def _face_params(self, vis: np.ndarray, o: np.ndarray) -> np.ndarray:
        """``(F, 5) float32`` (plane, mid_u, half_u, mid_v, half_v) of faces ``vis`` relative to ``o``."""
        f = self.faces
        tang = FACE_TANGENTS[f.axis[vis]]
        o_t = o[tang]
        lo, hi = f.lo[vis] - o_t, f.hi[vis] - o_t
        finite = np.isfinite(lo) & np.isfinite(hi)
        # Bounds as centre +- half-width; infinite extents become 0 +- inf.
        with np.errstate(invalid="ignore"):
            mid = np.where(finite, 0.5 * (lo + hi), 0.0)
            half = np.where(finite, 0.5 * (hi - lo), np.inf)
        params = np.column_stack([f.plane[vis] - o[f.axis[vis]], mid[:, 0], half[:, 0], mid[:, 1], half[:, 1]])
        return params.astype(np.float32)

    def _intersect_batch(self, rays: torch.Tensor, inv: torch.Tensor, params: torch.Tensor,
                         axes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_intersect_tile` with a leading view dimension: ``rays``/``inv`` ``(B, N, 3)``,
        ``params (B, F, 5)``, ``axes (B, F, 3)``; returns ``(t (B, N), local face (B, N))``."""
        B, N, _ = rays.shape
        step = max(1, _BLOCK_ELEMS[self.device.type] // (B * N))
        best_t = best_id = None
        for s in range(0, params.shape[1], step):
            p = params[:, None, s : s + step]  # (B, 1, F, 5)
            ax = axes[:, s : s + step]
            F_ = ax.shape[1]

            def along(x, k):  # x[b, n, ax[b, f, k]] as (B, N, F)
                return torch.gather(x, 2, ax[:, None, :, k].expand(B, N, F_))

            t = p[..., 0] * along(inv, 0)
            q1 = torch.addcmul(-p[..., 1], t, along(rays, 1)).abs_()
            q2 = torch.addcmul(-p[..., 3], t, along(rays, 2)).abs_()
            ok = (q1 <= p[..., 2]).logical_and_(q2 <= p[..., 4]).logical_and_(t > _NEAR)
            t.masked_fill_(ok.logical_not_(), math.inf)
            tmin, arg = t.min(dim=2)
            arg = arg + s
            if best_t is None:
                best_t, best_id = tmin, arg
            else:
                better = tmin < best_t
                best_t = torch.where(better, tmin, best_t)
                best_id = torch.where(better, arg, best_id)
        best_id = torch.where(torch.isinf(best_t), -1, best_id)
        return best_t, best_id

    def _shade_batch(self, rays: torch.Tensor, depth: torch.Tensor, local: torch.Tensor,
                     views: list[tuple[np.ndarray, np.ndarray]], F_max: int) -> torch.Tensor:
        """:meth:`_shade` of ``B`` views at once (per-view face tables stacked, ``F_max + 1`` rows each,
        the last one for misses); returns ``(B, N, 3) uint8``."""
        B, N, _ = rays.shape
        tables, axes, bases = [], [], []
        for vis, o in views:
            rows = np.full(F_max + 1, len(self.faces))
            rows[: vis.size] = vis
            table = np.zeros((F_max + 1, 4 + self._face_static.shape[1]), np.float32)
            table[: vis.size + 1] = self._shade_table(vis, o)
            table[vis.size + 1 :] = table[vis.size]  # padding rows are never hit
            tables.append(table)
            axes.append(self._face_axes[rows])
            bases.append(self._face_base[rows])
        miss = local < 0
        # Row of each ray in the stacked tables: its view's block, its face's row or the miss row.
        offset = (torch.arange(B, device=self.device) * (F_max + 1))[:, None]
        idx = (torch.where(miss, F_max, local) + offset).reshape(-1)
        return self._shade_rows(
            rays.reshape(B * N, 3), depth.reshape(-1), miss.reshape(-1),
            torch.from_numpy(np.concatenate(tables)).to(self.device).index_select(0, idx),
            torch.from_numpy(np.concatenate(axes)).to(self.device).index_select(0, idx),
            torch.from_numpy(np.concatenate(bases)).to(self.device).index_select(0, idx),
            self._foot_k.repeat(B), self._ray_norm.repeat(B),
        ).reshape(B, N, 3)

    # --------------------------------------------------------------- shading
    def _shade(
        self, rays: torch.Tensor, depth: torch.Tensor, local: torch.Tensor, vis: np.ndarray, o: np.ndarray
    ) -> torch.Tensor:
        dev = self.device
        rows = np.append(vis, len(self.faces))
        miss = local < 0
        idx = torch.where(miss, vis.size, local)
        g = torch.from_numpy(self._shade_table(vis, o)).to(dev).index_select(0, idx)
        axes = torch.from_numpy(self._face_axes[rows]).to(dev).index_select(0, idx)
        base = torch.from_numpy(self._face_base[rows]).to(dev).index_select(0, idx)
        return self._shade_rows(rays, depth, miss, g, axes, base, self._foot_k, self._ray_norm)

    def _shade_table(self, vis: np.ndarray, o: np.ndarray) -> np.ndarray:
        """``(F + 1, 13) float32`` shading table of faces ``vis`` seen from ``o``; the last row is for misses."""
        f = self.faces
        # Per-face texture phase at the camera centre, in float64 and wrapped to one
        # period so that texture coordinates stay precise far from the world origin.
        tang = FACE_TANGENTS[f.axis[vis]]
        o_t = o[tang] - f.tex_origin[vis]
        tex_phase = np.mod(o_t * f.inv_scale[vis] + f.tex_offset[vis], 1.0)
        det_phase = np.mod(o_t * f.inv_detail_scale[vis, None] + 0.37 * f.tex_offset[vis], 1.0)
        dyn = np.vstack([np.column_stack([tex_phase, det_phase]), np.zeros((1, 4))])
        rows = np.append(vis, len(f))
        return np.column_stack([dyn, self._face_static[rows]]).astype(np.float32)

    def _shade_rows(self, rays, depth, miss, g, axes, base, foot_k, ray_norm) -> torch.Tensor:
        """Colour of each ray ``(n, 3) uint8`` from its hit depth and its face's rows of the shading
        table ``g``, axes and texture bases (miss rows for rays that hit nothing)."""
        dev = self.device
        t = torch.where(miss, 0.0, depth)
        d_a = rays.gather(1, axes[:, 0:1]).squeeze(1).abs_().clamp_min_(1e-6)
        p_u = t * rays.gather(1, axes[:, 1:2]).squeeze(1)
        p_v = t * rays.gather(1, axes[:, 2:3]).squeeze(1)
        # Pixel footprint on the surface (m): range / focal, stretched by the obliquity
        # (geometric mean of the two footprint axes keeps grazing surfaces sharp enough).
        footprint = t.mul(foot_k).mul_(d_a.rsqrt_())
        # table columns: 0-1 tex phase, 2-3 detail phase, 4-5 inv scale, 6 inv detail
        # scale, 7 detail strength, 8-10 tint*shade, 11 tex level scale, 12 det level scale
        tex = self._sample(
            self._tex_texels, self._tex_sizes, self._tex_offsets, self._tex.levels,
            torch.addcmul(g[:, 0], p_u, g[:, 4]), torch.addcmul(g[:, 1], p_v, g[:, 5]),
            footprint * g[:, 11], base[:, 0],
        )
        det = self._sample(
            self._det_texels, self._det_sizes, self._det_offsets, self._det.levels,
            torch.addcmul(g[:, 2], p_u, g[:, 6]), torch.addcmul(g[:, 3], p_v, g[:, 6]),
            footprint * g[:, 12], base[:, 1],
        )
        strength = g[:, 7]
        colour = tex * (g[:, 8:11] * (1.0 + strength * (2.0 * det - 1.0))[:, None])
        if self.scene.outdoor:
            up = (rays[:, 2] / ray_norm).clamp(0.0, 1.0).sqrt()[:, None]
            sky = self._sky[0] * (1.0 - up) + self._sky[1] * up
        else:
            sky = torch.zeros(3, device=dev)
        colour = torch.where(miss[:, None], sky, colour)
        return (colour.clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)

    @staticmethod
    def _sample(texels, sizes, offsets, levels, u, v, texel_footprint, base):
        """Nearest-texel lookup at the mip level matching ``texel_footprint`` (texels/pixel).

        ``sizes``, ``offsets`` and ``base`` are int32; the level is floor(log2(footprint))
        read off the float exponent.
        """
        level = torch.frexp(texel_footprint.clamp(1.0, float(2**levels - 1)))[1].sub_(1)
        size = sizes[level]
        sf = size.to(u.dtype)
        iu = (u - torch.floor(u)).clamp_max_(_FRAC_MAX).mul_(sf).to(torch.int32)
        iv = (v - torch.floor(v)).clamp_max_(_FRAC_MAX).mul_(sf).to(torch.int32)
        idx = iv.mul_(size).add_(iu).add_(offsets[level]).add_(base)
        return texels.index_select(0, idx)
