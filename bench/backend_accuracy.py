#!/usr/bin/env python3
"""What the geometric back end buys: `loger-reconstruct` with `--backend off` against `--backend on`
(not a test).

Every case runs `run_reconstruct` twice on the CPU with the bundled default model (no
`--checkpoint`): back end off (the network's trajectory and map) and on (keyframes,
feature-verified relative poses, loop closure, pose graph). Per case and run:

- trajectory: ATE RMSE after the Sim(3) fit (m and % of the ground-truth path length), RPE rotation
  (mean deg/frame), total seconds;
- back end (from `run.json`'s `backend` block): keyframes, loop closures, ms per keyframe and per
  optimisation, and how each keyframe step's relative pose was decided (`steps_pnp`,
  `steps_essential`, `steps_network_only`);
- map (synthetic cases, whose rendered depth is exact): `map.ply` moved into the ground-truth frame
  by the ATE Sim(3) (`metrics.json` -> `ate` -> `T_align`) against the true surfaces (the rendered
  depth of every 4th frame back-projected with the true poses), both voxel-downsampled to the case's
  voxel: accuracy = distance from map points to the nearest true point, completeness = distance
  from true points to the nearest map point (cm; mean and median);
- grid (room scenes): IoU of the occupied cells of the run's Nav2 grid (`map.pgm` / `map.yaml`, in
  the floor frame `grid.json` -> `T_world_ground`) and of the same grid code fed with the true depth
  and poses (what `scripts/grid_figure.py` draws). Compared on the true grid's lattice: each true
  cell centre (at mid obstacle-band height) goes through the inverse ATE Sim(3) and the run's floor
  frame into the run's grid. `iou` counts exact cells; `iou_dilated` dilates both by one cell first
  (walls are one cell thick, so a few cm of misalignment alone empties the exact IoU).

Synthetic cases are held out (seeds >= 5000, never drawn by training), rendered at 320x240 with
`loger-synth` into `out/bench_backend/sequences/` (reused when present). `kitti_clip2` is real
KITTI (`../shared/data/kitti_clip2`, skipped with a reason when absent).

    .venv/bin/python bench/backend_accuracy.py                         # all cases (long on a small CPU)
    .venv/bin/python bench/backend_accuracy.py --case room --case kitti_clip2 --frames 64   # quick

Writes `bench_results/backend_accuracy.json` (`--json PATH`) and one top-view PNG per case (ground
truth | back end off | back end on) next to it.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import platform
import subprocess
import sys
import time
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loger_core.mapping.grid_files import load_map_server  # noqa: E402
from loger_core.cli.reconstruct_args import build_parser  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    scene: Optional[str]  # synthetic scene, None for a dataset on disk
    trajectory: Optional[str]
    frames: int
    seed: Optional[int]
    voxel_m: float  # common voxel of the map-accuracy comparison
    grid_iou: bool  # compare the occupancy grid with the true floor plan
    path: Optional[str] = None  # dataset folder, relative to the repo root
    plane: str = "xy"  # top-view axes of the ground-truth world (synthetic: z up; KITTI: y down)


# The cases. Synthetic seeds >= 5000 are held out from training (loger_core.training.data.HELD_OUT_SEEDS).
CASES = [
    Case("kitti_clip2", None, None, 51, None, 0.0, False, path="../shared/data/kitti_clip2", plane="xz"),
    Case("room", "room", "handheld", 256, 5001, 0.05, True),
    Case("corridor", "corridor", "handheld", 256, 5002, 0.05, False),
    Case("room_1024", "room", "handheld", 1024, 5004, 0.05, True),
    Case("loop", "loop", "car", 400, 5003, 0.10, False),
]
SIZE = "320x240"
GT_FRAME_STEP = 4  # back-project the true depth of every 4th frame
GT_MAX_DEPTH_M = 30.0  # true surfaces farther than this from the camera are left out (sky / horizon)
PLOT_POINTS = 150_000
_WARM = False


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# ---------------------------------------------------------------- sequences
def sequence_dir(case: Case, cache: Path) -> Path:
    if case.path is not None:
        return (REPO / case.path).resolve()
    return cache / f"{case.name}_{case.frames}f_seed{case.seed}"


def render(case: Case, cache: Path, quiet: bool) -> Path:
    """The case's sequence folder, rendered with loger-synth unless already there."""
    d = sequence_dir(case, cache)
    if (d / "synth_config.json").is_file():
        return d
    tmp = d.with_name(d.name + ".tmp")
    cmd = [str(Path(sys.executable).parent / "loger-synth"), "--scene", case.scene, "--trajectory", case.trajectory,
           "--frames", str(case.frames), "--size", SIZE, "--seed", str(case.seed), "--device", "cpu", "--quiet",
           "--out", str(tmp)]
    log(f"[{case.name}] rendering {case.frames} frames: {' '.join(cmd[1:])}", quiet)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    tmp.rename(d)
    log(f"[{case.name}] rendered in {time.perf_counter() - t0:.1f} s -> {d}", quiet)
    return d


