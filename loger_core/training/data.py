"""Batches of short synthetic clips with exact ground truth, rendered on the training device.

A pool of synthetic sequences (scene kind, trajectory, seed, field of view drawn at random) is
rendered at `supersample` times the network resolution and box-filtered down, which anti-aliases
the RGB much as the demo's LANCZOS resize of a 2x larger image does. Clips are cut from pool
sequences at a random start and frame stride; every `refresh_every` batches one pool sequence is
replaced by a freshly rendered one, so the data keeps changing at a small rendering cost.

Ground truth per frame: camera-frame points from the z-depth and the (downsampled) intrinsics,
OpenCV axes, and `T_world_cam` re-expressed relative to the clip's first frame.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from loger_core.synthetic import SceneConfig, SynthConfig, TrajectoryConfig, prepare

__all__ = ["TrainingDataError", "ClipDataConfig", "ClipBatch", "SyntheticClipSource", "clip_length", "window_ranges"]

# Seeds of the held-out evaluation sequences (the README demo renders room/handheld seed 7;
# heldout.HELD_OUT_CASES and bench/ablation.py use the others). Training seeds never take them.
HELD_OUT_SEEDS = (7, 11, 21, 33, 41, 43, 51, 53, 61, 63)


# Which camera motions make sense in which scene (a car does not drive through a living room).
SCENE_TRAJECTORIES = {
    "room": ("handheld", "ground_robot"),
    "corridor": ("handheld", "ground_robot"),
    "street": ("car", "ground_robot"),
    "loop": ("car", "ground_robot"),
}


class TrainingDataError(ValueError):
    """Invalid training-data configuration."""


def clip_length(window_size: int, overlap_size: int, windows: int) -> int:
    """Frames of a clip made of `windows` consecutive windows."""
    return window_size + (windows - 1) * (window_size - overlap_size)


def window_ranges(window_size: int, overlap_size: int, windows: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the windows of a clip, in processing order."""
    stride = window_size - overlap_size
    return [(k * stride, k * stride + window_size) for k in range(windows)]


@dataclass(frozen=True)
class ClipDataConfig:
    """What the clips look like.

    width, height: network input size (multiples of 14; the tiny model's demo size is 112x84).
    supersample: render at this factor and box-filter down (anti-aliasing).
    scenes, trajectories: kinds drawn uniformly per pool sequence.
    fov_deg: (min, max) horizontal field of view, drawn uniformly per sequence.
    window_sizes: window size drawn per batch; overlap_size: frames shared by windows.
    windows_per_clip: number of windows per clip, drawn per batch.
    frame_strides: temporal subsampling drawn per clip (faster apparent motion).
    pool_size / sequence_frames: pool of rendered sequences and frames per sequence.
    refresh_every: batches between replacing one pool sequence (0: never).
    batch_size: clips per batch. seed: first scene seed; `HELD_OUT_SEEDS` are skipped.
    color_jitter: max relative brightness/contrast change per clip.
    randomize: draw per sequence the camera speed and height (x0.6-1.5 and x0.7-1.4 of the
        trajectory kind's default), wobble, look-around, room size, furniture and texture count;
        off: the synthetic generator's defaults (the held-out sequences use those).
    """

    width: int = 112
    height: int = 84
    supersample: int = 2
    scenes: tuple[str, ...] = ("room", "corridor")
    trajectories: tuple[str, ...] = ("handheld", "ground_robot")
    fov_deg: tuple[float, float] = (60.0, 80.0)
    window_sizes: tuple[int, ...] = (8, 16)
    overlap_size: int = 3
    windows_per_clip: tuple[int, ...] = (2, 3)
    frame_strides: tuple[int, ...] = (1, 2, 3)
    pool_size: int = 24
    sequence_frames: int = 150
    refresh_every: int = 10
    batch_size: int = 8
    seed: int = 1000
    color_jitter: float = 0.15
    randomize: bool = False

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 14 or v % 14:
                raise TrainingDataError(f"ClipDataConfig.{name} must be a positive multiple of 14, got {v!r}")
        if not isinstance(self.supersample, int) or self.supersample < 1:
            raise TrainingDataError(f"ClipDataConfig.supersample must be an integer >= 1, got {self.supersample!r}")
        if not self.scenes or not self.trajectories:
            raise TrainingDataError(f"ClipDataConfig.scenes/trajectories must be non-empty, got {self.scenes!r} / {self.trajectories!r}")
        for scene in self.scenes:
            if scene not in SCENE_TRAJECTORIES:
                raise TrainingDataError(f"ClipDataConfig.scenes: unknown scene {scene!r}; choose from {sorted(SCENE_TRAJECTORIES)}")
            if not set(SCENE_TRAJECTORIES[scene]) & set(self.trajectories):
                raise TrainingDataError(
                    f"ClipDataConfig: scene {scene!r} takes trajectories {SCENE_TRAJECTORIES[scene]}, none of {self.trajectories!r}")
        if not self.window_sizes or min(self.window_sizes) <= self.overlap_size or self.overlap_size < 0:
            raise TrainingDataError(
                f"ClipDataConfig.window_sizes must all exceed overlap_size={self.overlap_size}, got {self.window_sizes!r}"
            )
        if not self.windows_per_clip or min(self.windows_per_clip) < 1:
            raise TrainingDataError(f"ClipDataConfig.windows_per_clip must be >= 1, got {self.windows_per_clip!r}")
        if not self.frame_strides or min(self.frame_strides) < 1:
            raise TrainingDataError(f"ClipDataConfig.frame_strides must be >= 1, got {self.frame_strides!r}")
        if self.pool_size < 1 or self.batch_size < 1:
            raise TrainingDataError(f"ClipDataConfig.pool_size and batch_size must be >= 1, got {self.pool_size}, {self.batch_size}")
        if self.sequence_frames < self.max_span:
            raise TrainingDataError(
                f"ClipDataConfig.sequence_frames={self.sequence_frames} is shorter than the longest clip span {self.max_span}"
            )

    @property
    def max_span(self) -> int:
        """Source frames spanned by the longest clip at the largest stride."""
        n = clip_length(max(self.window_sizes), self.overlap_size, max(self.windows_per_clip))
        return (n - 1) * max(self.frame_strides) + 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClipBatch:
    """A batch of clips, all on one device.

    images: (B, T, 3, H, W) float32 RGB in [0, 1].
    local_points: (B, T, H, W, 3) float32 camera-frame points in metres (OpenCV axes).
    valid: (B, T, H, W) bool, pixels with trustworthy depth.
    poses: (B, T, 4, 4) float32 `T_first_cam`: camera-to-world with the world = the clip's first camera.
    windows: [start, end) frame ranges of the clip's windows; window_size / overlap_size as cut.
    """

    images: Tensor
    local_points: Tensor
    valid: Tensor
    poses: Tensor
    windows: list[tuple[int, int]]
    window_size: int
    overlap_size: int

    def to(self, device) -> "ClipBatch":
        return ClipBatch(self.images.to(device), self.local_points.to(device), self.valid.to(device), self.poses.to(device),
                         self.windows, self.window_size, self.overlap_size)


