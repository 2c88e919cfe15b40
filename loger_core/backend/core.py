"""The back end's logic, one frame at a time (no threads here: :mod:`loger_core.backend.backend` runs
it off the frame path).

Per committed frame: features; two-view geometry against the last keyframe; a new keyframe when the
parallax is large enough or tracking weakens. Per keyframe: the feature-verified relative pose (its
scale from the chain of keyframes anchored to the network's depth) and the network's relative pose,
both as factors weighed by their measured uncertainty; loop candidates verified and checked for
consistency; an iSAM2 step."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from loger_core.backend.config import BackendConfig
from loger_core.backend.features import Features, extract_features
from loger_core.backend.keyframes import FrameInput, Keyframe, local_points, sample_depth
from loger_core.backend.loop_closure import LoopCandidate, consistent, rotation_angle_deg, verify_loop
from loger_core.backend.place import PlaceIndex
from loger_core.backend.pose_graph import PoseGraph
from loger_core.backend.scale import ScaleChain, log_ratio_stats
from loger_core.backend.two_view import TwoView, depth_after, estimate_pnp, estimate_two_view
from loger_core.backend.features import match_features

__all__ = ["BackendCore", "BackendStats", "FrameRecord"]

# Keyframes whose full features are kept for tracking (the newest few); older ones keep their
# place subset only.
_TRACKED_KEYFRAMES = 2


@dataclass
class FrameRecord:
    """Every frame the back end saw: its stamp, the network's pose, and the keyframe it was
    tracked against (for interpolation between optimised keyframes)."""

    stamp_ns: int
    index: int
    T_net: np.ndarray
    keyframe: Optional[int]  # the keyframe it was tracked against, or its own key
    is_keyframe: bool = False


@dataclass
class BackendStats:
    """Counters and timings (seconds) of one run."""

    frames: int = 0
    frames_skipped: int = 0  # not tracked: the worker was behind or resting (cpu_share); poses interpolated
    keyframes: int = 0
    steps_verified: int = 0  # the feature-verified relative pose entered the graph
    steps_pnp: int = 0  # ... by PnP against the previous keyframe's network depth
    steps_essential: int = 0  # ... by the essential matrix, its length from the scale chain
    steps_network_kept: int = 0  # verified, and the network's relative pose agreed with it
    steps_network_corrected: int = 0  # verified, and it disagreed: the verified pose wins the graph
    steps_network_only: int = 0  # not verifiable (few matches): the network's pose alone
    loop_candidates: int = 0
    loop_verified: int = 0
    loop_rejected_consistency: int = 0
    loop_closures: int = 0
    optimizations: int = 0
    frame_s_total: float = 0.0
    keyframe_s_total: float = 0.0
    optimize_s_total: float = 0.0
    optimize_s_max: float = 0.0
    loops: list = field(default_factory=list)  # (old key, new key) accepted

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["loops"] = [list(x) for x in self.loops]
        d["keyframe_ms_mean"] = 1e3 * self.keyframe_s_total / max(self.keyframes, 1)
        d["frame_ms_mean"] = 1e3 * self.frame_s_total / max(self.frames - self.frames_skipped, 1)
        d["optimize_ms_mean"] = 1e3 * self.optimize_s_total / max(self.optimizations, 1)
        return d


@dataclass
class _Tracked:
    """The newest frame tracked against the last keyframe (a keyframe candidate)."""

    frame: FrameInput
    feats: Features
    depth: np.ndarray
    tv: Optional[TwoView]
    pairs: Optional[np.ndarray] = None  # all ratio-test matches to the last keyframe


class BackendCore:
    """Keyframes, the pose graph and loop closure over committed frames (single-threaded)."""

    def __init__(self, cfg: BackendConfig, metric: bool = False, seed: int = 0) -> None:
        self.cfg = cfg
        self.metric = metric
        self.graph = PoseGraph(metric, cfg.robust_kernel, cfg.robust_k)
        self.place = PlaceIndex(seed=seed, mode=cfg.place_descriptor)
        self.chain = ScaleChain(chain_floor=cfg.scale_chain_sigma, network_sigma=cfg.scale_network_sigma)
        self.keyframes: dict[int, Keyframe] = {}
        self.frames: list[FrameRecord] = []
        self.stats = BackendStats()
        self._rng = np.random.default_rng(seed)
        self._last: Optional[_Tracked] = None  # the previous non-keyframe
        self._prev_step: Optional[TwoView] = None  # the step into the last keyframe (for the scale ratio)
        self._pending_loop: Optional[LoopCandidate] = None
        self._last_loop_key: Optional[int] = None
        self._net_rot_err: list[float] = []
        self._net_trans_err: list[float] = []
        self.version = 0  # bumped when an optimisation moved keyframes (loop closures)

    # ------------------------------------------------------------------------------------------
    @property
    def last_key(self) -> Optional[int]:
        return max(self.keyframes) if self.keyframes else None

    def add(self, frame: FrameInput, track: bool = True) -> None:
        """Take one committed frame (in stream order). ``track=False`` records it without tracking
        (the worker is behind); its pose is interpolated."""
        t0 = time.perf_counter()
        self.stats.frames += 1
        if frame.image is None or (not track and self.keyframes):
            self.stats.frames_skipped += 1
            self.frames.append(FrameRecord(frame.stamp_ns, frame.index, np.asarray(frame.T_world_cam), None))
            return
        feats = extract_features(frame.image, self.cfg.feature, self.cfg.max_features, self.cfg.max_image_width,
                                 self.cfg.sift_contrast)
        depth = sample_depth(frame.depth, feats.uv, frame.crop)
        if not self.keyframes:
            self._new_keyframe(_Tracked(frame, feats, depth, None))
        else:
            self._track(_Tracked(frame, feats, depth, None))
        self.stats.frame_s_total += time.perf_counter() - t0

    def _track(self, cur: _Tracked) -> None:
        cfg = self.cfg
        kf = self.keyframes[self.last_key]
        cur.tv = self._two_view(kf, cur)
        weak = self._weak(kf, cur.tv)
        if weak and self._last is not None and self._last.tv is not None:
            # Tracking weakens: the previous frame (still well matched) becomes the keyframe, and
            # this one is tracked against it.
            self._new_keyframe(self._last)
            kf = self.keyframes[self.last_key]
            cur.tv = self._two_view(kf, cur)
            weak = self._weak(kf, cur.tv)
        gap = cur.frame.index - kf.index
        if weak or gap >= cfg.keyframe_max_gap or (cur.tv is not None and cur.tv.parallax_deg >= cfg.keyframe_parallax_deg):
            self._new_keyframe(cur)
        else:
            self.frames.append(FrameRecord(cur.frame.stamp_ns, cur.frame.index, np.asarray(cur.frame.T_world_cam), kf.key))
            self._last = cur

    def _weak(self, kf: Keyframe, tv: Optional[TwoView]) -> bool:
        """Tracking against ``kf`` weakens when the inliers fall below ``keyframe_track_ratio`` of those
        of the first frame tracked against it (relative: a 160x120 image has a tenth of the features
        of a KITTI frame), or below ``min_inliers``."""
        if tv is None:
            return True
        ref = kf.extra.setdefault("ref_inliers", tv.inliers)
        return tv.inliers < max(self.cfg.min_inliers, self.cfg.keyframe_track_ratio * ref)

    def _two_view(self, kf: Keyframe, cur: _Tracked) -> Optional[TwoView]:
        assert kf.feats is not None
        pairs = match_features(kf.feats, cur.feats, self.cfg.ratio)
        cur.pairs = pairs
        tv = estimate_two_view(kf.feats.uv, cur.feats.uv, kf.K, cur.frame.K, pairs, self.cfg.ransac_px, self.cfg.min_inliers)
        if tv is not None and tv.inlier_ratio < self.cfg.min_inlier_ratio:
            return None
        return tv

    # ------------------------------------------------------------------------------------------
    def _new_keyframe(self, cur: _Tracked) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        frame = cur.frame
        key = 0 if not self.keyframes else self.last_key + 1
        prev = self.keyframes.get(key - 1)
        pts, cols, conf = local_points(frame, cfg.keyframe_points, self._rng)
        valid = cur.depth[np.isfinite(cur.depth) & (cur.depth > 0)]
        median_depth = float(np.median(valid)) if valid.size else float("nan")
        place_idx = self._place_subset(cur.feats, cur.depth)
        place = cur.feats.subset(place_idx)
        if place.kind == "sift":
            # OpenCV's SIFT descriptors are integers in 0..255 stored as float: uint8 keeps them
            # exactly at a quarter of the memory.
            place = Features(place.uv, np.clip(place.desc, 0, 255).astype(np.uint8).astype(np.float32), place.kind)
        kf = Keyframe(key=key, index=frame.index, stamp_ns=frame.stamp_ns, T_net=np.asarray(frame.T_world_cam, np.float64),
                      K=np.asarray(frame.K, np.float64), feats=cur.feats, depth_feats=cur.depth, place=place,
                      depth_place=cur.depth[place_idx], points=pts, colors=cols, conf=conf, median_depth=median_depth,
                      descriptor=None if frame.descriptor is None else np.asarray(frame.descriptor, np.float32))
        if prev is None:
            self.graph.add_node(key, kf.T_net, anchor=True)
            self.graph.optimize()
        else:
            self._add_step(prev, kf, cur)
        self.keyframes[key] = kf
        record = FrameRecord(frame.stamp_ns, frame.index, kf.T_net, key, is_keyframe=True)
        if self.frames and self.frames[-1].index == frame.index:
            self.frames[-1] = record  # a tracked frame promoted to keyframe after the fact
        else:
            self.frames.append(record)
        self.stats.keyframes += 1
        for old_key in list(self.keyframes)[:-_TRACKED_KEYFRAMES]:
            self.keyframes[old_key].forget_tracking()
        if self.cfg.loop_closure and self.cfg.place_descriptor != "none":
            self._detect_loop(kf, cur)
            self.place.add(key, place.desc, kf.descriptor)
        self._last = None
        self.stats.keyframe_s_total += time.perf_counter() - t0

    def _place_subset(self, feats: Features, depth: np.ndarray) -> np.ndarray:
        """Indices of at most ``place_features_per_keyframe`` features, those with network depth
        first (loop verification needs depth for the scale)."""
        n = self.cfg.place_features_per_keyframe
        has = np.flatnonzero(np.isfinite(depth) & (depth > 0))
        rest = np.flatnonzero(~(np.isfinite(depth) & (depth > 0)))
        order = np.concatenate([has, rest])
        return np.sort(order[:n])

    def _add_step(self, prev: Keyframe, kf: Keyframe, cur: _Tracked) -> None:
        cfg = self.cfg
        tv = cur.tv
        T_net_prev_kf = np.linalg.inv(prev.T_net) @ kf.T_net  # the network's relative pose
        net_len = float(np.linalg.norm(T_net_prev_kf[:3, 3]))
        T_prev_kf = None
        pnp = None
        if tv is not None and cur.pairs is not None and prev.depth_feats is not None and prev.feats is not None:
            pnp = estimate_pnp(prev.feats.uv, prev.depth_feats, prev.K, cur.feats.uv, cur.frame.K, cur.pairs,
                               cfg.pnp_px, cfg.min_inliers)
            if pnp is not None and pnp.inliers < cfg.pnp_min_inlier_fraction * tv.inliers:
                pnp = None  # the network's depth does not explain the matches here
        if tv is not None:
            # Step length: the ratio to the previous step (the shared keyframe's points triangulated
            # by both) fused with the network's depth (through PnP's translation where PnP holds,
            # else the depth at the triangulated points). The network's depth is taken as it is, not
            # through the chain's q: chaining depth ratios compounds the network's depth bias (a
            # forward drive shrank 50x in 400 frames that way).
            ratio = None
            if self._prev_step is not None:
                common, ib, ia = np.intersect1d(self._prev_step.pairs[:, 1], tv.pairs[:, 0], return_indices=True)
                if common.size >= 8:
                    ratio = log_ratio_stats(self._prev_step.depth_b[ib], tv.depth_a[ia])
                    if ratio is not None:
                        # Small parallax: triangulated depths share the direction's error.
                        ratio = (ratio[0], ratio[1] * max(1.0, cfg.keyframe_parallax_deg / max(tv.parallax_deg, 1e-3)))
            if pnp is not None:
                R = pnp.R
                direction = pnp.t / max(float(np.linalg.norm(pnp.t)), 1e-12)
                network = (float(np.log(max(float(np.linalg.norm(pnp.t)), 1e-12))), cfg.scale_network_sigma)
                self.stats.steps_pnp += 1
            else:
                assert prev.depth_feats is not None
                R, direction = tv.R, tv.t
                network = log_ratio_stats(prev.depth_feats[tv.pairs[:, 0]].astype(np.float64) * prev.q, tv.depth_a)
                if network is not None:
                    # PnP failed its inlier test: the network's depth is poor here, a weak anchor only.
                    network = (network[0], max(network[1], cfg.scale_network_sigma_poor))
                self.stats.steps_essential += 1
            if pnp is not None and cfg.pnp_scale == "pnp":
                s = self.chain.reset(network[0], cfg.scale_network_sigma)
            else:
                s = self.chain.update(ratio, network)
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"keyframe at frame {kf.index}: step length {s!r} from the scale chain")
            T_kf_prev = np.eye(4)
            T_kf_prev[:3, :3] = R
            T_kf_prev[:3, 3] = direction * s
            T_prev_kf = np.linalg.inv(T_kf_prev)
            # q: map units per network unit at the new keyframe, from the same points' depth in it
            # (PnP: the previous keyframe's network depth moved by the step; else triangulated).
            q = None
            if kf.depth_feats is not None and pnp is not None:
                z_moved = depth_after(prev.feats.uv[pnp.pairs[:, 0]], prev.depth_feats[pnp.pairs[:, 0]], prev.K, T_kf_prev)
                q = log_ratio_stats(z_moved, kf.depth_feats[pnp.pairs[:, 1]].astype(np.float64))
            elif kf.depth_feats is not None:
                q = log_ratio_stats(tv.depth_b * s, kf.depth_feats[tv.pairs[:, 1]].astype(np.float64))
            kf.q = float(np.exp(q[0])) if q is not None else prev.q
            self._prev_step = tv
            self._record_network_error(T_net_prev_kf, T_prev_kf, s)
            step = s
        else:
            kf.q = prev.q
            self._prev_step = None
            self.stats.steps_network_only += 1
            step = max(net_len * prev.q, 1e-6)
        # A translation is never known better than a thousandth of the scene depth: tiny steps (a
        # stopped car) would otherwise get sigmas that make the graph numerically singular.
        floor = 1e-3 * (prev.median_depth * prev.q if math.isfinite(prev.median_depth) and prev.median_depth > 0 else 1.0)
        step = max(step if math.isfinite(step) else 0.0, floor / max(cfg.verified_trans_sigma, 1e-9))
        rot_sig, trans_sig = self._network_sigmas()
        T_net_rel = _scaled(T_net_prev_kf, prev.q)
        factors = []
        if T_prev_kf is not None and np.all(np.isfinite(T_prev_kf)):
            factors.append((T_prev_kf, cfg.verified_rot_sigma_deg, cfg.verified_trans_sigma * step, cfg.scale_chain_sigma))
        if np.all(np.isfinite(T_net_rel)):
            factors.append((T_net_rel, rot_sig, trans_sig * step, cfg.scale_network_sigma))
        if not factors:
            raise ValueError(f"keyframe at frame {kf.index}: neither a verified nor a finite network relative pose")
        # Initial value: the verified pose where there is one. Node and factors go in together, so a
        # failure leaves the graph as it was.
        T_w_prev, _ = self.graph.pose(prev.key)
        T_rel = factors[0][0]
        self.graph.add_keyframe(kf.key, T_w_prev @ T_rel, [(prev.key, T, r, t, ls) for T, r, t, ls in factors])
        kf.path_length = prev.path_length + float(np.linalg.norm(T_rel[:3, 3]))
        t0 = time.perf_counter()
        self.graph.optimize()
        self._count_optimize(time.perf_counter() - t0)

    def _record_network_error(self, T_net: np.ndarray, T_verified: np.ndarray, step: float) -> None:
        """How far the network's relative pose is from the verified one: its measured uncertainty."""
        rot_err = rotation_angle_deg(T_net[:3, :3].T @ T_verified[:3, :3])
        trans_err = float(np.linalg.norm(T_net[:3, 3] - T_verified[:3, 3])) / max(step, 1e-9)
        self._net_rot_err.append(rot_err)
        self._net_trans_err.append(trans_err)
        self.stats.steps_verified += 1
        if rot_err <= 1.0 and trans_err <= 0.2:
            self.stats.steps_network_kept += 1
        else:
            self.stats.steps_network_corrected += 1

    def _network_sigmas(self) -> tuple[float, float]:
        """The network factor's sigmas: the configured floor or the RMS disagreement measured so far
        against verified steps, whichever is larger."""
        rot = self.cfg.network_rot_sigma_deg
        trans = self.cfg.network_trans_sigma
        if len(self._net_rot_err) >= 5:
            recent_r = np.asarray(self._net_rot_err[-200:])
            recent_t = np.asarray(self._net_trans_err[-200:])
            rot = max(rot, float(np.sqrt(np.mean(recent_r ** 2))))
            trans = max(trans, float(np.sqrt(np.mean(recent_t ** 2))))
        return rot, trans

    def _count_optimize(self, dt: float) -> None:
        self.stats.optimizations += 1
        self.stats.optimize_s_total += dt
        self.stats.optimize_s_max = max(self.stats.optimize_s_max, dt)

    # ------------------------------------------------------------------------------------------
    def _detect_loop(self, kf: Keyframe, cur: _Tracked) -> None:
        cfg = self.cfg
        if self._last_loop_key is not None and kf.key - self._last_loop_key <= cfg.loop_cooldown_keyframes \
                and self._pending_loop is None:
            # Just closed: the graph already holds this place; more closures of the same revisit
            # cost optimisation time and add little (a hand-held room revisits all the time).
            return
        allowed = {k for k, o in self.keyframes.items() if o.index <= kf.index - cfg.loop_min_age}
        if not allowed:
            self._pending_loop = None
            return
        found: Optional[LoopCandidate] = None
        for old_key, sim in self.place.query(kf.place.desc, allowed, cfg.loop_candidates, token=kf.descriptor):
            self.stats.loop_candidates += 1
            old = self.keyframes[old_key]
            got = verify_loop(cfg, old, cur.feats, kf.K, kf.q, cur.depth)
            if got is None:
                continue
            T_old_new, scale, inliers, ratio = got
            T_w_old, s_old = self.graph.pose(old_key)
            T_w_new, _ = self.graph.pose(kf.key)
            T_w_new_loop = T_w_old @ _scaled(T_old_new, s_old)
            correction = T_w_new_loop @ np.linalg.inv(T_w_new)
            self.stats.loop_verified += 1
            found = LoopCandidate(old_key, kf.key, T_old_new, scale, correction, inliers, ratio, sim)
            break
        if found is None:
            self._pending_loop = None
            return
        prev = self._pending_loop
        span = max(kf.path_length - self.keyframes[found.old].path_length, 1e-9)
        if prev is not None and prev.new == kf.key - 1 and consistent(prev, found, span, cfg.loop_consistency_deg,
                                                                       cfg.loop_consistency_trans):
            self._close(prev)
            self._close(found)
            self._pending_loop = None
        else:
            if prev is not None:
                self.stats.loop_rejected_consistency += 1
            self._pending_loop = found if cfg.loop_consistency > 1 else None
            if cfg.loop_consistency <= 1:
                self._close(found)

    def _close(self, loop: LoopCandidate) -> None:
        if (loop.old, loop.new) in self.stats.loops:
            return
        cfg = self.cfg
        step = float(np.linalg.norm(loop.T_old_new[:3, 3]))
        self.graph.add_between(loop.old, loop.new, loop.T_old_new, cfg.loop_rot_sigma_deg,
                               cfg.loop_trans_sigma * max(step, self.keyframes[loop.old].median_depth * 0.1, 1e-6),
                               scale=loop.scale, log_scale_sigma=cfg.scale_chain_sigma, loop=True)
        t0 = time.perf_counter()
        self.graph.optimize(iterations=10)
        self._count_optimize(time.perf_counter() - t0)
        self.stats.loop_closures += 1
        self.stats.loops.append((loop.old, loop.new))
        self._last_loop_key = loop.new
        self.version += 1

    # ------------------------------------------------------------------------------------------
    def keyframe_poses(self) -> dict[int, tuple[np.ndarray, float]]:
        """key -> (T_world_kf (4, 4), Sim(3) scale) of every keyframe, optimised."""
        return {k: self.graph.pose(k) for k in self.keyframes if self.graph.has(k)}


def _scaled(T: np.ndarray, s: float) -> np.ndarray:
    out = np.array(T, dtype=np.float64, copy=True)
    out[:3, 3] *= s
    return out