# ---------------------------------------------------------------- one run
def run_once(seq: Path, out: Path, backend: str, max_frames: Optional[int], quiet: bool) -> dict:
    """One `run_reconstruct`; returns what the table needs (or the error with its traceback)."""
    from loger_core.cli.reconstruct import run_reconstruct

    argv = [str(seq), "--out", str(out), "--device", "cpu", "--backend", backend, "--quiet"]
    if max_frames:
        argv += ["--max-frames", str(max_frames)]
    args = build_parser().parse_args(argv)
    row: dict = {"backend": backend, "out": str(out), "argv": argv}
    t0 = time.perf_counter()
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            outcome = run_reconstruct(args)
    except Exception as exc:  # noqa: BLE001  (a benchmark records the failure and goes on)
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(),
                   total_s=time.perf_counter() - t0)
        return row
    row["total_s"] = time.perf_counter() - t0
    row["summary"] = buf.getvalue().strip()
    run, metrics = outcome.run, outcome.metrics or {}
    row["ok"] = True
    row["frames"] = run.get("frames_read")
    row["frames_out"] = run.get("frames_out")
    row["seconds"] = run.get("seconds")
    if "ate" in metrics:
        row["ate_rmse_m"] = metrics["ate"]["rmse"]
        row["ate_scale"] = metrics["ate"]["scale"]
        row["rpe_rot_mean_deg"] = metrics["rpe"]["rot_mean_deg"]
        row["rpe_trans_mean_m"] = metrics["rpe"]["trans_mean"]
        row["T_align"] = metrics["ate"]["T_align"]
        row["scale_drift_last_first"] = metrics.get("scale_drift", {}).get("ratio_last_first")
    else:
        row["metrics_error"] = metrics.get("error", "no ground truth")
    if "frontend" in metrics and "ate" in metrics["frontend"]:
        row["frontend_ate_rmse_m"] = metrics["frontend"]["ate"]["rmse"]
    b = run.get("backend")
    if b:
        keep = ("frames", "frames_skipped", "keyframes", "steps_verified", "steps_pnp", "steps_essential",
                "steps_network_kept", "steps_network_corrected", "steps_network_only", "loop_candidates",
                "loop_verified", "loop_rejected_consistency", "loop_closures", "optimizations", "keyframe_ms_mean",
                "frame_ms_mean", "optimize_ms_mean", "optimize_s_max", "keyframe_s_total", "optimize_s_total",
                "finish_s", "loops")
        row["backend_stats"] = {k: b.get(k) for k in keep}
    row["grid"] = {k: v for k, v in (run.get("grid") or {}).items() if k in ("written", "reason", "resolution",
                                                                              "size_cells", "cells")}
    # Non-finite output is a failure of the run, recorded as such.
    traj = out / "trajectory.tum"
    bad = []
    if traj.is_file():
        from loger_core.io.trajectory import TrajectoryFormatError, read_tum
        try:
            read_tum(traj)
        except TrajectoryFormatError as exc:
            bad.append(f"trajectory.tum: {exc}")
    for key in ("ate_rmse_m", "rpe_rot_mean_deg"):
        v = row.get(key)
        if v is None or not math.isfinite(v):
            if "ate" in metrics:
                bad.append(f"{key} = {v}")
    if bad:
        row["ok"] = False
        row["error"] = "non-finite output: " + "; ".join(bad)
    return row


