#!/usr/bin/env python3
"""Place recognition for loop closure: VLAD over SIFT against the network's own encoder-token
descriptor and their rank fusion (issue 27; not a test).

Per case (held-out synthetic sequences with exact poses, rendered by ``bench/backend_accuracy.py``
into ``out/bench_backend/sequences/`` and reused):

1. the stream runs once with the bundled ``small`` model on the CPU, exactly as ``loger-reconstruct``
   configures it (back end off); each committed frame's pose, depth, confidence, intrinsics and
   encoder-token descriptor are cached in ``out/bench_place/<case>.npz`` (reused: ``--fresh`` redoes);
2. retrieval: every 5th frame is a keyframe-like query against every 5th frame at least
   ``loop_min_age`` frames older. A database frame is a true revisit when its true camera centre is
   within the case's radius and its viewing direction within 30 deg of the query's. P@1: share of
   queries whose best match is a true revisit (queries without one count as misses: aliasing);
   R@1 / R@3: share of queries that have a true revisit with one among the best 1 / 3;
   R@P100: the recall reached, taking queries by decreasing best similarity, before the first false
   best match (the loop-closure operating point: no wrong candidate above the threshold; not for
   the fusion, whose score is a rank within one query's database).
   VLAD is built as the back end builds it (the keyframe's 300 place features, depth-bearing first;
   32 words from the first 8 database frames); 'tokens (untrained)' is the same descriptor from
   deterministic random weights (``synthetic_weights``), as a floor: untrained tokens mean nothing;
3. end to end: the back end (inline) over the cached frames and the original images for each
   ``place_descriptor``: loops accepted; false closures (two different places joined: the accepted
   loop's measured relative pose is off the true one by more than 10 deg or twice the case's radius,
   its translation scaled to metres by the old keyframe's graph scale and the ATE Sim(3) scale);
   imprecise closures (the right place, but off by more than 5 deg or the radius); ATE (Sim(3) RMSE).

    .venv/bin/python bench/place_recognition.py                    # loop, room_1024, corridor
    .venv/bin/python bench/place_recognition.py --case loop --no-backend

Writes ``docs/place_recognition.json`` (``--json PATH``).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backend_accuracy import CASES as ACCURACY_CASES, render  # noqa: E402


@dataclass(frozen=True)
class Place:
    case: str  # a case of bench/backend_accuracy.py
    radius_m: float  # a true revisit: camera centres this close ...
    max_deg: float = 30.0  # ... and viewing directions this close


# Radii by the scene's scale: a car's 130 m block, a 1024-frame hand-held room, a corridor walk
# (no true revisit: every retrieval is aliasing, repeated doors).
PLACES = [Place("loop", 5.0), Place("room", 0.5), Place("room_1024", 0.5), Place("corridor", 1.0)]
QUERY_STEP = 5
DESCRIPTORS = ("vlad", "tokens", "fusion")


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- the network, cached
def network_outputs(seq_dir: Path, cache: Path, fresh: bool) -> dict:
    """Per committed frame: stamp, index, T_world_cam, depth, confidence, K, descriptor (arrays
    stacked over frames), from one stream run configured as ``loger-reconstruct`` does."""
    if cache.is_file() and not fresh:
        return dict(np.load(cache))
    from loger_core.cli.reconstruct import _selection, _stream_config
    from loger_core.cli.reconstruct_args import build_parser
    from loger_core.io.image_folder import ImageFolderSequence
    from loger_core.stream import StreamingReconstructor

    args = build_parser().parse_args([str(seq_dir), "--out", str(cache.parent), "--device", "cpu", "--backend", "off"])
    cfg = _stream_config(args, _selection(args))
    rec = StreamingReconstructor(cfg)
    seq = ImageFolderSequence(seq_dir)
    results = []
    t0 = time.perf_counter()
    for frame in seq:
        results += [r for r in rec.push(frame.rgb, frame.stamp_ns, K=frame.K) if not r.provisional]
    results += [r for r in rec.flush() if not r.provisional]
    out = {"stamp_ns": np.asarray([r.stamp_ns for r in results], np.int64),
           "index": np.asarray([r.index for r in results], np.int64),
           "T": np.stack([r.T_world_cam for r in results]), "depth": np.stack([r.depth for r in results]),
           "confidence": np.stack([r.confidence for r in results]), "K": np.stack([r.K for r in results]),
           "descriptor": np.stack([r.descriptor for r in results]),
           "intrinsics_known": np.asarray([r.intrinsics_known for r in results]),
           "network_s": np.asarray(time.perf_counter() - t0)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def untrained_descriptors(seq, frames: np.ndarray, model_size: tuple[int, int]) -> np.ndarray:
    """(len(frames), C) the encoder-token descriptor of ``small`` with deterministic random weights."""
    import torch

    from loger_core.model import build_model
    from loger_core.model.descriptor import encoder_descriptors
    from loger_core.model.synthetic_weights import fill_deterministic_
    from loger_core.stream.preprocess import prepare_image

    model = fill_deterministic_(build_model("small", device="meta")).to("cpu").eval()
    rgb = torch.from_numpy(np.stack([prepare_image(seq[int(i)].rgb, model_size).rgb for i in frames]))
    return encoder_descriptors(model, rgb).numpy()


# ---------------------------------------------------------------- retrieval
def revisits(gt: np.ndarray, place: Place) -> np.ndarray:
    """(N, N) bool: frame j is a true revisit of frame i (centres and viewing directions close)."""
    c, z = gt[:, :3, 3], gt[:, :3, 2]
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
    ang = np.degrees(np.arccos(np.clip(z @ z.T, -1.0, 1.0)))
    return (dist < place.radius_m) & (ang < place.max_deg)


def vlad_descriptors(seq, net: dict, frames: np.ndarray) -> tuple[np.ndarray, dict]:
    """VLAD of each frame's place features as the back end makes them; returns (scores (F, F), info)."""
    from loger_core.backend.config import BackendConfig
    from loger_core.backend.features import extract_features
    from loger_core.backend.keyframes import sample_depth
    from loger_core.backend.place import PlaceIndex, vlad

    cfg = BackendConfig(threaded=False)
    index = PlaceIndex(seed=0, mode="vlad")
    descs = []
    for i in frames:
        img = seq[int(i)].rgb
        feats = extract_features(img, cfg.feature, cfg.max_features, cfg.max_image_width, cfg.sift_contrast)
        H, W = img.shape[:2]
        depth = sample_depth(net["depth"][i], feats.uv, (0, 0, W, H))
        has = np.isfinite(depth) & (depth > 0)
        keep = np.sort(np.concatenate([np.flatnonzero(has), np.flatnonzero(~has)])[:cfg.place_features_per_keyframe])
        d = np.clip(feats.desc[keep], 0, 255).astype(np.uint8).astype(np.float32)
        descs.append(d)
        if index.centers is None:
            index.add(int(i), d)  # the vocabulary: from the first 8 frames, as the back end learns it
    V = np.stack([vlad(d, index.centers) for d in descs])
    return V @ V.T, {"k": index.k, "vocab_frames": index.vocab_keyframes}


