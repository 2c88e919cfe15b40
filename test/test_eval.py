"""ATE / RPE / scale drift / association: known answers and a cross-check against evo."""

import copy
import json

import numpy as np
import pytest
from evo.core import metrics, sync
from evo.core.trajectory import PoseTrajectory3D
from scipy.spatial.transform import Rotation

from loger_core.eval.metrics import (
    EvalError,
    associate,
    associate_trajectories,
    compute_ate,
    compute_rpe,
    compute_scale_drift,
    evaluate,
    umeyama,
)
from loger_core.io.trajectory import Trajectory

FPS_NS = 33_333_333  # ~30 Hz


def _smooth_trajectory(n: int, seed: int) -> Trajectory:
    """Hand-held-camera-like path: integrated smooth velocity and angular velocity."""
    rng = np.random.default_rng(seed)
    vel = np.cumsum(rng.normal(scale=0.004, size=(n, 3)), axis=0) + np.array([0.02, 0.0, 0.01])
    pos = np.cumsum(vel, axis=0)
    omega = np.cumsum(rng.normal(scale=0.002, size=(n, 3)), axis=0) + np.array([0.0, 0.01, 0.0])
    rotvec = np.cumsum(omega, axis=0)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    poses[:, :3, 3] = pos
    stamps = 1_600_000_000_000_000_000 + np.arange(n, dtype=np.int64) * FPS_NS
    return Trajectory(stamps, poses)