# ---------------------------------------------------------------- ground truth geometry
def backproject(frame) -> np.ndarray:
    """(N, 3) world points of one frame's true depth (camera -> world with its true pose)."""
    depth, K, T = frame.depth, frame.K, frame.T_world_cam
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ok = np.isfinite(depth) & (depth > 0) & (depth < GT_MAX_DEPTH_M)
    z = depth[ok].astype(np.float64)
    cam = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * z, (v[ok] - K[1, 2]) / K[1, 1] * z, z], axis=1)
    return cam @ T[:3, :3].T + T[:3, 3]


def voxel_down(points: np.ndarray, voxel: float) -> np.ndarray:
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.ascontiguousarray(points, dtype=np.float64)))
    return np.asarray(pc.voxel_down_sample(voxel).points)


def true_surfaces(seq_dir: Path, n_frames: int, voxel: float) -> np.ndarray:
    """The scene's true surfaces seen by the first `n_frames` frames (every GT_FRAME_STEP-th), downsampled."""
    from loger_core.io.image_folder import ImageFolderSequence

    seq = ImageFolderSequence(seq_dir)
    chunks, acc = [], []
    for i in range(0, min(n_frames, len(seq)), GT_FRAME_STEP):
        acc.append(backproject(seq[i]))
        if len(acc) == 16:
            chunks.append(voxel_down(np.concatenate(acc), voxel))
            acc = []
    if acc:
        chunks.append(voxel_down(np.concatenate(acc), voxel))
    return voxel_down(np.concatenate(chunks), voxel)


def read_map(path: Path) -> np.ndarray:
    import open3d as o3d

    return np.asarray(o3d.io.read_point_cloud(str(path)).points, dtype=np.float64)


def map_accuracy(est_gt_frame: np.ndarray, truth: np.ndarray) -> dict:
    """Accuracy (map -> truth) and completeness (truth -> map), cm."""
    from scipy.spatial import cKDTree

    if len(est_gt_frame) == 0:
        return {"error": "empty map"}
    d_acc, _ = cKDTree(truth).query(est_gt_frame, workers=-1)
    d_comp, _ = cKDTree(est_gt_frame).query(truth, workers=-1)
    return {"accuracy_mean_cm": 100 * float(d_acc.mean()), "accuracy_median_cm": 100 * float(np.median(d_acc)),
            "completeness_mean_cm": 100 * float(d_comp.mean()), "completeness_median_cm": 100 * float(np.median(d_comp)),
            "map_points": int(len(est_gt_frame)), "true_points": int(len(truth))}


# ---------------------------------------------------------------- grid
def true_grid(seq_dir: Path, n_frames: int, resolution: float):
    """The grid code fed with exact depth and poses (z-up world, floor at z = 0), as scripts/grid_figure.py."""
    from loger_core.io.image_folder import ImageFolderSequence
    from loger_core.mapping.grid import GridConfig, OccupancyGrid2D

    seq = ImageFolderSequence(seq_dir)
    grid = OccupancyGrid2D(GridConfig(resolution=resolution))
    for i in range(min(n_frames, len(seq))):
        f = seq[i]
        pts = backproject(f)
        T = f.T_world_cam
        grid.insert(pts[:, :2], pts[:, 2], T[:2, 3], float(T[2, 3]))
    return grid.snapshot()


