"""Synthetic ground-truth sequences: configuration -> frames with exact depth and poses."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import numpy as np
import torch

from .camera import intrinsics_from_fov
from .config import SynthConfig, SynthError
from .renderer import Renderer
from .scene import Scene
from .scenes import build_scene
from .textures import TextureBank, make_detail_bank, make_texture_bank
from .trajectories import make_poses, route_length_needed

__all__ = ["SynthFrame", "SynthSetup", "prepare", "generate_sequence", "render_frames"]

_DETAIL_TEXTURES = 8
_DETAIL_SIZE = 64


@dataclass
class SynthFrame:
    """One synthetic frame.

    Attributes:
        rgb: ``(H, W, 3) uint8`` colour image.
        depth: ``(H, W) float32`` z-depth in metres; ``inf`` where the ray hits nothing
            (sky, or outdoor geometry beyond ``SceneConfig.max_distance_m``).
        T_world_cam: ``(4, 4) float64`` camera-to-world pose (OpenCV camera axes, z-up world).
        K: ``(3, 3) float64`` pinhole intrinsics.
        stamp_ns: timestamp in integer nanoseconds.
    """

    rgb: np.ndarray
    depth: np.ndarray
    T_world_cam: np.ndarray
    K: np.ndarray
    stamp_ns: int


@dataclass
class SynthSetup:
    """Everything needed to render a sequence (all deterministic in ``cfg.seed``).

    Attributes:
        scene: geometry and materials.
        textures, detail: texture banks.
        K: ``(3, 3) float64`` intrinsics.
        poses: ``(N, 4, 4) float64`` ``T_world_cam`` of every frame.
        stamps_ns: ``(N,) int64`` frame stamps.
    """

    scene: Scene
    textures: TextureBank
    detail: TextureBank
    K: np.ndarray
    poses: np.ndarray
    stamps_ns: np.ndarray
    max_distance_m: float = math.inf

    def renderer(
        self, width: int, height: int, device=None, tile: Optional[tuple] = None, threads: Optional[int] = 1
    ) -> Renderer:
        """A :class:`Renderer` for this setup (see there for ``tile`` and ``threads``)."""
        far = self.max_distance_m if self.scene.outdoor else math.inf
        return Renderer(self.scene, self.textures, self.detail, self.K, width, height, device, tile, far, threads)


def prepare(cfg: SynthConfig) -> SynthSetup:
    """Build scene, textures and camera poses for ``cfg`` (no rendering)."""
    if not isinstance(cfg, SynthConfig):
        raise SynthError(f"cfg must be a SynthConfig, got {type(cfg).__name__}")
    cfg.validate()
    # Independent streams: changing e.g. the frame count must not reshuffle the textures.
    rng_tex = np.random.default_rng([cfg.seed, 1])
    rng_scene = np.random.default_rng([cfg.seed, 2])
    rng_motion = np.random.default_rng([cfg.seed, 3])
    sc = cfg.scene_config
    textures = make_texture_bank(rng_tex, sc.textures, sc.texture_size)
    detail = make_detail_bank(rng_tex, _DETAIL_TEXTURES, _DETAIL_SIZE)
    need = route_length_needed(cfg.trajectory, cfg.trajectory_config, cfg.duration_s)
    scene = build_scene(cfg.scene, sc, rng_scene, textures.count, detail.count, need)
    stamps = np.asarray(cfg.stamps_ns, dtype=np.int64)
    times = (stamps - stamps[0]).astype(np.float64) * 1e-9
    poses = make_poses(cfg.trajectory, cfg.trajectory_config, scene.route, times, rng_motion)
    K = intrinsics_from_fov(cfg.width, cfg.height, cfg.fov_deg)
    return SynthSetup(scene, textures, detail, K, poses, stamps, sc.max_distance_m)


def generate_sequence(
    cfg: SynthConfig, device: Union[str, torch.device, None] = None, threads: Optional[int] = 1
) -> Iterator[SynthFrame]:
    """Render ``cfg.frames`` frames lazily (one at a time, on CUDA a batch at a time; long sequences fit
    in memory).

    Args:
        cfg: the sequence.
        device: ``'cpu'``, ``'cuda'`` or ``None`` (CUDA when available).
        threads: torch CPU threads while rendering (see :class:`Renderer`).

    Yields:
        :class:`SynthFrame` with numpy arrays on the host.
    """
    setup = prepare(cfg)
    renderer = setup.renderer(cfg.width, cfg.height, device, threads=threads)
    for pose, stamp, out in zip(setup.poses, setup.stamps_ns, renderer.render_many(setup.poses)):
        yield SynthFrame(
            rgb=out.rgb.cpu().numpy(),
            depth=out.depth.cpu().numpy(),
            T_world_cam=pose.copy(),
            K=setup.K.copy(),
            stamp_ns=int(stamp),
        )


def render_frames(
    cfg: SynthConfig, device: Union[str, torch.device, None] = None, threads: Optional[int] = 1
) -> list[SynthFrame]:
    """All frames of ``cfg`` as a list (convenient for short test sequences)."""
    return list(generate_sequence(cfg, device, threads))
