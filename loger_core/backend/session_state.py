"""The back end's part of a mapping session: the keyframe database (features kept for place
recognition and tracking, network depth at them, map points), every frame's record, the scale
chain, the place index, the pose graph's factors and estimate, and what was in flight. A resumed
session continues the same graph, so it can close loops against what was mapped before the restart.

Variable-length per-keyframe arrays are stored concatenated with offsets (safetensors holds flat
tensors)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from loger_core.backend.config import BackendConfig
from loger_core.backend.core import BackendCore, FrameRecord, _Tracked
from loger_core.backend.features import Features
from loger_core.backend.keyframes import FrameInput, Keyframe
from loger_core.backend.loop_closure import LoopCandidate
from loger_core.backend.two_view import TwoView

__all__ = ["BackendStateError", "capture_backend", "pack_ragged", "restore_backend", "unpack_ragged"]

STATE_VERSION = 1


class BackendStateError(ValueError):
    """A back-end session component that cannot be restored (the message says why)."""


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _n(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


def pack_ragged(prefix: str, arrays: list[np.ndarray], tail: tuple, dtype, out: dict) -> None:
    """``arrays`` of shape (n_i, *tail) as one tensor plus offsets (``dtype`` None: the arrays' own,
    e.g. ORB's uint8 descriptors beside SIFT's float32)."""
    out[f"{prefix}.offsets"] = _t(np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64))
    if arrays:
        data = np.concatenate(arrays, axis=0)
    else:
        data = np.zeros((0, *tail), dtype or np.float32)
    out[f"{prefix}.data"] = _t(data if dtype is None else data.astype(dtype, copy=False))


def unpack_ragged(prefix: str, tensors: dict) -> list[np.ndarray]:
    off = _n(tensors[f"{prefix}.offsets"])
    data = _n(tensors[f"{prefix}.data"])
    return [data[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def _descriptor_row(d: Optional[np.ndarray]) -> np.ndarray:
    """(C,) float32 of a descriptor, (0,) for None."""
    return np.zeros(0, np.float32) if d is None else np.asarray(d, np.float32).ravel()


def capture_backend(core: BackendCore) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, meta) of the back end's whole state (copies; call with its worker idle)."""
    keys = sorted(core.keyframes)
    kfs = [core.keyframes[k] for k in keys]
    t: dict[str, torch.Tensor] = {}
    t["kf.T_net"] = _t(np.stack([k.T_net for k in kfs]) if kfs else np.zeros((0, 4, 4)))
    t["kf.K"] = _t(np.stack([k.K for k in kfs]) if kfs else np.zeros((0, 3, 3)))
    t["kf.scalars"] = _t(np.asarray([[k.key, k.index, k.stamp_ns] for k in kfs], np.int64).reshape(-1, 3))
    t["kf.floats"] = _t(np.asarray([[k.q, k.median_depth, k.path_length] for k in kfs], np.float64).reshape(-1, 3))
    pack_ragged("kf.place_uv", [k.place.uv for k in kfs], (2,), np.float32, t)
    pack_ragged("kf.place_desc", [k.place.desc for k in kfs], (128,), None, t)
    pack_ragged("kf.depth_place", [k.depth_place for k in kfs], (), np.float32, t)
    pack_ragged("kf.points", [k.points for k in kfs], (3,), np.float32, t)
    pack_ragged("kf.colors", [k.colors for k in kfs], (3,), np.uint8, t)
    pack_ragged("kf.conf", [k.conf for k in kfs], (), np.float32, t)
    # The network's global descriptors (empty where a keyframe has none); optional on restore, so
    # sessions written before them still load. The token index is rebuilt from them.
    pack_ragged("kf.descriptor", [_descriptor_row(k.descriptor) for k in kfs], (), np.float32, t)
    tracked = [k for k in kfs if k.feats is not None]
    t["kf.tracked_keys"] = _t(np.asarray([k.key for k in tracked], np.int64))
    pack_ragged("kf.feats_uv", [k.feats.uv for k in tracked], (2,), np.float32, t)
    pack_ragged("kf.feats_desc", [k.feats.desc for k in tracked], (128,), None, t)
    pack_ragged("kf.feats_depth", [k.depth_feats for k in tracked], (), np.float32, t)
    fr = core.frames
    t["frames.ints"] = _t(np.asarray([[f.stamp_ns, f.index, -1 if f.keyframe is None else f.keyframe, int(f.is_keyframe)]
                                      for f in fr], np.int64).reshape(-1, 4))
    t["frames.T_net"] = _t(np.stack([f.T_net for f in fr]) if fr else np.zeros((0, 4, 4)))
    t["net_err"] = _t(np.asarray([core._net_rot_err, core._net_trans_err], np.float64).reshape(2, -1))
    g = core.graph
    t["graph.nodes"] = _t(np.asarray([r[1] for r in g.records if r[0] == "node"], np.int64))
    t["graph.node_T"] = _t(np.stack([r[2] for r in g.records if r[0] == "node"]) if g.nodes else np.zeros((0, 4, 4)))
    t["graph.node_anchor"] = _t(np.asarray([int(r[3]) for r in g.records if r[0] == "node"], np.int64))
    between = [r for r in g.records if r[0] == "between"]
    t["graph.between_ab"] = _t(np.asarray([[r[1], r[2], int(r[8])] for r in between], np.int64).reshape(-1, 3))
    t["graph.between_T"] = _t(np.stack([r[3] for r in between]) if between else np.zeros((0, 4, 4)))
    t["graph.between_sig"] = _t(np.asarray([[r[4], r[5], r[6], r[7]] for r in between], np.float64).reshape(-1, 4))
    est = [(k, *g.pose(k)) for k in keys if g.has(k)]
    t["graph.est_keys"] = _t(np.asarray([e[0] for e in est], np.int64))
    t["graph.est_T"] = _t(np.stack([e[1] for e in est]) if est else np.zeros((0, 4, 4)))
    t["graph.est_s"] = _t(np.asarray([e[2] for e in est], np.float64))
    pl = core.place
    if pl.centers is not None:
        t["place.centers"] = _t(pl.centers)
        t["place.keys"] = _t(np.asarray(pl._keys, np.int64))
        t["place.vecs"] = _t(np.stack(pl._vecs) if pl._vecs else np.zeros((0, pl.centers.size), np.float32))
    pack_ragged("place.pending", [d for _, d in pl._pending], (128,), None, t)
    t["place.pending_keys"] = _t(np.asarray([k for k, _ in pl._pending], np.int64))
    ps = core._prev_step
    if ps is not None:
        t["prev_step.Rt"] = _t(np.concatenate([ps.R.ravel(), ps.t.ravel()]))
        t["prev_step.pairs"] = _t(ps.pairs.astype(np.int64))
        t["prev_step.depths"] = _t(np.stack([ps.depth_a, ps.depth_b]))
    last = core._last
    if last is not None:
        f = last.frame
        t["last.T_K"] = _t(np.concatenate([np.asarray(f.T_world_cam, np.float64).ravel(), np.asarray(f.K, np.float64).ravel()]))
        t["last.points"] = _t(np.asarray(f.points, np.float32))
        t["last.colors"] = _t(np.asarray(f.colors, np.uint8))
        t["last.conf"] = _t(np.asarray(f.point_confidence, np.float32))
        t["last.feats_uv"] = _t(last.feats.uv)
        t["last.feats_desc"] = _t(last.feats.desc)
        t["last.depth"] = _t(last.depth.astype(np.float32))
        if f.descriptor is not None:
            t["last.descriptor"] = _t(_descriptor_row(f.descriptor))
        if last.pairs is not None:
            t["last.pairs"] = _t(last.pairs.astype(np.int64))
        if last.tv is not None:
            t["last.tv_Rt"] = _t(np.concatenate([last.tv.R.ravel(), last.tv.t.ravel()]))
            t["last.tv_pairs"] = _t(last.tv.pairs.astype(np.int64))
            t["last.tv_depths"] = _t(np.stack([last.tv.depth_a, last.tv.depth_b]))
    lp = core._pending_loop
    if lp is not None:
        t["pending_loop.T"] = _t(np.stack([lp.T_old_new, lp.correction]))
    meta = {
        "version": STATE_VERSION,
        "metric": core.metric,
        "chain": core.chain.state(),
        "stats": {k: v for k, v in core.stats.__dict__.items() if k != "loops"},
        "loops": [list(x) for x in core.stats.loops],
        "core_version": core.version,
        "last_loop_key": core._last_loop_key,
        "rng": core._rng.bit_generator.state,
        "prev_step": None if ps is None else {"parallax_deg": ps.parallax_deg, "inlier_ratio": ps.inlier_ratio},
        "pending_loop": None if lp is None else {"old": lp.old, "new": lp.new, "scale": lp.scale, "inliers": lp.inliers,
                                                 "inlier_ratio": lp.inlier_ratio, "similarity": lp.similarity},
        "last": None if last is None else {
            "stamp_ns": int(last.frame.stamp_ns), "index": int(last.frame.index), "crop": list(last.frame.crop),
            "tv": None if last.tv is None else {"parallax_deg": last.tv.parallax_deg, "inlier_ratio": last.tv.inlier_ratio}},
        "place": {"k": pl.k, "vocab_keyframes": pl.vocab_keyframes, "seed": pl.seed},
        "feature": core.cfg.feature,
    }
    return t, meta


