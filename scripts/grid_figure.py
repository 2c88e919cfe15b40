"""The README's occupancy grid picture: the demo run's grid beside the grid of its ground truth.

Left: ``map.pgm``/``map.yaml`` that ``scripts/demo.sh`` (``loger-reconstruct``) wrote, read back as
``nav2_map_server`` would, with the estimated trajectory in the same floor frame (``grid.json``).
Right: the same grid code fed with the sequence's exact depth and poses (z-up world, floor at z = 0):
what the grid looks like when the network is right.

    bash scripts/demo.sh && .venv/bin/python scripts/grid_figure.py out/demo --out docs/grid_demo.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.mapping.occupancy_grid import FREE, OCCUPIED, GridConfig, GridSnapshot, OccupancyGrid2D  # noqa: E402
from loger_core.io.image_folder import ImageFolderSequence  # noqa: E402
from loger_core.io.trajectory import read_tum  # noqa: E402
from loger_core.mapping.grid_files import load_map_server  # noqa: E402


def ground_truth_grid(sequence: Path, resolution: float) -> tuple[GridSnapshot, np.ndarray]:
    seq = ImageFolderSequence(sequence)
    grid = OccupancyGrid2D(GridConfig(resolution=resolution))
    gt = seq.groundtruth()
    for frame, T in zip(seq, gt.poses):
        h, w = frame.depth.shape
        u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
        ok = np.isfinite(frame.depth) & (frame.depth > 0)
        z = frame.depth[ok].astype(np.float64)
        K = frame.K
        cam = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * z, (v[ok] - K[1, 2]) / K[1, 1] * z, z], axis=1)
        pts = cam @ T[:3, :3].T + T[:3, 3]
        grid.insert(pts[:, :2], pts[:, 2], T[:2, 3], float(T[2, 3]))
    return grid.snapshot(), gt.poses[:, :2, 3]


def draw(ax, snap: GridSnapshot, traj: np.ndarray, title: str) -> None:
    shade = np.full(snap.data.shape, 0.75)
    shade[snap.data == FREE] = 1.0
    shade[snap.data == OCCUPIED] = 0.0
    x0, y0 = snap.origin
    ax.imshow(shade, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest",
              extent=(x0, x0 + snap.width * snap.resolution, y0, y0 + snap.height * snap.resolution))
    ax.plot(traj[:, 0], traj[:, 1], color="tab:red", linewidth=1.2)
    ax.plot(traj[:1, 0], traj[:1, 1], "o", color="tab:red", markersize=3)
    c = snap.counts()
    ax.set_title(f"{title}\n{c['occupied']} occupied / {c['free']} free cells ({snap.resolution:g} m)", fontsize=8)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo", type=Path, help="the demo folder (sequence/ and result/), e.g. out/demo")
    ap.add_argument("--out", type=Path, default=Path("docs/grid_demo.png"))
    args = ap.parse_args(argv)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    result = args.demo / "result"
    demo = load_map_server(result / "map.yaml")
    T_world_ground = np.asarray(json.loads((result / "grid.json").read_text())["T_world_ground"])
    est = read_tum(result / "trajectory.tum").poses[:, :3, 3]
    T = np.linalg.inv(T_world_ground)
    est_ground = est @ T[:3, :3].T + T[:3, 3]
    truth, gt_xy = ground_truth_grid(args.demo / "sequence", demo.resolution)

    fig = Figure(figsize=(8.0, 4.0), dpi=90)
    FigureCanvasAgg(fig)
    draw(fig.add_subplot(121), demo, est_ground[:, :2], "demo run (bundled small model + back end): map.pgm, floor frame")
    draw(fig.add_subplot(122), truth, gt_xy, "same sequence, exact depth and poses: world frame")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    # A palette PNG keeps the README picture small.
    Image.open(args.out).convert("RGB").quantize(colors=32).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