def cosine(D: np.ndarray) -> np.ndarray:
    D = D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)
    return D @ D.T


def retrieval(scores: np.ndarray, frames: np.ndarray, truth: np.ndarray, min_age: int, fused_with=None) -> dict:
    """Retrieval metrics of ``scores`` (F, F) over frames ``frames`` (F,) (see the module docstring).
    ``fused_with``: a second (F, F) score matrix; rank by the mean of both rankings."""
    from loger_core.backend.place_tokens import fuse_rankings

    n_q = pos = p1 = r1 = r3 = 0
    tops = []
    for qi, q in enumerate(frames):
        db = np.flatnonzero(frames <= q - min_age)
        if not len(db):
            continue
        if fused_with is None:
            order = db[np.argsort(-scores[qi, db], kind="stable")]
            best = float(scores[qi, order[0]])
        else:
            keys, fused = fuse_rankings((db, scores[qi, db]), (db, fused_with[qi, db]), None)
            order = keys[np.argsort(-fused, kind="stable")]
            best = float(fused.max())
        good = truth[q, frames[order]]
        n_q += 1
        p1 += bool(good[0])
        tops.append((best, bool(good[0])))
        if good.any():
            pos += 1
            r1 += bool(good[0])
            r3 += bool(good[:3].any())
    rp = 0
    for _, hit in sorted(tops, key=lambda t: -t[0]):
        if not hit:
            break
        rp += 1
    nan = float("nan")
    # A fused score is a rank within one query's database: no threshold across queries, no R@P100.
    return {"queries": n_q, "positives": pos, "P@1": p1 / n_q if n_q else nan, "R@1": r1 / pos if pos else nan,
            "R@3": r3 / pos if pos else nan, "R@P100": rp / pos if pos and fused_with is None else nan}


