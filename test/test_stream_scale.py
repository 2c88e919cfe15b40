"""Metric scale sources: estimates, uncertainty, bounded history, and consistent application."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import ScaleConfig, ScaleObservation, StreamConfig, StreamingReconstructor, make_scale_source

H, W = 56, 84


def _obs(pred, sensor=None, position=(0.0, 0.0, 0.0), odom=None, trusted=None):
    trusted = np.ones(pred.shape, bool) if trusted is None else trusted
    return ScaleObservation(pred.astype(np.float32), trusted, np.asarray(position, float),
                            None if sensor is None else sensor.astype(np.float32), None if odom is None else np.asarray(odom, float))


def test_depth_ratio_is_robust_to_outliers_and_invalid_pixels():
    rng = np.random.default_rng(0)
    src = make_scale_source(ScaleConfig(source="depth", depth_range_m=(0.2, 10.0)))
    assert not src.estimate().valid and math.isinf(src.estimate().std) and src.estimate().scale == 1.0
    pred = rng.uniform(0.5, 3.0, (H, W))
    sensor = 2.5 * pred
    bad = rng.random((H, W)) < 0.3
    sensor[bad] = rng.uniform(0.2, 10.0, bad.sum())  # 30 % garbage
    sensor[:5] = 0.0  # no reading
    sensor[5:8] = np.inf
    sensor[8:10] = 20.0  # out of range: would pull the ratio up if used
    src.observe(_obs(pred, sensor))
    est = src.estimate()
    assert est.valid and est.samples == 1 and est.source == "depth"
    assert abs(est.scale - 2.5) < 0.05
    assert 0 < est.std < 0.1


def test_depth_ratio_uses_only_trusted_pixels_and_needs_enough():
    pred = np.ones((H, W))
    sensor = np.full((H, W), 4.0)
    trusted = np.zeros((H, W), bool)
    trusted[:2, :20] = True  # 40 trusted pixels
    src = make_scale_source(ScaleConfig(source="depth", min_valid_pixels=50))
    src.observe(_obs(pred, sensor, trusted=trusted))
    assert src.estimate().samples == 0
    trusted[:3, :20] = True
    sensor[~trusted] = 100.0  # untrusted pixels disagree; they must not count
    src.observe(_obs(pred, sensor, trusted=trusted))
    assert src.estimate().scale == pytest.approx(4.0)


def test_uncertainty_shrinks_with_samples_and_covers_the_truth():
    rng = np.random.default_rng(1)
    stds = []
    src = make_scale_source(ScaleConfig(source="odometry", min_displacement_m=0.01, history=1000))
    model_pos, odom_pos = np.zeros(3), np.zeros(3)
    src.observe(_obs(np.ones((2, 2)), position=model_pos, odom=odom_pos))
    for k in range(1, 401):
        step = rng.normal(size=3)
        step *= 0.2 / np.linalg.norm(step)
        model_pos = model_pos + step
        odom_pos = odom_pos + step * 2.0 * np.exp(rng.normal(0, 0.05))
        src.observe(_obs(np.ones((2, 2)), position=model_pos, odom=odom_pos))
        if k in (10, 100, 400):
            stds.append(src.estimate().std)
    est = src.estimate()
    assert stds[0] > stds[1] > stds[2] > 0
    assert abs(est.scale - 2.0) < 3 * est.std + 1e-3
    assert est.samples == 400


def test_history_is_bounded_and_follows_drift_and_freeze_holds():
    cfg = ScaleConfig(source="depth", history=20, min_valid_pixels=1)
    src = make_scale_source(cfg)
    pred = np.ones((4, 4))
    for _ in range(100):
        src.observe(_obs(pred, np.full((4, 4), 2.0)))
    for _ in range(20):
        src.observe(_obs(pred, np.full((4, 4), 3.0)))
    assert src.estimate().scale == pytest.approx(3.0)  # the old samples are gone
    assert len(src._log) == 20
    frozen = make_scale_source(ScaleConfig(source="depth", freeze_after=5, min_valid_pixels=1))
    for _ in range(5):
        frozen.observe(_obs(pred, np.full((4, 4), 2.0)))
    for _ in range(50):
        frozen.observe(_obs(pred, np.full((4, 4), 7.0)))
    est = frozen.estimate()
    assert est.frozen and est.scale == pytest.approx(2.0) and est.samples == 5
    frozen.reset()
    assert not frozen.estimate().valid


def test_fixed_and_none_sources():
    assert make_scale_source(ScaleConfig(source="fixed", factor=0.25)).estimate().scale == 0.25
    none = make_scale_source(ScaleConfig()).estimate()
    assert none.scale == 1.0 and none.std == 0.0 and none.valid


# ----------------------------------------------------------------- in the stream
@pytest.fixture(scope="module")
def tiny():
    return fill_deterministic_(build_model("tiny", device="meta"))


@pytest.fixture(scope="module")
def clip():
    return np.random.default_rng(3).integers(0, 256, (9, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ref(tiny, clip):
    """Model-scale results (scale source 'none')."""
    return _run(tiny, clip, ScaleConfig())[0]


def _run(tiny, clip, scale: ScaleConfig, extra=lambda i: {}):
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(W, H), window_size=4, overlap_size=1,
                       alignment="sim3", conf_percentile=0.0, scale=scale)
    rec = StreamingReconstructor(cfg, model=tiny)
    out = []
    for i, img in enumerate(clip):
        out += rec.push(img, i, **extra(i))
    return out + rec.flush(), rec


def _assert_scaled(results, ref, s):
    for r, q in zip(results, ref):
        np.testing.assert_allclose(r.T_world_cam[:3, :3], q.T_world_cam[:3, :3], atol=1e-9)
        np.testing.assert_allclose(r.T_world_cam[:3, 3], s * q.T_world_cam[:3, 3], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.points, s * q.points, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.depth, s * q.depth, rtol=1e-5)
        # Consistent: the scaled points still are the scaled depth seen from the scaled pose.
        cam = np.linalg.inv(r.T_world_cam)
        z = (r.points.astype(np.float64) @ cam[:3, :3].T + cam[:3, 3])[:, 2]
        np.testing.assert_allclose(z, r.depth[r.valid], rtol=1e-4)


def test_depth_stream_scales_poses_points_and_depth_alike(tiny, clip, ref):
    depth_of = {r.index: r.depth for r in ref}
    # A depth camera that reads 2.5 x the (model-scale) prediction, in millimetres.
    extra = lambda i: {"depth": np.round(depth_of[i] * 2.5 * 1000).astype(np.uint16)}
    res, rec = _run(tiny, clip, ScaleConfig(source="depth", depth_range_m=(1e-3, 60.0), min_valid_pixels=10), extra)
    s = rec.scale_estimate()
    assert s.valid and s.scale == pytest.approx(2.5, rel=2e-3) and s.samples == len(clip)
    assert all(r.scale_valid and r.scale == pytest.approx(2.5, rel=2e-3) for r in res)
    _assert_scaled(res, ref, np.array([r.scale for r in res])[0])


def test_odometry_scale_from_displacements_in_another_frame(tiny, clip, ref):
    pos = {r.index: r.position for r in ref}
    R = Rotation.from_euler("xyz", [10, 40, -70], degrees=True).as_matrix()
    odom = {i: 3.0 * R @ p + np.array([5.0, -2.0, 1.0]) for i, p in pos.items()}
    steps = np.linalg.norm(np.diff(np.stack([odom[i] for i in range(len(clip))]), axis=0), axis=1)
    res, rec = _run(tiny, clip, ScaleConfig(source="odometry", min_displacement_m=float(steps.min()) * 0.5),
                    lambda i: {"odom": odom[i]})
    assert not res[0].scale_valid and res[0].scale == 1.0  # no displacement seen yet
    later = [r for r in res if r.scale_valid]
    assert len(later) == len(res) - 1
    assert rec.scale_estimate().scale == pytest.approx(3.0, rel=1e-5)
    _assert_scaled(later, ref[1:], 3.0)


def test_fixed_factor_in_the_stream(tiny, clip, ref):
    res, _ = _run(tiny, clip, ScaleConfig(source="fixed", factor=0.5))
    assert all(r.scale == 0.5 and r.scale_std == 0.0 for r in res)
    _assert_scaled(res, ref, 0.5)
