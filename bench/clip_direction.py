#!/usr/bin/env python3
"""Does the network get a window's motion right on training-like clips, and does the node's path agree?

Cuts clips from a fresh pool of `SyntheticClipSource` (a seed of your choice; the default is one no
training run drew) exactly as training does, and runs each clip twice: through the trainer's
`forward_clip` (all windows, memory carried) and through `heldout.run_poses`, the window-by-window
path the node and `heldout_eval.py` take. Per window it compares the first-to-last displacement seen
from the first camera with the truth. Printed per checkpoint (not a test):

- dir %: windows whose estimated displacement points within 90 deg of the true one (50% = chance),
  for both paths (they must agree; a gap would be a bug between training and inference);
- cos: mean cosine between the two displacements (0 = no relation);
- trans: the training loss's translation term relative to the clip's own motion
  (`translation_norm="motion"`): 1.0 is what predicting no motion at all costs;
- rot deg / points: the rotation and points terms.

    python bench/clip_direction.py --checkpoint loger_core/weights/small_synthetic.safetensors
    python bench/clip_direction.py --checkpoint A.safetensors --window 2 --windows 1 --overlap 0 --strides 8
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.model import load_checkpoint  # noqa: E402
from loger_core.model.state import MemoryOptions  # noqa: E402
from loger_core.training.data import ClipBatch, ClipDataConfig, SyntheticClipSource  # noqa: E402
from loger_core.training.heldout import direction_agreement, run_poses  # noqa: E402
from loger_core.training.losses import LossWeights, clip_losses  # noqa: E402
from loger_core.training.train import forward_clip  # noqa: E402


@torch.no_grad()
def evaluate(checkpoint: str, batches: list[ClipBatch]) -> dict:
    model = load_checkpoint(checkpoint)
    weights = LossWeights(translation_norm="motion")
    train_dir, train_cos, stream_dir, terms = [], [], [], []
    max_gap = 0.0
    for batch in batches:
        pred, idx = forward_clip(model, batch)
        t = clip_losses(pred.local_points, pred.conf, pred.camera_poses, batch.local_points[:, idx],
                        batch.poses[:, idx], batch.valid[:, idx], weights)
        terms.append((float(t.translation), math.degrees(float(t.rotation)), float(t.points)))
        est, truth = pred.camera_poses.double().numpy(), batch.poses[:, idx].double().numpy()
        offset = 0
        for start, end in batch.windows:
            n = end - start
            for b in range(est.shape[0]):
                a = direction_agreement(est[b, offset:offset + n], truth[b, offset:offset + n])
                if a is not None:
                    train_dir.append(a[0])
                    train_cos.append(a[1])
            offset += n
        options = MemoryOptions(window_size=batch.window_size, overlap_size=batch.overlap_size)
        for b in range(batch.images.shape[0]):
            windows: list = []
            run_poses(model, batch.images[b], options, windows=windows)
            for k, (start, end, poses) in enumerate(windows):
                p = poses.numpy()
                a = direction_agreement(p, batch.poses[b, start:end].double().numpy())
                if a is not None:
                    stream_dir.append(a[0])
                # The same window through the trainer's path: poses must match up to float noise.
                ref = est[b, k * batch.window_size:(k + 1) * batch.window_size]
                if ref.shape == p.shape:
                    max_gap = max(max_gap, float(np.abs(ref - p).max()))
    tr = np.asarray(terms)
    return {"checkpoint": checkpoint, "windows": len(train_dir),
            "train_path_direction_pct": 100.0 * float(np.mean(train_dir)),
            "stream_path_direction_pct": 100.0 * float(np.mean(stream_dir)),
            "mean_cos": float(np.mean(train_cos)), "max_pose_gap_between_paths": max_gap,
            "translation_vs_motion": float(tr[:, 0].mean()), "rotation_deg": float(tr[:, 1].mean()),
            "points": float(tr[:, 2].mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", required=True)
    p.add_argument("--scenes", default="room,corridor")
    p.add_argument("--trajectories", default="handheld,ground_robot,car")
    p.add_argument("--strides", default="1", help="frame strides, e.g. 1,2")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--windows", type=int, default=3, help="windows per clip (memory carried between them)")
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=12)
    p.add_argument("--sequences", type=int, default=48,
                   help="pool sequences the clips are cut from (clips of one sequence are alike: use many)")
    p.add_argument("--sequence-frames", type=int, default=0, help="frames per sequence (0: the shortest that fits)")
    p.add_argument("--seed", type=int, default=91731, help="data seed (default: one no training run drew)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench_results/clip_direction.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    strides = tuple(int(s) for s in args.strides.split(","))
    span = ((args.window + (args.windows - 1) * (args.window - args.overlap)) - 1) * max(strides) + 1
    cfg = ClipDataConfig(scenes=tuple(args.scenes.split(",")), trajectories=tuple(args.trajectories.split(",")),
                         fov_deg=(50.0, 90.0), window_sizes=(args.window,), windows_per_clip=(args.windows,),
                         overlap_size=args.overlap, frame_strides=strides, pool_size=args.sequences,
                         sequence_frames=max(args.sequence_frames, span), refresh_every=0,
                         batch_size=args.batch_size, seed=args.seed, randomize=True)
    source = SyntheticClipSource(cfg)
    batches = [source.next_batch() for _ in range(args.batches)]  # every checkpoint sees the same clips
    rows = [evaluate(c, batches) for c in args.checkpoint]
    print(f"\n{args.scenes}, windows {args.window} x {args.windows} (overlap {args.overlap}), strides {args.strides}, seed {args.seed}")
    print(f"{'dir % train':>11} {'dir % node':>10} {'cos':>6} {'trans/motion':>12} {'rot deg':>8} {'points':>7} {'n':>4}  checkpoint")
    for r in rows:
        print(f"{r['train_path_direction_pct']:11.1f} {r['stream_path_direction_pct']:10.1f} {r['mean_cos']:6.2f} "
              f"{r['translation_vs_motion']:12.3f} {r['rotation_deg']:8.2f} {r['points']:7.3f} {r['windows']:4d}  {r['checkpoint']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "data": cfg.to_dict(), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
