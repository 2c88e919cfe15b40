"""``loger-reconstruct``'s command line, from light imports only: :mod:`loger_core.cli.entry` parses
with it before the reconstruction (:mod:`loger_core.cli.reconstruct`: torch, the network, open3d,
cv2) is imported, so ``--help`` and argument errors answer at once."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from loger_core.mapping.grid import GridConfig
from loger_core.model.selection import MODEL_CHOICES

__all__ = ["AUTO_VOXEL_FRACTION", "DTYPE_NAMES", "build_parser"]

# Names of loger_core.stream.config.DTYPES (a dict of torch dtypes; a test keeps them equal).
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# Automatic voxel size: this fraction of the first committed frame's median depth.
AUTO_VOXEL_FRACTION = 0.01


def _resolution(text: str):
    if text == "auto":
        return "auto"
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"resolution must be WIDTHxHEIGHT (e.g. 504x280) or 'auto', got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loger-reconstruct",
        description="Reconstruct an image folder or video with the LoGeR network, frame by frame; "
        "write trajectory.tum, map.ply, top_view.png, run.json and (with ground truth) metrics.json.",
    )
    p.add_argument("input", help="image folder (dataset / TUM layout or plain images) or video file")
    p.add_argument("--out", default=None, help="output folder (created; default ./<input name>_loger)")
    p.add_argument("--model", choices=MODEL_CHOICES, default="auto",
                   help="network (default auto: small with the bundled weights, or the checkpoint's model; "
                   "loger / loger_star need --checkpoint)")
    p.add_argument("--config", dest="model", choices=MODEL_CHOICES, help=argparse.SUPPRESS)  # old name of --model
    p.add_argument("--checkpoint", default=None,
                   help="authors' latest.pt or a .safetensors file (default: the bundled small demo weights, "
                   "trained on synthetic scenes only)")
    p.add_argument("--synthetic-weights", action="store_true",
                   help="without --checkpoint, run deterministic untrained weights instead (tests only)")
    p.add_argument("--allow-pickle", action="store_true", help="trust a checkpoint holding Python objects")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default auto)")
    p.add_argument("--dtype", choices=("auto", *DTYPE_NAMES), default="auto",
                   help="compute precision (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--resolution", type=_resolution, default=None,
                   help="network input WxH (multiples of 14) or 'auto' (authors' pixel-budget rule); default: "
                   "the model's (small/small_deep/tiny: auto with a 10k-pixel budget, 112x84 for 4:3; loger/loger_star: 504x280)")
    p.add_argument("--pixel-limit", type=int, default=None, help="pixel budget of the 'auto' resolution rule")
    p.add_argument("--resize-mode", choices=("resize", "crop"), default="resize",
                   help="resize: stretch to the resolution (authors); crop: centre-crop to its aspect first")
    p.add_argument("--window", type=int, default=None, help="frames per window (default: the model's, "
                   "small/small_deep/tiny 16, loger/loger_star 32)")
    p.add_argument("--overlap", type=int, default=None, help="frames shared by consecutive windows (default 3)")
    p.add_argument("--reset-every", type=int, default=0, help="reset TTT memory every N windows (0: never)")
    p.add_argument("--alignment", choices=("none", "se3", "sim3"), default=None,
                   help="window alignment (default: the model's, se3 for loger_star)")
    p.add_argument("--sim3-scale-mode", default="median")
    p.add_argument("--conf-threshold", type=float, default=0.0, help="min point confidence (probability)")
    p.add_argument("--conf-percentile", type=float, default=20.0,
                   help="drop each frame's least confident percent of points (default 20, as the authors' demo)")
    p.add_argument("--no-known-intrinsics", action="store_true",
                   help="ignore the input's intrinsics (report those implied by the predicted points)")
    p.add_argument("--scale-source", choices=("none", "depth", "fixed"), default="none",
                   help="metric scale: none (model scale), depth (input depth images), fixed (--scale-factor)")
    p.add_argument("--scale-factor", type=float, default=1.0, help="factor of --scale-source fixed")
    p.add_argument("--voxel-size", default="auto",
                   help=f"map voxel edge in output units, or 'auto' ({AUTO_VOXEL_FRACTION:g} x the first frame's median depth)")
    p.add_argument("--max-map-points", type=int, default=2_000_000)
    p.add_argument("--eval-align", choices=("sim3", "se3", "none"), default="sim3",
                   help="alignment of the estimate to the ground truth for metrics (default sim3)")
    p.add_argument("--fps", type=float, default=None, help="frame rate for stamps when the input has none")
    p.add_argument("--groundtruth", default=None, metavar="FILE", help="camera ground truth for metrics.json, TUM "
                   "or KITTI poses (detected), replacing the input's own")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    p.add_argument("--no-grid", action="store_true", help="do not build the 2D occupancy grid (map.pgm/map.yaml)")
    defaults = GridConfig()
    p.add_argument("--grid-resolution", type=float, default=defaults.resolution, help="grid cell edge (output units)")
    p.add_argument("--grid-min-height", type=float, default=defaults.min_height,
                   help="bottom of the obstacle band above the floor (lower points are floor)")
    p.add_argument("--grid-max-height", type=float, default=defaults.max_height,
                   help="top of the obstacle band above the floor (higher points are not obstacles)")
    p.add_argument("--grid-max-range", type=float, default=defaults.max_range,
                   help="points farther than this from the camera are not put in the grid")
    p.add_argument("--backend", choices=("on", "off"), default="on",
                   help="geometric back end (default on): keyframes, feature-verified relative poses, loop closure "
                   "and a pose graph correct the network's trajectory and map; off: the network's output unchanged")
    p.add_argument("--loop-closure", choices=("on", "off"), default="on", help="back end loop closure (default on)")
    p.add_argument("--backend-param", action="append", default=[], metavar="NAME=VALUE",
                   help="set one back-end setting (repeatable; the fields of loger_core.backend.BackendConfig, "
                   "e.g. keyframe_parallax_deg=1.5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--resume", default=None, metavar="SESSION",
                   help="continue the mapping session SESSION (memory, map, trajectory); input frames it already "
                   "has are skipped. A session of another model or with other window settings is refused")
    p.add_argument("--session-out", default=None, metavar="SESSION",
                   help="write the mapping session after the last frame (before the final incomplete window is "
                   "committed) for a later --resume")
    return p