def _cells(snap, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Values of `snap` at map points (x, y) (-1 outside)."""
    from loger_core.mapping.grid import UNKNOWN

    col = np.floor((x - snap.origin[0]) / snap.resolution + 1e-9).astype(np.int64)
    row = np.floor((y - snap.origin[1]) / snap.resolution + 1e-9).astype(np.int64)
    inside = (row >= 0) & (row < snap.height) & (col >= 0) & (col < snap.width)
    out = np.full(x.shape, UNKNOWN, np.int8)
    out[inside] = snap.data[row[inside], col[inside]]
    return out


def grid_iou(truth, run_dir: Path, T_align: np.ndarray, band_mid_m: float) -> dict:
    """IoU of occupied cells on the true grid's lattice (see the module docstring)."""
    from scipy.ndimage import binary_dilation

    from loger_core.mapping.grid import OCCUPIED

    info = json.loads((run_dir / "grid.json").read_text()) if (run_dir / "grid.json").is_file() else {}
    if not info.get("written"):
        return {"error": "no grid written: " + str(info.get("reason", "grid.json missing"))}
    est = load_map_server(run_dir / "map.yaml")
    T_world_ground = np.asarray(info["T_world_ground"], np.float64)
    # ground (run) -> est world -> gt world: T_align @ T_world_ground.
    T_gt_ground = np.asarray(T_align, np.float64) @ T_world_ground
    # The lattice: the true grid, grown to hold the run's occupied cells too.
    r = truth.resolution
    er, ec = np.nonzero(est.data == OCCUPIED)
    ex = est.origin[0] + (ec + 0.5) * est.resolution
    ey = est.origin[1] + (er + 0.5) * est.resolution
    band = 0.5 * (0.1 + 1.5)  # mid obstacle band in the run's units (GridConfig defaults)
    p = np.stack([ex, ey, np.full_like(ex, band)], 1) @ T_gt_ground[:3, :3].T + T_gt_ground[:3, 3]
    x0, y0 = truth.origin
    x1, y1 = x0 + truth.width * r, y0 + truth.height * r
    if len(p):
        x0, y0 = min(x0, p[:, 0].min() - r), min(y0, p[:, 1].min() - r)
        x1, y1 = max(x1, p[:, 0].max() + r), max(y1, p[:, 1].max() + r)
    # Snap to the true grid's cell boundaries.
    x0 = truth.origin[0] + math.floor((x0 - truth.origin[0]) / r) * r
    y0 = truth.origin[1] + math.floor((y0 - truth.origin[1]) / r) * r
    nx, ny = int(math.ceil((x1 - x0) / r)), int(math.ceil((y1 - y0) / r))
    if nx * ny > 40_000_000:
        return {"error": f"aligned grids span {nx} x {ny} cells (the estimate is far off)"}
    xs = x0 + (np.arange(nx) + 0.5) * r
    ys = y0 + (np.arange(ny) + 0.5) * r
    X, Y = np.meshgrid(xs, ys)
    gt_occ = _cells(truth, X, Y) == OCCUPIED
    # True cell centres at mid band -> the run's floor frame.
    T_ground_gt = np.linalg.inv(T_gt_ground)
    q = np.stack([X.ravel(), Y.ravel(), np.full(X.size, band_mid_m)], 1) @ T_ground_gt[:3, :3].T + T_ground_gt[:3, 3]
    est_occ = (_cells(est, q[:, 0], q[:, 1]) == OCCUPIED).reshape(X.shape)
    inter, union = int((gt_occ & est_occ).sum()), int((gt_occ | est_occ).sum())
    gd, ed = binary_dilation(gt_occ), binary_dilation(est_occ)
    inter_d, union_d = int((gd & ed).sum()), int((gd | ed).sum())
    return {"iou": inter / union if union else float("nan"), "iou_dilated": inter_d / union_d if union_d else float("nan"),
            "occupied_true": int(gt_occ.sum()), "occupied_run": int(est_occ.sum()), "resolution_m": r,
            "run_resolution_units": est.resolution, "run_resolution_m": est.resolution * float(np.cbrt(abs(np.linalg.det(T_align[:3, :3]))))}


def band_iou(est_gt_frame: np.ndarray, truth: np.ndarray, resolution: float, band=(0.1, 1.5)) -> dict:
    """IoU of 2D occupancy from points in the obstacle band (ground-truth frame, z up, metres): the
    aligned map's points against the true surfaces, rasterised on one lattice. Unlike the run's grid
    (built in the network's units: its height band, range and cell are in those units, about a third
    of a metre each with the bundled model), this is at the true scale."""
    from scipy.ndimage import binary_dilation

    e = est_gt_frame[(est_gt_frame[:, 2] > band[0]) & (est_gt_frame[:, 2] < band[1]), :2]
    t = truth[(truth[:, 2] > band[0]) & (truth[:, 2] < band[1]), :2]
    if not len(e) or not len(t):
        return {"error": f"no points in the band ({len(e)} map, {len(t)} true)"}
    lo = np.minimum(e.min(0), t.min(0))
    hi = np.maximum(e.max(0), t.max(0))
    shape = tuple((np.floor((hi - lo) / resolution).astype(int) + 1)[::-1])
    if shape[0] * shape[1] > 40_000_000:
        return {"error": f"map spans {shape} cells"}

    def raster(p):
        g = np.zeros(shape, bool)
        ij = np.floor((p - lo) / resolution).astype(int)
        g[ij[:, 1], ij[:, 0]] = True
        return g

    ge, gt = raster(e), raster(t)
    inter, union = int((ge & gt).sum()), int((ge | gt).sum())
    de, dt = binary_dilation(ge), binary_dilation(gt)
    return {"iou": inter / union, "iou_dilated": int((de & dt).sum()) / int((de | dt).sum()),
            "occupied_true": int(gt.sum()), "occupied_run": int(ge.sum()), "resolution_m": resolution,
            "band_m": list(band)}


# ---------------------------------------------------------------- plot
def plot_case(path: Path, case: Case, truth: Optional[np.ndarray], gt_pos: np.ndarray, runs: dict, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a, b = (0, 1) if case.plane == "xy" else (0, 2)
    rng = np.random.default_rng(0)

    def sub(p):
        return p[rng.choice(len(p), PLOT_POINTS, replace=False)] if len(p) > PLOT_POINTS else p

    panels = [("ground truth (obstacle band 0.1-2 m)" if case.plane == "xy" and truth is not None else "ground truth", truth, gt_pos, None)]
    for key in ("off", "on"):
        r = runs.get(key) or {}
        if not r.get("ok") or "T_align" not in r:
            panels.append((f"back end {key}: " + (r.get("error", "no result")[:60] if r else "not run"), None, None, None))
            continue
        T = np.asarray(r["T_align"])
        out = Path(r["out"])
        from loger_core.io.trajectory import read_tum
        est = read_tum(out / "trajectory.tum").poses[:, :3, 3] @ T[:3, :3].T + T[:3, 3]
        pts = read_map(out / "map.ply") if (out / "map.ply").is_file() else np.zeros((0, 3))
        pts = sub(pts) @ T[:3, :3].T + T[:3, 3] if len(pts) else pts
        acc = r.get("map", {})
        extra = (f"\nacc {acc['accuracy_mean_cm']:.1f} / compl {acc['completeness_mean_cm']:.1f} cm"
                 if "accuracy_mean_cm" in acc else "")
        bs = r.get("backend_stats") or {}
        loops = f", {bs.get('loop_closures')} loops" if bs else ""
        panels.append((f"back end {key}: ATE {r['ate_rmse_m']:.3f} m{loops}{extra}", pts, est, gt_pos))
    # Common limits: the true surfaces (or the true path with a margin) for every panel.
    ref = truth if truth is not None and len(truth) else gt_pos
    margin = 0.5 if truth is not None else 10.0
    lo = np.percentile(ref[:, [a, b]], 0.5, axis=0) - margin
    hi = np.percentile(ref[:, [a, b]], 99.5, axis=0) + margin
    lo, hi = np.minimum(lo, gt_pos[:, [a, b]].min(0) - margin), np.maximum(hi, gt_pos[:, [a, b]].max(0) + margin)
    fig = Figure(figsize=(14.0, 5.0), dpi=90)
    FigureCanvasAgg(fig)
    for k, (name, pts, traj, gt) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        if pts is not None and len(pts):
            if case.plane == "xy":  # a floor plan: the obstacle band only (no floor, no ceiling)
                pts = pts[(pts[:, 2] > 0.1) & (pts[:, 2] < 2.0)]
            h = pts[:, 2] if case.plane == "xy" else -pts[:, 1]
            if len(h):
                c_lo, c_hi = np.percentile(h, [2, 98])
                ax.scatter(pts[:, a], pts[:, b], s=0.3, c=np.clip(h, c_lo, c_hi), cmap="viridis", linewidths=0,
                           rasterized=True)
        if gt is not None:
            ax.plot(gt[:, a], gt[:, b], "--", color="k", linewidth=1.0, label="ground truth")
        if traj is not None:
            ax.plot(traj[:, a], traj[:, b], color="tab:red" if k else "k", linewidth=1.2,
                    label="estimate" if k else "ground truth")
            ax.plot(traj[:1, a], traj[:1, b], "o", color="tab:red" if k else "k", markersize=3)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("xyz"[a] + " (m)", fontsize=7)
        ax.set_ylabel("xyz"[b] + " (m)", fontsize=7)
        ax.tick_params(labelsize=7)
        if traj is not None:
            ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


# ---------------------------------------------------------------- table
def fmt(v, spec: str, width: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}s}"
    return f"{v:{width}{spec}}"


def print_table(rows: list[dict]) -> None:
    hdr = (f"{'case':12s} {'frames':>6s} {'path m':>7s} {'ATE m off':>9s} {'on':>7s} {'ATE% off':>8s} {'on':>6s} "
           f"{'RPE° off':>8s} {'on':>7s} {'loops':>5s} {'kf':>4s} {'ms/kf':>6s} {'ms/opt':>7s} {'pnp':>4s} {'ess':>4s} "
           f"{'net':>4s} {'acc cm off':>10s} {'on':>6s} {'cmp cm off':>10s} {'on':>6s} {'IoU off':>7s} {'on':>6s} "
           f"{'bIoU off':>8s} {'on':>6s} {'s off':>6s} {'s on':>6s}")
    print(hdr)
    for row in rows:
        if row.get("skipped"):
            print(f"{row['case']:12s} skipped: {row['skipped']}")
            continue
        off, on = row.get("off") or {}, row.get("on") or {}
        bs = on.get("backend_stats") or {}
        path = row.get("path_m")

        def pct(r):
            v = r.get("ate_rmse_m")
            return 100 * v / path if v is not None and path else None

        print(f"{row['case']:12s} {fmt(row.get('frames'), 'd', 6)} {fmt(path, '.2f', 7)} "
              f"{fmt(off.get('ate_rmse_m'), '.3f', 9)} {fmt(on.get('ate_rmse_m'), '.3f', 7)} "
              f"{fmt(pct(off), '.2f', 8)} {fmt(pct(on), '.2f', 6)} "
              f"{fmt(off.get('rpe_rot_mean_deg'), '.3f', 8)} {fmt(on.get('rpe_rot_mean_deg'), '.3f', 7)} "
              f"{fmt(bs.get('loop_closures'), 'd', 5)} {fmt(bs.get('keyframes'), 'd', 4)} "
              f"{fmt(bs.get('keyframe_ms_mean'), '.1f', 6)} {fmt(bs.get('optimize_ms_mean'), '.1f', 7)} "
              f"{fmt(bs.get('steps_pnp'), 'd', 4)} {fmt(bs.get('steps_essential'), 'd', 4)} "
              f"{fmt(bs.get('steps_network_only'), 'd', 4)} "
              f"{fmt((off.get('map') or {}).get('accuracy_mean_cm'), '.1f', 10)} "
              f"{fmt((on.get('map') or {}).get('accuracy_mean_cm'), '.1f', 6)} "
              f"{fmt((off.get('map') or {}).get('completeness_mean_cm'), '.1f', 10)} "
              f"{fmt((on.get('map') or {}).get('completeness_mean_cm'), '.1f', 6)} "
              f"{fmt((off.get('grid_iou') or {}).get('iou'), '.3f', 7)} {fmt((on.get('grid_iou') or {}).get('iou'), '.3f', 6)} "
              f"{fmt((off.get('band_iou') or {}).get('iou'), '.3f', 8)} {fmt((on.get('band_iou') or {}).get('iou'), '.3f', 6)} "
              f"{fmt(off.get('total_s'), '.0f', 6)} {fmt(on.get('total_s'), '.0f', 6)}")
        for key, r in (("off", off), ("on", on)):
            if r and not r.get("ok"):
                print(f"    back end {key} FAILED: {r.get('error')}")
    print("ATE: Sim(3)-aligned RMSE; RPE: rotation, mean deg/frame; kf / loops / ms: the back-end run; pnp / ess / net: "
          "keyframe steps decided by PnP / essential matrix / the network alone; acc / cmp: mean distance map->truth / "
          "truth->map after the ATE Sim(3); IoU: occupied grid cells vs the grid of the true depth (exact cells; "
          "iou_dilated in the JSON; the run's grid is in network units, see grid_iou.run_resolution_m); bIoU: 2D occupancy "
          "of aligned map points vs true points in the 0.1-1.5 m band (true scale, 5 cm cells); s: wall seconds of "
          "run_reconstruct.")


# ---------------------------------------------------------------- main
def run_case(case: Case, args, cache: Path, runs_dir: Path, out_dir: Path) -> dict:
    from loger_core.io.sequences import open_sequence

    row: dict = {"case": case.name, "scene": case.scene, "trajectory": case.trajectory, "seed": case.seed,
                 "case_frames": case.frames}
    if case.path is not None:
        seq_dir = sequence_dir(case, cache)
        if not seq_dir.is_dir():
            row["skipped"] = f"{seq_dir} not found"
            log(f"[{case.name}] skipped: {row['skipped']}", args.quiet)
            return row
    else:
        seq_dir = render(case, cache, args.quiet)
    row["sequence"] = str(seq_dir)
    n = min(case.frames, args.frames) if args.frames else case.frames
    gt = open_sequence(seq_dir).groundtruth()
    gt_pos = gt.positions[:n]
    row["frames"] = int(len(gt_pos))
    row["path_m"] = float(np.linalg.norm(np.diff(gt_pos, axis=0), axis=1).sum())
    truth = None
    if case.scene is not None:
        t0 = time.perf_counter()
        truth = true_surfaces(seq_dir, n, case.voxel_m)
        row["true_points"] = int(len(truth))
        row["voxel_m"] = case.voxel_m
        log(f"[{case.name}] true surfaces: {len(truth)} points at {case.voxel_m} m ({time.perf_counter() - t0:.1f} s)",
            args.quiet)
    truth_grid = None
    if case.grid_iou:
        from loger_core.mapping.grid import GridConfig

        truth_grid = true_grid(seq_dir, n, GridConfig().resolution)
        row["true_grid_cells"] = truth_grid.counts()
    suffix = f"_f{args.frames}" if args.frames else ""
    global _WARM
    if not _WARM:  # imports, first kernels, the back end's libraries: not in the first timed run
        t0 = time.perf_counter()
        run_once(seq_dir, runs_dir / "warmup", "on", 24, True)
        _WARM = True
        log(f"[{case.name}] warm-up run (24 frames, back end on, discarded): {time.perf_counter() - t0:.1f} s", args.quiet)
    for backend in args.backends:
        out = runs_dir / f"{case.name}{suffix}_{backend}"
        log(f"[{case.name}] back end {backend}: {n} frames -> {out}", args.quiet)
        r = run_once(seq_dir, out, backend, n if args.frames else None, args.quiet)
        if r.get("ok") and "T_align" in r:
            T = np.asarray(r["T_align"], np.float64)
            if truth is not None:
                try:
                    est = voxel_down(read_map(out / "map.ply") @ T[:3, :3].T + T[:3, 3], case.voxel_m)
                    r["map"] = map_accuracy(est, truth)
                    if case.grid_iou:
                        r["band_iou"] = band_iou(est, truth, case.voxel_m)
                except Exception as exc:  # noqa: BLE001
                    r["map"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            if truth_grid is not None:
                try:
                    r["grid_iou"] = grid_iou(truth_grid, out, T, 0.5 * (0.1 + 1.5))
                except Exception as exc:  # noqa: BLE001
                    r["grid_iou"] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if r.get("ate_rmse_m") is not None and row["path_m"]:
            r["ate_pct_path"] = 100 * r["ate_rmse_m"] / row["path_m"]
        status = (f"ATE {r['ate_rmse_m']:.3f} m, RPE {r['rpe_rot_mean_deg']:.3f} deg/frame, {r['total_s']:.0f} s"
                  if r.get("ok") and "ate_rmse_m" in r else f"FAILED: {r.get('error')}")
        log(f"[{case.name}] back end {backend}: {status}", args.quiet)
        if not r.get("ok") and r.get("traceback"):
            log(r["traceback"], args.quiet)
        row[backend] = r
    png = out_dir / f"backend_accuracy_{case.name}{suffix}.png"
    try:
        plot_case(png, case, truth, gt_pos, row,
                  f"{case.name}: {row['frames']} frames, {row['path_m']:.1f} m path (bundled small model, CPU); "
                  f"estimates through the ATE Sim(3)")
        row["png"] = str(png)
    except Exception as exc:  # noqa: BLE001
        row["png_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{case.name}] plot failed: {traceback.format_exc()}", args.quiet)
    return row


def main(argv=None) -> int:
    names = [c.name for c in CASES]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", action="append", choices=names, default=None,
                   help="run this case (repeatable; default: all of " + ", ".join(names) + ")")
    p.add_argument("--frames", type=int, default=0, help="cut every case to its first N frames (0: all; quick runs)")
    p.add_argument("--backends", default="off,on", help="which runs (default off,on)")
    p.add_argument("--cache", default=str(REPO / "out" / "bench_backend"),
                   help="rendered sequences (sequences/) and run outputs (runs/)")
    p.add_argument("--json", default=str(REPO / "bench_results" / "backend_accuracy.json"),
                   help="JSON output; the PNGs go into the same folder")
    p.add_argument("--quiet", action="store_true", help="only the table")
    args = p.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    cases = [c for c in CASES if args.case is None or c.name in args.case]
    cache = Path(args.cache)
    (cache / "sequences").mkdir(parents=True, exist_ok=True)
    runs_dir = cache / "runs"
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    import torch

    result = {"bench": "backend_accuracy", "date": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
              "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "size": SIZE,
              "frames_cut": args.frames or None, "model": "bundled default (no --checkpoint)", "device": "cpu",
              "gt_frame_step": GT_FRAME_STEP, "gt_max_depth_m": GT_MAX_DEPTH_M,
              "cases": [c.__dict__ for c in cases], "rows": []}
    try:
        result["git"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                       check=False).stdout.strip()
    except OSError:
        pass
    t0 = time.perf_counter()
    for case in cases:
        try:
            row = run_case(case, args, cache / "sequences", runs_dir, json_path.parent)
        except Exception as exc:  # noqa: BLE001
            row = {"case": case.name, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            log(f"[{case.name}] FAILED: {row['traceback']}", args.quiet)
        result["rows"].append(row)
        result["seconds"] = time.perf_counter() - t0
        json_path.write_text(json.dumps(result, indent=2, default=float))
    print()
    print_table([r for r in result["rows"] if "error" not in r or "off" in r])
    for r in result["rows"]:
        if "error" in r and "off" not in r:
            print(f"{r['case']}: FAILED {r['error']}")
    print(f"\nwrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
