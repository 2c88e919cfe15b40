"""How the back end's cost grows with the length of a run: time per frame, per keyframe and per
optimisation, loop candidates, and the process's memory, by quarter of a long synthetic sequence.

The network is left out (its cost does not depend on the back end): rendered frames with their
exact depth play the network's depth, and their exact poses with a slow heading drift play its poses.

    python bench/backend_scaling.py --frames 3000 --size 160x120 --json bench_results/backend_scaling.json

Prints a table and writes JSON. Not a test.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from loger_core.backend import BackendConfig, GeometricBackend  # noqa: E402
from loger_core.synthetic import SynthConfig  # noqa: E402
from loger_core.synthetic.sequence import generate_sequence  # noqa: E402
from test_backend_pipeline import _inputs  # noqa: E402  (frame inputs from rendered frames)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--scene", default="room")
    ap.add_argument("--seed", type=int, default=5021)
    ap.add_argument("--json", default="bench_results/backend_scaling.json")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = SynthConfig(scene=args.scene, trajectory="handheld", frames=args.frames, width=w, height=h, fps=15, seed=args.seed)
    be = GeometricBackend(BackendConfig(threaded=False))
    quarter = max(1, args.frames // 4)
    rows, t_frames, stats_prev = [], 0.0, be.stats()
    rss0 = _rss_mib()
    yaw = np.radians(0.05)
    drift = np.eye(4)
    prev_T = None
    for i, frame in enumerate(generate_sequence(cfg, device="cpu")):
        T = frame.T_world_cam
        if prev_T is not None:
            R = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
            step = np.linalg.inv(prev_T) @ T
            step[:3, :3] = R @ step[:3, :3]
            drift = drift @ step
        else:
            drift = T.copy()
        prev_T = T
        fi = _inputs([frame], drift[None])[0]
        fi.index = i
        t0 = time.perf_counter()
        be.submit(fi)
        t_frames += time.perf_counter() - t0
        if (i + 1) % quarter == 0:
            s = be.stats()
            kf = s["keyframes"] - stats_prev["keyframes"]
            rows.append({
                "frames": i + 1, "keyframes": s["keyframes"], "loop_closures": s["loop_closures"],
                "ms_per_frame": 1e3 * t_frames / quarter,
                "ms_per_keyframe": 1e3 * (s["keyframe_s_total"] - stats_prev["keyframe_s_total"]) / max(kf, 1),
                "ms_per_optimisation": 1e3 * (s["optimize_s_total"] - stats_prev["optimize_s_total"])
                / max(s["optimizations"] - stats_prev["optimizations"], 1),
                "loop_candidates": s["loop_candidates"] - stats_prev["loop_candidates"],
                "max_rss_mib": _rss_mib(), "rss_growth_mib": _rss_mib() - rss0,
            })
            stats_prev, t_frames = s, 0.0
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": vars(args), "rows": rows, "stats": be.stats()}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