@dataclass
class _Sequence:
    rgb: Tensor  # (F, 3, H, W) uint8
    depth: Tensor  # (F, H, W) float32, NaN where invalid
    poses: Tensor  # (F, 4, 4) float64 T_world_cam
    rays: Tensor  # (H, W, 3) float32, z == 1
    name: str


def _ray_grid(K: np.ndarray, width: int, height: int, device) -> Tensor:
    u = torch.arange(width, dtype=torch.float64)
    v = torch.arange(height, dtype=torch.float64)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    x = (uu - K[0, 2]) / K[0, 0]
    y = (vv - K[1, 2]) / K[1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1).float().to(device)


def downsampled_intrinsics(K: np.ndarray, factor: int) -> np.ndarray:
    """Intrinsics of a `factor` x `factor` box-filtered image (pixel centres at integers)."""
    Kd = np.array(K, dtype=np.float64, copy=True)
    Kd[0, 0] /= factor
    Kd[1, 1] /= factor
    Kd[0, 2] = (K[0, 2] + 0.5) / factor - 0.5
    Kd[1, 2] = (K[1, 2] + 0.5) / factor - 0.5
    return Kd


class SyntheticClipSource:
    """Endless source of `ClipBatch`es rendered on `device`.

    Deterministic in `cfg.seed`; sequence seeds run upwards from it, skipping `HELD_OUT_SEEDS`.
    """

    def __init__(self, cfg: ClipDataConfig = ClipDataConfig(), device: torch.device | str = "cpu") -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.rng = np.random.default_rng(cfg.seed)
        self._next_seed = cfg.seed
        self.batches = 0
        self.rendered_sequences = 0
        self.pool: list[_Sequence] = [self._render_sequence() for _ in range(cfg.pool_size)]

    def _take_seed(self) -> int:
        while self._next_seed in HELD_OUT_SEEDS:
            self._next_seed += 1
        seed = self._next_seed
        self._next_seed += 1
        return seed

    def _render_sequence(self) -> _Sequence:
        cfg = self.cfg
        seed = self._take_seed()
        scene = cfg.scenes[self.rng.integers(len(cfg.scenes))]
        kinds = [t for t in cfg.trajectories if t in SCENE_TRAJECTORIES[scene]]
        traj = kinds[self.rng.integers(len(kinds))]
        fov = float(self.rng.uniform(*cfg.fov_deg))
        f = cfg.supersample
        scene_cfg, traj_cfg = self._randomized(traj) if cfg.randomize else (SceneConfig(), TrajectoryConfig())
        synth = SynthConfig(scene=scene, trajectory=traj, frames=cfg.sequence_frames, width=cfg.width * f,
                            height=cfg.height * f, fov_deg=fov, seed=seed, scene_config=scene_cfg,
                            trajectory_config=traj_cfg)
        setup = prepare(synth)
        renderer = setup.renderer(synth.width, synth.height, self.device)
        rgbs, depths = [], []
        for out in renderer.render_many(setup.poses):
            rgbs.append(out.rgb)
            depths.append(out.depth)
        rgb = torch.stack(rgbs).permute(0, 3, 1, 2).float()  # (F, 3, fH, fW)
        depth = torch.stack(depths).unsqueeze(1)  # (F, 1, fH, fW)
        if f > 1:
            rgb = F.avg_pool2d(rgb, f)
            finite = torch.isfinite(depth)
            d = torch.where(finite, depth, torch.zeros_like(depth))
            dmax = F.max_pool2d(d, f)
            dmin = -F.max_pool2d(torch.where(finite, -depth, torch.full_like(depth, -1e9)), f)
            all_finite = F.avg_pool2d(finite.float(), f) > 0.999
            # Averaging across an occlusion edge invents depth between the surfaces: drop such pixels.
            smooth = (dmax - dmin) <= 0.05 * dmin.clamp_min(1e-6)
            mean = F.avg_pool2d(d, f)
            depth = torch.where(all_finite & smooth, mean, torch.full_like(mean, float("nan")))
        else:
            depth = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, float("nan")))
        K = downsampled_intrinsics(setup.K, f)
        self.rendered_sequences += 1
        return _Sequence(
            rgb=rgb.round().clamp(0, 255).to(torch.uint8),
            depth=depth[:, 0].float(),
            poses=torch.from_numpy(setup.poses).to(self.device),
            rays=_ray_grid(K, cfg.width, cfg.height, self.device),
            name=f"{scene}/{traj}/seed{seed}/fov{fov:.0f}",
        )

    def _randomized(self, traj: str) -> tuple[SceneConfig, TrajectoryConfig]:
        speed, height, tilt = TrajectoryConfig().resolved(traj).speed_mps, TrajectoryConfig().resolved(traj).height_m, None
        u = self.rng.uniform
        tcfg = TrajectoryConfig(
            speed_mps=float(speed * u(0.6, 1.5)), height_m=float(height * u(0.7, 1.4)), tilt_deg=tilt,
            wobble=float(u(0.4, 1.6)), look_around_deg=float(u(15.0, 50.0)),
        )
        scfg = SceneConfig(
            room_size_m=(float(u(5.0, 10.0)), float(u(4.0, 8.0)), float(u(2.4, 3.4))),
            furniture=int(self.rng.integers(4, 16)), textures=int(self.rng.integers(16, 64)),
            corridor_width_m=float(u(1.8, 3.2)), road_width_m=float(u(8.0, 16.0)),
        )
        return scfg, tcfg

    def refresh(self) -> None:
        """Replaces a random pool sequence by a newly rendered one."""
        i = int(self.rng.integers(len(self.pool)))
        self.pool[i] = self._render_sequence()

    def _clip(self, seq: _Sequence, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.cfg
        stride = int(cfg.frame_strides[self.rng.integers(len(cfg.frame_strides))])
        span = (length - 1) * stride + 1
        start = int(self.rng.integers(seq.rgb.shape[0] - span + 1))
        idx = torch.arange(start, start + span, stride, device=self.device)
        if self.rng.random() < 0.5:
            # Time-reversed clips double the motions seen (backwards walking, reversed turns).
            idx = idx.flip(0)
        images = seq.rgb[idx].float() / 255.0
        if cfg.color_jitter > 0:
            gain = 1.0 + float(self.rng.uniform(-cfg.color_jitter, cfg.color_jitter))
            bias = float(self.rng.uniform(-cfg.color_jitter, cfg.color_jitter)) * 0.5
            images = ((images - 0.5) * gain + 0.5 + bias).clamp(0.0, 1.0)
        depth = seq.depth[idx]
        valid = torch.isfinite(depth) & (depth > 0)
        points = seq.rays.unsqueeze(0) * torch.nan_to_num(depth, nan=0.0).unsqueeze(-1)
        T = seq.poses[idx]
        rel = torch.linalg.inv(T[:1]) @ T
        return images, points, valid, rel.float()

    def next_batch(self) -> ClipBatch:
        """The next batch; all clips share the window size and window count."""
        cfg = self.cfg
        if cfg.refresh_every > 0 and self.batches > 0 and self.batches % cfg.refresh_every == 0:
            self.refresh()
        self.batches += 1
        ws = int(cfg.window_sizes[self.rng.integers(len(cfg.window_sizes))])
        nw = int(cfg.windows_per_clip[self.rng.integers(len(cfg.windows_per_clip))])
        length = clip_length(ws, cfg.overlap_size, nw)
        parts = [self._clip(self.pool[int(self.rng.integers(len(self.pool)))], length) for _ in range(cfg.batch_size)]
        images, points, valid, poses = (torch.stack(t) for t in zip(*parts))
        return ClipBatch(images, points, valid, poses, window_ranges(ws, cfg.overlap_size, nw), ws, cfg.overlap_size)
