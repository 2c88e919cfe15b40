"""``loger-synth``: render a synthetic sequence to an image folder and/or a ROS bag.

Example::

    loger-synth --scene street --trajectory car --frames 2000 --size 320x240 --out /tmp/street --bag mcap

Writes the dataset layout of :mod:`loger_core.io.image_folder` into ``--out`` (unless
``--no-folder``), the bag into ``--out/bag_mcap`` / ``--out/bag_sqlite3`` /
``--out/sequence.bag`` (or ``--bag-out``), and the configuration used into
``--out/synth_config.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Optional, Sequence

from .config import (
    DEPTH_ENCODINGS, IMAGE_ENCODINGS, SCENE_KINDS, STORAGES, TRAJECTORY_KINDS, SceneConfig, SynthConfig, SynthError,
    TrajectoryConfig, parse_size,
)

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loger-synth",
        description="Render a synthetic ground-truth sequence (exact depth and poses) "
        "to an image folder and optionally a ROS bag.",
    )
    p.add_argument("--scene", choices=SCENE_KINDS, default="room")
    p.add_argument("--trajectory", choices=TRAJECTORY_KINDS, default="handheld")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--size", default="320x240", help="WIDTHxHEIGHT (default 320x240)")
    p.add_argument("--fov", type=float, default=70.0, help="horizontal field of view, degrees")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", type=float, default=None, help="mean speed m/s (default per trajectory)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--no-folder", action="store_true", help="do not write the image folder")
    p.add_argument("--depth-format", choices=("png", "npy", "none"), default="png",
                   help="image-folder depth: 16-bit mm PNG, float32 .npy, or none")
    p.add_argument("--bag", choices=STORAGES, default=None, help="also write a bag with this storage")
    p.add_argument("--bag-out", default=None, help="bag path (default inside --out)")
    p.add_argument("--image-encoding", choices=IMAGE_ENCODINGS, default="rgb8")
    p.add_argument("--bag-depth", choices=("none",) + DEPTH_ENCODINGS, default="none",
                   help="also put depth images in the bag")
    p.add_argument("--world-frame", default="map")
    p.add_argument("--camera-frame", default="camera_optical_frame")
    p.add_argument("--base-frame", default="base_link",
                   help="robot body frame (z up): the bag's /tf_static holds the camera mount base_frame -> "
                   "camera_frame the renderer used, /tf the pose world_frame -> base_frame")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads while rendering (default 1: fastest for these small ops)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _default_bag_path(out: Path, storage: str) -> Path:
    return out / ("sequence.bag" if storage == "ros1" else f"bag_{storage}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing: --help and bad arguments must not wait for torch, cv2 and rosbags.
    from tqdm import tqdm

    from loger_core.io.errors import ImageFolderError
    from loger_core.io.image_folder_writer import ImageFolderWriter

    from .rosbag_writer import BagTopics, RosbagWriter
    from .sequence import generate_sequence
    from .trajectories import camera_mount

    try:
        width, height = parse_size(args.size)
        cfg = SynthConfig(
            scene=args.scene,
            trajectory=args.trajectory,
            frames=args.frames,
            width=width,
            height=height,
            fov_deg=args.fov,
            fps=args.fps,
            seed=args.seed,
            scene_config=SceneConfig(),
            trajectory_config=TrajectoryConfig(speed_mps=args.speed),
        )
        if args.no_folder and args.bag is None:
            raise SynthError("--no-folder without --bag would write nothing")
        if args.threads < 1:
            raise SynthError(f"--threads must be >= 1, got {args.threads}")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise SynthError(f"--out {str(out)!r} exists and is not a folder")
        topics = BagTopics(world_frame=args.world_frame, camera_frame=args.camera_frame, base_frame=args.base_frame)
        with ExitStack() as stack:
            writers = []
            if not args.no_folder:
                depth_format = None if args.depth_format == "none" else args.depth_format
                writers.append(stack.enter_context(ImageFolderWriter(out, depth_format=depth_format, fps=cfg.fps)))
            bag_path = None
            if args.bag is not None:
                bag_path = Path(args.bag_out) if args.bag_out else _default_bag_path(out, args.bag)
                writers.append(
                    stack.enter_context(
                        RosbagWriter(
                            bag_path,
                            storage=args.bag,
                            image_encoding=args.image_encoding,
                            with_depth=args.bag_depth != "none",
                            depth_encoding=args.bag_depth if args.bag_depth != "none" else "16UC1",
                            topics=topics,
                            T_base_cam=camera_mount(cfg.trajectory, cfg.trajectory_config),
                        )
                    )
                )
            frames = generate_sequence(cfg, device=args.device, threads=args.threads)
            for frame in tqdm(frames, total=cfg.frames, unit="frame", disable=args.quiet, desc="loger-synth"):
                for w in writers:
                    w.add(frame)
        out.mkdir(parents=True, exist_ok=True)
        (out / "synth_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")
    except (SynthError, ImageFolderError) as exc:
        # Bad values, not bad syntax: the reason alone, without the usage text.
        parser.exit(2, f"loger-synth: error: {exc}\n")
    except OSError as exc:  # e.g. a folder that cannot be created there
        parser.exit(2, f"loger-synth: error: --out {str(args.out)!r}: {exc.strerror or exc}\n")
    if not args.quiet:
        where = [str(out)] if not args.no_folder else []
        if bag_path is not None:
            where.append(str(bag_path))
        print(f"loger-synth: wrote {cfg.frames} frames to {', '.join(where)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
