"""Windowing / alignment / map geometry of the stream, independent of learned weights.

A test double of the network returns the synthetic renderer's ground-truth depth and poses, each
window expressed in its own random similarity (or rigid) frame. The stream must undo those
frames with its window alignment and recover the true trajectory and scene.
"""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from loger_core.eval.metrics import compute_ate
from loger_core.mapping.voxel_map import MapConfig, VoxelMap
from loger_core.model.prediction import WindowPrediction, transform_points
from loger_core.model.state import MemoryState
from loger_core.stream import StreamConfig, StreamingReconstructor, prepare_image
from loger_core.synthetic import SynthConfig, render_frames
from loger_core.synthetic.camera import camera_rays

W, H = 84, 56
N_FRAMES = 17


@pytest.fixture(scope="module")
def synth():
    return render_frames(SynthConfig(scene="room", frames=N_FRAMES, width=W, height=H, fps=8, seed=3), device="cpu")


def _key(image_chw: torch.Tensor) -> bytes:
    u8 = (image_chw * 255.0).round().to(torch.uint8).cpu().numpy()
    return hashlib.sha1(u8.tobytes()).digest()


class GroundTruthNetwork:
    """Implements the reconstructor's model interface with ground truth.

    Each window gets a random frame, drawn from a generator seeded by the window's first frame (so
    a provisional and the committed pass of a window agree, as a deterministic network's would):
    rotation, translation and (if `similarity`) a scale in [0.3, 3]; the window's poses and points
    are expressed in it. `nan_on` makes the
    window containing that frame index return NaN poses (a failing network).
    """

    def __init__(self, frames, similarity: bool = True, seed: int = 0, nan_on: int | None = None, conf_logit: float = 3.0):
        self.cfg = SimpleNamespace(patch_size=14, se3=False)
        self.similarity = similarity
        self.seed = seed
        self.nan_on = nan_on
        self.conf_logit = conf_logit
        self.calls: list[tuple[list[int], bool]] = []
        self.index = {}
        self.local = []
        self.poses = []
        for i, f in enumerate(frames):
            self.index[_key(prepare_image(f.rgb, (W, H)).tensor)] = i
            rays = camera_rays(f.K, W, H)
            self.local.append(torch.from_numpy((rays * f.depth[..., None]).astype(np.float32)))
            self.poses.append(torch.from_numpy(f.T_world_cam.astype(np.float32)))

    def init_state(self) -> MemoryState:
        return MemoryState.empty(0, 0)

    def forward_window(self, images, state, options, commit=True, anchor_frames=None):
        state = state if state is not None else self.init_state()
        ids = [self.index[_key(img)] for img in images[0]]
        self.calls.append((ids, commit))
        rng = np.random.default_rng([self.seed, ids[0]])
        s = float(rng.uniform(0.3, 3.0)) if self.similarity else 1.0
        R = torch.from_numpy(Rotation.random(random_state=rng).as_matrix().astype(np.float32))
        t = torch.from_numpy(rng.uniform(-5, 5, 3).astype(np.float32))
        poses = torch.stack([self.poses[i] for i in ids]).clone()
        poses[:, :3, 3] = s * poses[:, :3, 3] @ R.T + t
        poses[:, :3, :3] = R @ poses[:, :3, :3]
        local = s * torch.stack([self.local[i] for i in ids])
        if self.nan_on is not None and self.nan_on in ids:
            poses[:] = float("nan")
        local, poses = local.unsqueeze(0), poses.unsqueeze(0)
        conf = torch.full(local.shape[:-1] + (1,), self.conf_logit)
        pred = WindowPrediction(local, conf, poses, transform_points(poses, local))
        if not commit:
            return pred, state
        return pred, MemoryState([], [], window_index=state.window_index + 1, frames_seen=state.frames_seen + len(ids))


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=5, overlap_size=2, conf_percentile=0.0)
    base.update(kw)
    return StreamConfig(**base)


def _stream(frames, net, cfg):
    rec = StreamingReconstructor(cfg, model=net)
    out = []
    for f in frames:
        out.extend(rec.push(f.rgb, f.stamp_ns))
    out.extend(rec.flush())
    return rec, out


def _gt(frames, results):
    by_stamp = {f.stamp_ns: f for f in frames}
    return np.stack([by_stamp[r.stamp_ns].T_world_cam for r in results])


