"""``loger-replay``'s command line, from light imports only: :mod:`loger_ros.entry` parses with it
before the replay (:mod:`loger_ros.replay`: torch, the network, rosbags) is imported, so ``--help``
and argument errors answer at once."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from loger_core.model.selection import MODEL_CHOICES

__all__ = ["build_arg_parser"]


def build_arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="loger-replay",
        description="Replay a rosbag2 (sqlite3/mcap) or ROS 1 bag through the LoGeR mapping core (no ROS needed).")
    ap.add_argument("bag", type=Path, help="rosbag2 directory, .mcap/.db3 inside one, or ROS 1 .bag")
    ap.add_argument("-o", "--out", type=Path, default=None, help="output folder (default: ./<bag name>_loger)")
    ap.add_argument("--topic", default=None, help="image topic (default: the bag's only camera image topic)")
    ap.add_argument("--camera-info-topic", default="auto", help="'auto', 'none' or a CameraInfo topic")
    ap.add_argument("--depth-topic", default="none", help="'none', 'auto' or a depth image topic (metric scale)")
    ap.add_argument("--gt-topic", default="auto", help="'auto', 'none' or a ground-truth pose/odometry/path topic")
    ap.add_argument("--params", type=Path, default=None, help="ROS 2 parameter file (default: config/loger.yaml)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="override one node parameter (repeatable), e.g. -p window_size:=16")
    ap.add_argument("--model", default=None, choices=MODEL_CHOICES,
                    help="model_config (default auto: small with the bundled weights, or the checkpoint's model)")
    ap.add_argument("--checkpoint", default=None,
                    help="checkpoint_path: the authors' latest.pt or a .safetensors file (default: the bundled "
                    "small demo weights, trained on synthetic scenes only)")
    ap.add_argument("--synthetic-weights", action="store_true",
                    help="without a checkpoint, use deterministic untrained weights instead (tests only)")
    ap.add_argument("--device", default=None, help="device (auto, cpu, cuda, ...)")
    ap.add_argument("--dtype", default=None, help="dtype (auto, float32, bfloat16, float16)")
    ap.add_argument("--camera-mount", default=None, metavar="X,Y,Z,ROLL,PITCH,YAW",
                    help="camera mount in base_frame when the bag's /tf_static has none (m, rad; body axes, as the "
                    "launch file's camera_* arguments): base_link poses and the occupancy grid need it")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after this many images")
    ap.add_argument("--backend", choices=("on", "off"), default=None,
                    help="geometric back end (keyframes, verified poses, loop closure, pose graph; default: the "
                    "parameter backend_enabled, on); off: the network's output unchanged")
    ap.add_argument("--no-bag", action="store_true", help="do not write the output rosbag")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output rosbag")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    ap.add_argument("--resume", type=Path, default=None, metavar="SESSION",
                    help="continue the mapping session SESSION (same map frame, trajectory, map and network "
                    "memory); images it already has are skipped. A session that cannot be used is an error")
    ap.add_argument("--session-out", type=Path, default=None, metavar="SESSION",
                    help="write the mapping session at the end of the bag (before the last incomplete window is "
                    "committed) for a later --resume")
    return ap
