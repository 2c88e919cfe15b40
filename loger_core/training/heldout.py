"""Held-out synthetic sequences and the trajectory metrics the shipped model is judged by.

A case is rendered exactly as the training data is (at `supersample` times the network size,
box-filtered down) but from seeds the training never draws (`HELD_OUT_SEEDS`), and run through the
model one window at a time with the memory carried, as the node does; only the poses are kept, so
4,096-frame sequences fit in memory.

Metrics (per case): ATE rmse after a Sim(3) alignment divided by the ground-truth path length,
RPE rotation (deg per frame, rmse over consecutive frames), scale drift = Sim(3) scale of the last
fifth of the trajectory over that of the first fifth (1 = none), and new frames per second of the
network (rendering excluded). Besides, per window: the Sim(3) ATE of each window's own poses (how
well the network places frames inside a window, whatever the memory does between windows).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from loger_core.eval.metrics import compute_ate, compute_rpe, compute_scale_drift
from loger_core.model.loger import LoGeR
from loger_core.model.state import MemoryOptions
from loger_core.model.windowing import WindowAligner, window_schedule
from loger_core.synthetic import SynthConfig, prepare

__all__ = ["HeldOutCase", "HELD_OUT_CASES", "ABLATION_VARIANTS", "ablation_options", "render_case", "run_poses",
           "trajectory_metrics", "direction_agreement", "window_metrics", "evaluate_case"]

# Memory ablations (bench/ablation.py): which memories a variant keeps; "one_window" runs the whole
# sequence as a single window (no memory needed).
ABLATION_VARIANTS = ("both", "ttt_off", "swa_off", "both_off", "one_window")


def ablation_options(variant: str, frames: int, window: int, overlap: int) -> MemoryOptions:
    """The `MemoryOptions` of an ablation variant for a sequence of `frames` frames."""
    if variant not in ABLATION_VARIANTS:
        raise ValueError(f"unknown ablation variant {variant!r}; choose from {ABLATION_VARIANTS}")
    if variant == "one_window":
        return MemoryOptions(window_size=frames, overlap_size=0)
    return MemoryOptions(window_size=window, overlap_size=overlap, use_ttt=variant in ("both", "swa_off"),
                         use_swa=variant in ("both", "ttt_off"))


@dataclass(frozen=True)
class HeldOutCase:
    """One held-out sequence: scene kind, trajectory kind, frame count, seed, horizontal FOV."""

    scene: str
    trajectory: str
    frames: int
    seed: int
    fov_deg: float = 70.0

    @property
    def name(self) -> str:
        return f"{self.scene}/{self.trajectory}/seed{self.seed}/{self.frames}f"


# The targets: 256-frame rooms / corridors (handheld, ground robot), 1,024-frame street /
# loop (car, ground robot). Training seeds start at 1000 and skip these (data.HELD_OUT_SEEDS).
HELD_OUT_CASES: tuple[HeldOutCase, ...] = (
    HeldOutCase("room", "handheld", 256, 7),
    HeldOutCase("corridor", "ground_robot", 256, 11),
    HeldOutCase("room", "ground_robot", 256, 21),
    HeldOutCase("corridor", "handheld", 256, 33),
    HeldOutCase("street", "car", 1024, 41),
    HeldOutCase("loop", "ground_robot", 1024, 43),
)


@torch.no_grad()
def render_case(case: HeldOutCase, width: int, height: int, device: torch.device | str = "cpu",
                supersample: int = 2) -> tuple[Tensor, np.ndarray]:
    """Renders `case` at the network size.

    Returns images `(N, 3, height, width)` float32 in [0, 1] on `device` and the ground-truth
    `T_world_cam` poses `(N, 4, 4)` float64.
    """
    f = max(1, int(supersample))
    cfg = SynthConfig(scene=case.scene, trajectory=case.trajectory, frames=case.frames, width=width * f,
                      height=height * f, fov_deg=case.fov_deg, seed=case.seed)
    setup = prepare(cfg)
    renderer = setup.renderer(cfg.width, cfg.height, device)
    frames = []
    for out in renderer.render_many(setup.poses):
        rgb = out.rgb.permute(2, 0, 1).float().unsqueeze(0)  # (1, 3, fH, fW)
        if f > 1:
            rgb = F.avg_pool2d(rgb, f)
        frames.append((rgb.round().clamp(0, 255) / 255.0)[0])
    return torch.stack(frames), np.asarray(setup.poses, dtype=np.float64)


@torch.no_grad()
def run_poses(model: LoGeR, images: Tensor, options: MemoryOptions, alignment: str = "none",
              amp: bool = False, windows: list | None = None) -> tuple[np.ndarray, float]:
    """Runs `images` `(N, 3, H, W)` window by window with memory; returns the merged `T_world_cam`
    poses `(N, 4, 4)` float64 (a later window's prediction of an overlap frame replaces the
    earlier one, as `SequenceMerger` does) and the network's wall time in seconds.
    windows: if a list, gets `(start, end, poses (n, 4, 4) float64)` per window, as the network
    predicted them (before any alignment)."""
    device = images.device
    aligner = WindowAligner(alignment, options.overlap_size, options.reset_every)
    poses = torch.zeros(images.shape[0], 4, 4, dtype=torch.float64, device=device)
    state = model.init_state()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for start, end in window_schedule(images.shape[0], options.window_size, options.overlap_size):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            pred, state = model.forward_window(images[start:end].unsqueeze(0), state, options)
        aligned = aligner.align(pred)
        poses[start:end] = aligned.camera_poses[0].double()
        if windows is not None:
            windows.append((start, end, pred.camera_poses[0].double()))
    sync()
    return poses.cpu().numpy(), time.perf_counter() - t0


def _nan(x) -> float:
    return float("nan") if x is None else float(x)


def path_length(poses: np.ndarray) -> float:
    """Length in metres of the camera path of `poses` (N, 4, 4)."""
    return float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())


def trajectory_metrics(est: np.ndarray, gt: np.ndarray) -> dict:
    """ATE (Sim(3)) rmse in metres and as a share of the GT path length, RPE rotation / translation
    over consecutive frames, scale drift (last / first fifth)."""
    path = path_length(gt)
    if not np.all(np.isfinite(est)):
        return {"path_m": path, "ate_m": float("nan"), "ate_pct": float("nan"), "rpe_rot_deg": float("nan"),
                "rpe_trans_m": float("nan"), "scale_drift": float("nan"), "finite": False}
    ate = compute_ate(est, gt, align="sim3")
    rpe = compute_rpe(est, gt, delta_frames=1, scale=ate.scale)
    drift = compute_scale_drift(est, gt, segment_frames=max(3, len(gt) // 5))
    return {
        "path_m": round(path, 3), "ate_m": ate.rmse, "ate_pct": 100.0 * ate.rmse / max(path, 1e-9),
        "rpe_rot_deg": rpe.rot_rmse_deg, "rpe_trans_m": rpe.trans_rmse,
        "scale_drift": _nan(drift.ratio_last_first), "finite": True,
    }


def direction_agreement(est: np.ndarray, truth: np.ndarray) -> tuple[float, float] | None:
    """Whether a window's estimated motion points the right way: est, truth `(n, 4, 4)` `T_world_cam`
    of its frames; the first-to-last displacement seen from the first camera (`T_first^-1 T_last`,
    scale-free) of each. Returns (1.0 if within 90 deg of the true one else 0.0, cosine between the
    two), or None when the truth has no motion. An estimate without motion (up to rounding) has no
    direction: it counts as wrong (cosine 0)."""
    t_est = (np.linalg.inv(est[0]) @ est[-1])[:3, 3]
    t_true = (np.linalg.inv(truth[0]) @ truth[-1])[:3, 3]
    n_true = np.linalg.norm(t_true)
    if n_true <= 1e-6:
        return None
    dot = float(np.dot(t_est, t_true))
    return float(dot > 1e-9 * n_true), dot / (max(float(np.linalg.norm(t_est)), 1e-12) * n_true)


def window_metrics(windows: list, gt: np.ndarray) -> dict:
    """How well single windows place their frames, apart from how windows are chained: the median
    over windows of the Sim(3) ATE of each window's own poses against the ground truth (metres and
    share of the window's path), and of a motionless estimate's (every frame at one point: the rmse
    of the true positions about their mean) as the share a model that learned no motion gets; and
    the share of windows whose first-to-last camera displacement, seen from the first camera
    (`T_first^-1 T_last`, scale-free), points within 90 deg of the true one ("direction %": the
    shipped small model moves the right way along the right axis only about half the time)."""
    ate, share, still, direction = [], [], [], []
    for start, end, poses in windows:
        if end - start < 3:
            continue
        est = poses.cpu().numpy() if isinstance(poses, Tensor) else np.asarray(poses)
        truth = gt[start:end]
        path = path_length(truth)
        if not np.all(np.isfinite(est)) or path <= 1e-9:
            continue
        centred = truth[:, :3, 3] - truth[:, :3, 3].mean(axis=0)
        motionless = float(np.sqrt((centred ** 2).sum(axis=1).mean()))
        spread = np.ptp(est[:, :3, 3], axis=0).max()
        # A window predicted without motion: the best similarity maps it to the true centroid.
        rmse = compute_ate(est, truth, align="sim3").rmse if spread > 1e-12 else motionless
        ate.append(rmse)
        share.append(100.0 * rmse / path)
        still.append(100.0 * motionless / path)
        agreement = direction_agreement(est, truth)
        if agreement is not None:
            direction.append(agreement[0])
    if not ate:
        return {"window_ate_m": float("nan"), "window_ate_pct": float("nan"), "window_still_pct": float("nan"),
                "window_direction_pct": float("nan")}
    return {"window_ate_m": float(np.median(ate)), "window_ate_pct": float(np.median(share)),
            "window_still_pct": float(np.median(still)),
            "window_direction_pct": 100.0 * float(np.mean(direction)) if direction else float("nan")}


def evaluate_case(model: LoGeR, case: HeldOutCase, options: MemoryOptions, width: int, height: int,
                  alignment: str = "none", amp: bool = False, images: Tensor | None = None,
                  gt: np.ndarray | None = None) -> dict:
    """Renders (unless given) and runs one case; returns its metrics, frames/s and settings."""
    if images is None or gt is None:
        images, gt = render_case(case, width, height, next(model.parameters()).device)
    windows: list = []
    est, seconds = run_poses(model, images, options, alignment, amp, windows=windows)
    out = {"case": case.name, **asdict(case), **trajectory_metrics(est, gt), **window_metrics(windows, gt),
           "frames_per_s": case.frames / max(seconds, 1e-9), "window": options.window_size,
           "overlap": options.overlap_size, "use_ttt": options.use_ttt, "use_swa": options.use_swa,
           "alignment": alignment}
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}