@pytest.mark.parametrize("alignment,similarity", [("sim3", True), ("se3", False)])
def test_stream_recovers_true_trajectory_and_scene(synth, alignment, similarity):
    net = GroundTruthNetwork(synth, similarity=similarity, seed=1)
    rec, results = _stream(synth, net, _config(alignment=alignment))
    assert [r.index for r in results] == list(range(N_FRAMES))
    assert not any(r.provisional for r in results)
    est = np.stack([r.T_world_cam for r in results])
    gt = _gt(synth, results)
    ate = compute_ate(est, gt, align="sim3" if similarity else "se3")
    extent = np.ptp(gt[:, :3, 3], axis=0).max()
    assert extent > 0.5  # the camera really moves
    assert ate.rmse < 1e-4 * max(1.0, extent)
    # Rotations agree too, after the same alignment.
    R_align = ate.T_align[:3, :3] / ate.scale
    rot_err = [np.linalg.norm(R_align @ e[:3, :3] - g[:3, :3]) for e, g in zip(est, gt)]
    assert max(rot_err) < 1e-4

    # The fused map, mapped into the ground-truth frame, lies on the scene's surfaces.
    vmap = VoxelMap(MapConfig(voxel_size=0.05))
    for r in results:
        vmap.insert(r.points, r.colors, r.point_confidence, sensor_origin=r.position)
    pts, _, _ = vmap.snapshot()
    pts_gt_frame = (ate.scale * ate.T_align[:3, :3] / ate.scale @ pts.T.astype(np.float64)).T + ate.T_align[:3, 3]
    scene = np.concatenate([
        (f.T_world_cam[:3, :3] @ (camera_rays(f.K, W, H) * f.depth[..., None]).reshape(-1, 3).T).T + f.T_world_cam[:3, 3]
        for f in synth
    ])
    dist, _ = cKDTree(scene).query(pts_gt_frame)
    assert len(pts) > 1000
    # A voxel's mean point lies inside its voxel: within one voxel diagonal of a surface point.
    assert dist.max() < 0.05 * np.sqrt(3)
    # ... and the map covers the scene that was seen (every surface point near some voxel).
    back, _ = cKDTree(pts_gt_frame).query(scene[:: 7])
    assert np.percentile(back, 99) < 0.05 * np.sqrt(3)


def test_without_alignment_random_window_frames_are_not_recovered(synth):
    """The check above can fail: with alignment off the random window frames remain."""
    net = GroundTruthNetwork(synth, similarity=False, seed=1)
    _, results = _stream(synth, net, _config(alignment="none"))
    est = np.stack([r.T_world_cam for r in results])
    assert compute_ate(est, _gt(synth, results), align="se3").rmse > 0.1


def test_intrinsics_of_the_ground_truth_points_are_the_camera_intrinsics(synth):
    net = GroundTruthNetwork(synth, similarity=True, seed=2)
    _, results = _stream(synth[:6], net, _config(alignment="sim3"))
    for r in results:
        np.testing.assert_allclose(r.K, synth[0].K, rtol=1e-4, atol=1e-3)
        assert not r.intrinsics_known


def test_nan_window_is_dropped_and_stream_continues_with_memory(synth):
    # Windows (5 frames, overlap 2): [0, 5), [3, 8), [6, 11), ... Frame 5 makes window [3, 8) fail.
    net = GroundTruthNetwork(synth, similarity=True, seed=4, nan_on=5)
    rec = StreamingReconstructor(_config(alignment="sim3"), model=net)
    results = []
    for f in synth[:7]:
        results.extend(rec.push(f.rgb, f.stamp_ns))
    state_before = rec.memory_state
    assert state_before.window_index == 1
    assert rec.push(synth[7].rgb, synth[7].stamp_ns) == []
    assert rec.stats.windows_dropped_nonfinite == 1
    assert rec.memory_state is state_before
    for f in synth[8:]:
        results.extend(rec.push(f.rgb, f.stamp_ns))
    results.extend(rec.flush())
    # Its new frames 5..7 are lost; 3, 4 (the previous window's tail) stay and are re-predicted
    # by the next window, which continued from the last good memory and alignment.
    assert rec.stats.frames_dropped_nonfinite == 3
    assert [r.index for r in results] == [i for i in range(N_FRAMES) if i not in (5, 6, 7)]
    assert net.calls[2][0] == [3, 4, 8, 9, 10]
    assert rec.memory_state.window_index == len([c for c in net.calls if c[1]]) - 1
    est = np.stack([r.T_world_cam for r in results])
    assert compute_ate(est, _gt(synth, results), align="sim3").rmse < 1e-4


