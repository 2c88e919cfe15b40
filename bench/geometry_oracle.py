#!/usr/bin/env python3
"""Is a window's motion visible at the network's input size? Classical two-view geometry as a
reference for the trained model (not a test).

For each window of the held-out 256-frame sequences (room / corridor x handheld / ground robot,
`--seeds`), OpenCV matches SIFT features between the window's first and last frame, fits an essential
matrix (RANSAC) with the true intrinsics and recovers the relative pose; the window counts as
"direction right" when the recovered camera displacement points within 90 deg of the true one, the
same test as `heldout_eval.py`'s "dir %" for the network. Also reported: the median angle between
the recovered and the true displacement, and how many windows had too few matches to try. Run at
several input sizes (`--sizes`) it says whether the motion inside one window is there to be seen at
112x84, which the network's 55% "dir %" leaves open.

    python bench/geometry_oracle.py --seeds 5000-5004 --sizes 112x84,224x168 --out /tmp/oracle.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.model.windowing import window_schedule  # noqa: E402
from loger_core.synthetic import intrinsics_from_fov  # noqa: E402
from loger_core.training.data import downsampled_intrinsics  # noqa: E402
from loger_core.training.heldout import HeldOutCase, render_case  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_eval import seed_cases  # noqa: E402

MIN_MATCHES = 8
SUPERSAMPLE = 2  # rendered at twice the size and box-filtered, as the held-out evaluation does


def two_view_displacement(img_a: np.ndarray, img_b: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """Unit displacement of camera b seen from camera a `(3,)` (OpenCV frame), or None.

    img_a, img_b: (H, W) uint8 grey images; K: (3, 3) intrinsics of both."""
    sift = cv2.SIFT_create()
    ka, da = sift.detectAndCompute(img_a, None)
    kb, db = sift.detectAndCompute(img_b, None)
    if da is None or db is None or len(ka) < MIN_MATCHES or len(kb) < MIN_MATCHES:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < MIN_MATCHES:
        return None
    pa = np.float64([ka[m.queryIdx].pt for m in good])
    pb = np.float64([kb[m.trainIdx].pt for m in good])
    E, inliers = cv2.findEssentialMat(pa, pb, K, method=cv2.RANSAC, prob=0.999, threshold=0.5)
    if E is None or E.shape != (3, 3):
        return None
    _, R, t, _ = cv2.recoverPose(E, pa, pb, K, mask=inliers)
    # recoverPose: x_b = R x_a + t, so camera b's centre in frame a is -R^T t.
    c = -(R.T @ t).ravel()
    return c / max(np.linalg.norm(c), 1e-12)


def evaluate(case: HeldOutCase, width: int, height: int, window: int, overlap: int) -> dict:
    images, gt = render_case(case, width, height, supersample=SUPERSAMPLE)
    # The renderer's camera at the rendered size, then at the box-filtered one.
    K = downsampled_intrinsics(intrinsics_from_fov(SUPERSAMPLE * width, SUPERSAMPLE * height, case.fov_deg), SUPERSAMPLE)
    grey = [cv2.cvtColor((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
            for img in images]
    right, angles, failed = [], [], 0
    for start, end in window_schedule(len(grey), window, overlap):
        t_true = (np.linalg.inv(gt[start]) @ gt[end - 1])[:3, 3]
        if np.linalg.norm(t_true) < 1e-6:
            continue
        c = two_view_displacement(grey[start], grey[end - 1], K)
        if c is None:
            failed += 1
            right.append(0.0)  # no answer counts as wrong, as a motionless network window does
            continue
        cos = float(np.dot(c, t_true) / np.linalg.norm(t_true))
        right.append(float(cos > 0))
        angles.append(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))))
    return {"case": case.name, "size": f"{width}x{height}", "windows": len(right),
            "direction_pct": 100.0 * float(np.mean(right)) if right else float("nan"),
            "median_angle_deg": float(np.median(angles)) if angles else float("nan"), "no_answer": failed}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="5000-5004")
    p.add_argument("--sizes", default="112x84,224x168")
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = []
    print(f"{'case':34s} {'size':>8s} {'windows':>7s} {'dir %':>6s} {'median angle':>12s} {'no answer':>9s}")
    for case in seed_cases(args.seeds):
        for size in args.sizes.split(","):
            w, h = (int(v) for v in size.split("x"))
            row = evaluate(case, w, h, args.window, args.overlap)
            rows.append(row)
            print(f"{row['case']:34s} {row['size']:>8s} {row['windows']:7d} {row['direction_pct']:6.1f} "
                  f"{row['median_angle_deg']:12.1f} {row['no_answer']:9d}", flush=True)
    summary = []
    print(f"\n{'size':>8s} {'cases':>5s} {'mean dir %':>10s} {'median angle':>12s} {'no answer':>9s}")
    for size in args.sizes.split(","):
        sel = [r for r in rows if r["size"] == size]
        s = {"size": size, "cases": len(sel), "mean_direction_pct": round(float(np.mean([r["direction_pct"] for r in sel])), 2),
             "median_angle_deg": round(float(np.nanmedian([r["median_angle_deg"] for r in sel])), 2),
             "no_answer": int(sum(r["no_answer"] for r in sel))}
        summary.append(s)
        print(f"{size:>8s} {s['cases']:5d} {s['mean_direction_pct']:10.1f} {s['median_angle_deg']:12.1f} {s['no_answer']:9d}")
    if args.out:
        Path(args.out).write_text(json.dumps({"seeds": args.seeds, "window": args.window, "overlap": args.overlap,
                                              "summary": summary, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