def _apply_sim3(poses: np.ndarray, s: float, rot: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Pose of the same camera seen in a world scaled by s, rotated by R, shifted by t."""
    out = poses.copy()
    out[:, :3, :3] = rot @ poses[:, :3, :3]
    out[:, :3, 3] = s * poses[:, :3, 3] @ rot.T + t
    return out


def _perturb(poses: np.ndarray, rng, trans_sigma: float, rot_sigma_rad: float) -> np.ndarray:
    out = poses.copy()
    out[:, :3, 3] += rng.normal(scale=trans_sigma, size=(len(poses), 3))
    noise = Rotation.from_rotvec(rng.normal(scale=rot_sigma_rad, size=(len(poses), 3))).as_matrix()
    out[:, :3, :3] = poses[:, :3, :3] @ noise
    return out


def _estimate_pair(seed: int = 0, n: int = 300):
    """GT and a noisy, Sim3-transformed, time-jittered estimate missing some frames."""
    rng = np.random.default_rng(seed + 100)
    gt = _smooth_trajectory(n, seed)
    s_true = 0.37
    rot_true = Rotation.from_rotvec([0.3, -1.1, 0.5]).as_matrix()
    t_true = np.array([4.0, -2.0, 1.5])
    # est = Sim3^-1(gt) + noise, so aligning est -> gt must recover (s_true, R, t)^-1.
    inv_s, inv_r = 1.0 / s_true, rot_true.T
    inv_t = -inv_s * inv_r @ t_true
    est_poses = _perturb(_apply_sim3(gt.poses, inv_s, inv_r, inv_t), rng, 0.01, 0.005)
    keep = np.sort(rng.choice(n, size=n - 25, replace=False))
    jitter = rng.integers(-4_000_000, 4_000_000, size=len(keep))
    est = Trajectory(gt.stamps_ns[keep] + jitter, est_poses[keep])
    return est, gt, keep


def _to_evo(traj: Trajectory) -> PoseTrajectory3D:
    return PoseTrajectory3D(poses_se3=list(traj.poses), timestamps=traj.stamps_ns.astype(np.float64) * 1e-9)


def _evo_synced(est: Trajectory, gt: Trajectory, align: str):
    ref_e, est_e = sync.associate_trajectories(_to_evo(gt), _to_evo(est), max_diff=0.01)
    est_e = copy.deepcopy(est_e)
    if align != "none":
        est_e.align(ref_e, correct_scale=(align == "sim3"))
    return ref_e, est_e


# ------------------------------------------------------------------------ evo cross-check


@pytest.mark.parametrize("align", ["sim3", "se3"])
def test_ate_matches_evo(align):
    est, gt, _ = _estimate_pair(seed=1)
    if align == "se3":
        # A rigid-only comparison needs an estimate in metric scale.
        est = Trajectory(est.stamps_ns, _apply_sim3(est.poses, 0.37, np.eye(3), np.zeros(3)))
    ref_e, est_e = _evo_synced(est, gt, align)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref_e, est_e))
    evo_stats = ape.get_all_statistics()

    m_est, m_gt = associate_trajectories(est, gt, max_dt_ns=10_000_000)
    assert len(m_est) == ref_e.num_poses
    ours = compute_ate(m_est, m_gt, align=align)
    for key in ("rmse", "mean", "median", "std", "min", "max"):
        assert getattr(ours, key) == pytest.approx(evo_stats[key], rel=1e-9, abs=1e-12), key


@pytest.mark.parametrize("delta", [1, 10])
def test_rpe_matches_evo(delta):
    est, gt, _ = _estimate_pair(seed=2)
    ref_e, est_e = _evo_synced(est, gt, "sim3")
    m_est, m_gt = associate_trajectories(est, gt, max_dt_ns=10_000_000)
    ours = compute_rpe(m_est, m_gt, delta_frames=delta, scale=compute_ate(m_est, m_gt).scale)
    for relation, prefix in (
        (metrics.PoseRelation.translation_part, "trans"),
        (metrics.PoseRelation.rotation_angle_deg, "rot"),
    ):
        rpe = metrics.RPE(relation, delta=delta, delta_unit=metrics.Unit.frames, all_pairs=True)
        rpe.process_data((ref_e, est_e))
        st = rpe.get_all_statistics()
        suffix = "" if prefix == "trans" else "_deg"
        assert len(rpe.error) == ours.n
        for key in ("rmse", "mean", "median", "max"):
            # evo's SO(3) log differs from our atan2 angle only by rounding.
            assert getattr(ours, f"{prefix}_{key}{suffix}") == pytest.approx(st[key], rel=1e-6), (prefix, key)


def test_association_agrees_with_evo_on_unambiguous_stamps():
    est, gt, keep = _estimate_pair(seed=3)
    idx_est, idx_gt = associate(est.stamps_ns, gt.stamps_ns, max_dt_ns=10_000_000)
    np.testing.assert_array_equal(idx_est, np.arange(len(est)))
    np.testing.assert_array_equal(idx_gt, keep)
    ref_e, _ = sync.associate_trajectories(_to_evo(gt), _to_evo(est), max_diff=0.01)
    # evo keeps float seconds (~100 ns resolution at this epoch), so compare to 1 us.
    np.testing.assert_allclose(ref_e.timestamps, gt.stamps_ns[idx_gt] * 1e-9, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ known answers


def test_umeyama_recovers_known_sim3():
    rng = np.random.default_rng(5)
    src = rng.normal(size=(50, 3))
    rot = Rotation.from_rotvec([0.2, 2.5, -0.7]).as_matrix()
    t = np.array([1.0, -3.0, 0.5])
    dst = 2.5 * src @ rot.T + t
    s_hat, r_hat, t_hat = umeyama(src, dst, with_scale=True)
    assert s_hat == pytest.approx(2.5, rel=1e-12)
    np.testing.assert_allclose(r_hat, rot, atol=1e-12)
    np.testing.assert_allclose(t_hat, t, atol=1e-12)
    assert np.linalg.det(r_hat) == pytest.approx(1.0)


def test_umeyama_returns_proper_rotation_for_reflected_points():
    rng = np.random.default_rng(6)
    src = rng.normal(size=(30, 3))
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror image: best proper rotation != reflection
    _, r_hat, _ = umeyama(src, dst, with_scale=False)
    assert np.linalg.det(r_hat) == pytest.approx(1.0)
    np.testing.assert_allclose(r_hat @ r_hat.T, np.eye(3), atol=1e-12)


def test_ate_zero_and_scale_recovered_for_exact_sim3():
    gt = _smooth_trajectory(120, seed=7)
    rot = Rotation.from_rotvec([1.0, 0.2, -0.4]).as_matrix()
    est = Trajectory(gt.stamps_ns, _apply_sim3(gt.poses, 0.25, rot, np.array([3.0, 1.0, -2.0])))
    res = compute_ate(est, gt, align="sim3")
    assert res.rmse < 1e-9
    assert res.scale == pytest.approx(4.0, rel=1e-9)  # est -> gt undoes the 0.25
    aligned = est.positions @ res.T_align[:3, :3].T + res.T_align[:3, 3]
    np.testing.assert_allclose(aligned, gt.positions, atol=1e-9)
    rpe = compute_rpe(est, gt, delta_frames=5, scale=res.scale)
    assert rpe.trans_max < 1e-9 and rpe.rot_max_deg < 1e-5
    # A rigid alignment cannot absorb the scale, so SE(3) ATE must be clearly non-zero.
    assert compute_ate(est, gt, align="se3").rmse > 0.1


def test_ate_rmse_matches_known_noise_level():
    gt = _smooth_trajectory(3000, seed=8)
    rng = np.random.default_rng(9)
    sigma = 0.02
    est = Trajectory(gt.stamps_ns, _perturb(gt.poses, rng, sigma, 0.0))
    res = compute_ate(est, gt, align="se3")
    # Isotropic 3D Gaussian noise of per-axis sigma has RMS norm sigma * sqrt(3).
    assert res.rmse == pytest.approx(sigma * np.sqrt(3), rel=0.05)
    assert compute_ate(est, gt, align="none").rmse == pytest.approx(sigma * np.sqrt(3), rel=0.05)


def test_rpe_known_rotation_and_translation_error():
    gt = _smooth_trajectory(50, seed=10)
    est_poses = gt.poses.copy()
    # Extra 2 degree yaw and 0.1 m step between frames 20 and 21 only (in the camera frame).
    bump = np.eye(4)
    bump[:3, :3] = Rotation.from_euler("z", 2.0, degrees=True).as_matrix()
    bump[:3, 3] = [0.1, 0.0, 0.0]
    est_poses[21:] = est_poses[20] @ bump @ np.linalg.inv(gt.poses[20]) @ gt.poses[21:]
    rpe = compute_rpe(Trajectory(gt.stamps_ns, est_poses), gt, delta_frames=1)
    assert rpe.n == 49
    assert rpe.rot_max_deg == pytest.approx(2.0, rel=1e-6)
    assert rpe.trans_median < 1e-9  # every other pair is exact
    assert rpe.trans_max > 0.09


def test_scale_drift_detects_growing_scale():
    gt = _smooth_trajectory(400, seed=11)
    est_poses = gt.poses.copy()
    # Estimate scale shrinks linearly along the path: step k is scaled by 1 / (1 + k / 400).
    steps = np.diff(gt.positions, axis=0) / (1.0 + np.arange(1, 400)[:, None] / 400.0)
    est_poses[1:, :3, 3] = gt.positions[0] + np.cumsum(steps, axis=0)
    res = compute_scale_drift(Trajectory(gt.stamps_ns, est_poses), gt, segment_frames=100, min_spread_m=0.0)
    assert res.n_segments == 4
    assert np.all(np.diff(res.segment_scales) > 0)
    # GT-per-estimate scale at segment centres ~ 1 + k/400: 1.125 -> 1.875.
    assert res.ratio_last_first == pytest.approx(1.875 / 1.125, rel=0.05)
    assert res.ratio_max_min == pytest.approx(res.ratio_last_first)
    consistent = compute_scale_drift(
        Trajectory(gt.stamps_ns, _apply_sim3(gt.poses, 3.0, np.eye(3), np.ones(3))), gt, segment_frames=100
    )
    assert consistent.ratio_max_min == pytest.approx(1.0, abs=1e-9)
    assert consistent.log_scale_std == pytest.approx(0.0, abs=1e-9)


def test_scale_drift_skips_still_segments_and_reports_none():
    gt = _smooth_trajectory(30, seed=12)
    still = Trajectory(gt.stamps_ns, np.tile(gt.poses[:1], (30, 1, 1)))
    res = compute_scale_drift(still, still, segment_frames=10)
    assert res.n_segments == 0 and res.n_skipped == 3
    d = res.to_dict()
    assert d["ratio_max_min"] is None and d["segment_scales"] == []


def test_associate_is_one_to_one_greedy_by_time_difference():
    est = np.array([100, 104, 200, 500])
    gt = np.array([103, 198, 1000])
    idx_est, idx_gt = associate(est, gt, max_dt_ns=5)
    # 104 is 1 ns from 103 and wins it; 100 is then left without a partner.
    assert idx_est.tolist() == [1, 2] and idx_gt.tolist() == [0, 1]
    # Input order does not matter; indices refer to the original arrays.
    idx_est2, idx_gt2 = associate(est[::-1], gt[::-1], max_dt_ns=5)
    assert est[::-1][idx_est2].tolist() == [104, 200]
    assert gt[::-1][idx_gt2].tolist() == [103, 198]
    assert associate(est, gt, max_dt_ns=0)[0].size == 0


def test_evaluate_dict_is_json_and_consistent():
    est, gt, _ = _estimate_pair(seed=13)
    out = evaluate(est, gt, align="sim3", max_dt_ns=10_000_000, rpe_delta_frames=3)
    json.dumps(out, allow_nan=False)
    assert out["n_matched"] == len(est)
    # 1 cm per-axis noise in estimate units is 0.37 cm in GT metres.
    assert out["ate"]["rmse"] == pytest.approx(0.37 * 0.01 * np.sqrt(3), rel=0.25)
    assert out["ate"]["scale"] == pytest.approx(0.37, rel=0.02)
    assert np.array(out["ate"]["T_align"]).shape == (4, 4)
    assert out["rpe"]["delta_frames"] == 3
    assert out["scale_drift"]["ratio_max_min"] == pytest.approx(1.0, abs=0.05)


def test_bad_inputs_raise_eval_error():
    gt = _smooth_trajectory(10, seed=14)
    with pytest.raises(EvalError, match="align must be one of"):
        compute_ate(gt, gt, align="sim2")
    with pytest.raises(EvalError, match="same length"):
        compute_ate(gt.poses[:5], gt.poses)
    with pytest.raises(EvalError, match="at least 3"):
        compute_ate(gt.poses[:2], gt.poses[:2])
    with pytest.raises(EvalError, match=r"\(N, 4, 4\)"):
        compute_ate(gt.poses[:, :3], gt.poses[:, :3])
    with pytest.raises(EvalError, match="delta_frames=10 leaves no pair"):
        compute_rpe(gt, gt, delta_frames=10)
    with pytest.raises(EvalError, match="delta_frames must be"):
        compute_rpe(gt, gt, delta_frames=0)
    with pytest.raises(EvalError, match="scale must be"):
        compute_rpe(gt, gt, scale=-1.0)
    with pytest.raises(EvalError, match="identical"):
        umeyama(np.zeros((5, 3)), np.ones((5, 3)))
    with pytest.raises(EvalError, match="max_dt_ns must be"):
        associate(gt.stamps_ns, gt.stamps_ns, max_dt_ns=-1)
    shifted = Trajectory(gt.stamps_ns + 10**9, gt.poses)
    with pytest.raises(EvalError, match=r"only 0 of 10 estimate stamps match"):
        evaluate(shifted, gt)