def test_model_exception_propagates_and_the_stream_stays_usable(synth):
    class FailsOnce(GroundTruthNetwork):
        failed = False

        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            if not self.failed and len(self.calls) == 1:
                self.failed = True
                self.calls.append(([], commit))
                raise RuntimeError("CUDA out of memory (simulated)")
            return super().forward_window(images, state, options, commit)

    net = FailsOnce(synth, seed=9)
    rec = StreamingReconstructor(_config(alignment="sim3"), model=net)
    results = []
    for f in synth:
        try:
            results.extend(rec.push(f.rgb, f.stamp_ns))
        except RuntimeError as err:
            assert "out of memory" in str(err) and f is synth[7]
    results.extend(rec.flush())
    assert rec.stats.windows_failed_error == 1 and rec.stats.frames_dropped_error == 3
    assert [r.index for r in results] == [i for i in range(N_FRAMES) if i not in (5, 6, 7)]
    est = np.stack([r.T_world_cam for r in results])
    assert compute_ate(est, _gt(synth, results), align="sim3").rmse < 1e-4


def test_partially_non_finite_points_are_masked(synth):
    class HalfNaN(GroundTruthNetwork):
        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            pred, st = super().forward_window(images, state, options, commit)
            pred.local_points[..., : H // 2, :, :] = float("inf")
            return WindowPrediction(pred.local_points, pred.conf, pred.camera_poses,
                                    transform_points(pred.camera_poses, pred.local_points)), st

    _, results = _stream(synth[:7], HalfNaN(synth, seed=5), _config(alignment="sim3"))
    assert len(results) == 7
    for r in results:
        assert not r.valid[: H // 2].any() and r.valid[H // 2 :].all()
        assert np.isfinite(r.points).all() and len(r.points) == r.valid.sum()
        assert np.isnan(r.depth[: H // 2]).all()


def test_all_low_confidence_gives_poses_without_points(synth):
    net = GroundTruthNetwork(synth, similarity=True, seed=6, conf_logit=-20.0)
    _, results = _stream(synth[:8], net, _config(alignment="sim3", conf_threshold=0.5))
    assert len(results) == 8
    for r in results:
        assert r.points.shape == (0, 3) and r.colors.shape == (0, 3) and not r.valid.any()
        assert np.all(r.confidence < 1e-6)
    est = np.stack([r.T_world_cam for r in results])
    assert compute_ate(est, _gt(synth, results), align="sim3").rmse < 1e-4
    # Intrinsics fall back to all finite pixels when none is confident.
    np.testing.assert_allclose(results[0].K, synth[0].K, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("window,overlap,n", [(1, 0, 4), (3, 0, 4), (5, 2, 1)])
def test_windows_with_one_frame(synth, window, overlap, n):
    net = GroundTruthNetwork(synth, similarity=(overlap > 0), seed=7)
    _, results = _stream(synth[:n], net, _config(window_size=window, overlap_size=overlap, alignment="sim3"))
    assert [r.index for r in results] == list(range(n))
    assert any(len(ids) == 1 for ids, _ in net.calls)
    for r in results:
        # Pose, depth and points of a result belong to the same frame of the same window.
        T_cam_world = np.linalg.inv(r.T_world_cam)
        cam = r.points.astype(np.float64) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        np.testing.assert_allclose(cam[:, 2], r.depth[r.valid], rtol=1e-4)


def test_provisional_results_are_flagged_and_superseded(synth):
    net = GroundTruthNetwork(synth, similarity=True, seed=8)
    cfg = _config(alignment="sim3", provisional_every=1)
    rec = StreamingReconstructor(cfg, model=net)
    committed, provisional = [], []
    for f in synth:
        for r in rec.push(f.rgb, f.stamp_ns):
            (provisional if r.provisional else committed).append(r)
    committed.extend(rec.flush())
    assert [r.index for r in committed] == list(range(N_FRAMES))
    assert provisional and all(r.provisional for r in provisional)
    # Uncommitted passes do not touch the memory ...
    commits = [ids for ids, c in net.calls if c]
    assert rec.memory_state.window_index == len(commits)
    # ... and each provisional pose is already in the committed world frame (ground truth here).
    by_index = {r.index: r for r in committed}
    for p in provisional:
        c = by_index[p.index]
        np.testing.assert_allclose(p.T_world_cam, c.T_world_cam, atol=1e-4)
        assert p.stamp_ns == c.stamp_ns