# ---------------------------------------------------------------- end to end
def backend_run(seq, net: dict, mode: str, gt: np.ndarray, place: Place) -> dict:
    from loger_core.backend import BackendConfig, GeometricBackend
    from loger_core.backend.keyframes import FrameInput
    from loger_core.backend.loop_closure import rotation_angle_deg
    from loger_core.eval.metrics import compute_ate

    cfg = BackendConfig(threaded=False, max_queue=0, place_descriptor=mode)
    be = GeometricBackend(cfg)
    t0 = time.perf_counter()
    empty3 = np.zeros((0, 3), np.float32)
    for n in range(len(net["index"])):
        img = seq[int(net["index"][n])].rgb
        H, W = img.shape[:2]
        be.submit(FrameInput(stamp_ns=int(net["stamp_ns"][n]), index=int(net["index"][n]), T_world_cam=net["T"][n],
                             depth=net["depth"][n], confidence=net["confidence"][n], K=net["K"][n], image=img,
                             crop=(0, 0, W, H), points=empty3, colors=np.zeros((0, 3), np.uint8),
                             point_confidence=np.zeros(0, np.float32), descriptor=net["descriptor"][n]))
    be.finalize()
    seconds = time.perf_counter() - t0
    _, est = be.poses()
    gt_f = gt[net["index"]]
    ate = compute_ate(est, gt_f, align="sim3")
    core = be.core
    loops = []
    for rec in core.graph.records:
        if rec[0] != "between" or not rec[8]:
            continue
        a, b, T_meas = rec[1], rec[2], np.asarray(rec[3])
        ia, ib = core.keyframes[a].index, core.keyframes[b].index
        T_true = np.linalg.inv(gt[ia]) @ gt[ib]
        _, s_old = core.graph.pose(a)
        rot_err = rotation_angle_deg(T_meas[:3, :3].T @ T_true[:3, :3])
        trans_err = float(np.linalg.norm(T_meas[:3, 3] * s_old * ate.scale - T_true[:3, 3]))
        false = rot_err > 10.0 or trans_err > 2.0 * place.radius_m
        imprecise = not false and (rot_err > 5.0 or trans_err > place.radius_m)
        loops.append({"old_frame": int(ia), "new_frame": int(ib), "rot_err_deg": rot_err, "trans_err_m": trans_err,
                      "true_distance_m": float(np.linalg.norm(T_true[:3, 3])), "false": bool(false),
                      "imprecise": bool(imprecise)})
    st = be.stats()
    be.close()
    return {"ate_rmse_m": float(ate.rmse), "loop_closures": st["loop_closures"], "false_closures": sum(l["false"] for l in loops),
            "imprecise_closures": sum(l["imprecise"] for l in loops),
            "max_rot_err_deg": max((l["rot_err_deg"] for l in loops), default=None),
            "max_trans_err_m": max((l["trans_err_m"] for l in loops), default=None),
            "loop_candidates": st["loop_candidates"], "loop_verified": st["loop_verified"], "keyframes": st["keyframes"],
            "seconds": seconds, "loops": loops}


# ---------------------------------------------------------------- main
def fmt(v, spec: str, width: int) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return f"{'-':>{width}s}"
    return f"{v:{width}{spec}}"