def restore_backend(cfg: BackendConfig, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                    path: Optional[str] = None) -> BackendCore:
    """A :class:`BackendCore` continuing the captured state; raises BackendStateError when the
    component is of another version or another feature type."""
    where = f"session {path!r}: " if path else ""
    if meta.get("version") != STATE_VERSION:
        raise BackendStateError(f"{where}back-end state version {meta.get('version')!r}, this version reads {STATE_VERSION}")
    if meta.get("feature") != cfg.feature:
        raise BackendStateError(f"{where}back-end features {meta.get('feature')!r}, the configuration uses {cfg.feature!r}")
    core = BackendCore(cfg, metric=bool(meta["metric"]))
    T_net, Ks = _n(tensors["kf.T_net"]), _n(tensors["kf.K"])
    ints, floats = _n(tensors["kf.scalars"]), _n(tensors["kf.floats"])
    uv, desc, dpl = unpack_ragged("kf.place_uv", tensors), unpack_ragged("kf.place_desc", tensors), unpack_ragged("kf.depth_place", tensors)
    pts, cols, conf = unpack_ragged("kf.points", tensors), unpack_ragged("kf.colors", tensors), unpack_ragged("kf.conf", tensors)
    descs = unpack_ragged("kf.descriptor", tensors) if "kf.descriptor.offsets" in tensors else [np.zeros(0)] * len(ints)
    tracked = {int(k): i for i, k in enumerate(_n(tensors["kf.tracked_keys"]))}
    f_uv, f_desc, f_depth = (unpack_ragged("kf.feats_uv", tensors), unpack_ragged("kf.feats_desc", tensors),
                             unpack_ragged("kf.feats_depth", tensors))
    for i in range(len(ints)):
        key, index, stamp = (int(v) for v in ints[i])
        j = tracked.get(key)
        feats = None if j is None else Features(f_uv[j].copy(), f_desc[j].copy(), cfg.feature)
        core.keyframes[key] = Keyframe(
            key=key, index=index, stamp_ns=stamp, T_net=T_net[i].copy(), K=Ks[i].copy(), feats=feats,
            depth_feats=None if j is None else f_depth[j].copy(), place=Features(uv[i].copy(), desc[i].copy(), cfg.feature),
            depth_place=dpl[i].copy(), points=pts[i].copy(), colors=cols[i].copy(), conf=conf[i].copy(),
            median_depth=float(floats[i, 1]), q=float(floats[i, 0]), path_length=float(floats[i, 2]),
            descriptor=descs[i].copy() if len(descs[i]) else None)
    fi, fT = _n(tensors["frames.ints"]), _n(tensors["frames.T_net"])
    core.frames = [FrameRecord(int(a), int(b), fT[n].copy(), None if c < 0 else int(c), bool(d))
                   for n, (a, b, c, d) in enumerate(fi)]
    err = _n(tensors["net_err"])
    core._net_rot_err, core._net_trans_err = list(err[0]), list(err[1])
    g = core.graph
    est = {int(k): (T, float(s)) for k, T, s in zip(_n(tensors["graph.est_keys"]), _n(tensors["graph.est_T"]),
                                                   _n(tensors["graph.est_s"]))}
    for key, T, anchor in zip(_n(tensors["graph.nodes"]), _n(tensors["graph.node_T"]), _n(tensors["graph.node_anchor"])):
        g.add_node(int(key), T, anchor=bool(anchor))
    for (a, b, loop), T, (rot, trans, scale, ls) in zip(_n(tensors["graph.between_ab"]), _n(tensors["graph.between_T"]),
                                                        _n(tensors["graph.between_sig"])):
        g.add_between(int(a), int(b), T, float(rot), float(trans), scale=float(scale), log_scale_sigma=float(ls),
                      loop=bool(loop))
    g.optimize_from(est)
    pl = core.place
    pl.k, pl.vocab_keyframes, pl.seed = int(meta["place"]["k"]), int(meta["place"]["vocab_keyframes"]), int(meta["place"]["seed"])
    if "place.centers" in tensors:
        pl.centers = _n(tensors["place.centers"]).copy()
        pl._keys = [int(k) for k in _n(tensors["place.keys"])]
        pl._vecs = list(_n(tensors["place.vecs"]).copy())
    pl._pending = list(zip((int(k) for k in _n(tensors["place.pending_keys"])),
                           (d.copy() for d in unpack_ragged("place.pending", tensors))))
    if pl.mode in ("tokens", "fusion") and cfg.loop_closure:
        # Every keyframe entered the index as it was made (loop closure on), in key order.
        for key in sorted(core.keyframes):
            if core.keyframes[key].descriptor is not None:
                pl.tokens.add(key, core.keyframes[key].descriptor)
    core.chain.restore(meta["chain"])
    for k, v in meta["stats"].items():
        setattr(core.stats, k, v)
    core.stats.loops = [tuple(x) for x in meta["loops"]]
    core.version = int(meta["core_version"])
    core._last_loop_key = meta.get("last_loop_key")
    core._rng.bit_generator.state = meta["rng"]
    if meta["prev_step"] is not None:
        Rt = _n(tensors["prev_step.Rt"])
        d = _n(tensors["prev_step.depths"])
        core._prev_step = TwoView(R=Rt[:9].reshape(3, 3).copy(), t=Rt[9:].copy(), pairs=_n(tensors["prev_step.pairs"]).copy(),
                                  depth_a=d[0].copy(), depth_b=d[1].copy(), **meta["prev_step"])
    if meta.get("last") is not None:
        m = meta["last"]
        TK = _n(tensors["last.T_K"])
        frame = FrameInput(stamp_ns=m["stamp_ns"], index=m["index"], T_world_cam=TK[:16].reshape(4, 4).copy(),
                           depth=np.zeros((0, 0), np.float32), confidence=np.zeros((0, 0), np.float32),
                           K=TK[16:].reshape(3, 3).copy(), image=None, crop=tuple(m["crop"]),
                           points=_n(tensors["last.points"]).copy(), colors=_n(tensors["last.colors"]).copy(),
                           point_confidence=_n(tensors["last.conf"]).copy(),
                           descriptor=_n(tensors["last.descriptor"]).copy() if "last.descriptor" in tensors else None)
        tv = None
        if m["tv"] is not None:
            Rt, d = _n(tensors["last.tv_Rt"]), _n(tensors["last.tv_depths"])
            tv = TwoView(R=Rt[:9].reshape(3, 3).copy(), t=Rt[9:].copy(), pairs=_n(tensors["last.tv_pairs"]).copy(),
                         depth_a=d[0].copy(), depth_b=d[1].copy(), **m["tv"])
        core._last = _Tracked(frame, Features(_n(tensors["last.feats_uv"]).copy(), _n(tensors["last.feats_desc"]).copy(),
                                              cfg.feature), _n(tensors["last.depth"]).copy(), tv,
                              _n(tensors["last.pairs"]).copy() if "last.pairs" in tensors else None)
    if meta["pending_loop"] is not None:
        m = meta["pending_loop"]
        T = _n(tensors["pending_loop.T"])
        core._pending_loop = LoopCandidate(m["old"], m["new"], T[0].copy(), m["scale"], T[1].copy(), m["inliers"],
                                           m["inlier_ratio"], m["similarity"])
    return core