def run_case(place: Place, args) -> dict:
    from loger_core.io.image_folder import ImageFolderSequence

    case = next(c for c in ACCURACY_CASES if c.name == place.case)
    seq_dir = render(case, REPO / "out" / "bench_backend" / "sequences", quiet=False)
    net = network_outputs(seq_dir, REPO / "out" / "bench_place" / f"{case.name}.npz", args.fresh)
    seq = ImageFolderSequence(seq_dir, load_depth=False)  # images only (the true depth is not needed)
    gt = np.stack(seq._frame_poses)  # (N, 4, 4) every frame's true T_world_cam (synthetic: all known)
    truth = revisits(gt, place)
    frames = net["index"][::QUERY_STEP]
    slot = {int(i): n for n, i in enumerate(net["index"])}
    min_age = 60  # BackendConfig.loop_min_age
    row = {"case": case.name, "frames": int(len(net["index"])), "seed": case.seed, "radius_m": place.radius_m,
           "max_deg": place.max_deg, "network_s": float(net["network_s"]), "descriptor_dim": int(net["descriptor"].shape[1])}
    t0 = time.perf_counter()
    s_vlad, vinfo = vlad_descriptors(seq, net, frames)
    s_tok = cosine(net["descriptor"][[slot[int(i)] for i in frames]])
    h, w = net["depth"].shape[1:]
    s_rand = cosine(untrained_descriptors(seq, frames, (w, h)))
    row["retrieval"] = {"vlad": retrieval(s_vlad, frames, truth, min_age), "tokens": retrieval(s_tok, frames, truth, min_age),
                        "fusion": retrieval(s_vlad, frames, truth, min_age, fused_with=s_tok),
                        "tokens (untrained)": retrieval(s_rand, frames, truth, min_age)}
    row["vlad"] = vinfo
    row["retrieval_s"] = time.perf_counter() - t0
    if not args.no_backend:
        row["backend"] = {}
        for mode in args.descriptor:
            log(f"[{case.name}] back end, place_descriptor={mode}")
            row["backend"][mode] = backend_run(seq, net, mode, gt, place)
    from loger_core.eval.metrics import compute_ate
    row["network_ate_rmse_m"] = float(compute_ate(net["T"], gt[net["index"]], align="sim3").rmse)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\n{'case':10s} {'descriptor':20s} {'queries':>7s} {'pos':>4s} {'P@1':>5s} {'R@1':>5s} {'R@3':>5s} {'R@P100':>6s}"
          f" {'loops':>5s} {'false':>5s} {'impr.':>5s} {'ATE m':>7s} {'net ATE':>7s}")
    for row in rows:
        for name, r in row["retrieval"].items():
            b = (row.get("backend") or {}).get(name) or {}
            print(f"{row['case']:10s} {name:20s} {r['queries']:7d} {r['positives']:4d} {fmt(r['P@1'], '.2f', 5)} "
                  f"{fmt(r['R@1'], '.2f', 5)} {fmt(r['R@3'], '.2f', 5)} {fmt(r['R@P100'], '.2f', 6)} "
                  f"{fmt(b.get('loop_closures'), 'd', 5)} {fmt(b.get('false_closures'), 'd', 5)} "
                  f"{fmt(b.get('imprecise_closures'), 'd', 5)} "
                  f"{fmt(b.get('ate_rmse_m'), '.3f', 7)} {fmt(row.get('network_ate_rmse_m'), '.3f', 7)}")
    print("pos: queries with a true revisit in the database; R@P100: recall before the first false best match; "
          "loops / false / impr. / ATE: the back end end to end (inline) with that place_descriptor (false: two places "
          "joined, > 10 deg or 2x radius off; impr.: > 5 deg or the radius); net ATE: the network alone.")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", action="append", choices=[p.case for p in PLACES], help="repeatable; default all")
    ap.add_argument("--descriptor", action="append", choices=DESCRIPTORS, help="back-end runs (default all)")
    ap.add_argument("--no-backend", action="store_true", help="retrieval only")
    ap.add_argument("--fresh", action="store_true", help="run the network again (ignore the cache)")
    ap.add_argument("--json", default=str(REPO / "docs" / "place_recognition.json"))
    args = ap.parse_args(argv)
    args.descriptor = args.descriptor or list(DESCRIPTORS)
    rows = []
    for place in PLACES:
        if args.case and place.case not in args.case:
            continue
        t0 = time.perf_counter()
        rows.append(run_case(place, args))
        log(f"[{place.case}] {time.perf_counter() - t0:.0f} s")
    print_table(rows)
    record = {"bench": "place_recognition", "date": time.strftime("%Y-%m-%d"), "host": platform.node(),
              "python": platform.python_version(), "model": "small (bundled weights, CPU)", "query_step": QUERY_STEP,
              "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
