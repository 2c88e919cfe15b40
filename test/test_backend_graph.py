"""Back end: scale chain (1D log-scale filter), GTSAM pose graph (SE(3) and Sim(3)), BackendConfig."""
from __future__ import annotations

import math
from dataclasses import fields

import cv2
import numpy as np
import pytest

from loger_core.backend.config import BackendConfig, BackendConfigError
from loger_core.backend.pose_graph import PoseGraph
from loger_core.backend.scale import ScaleChain, log_ratio_stats


def rotz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R[:3, :3]) - 1) / 2, -1, 1))))


# -- log_ratio_stats -----------------------------------------------------------------------------
def test_log_ratio_stats_median_and_error():
    rng = np.random.default_rng(0)
    den = rng.uniform(1, 20, 400)
    num = den * 2.0 * np.exp(rng.normal(0, 0.1, 400))
    med, se = log_ratio_stats(num, den)
    assert med == pytest.approx(math.log(2.0), abs=0.02)
    # MAD-based standard error of a 0.1-sigma log noise over 400 samples: 0.1 / 20.
    assert se == pytest.approx(0.1 / math.sqrt(400), rel=0.25)


def test_log_ratio_stats_robust_to_outliers():
    rng = np.random.default_rng(1)
    den = rng.uniform(1, 20, 500)
    num = den * 3.0 * np.exp(rng.normal(0, 0.02, 500))
    bad = rng.choice(500, 100, replace=False)  # 20%
    num[bad] = den[bad] * rng.uniform(20, 100, 100)
    med, se = log_ratio_stats(num, den)
    assert med == pytest.approx(math.log(3.0), abs=0.01)
    assert se < 0.005
    # A mean would be far off: the test data really has strong outliers.
    assert abs(np.mean(np.log(num / den)) - math.log(3.0)) > 0.3


def test_log_ratio_stats_ignores_invalid_and_min_count():
    num = np.array([2.0] * 8 + [np.nan, np.inf, 0.0, -1.0, 2.0, 2.0])
    den = np.array([1.0] * 8 + [1.0, 1.0, 1.0, 1.0, 0.0, -3.0])
    got = log_ratio_stats(num, den, min_count=8)
    assert got is not None and got[0] == pytest.approx(math.log(2.0)) and got[1] == 0.0
    assert log_ratio_stats(num, den, min_count=9) is None
    assert log_ratio_stats(np.array([np.nan] * 20), np.ones(20)) is None
    assert log_ratio_stats(np.zeros(0), np.zeros(0), min_count=1) is None


# -- ScaleChain ----------------------------------------------------------------------------------
def test_scale_chain_ratios_only_multiply():
    c = ScaleChain(chain_floor=0.01)
    assert c.update(None, None) == pytest.approx(1.0)  # nothing known: unit step
    ratios = [1.1, 0.8, 1.25, 1.05]
    expect = 1.0
    for r in ratios:
        expect *= r
        assert c.update((math.log(r), 0.02), None) == pytest.approx(expect)
    assert c.ratio_used == 4 and c.network_used == 0 and c.steps == 5
    # Variance grows by each ratio's variance (floored).
    assert c.var == pytest.approx(1.0 + 4 * 0.02 ** 2)
    c.update((0.0, 0.0001), None)
    assert c.var == pytest.approx(1.0 + 4 * 0.02 ** 2 + 0.01 ** 2)


def test_scale_chain_network_only():
    c = ScaleChain(network_sigma=0.5)
    assert c.update(None, (math.log(2.0), 0.5)) == pytest.approx(2.0)
    assert c.var == pytest.approx(0.25)
    # A constant network value stays put.
    for _ in range(5):
        assert c.update(None, (math.log(2.0), 0.5)) == pytest.approx(2.0)
    # Without a ratio the previous length barely constrains the step: the network dominates.
    s = c.update(None, (math.log(4.0), 0.5))
    assert math.log(s) > math.log(2.0) + 0.8 * math.log(2.0)
    assert c.ratio_used == 0 and c.network_used == 7


def test_scale_chain_network_sigma_floor():
    # A network sigma below the configured one is not trusted more than the configured one.
    a, b = ScaleChain(network_sigma=0.5), ScaleChain(network_sigma=0.5)
    for c, sig in ((a, 0.01), (b, 0.5)):
        c.reset(0.0, 0.2)
        c.update((0.0, 0.05), (math.log(3.0), sig))
    assert a.log_s == pytest.approx(b.log_s) and a.var == pytest.approx(b.var)
    # A larger sigma (a poor network depth) is honoured.
    d = ScaleChain(network_sigma=0.5)
    d.reset(0.0, 0.2)
    d.update((0.0, 0.05), (math.log(3.0), 2.0))
    assert 0 < d.log_s < b.log_s


@pytest.mark.parametrize("ratio_sigma,net_sigma,closer_to", [(0.02, 0.5, "ratio"), (1.0, 0.5, "network")])
def test_scale_chain_fusion_between(ratio_sigma, net_sigma, closer_to):
    c = ScaleChain(chain_floor=0.01, network_sigma=0.1)
    c.reset(0.0, 0.05)
    by_ratio, by_net = math.log(1.0), math.log(2.0)
    s = math.log(c.update((by_ratio, ratio_sigma), (by_net, net_sigma)))
    assert by_ratio < s < by_net
    if closer_to == "ratio":
        assert s - by_ratio < by_net - s
    else:
        assert by_net - s < s - by_ratio
    assert c.var < 0.05 ** 2 + ratio_sigma ** 2  # the fusion shrinks the variance


def test_scale_chain_missing_ratio_lets_network_dominate():
    # Two chains with a tight state; the one whose ratio went missing follows the network further.
    kept, lost = ScaleChain(network_sigma=0.5), ScaleChain(network_sigma=0.5)
    for c in (kept, lost):
        c.reset(0.0, 0.02)
    kept.update((0.0, 0.02), None)
    lost.update(None, None)
    assert lost.var > kept.var + 0.5
    assert kept.update((0.0, 0.02), (math.log(2.0), 0.5)) < 1.05
    assert lost.update((0.0, 0.02), (math.log(2.0), 0.5)) > 1.6


def test_scale_chain_non_finite_inputs_are_missing():
    c = ScaleChain()
    c.reset(math.log(2.0), 0.1)
    before = c.state()
    assert c.update((float("nan"), 0.1), (float("inf"), 0.5)) == pytest.approx(2.0)
    assert c.ratio_used == before["ratio_used"] and c.network_used == before["network_used"]
    assert c.var == pytest.approx(0.01 + 1.0)


def test_scale_chain_state_roundtrip():
    c = ScaleChain()
    c.update(None, (0.3, 0.5))
    c.update((0.1, 0.02), (0.2, 0.5))
    d = ScaleChain()
    d.restore(c.state())
    assert d.state() == c.state()
    assert d.update((0.05, 0.02), None) == pytest.approx(c.update((0.05, 0.02), None))
    assert ScaleChain().reset(math.log(5.0), 0.1) == pytest.approx(5.0)


# -- PoseGraph -----------------------------------------------------------------------------------
N_LOOP = 20


def circle_truth(n: int = N_LOOP, radius: float = 5.0) -> list[np.ndarray]:
    """n poses around a circle, facing along it, then one more revisiting node 0 (slightly offset)."""
    Ts = []
    for k in range(n):
        th = 2 * math.pi * k / n
        Ts.append(pose(rotz(math.degrees(th) + 90), [radius * math.cos(th), radius * math.sin(th), 0.1 * math.sin(3 * th)]))
    Ts.append(Ts[0] @ pose(rotz(2.0), [0.1, 0.05, 0.0]))
    return Ts


def build_chain(graph: PoseGraph, truth: list[np.ndarray], step_error=lambda k, T: T, sigmas=(0.5, 0.05, 0.05)):
    """Odometry factors (truth altered by ``step_error``) and initial values chained from them."""
    rot, trans, ls = sigmas
    graph.add_node(0, truth[0], anchor=True)
    graph.optimize()
    T_w = truth[0]
    for k in range(1, len(truth)):
        meas = step_error(k, np.linalg.inv(truth[k - 1]) @ truth[k])
        T_w = T_w @ meas
        graph.add_keyframe(k, T_w, [(k - 1, meas, rot, trans, ls)])
        graph.optimize()
    return T_w


def yaw_bias(k, T):
    return T @ pose(rotz(1.5), [0, 0, 0])


def pos_err(graph: PoseGraph, key: int, T_true: np.ndarray) -> float:
    return float(np.linalg.norm(graph.pose(key)[0][:3, 3] - T_true[:3, 3]))


@pytest.mark.parametrize("metric", [True, False])
def test_pose_graph_loop_closure_removes_drift(metric):
    truth = circle_truth()
    g = PoseGraph(metric=metric, robust_kernel="huber", robust_k=3.0)
    build_chain(g, truth, yaw_bias)
    end = len(truth) - 1
    before = pos_err(g, end, truth[end])
    assert before > 1.5  # 30 deg of accumulated yaw over a 31 m loop
    assert g.nodes == len(truth) and g.factors == len(truth)  # prior + odometry
    g.add_between(0, end, np.linalg.inv(truth[0]) @ truth[end], 0.1, 0.01, log_scale_sigma=0.01, loop=True)
    g.optimize(iterations=10)
    assert g.loop_factors == 1
    after = pos_err(g, end, truth[end])
    assert after < 0.05 * before and after < 0.1
    T_end, s_end = g.pose(end)
    assert angle_deg(T_end[:3, :3].T @ truth[end][:3, :3]) < 1.0
    assert s_end == pytest.approx(1.0, abs=1e-6 if metric else 0.02)
    # Every node is pulled towards the truth, not only the end.
    errs = [pos_err(g, k, truth[k]) for k in range(len(truth))]
    assert max(errs) < 0.5
    # The anchor holds node 0.
    T0, _ = g.pose(0)
    np.testing.assert_allclose(T0, truth[0], atol=1e-3)
    assert np.allclose(T_end[:3, :3] @ T_end[:3, :3].T, np.eye(3), atol=1e-9)


def test_pose_graph_anchor_fixes_gauge():
    # Odometry that disagrees with node 0's prior pose: node 0 stays, the rest follows.
    g = PoseGraph(metric=True)
    T0 = pose(rotz(30), [1.0, 2.0, 3.0])
    g.add_node(0, T0, anchor=True)
    step = pose(rotz(10), [1.0, 0, 0])
    g.add_keyframe(1, T0 @ step @ pose(rotz(5), [0.5, 0.5, 0]), [(0, step, 0.5, 0.01, 0.01)])
    g.optimize(5)
    np.testing.assert_allclose(g.pose(0)[0], T0, atol=1e-4)
    np.testing.assert_allclose(g.pose(1)[0], T0 @ step, atol=1e-3)
    # The odometry factor is satisfied exactly: the bad initial guess does not leak into the result.
    rel = np.linalg.inv(g.pose(0)[0]) @ g.pose(1)[0]
    np.testing.assert_allclose(rel, step, atol=1e-3)


@pytest.mark.parametrize("metric", [True, False])
def test_pose_graph_robust_kernel_limits_wrong_loop(metric):
    truth = circle_truth()
    end = len(truth) - 1
    wrong = np.linalg.inv(truth[0]) @ truth[end] @ pose(rotz(25.0), [3.0, -2.0, 1.0])
    moved = {}
    for kernel in ("none", "cauchy"):
        g = PoseGraph(metric=metric, robust_kernel=kernel, robust_k=1.0)
        build_chain(g, truth, sigmas=(0.5, 0.05, 0.05))
        g.add_between(0, end, wrong, 1.0, 0.1, log_scale_sigma=0.05, loop=True)
        g.optimize(iterations=10)
        moved[kernel] = max(pos_err(g, k, truth[k]) for k in range(len(truth)))
    assert moved["none"] > 0.5  # an unprotected wrong loop bends the map
    assert moved["cauchy"] < 0.3 * moved["none"]


def test_pose_graph_unknown_key_and_has():
    g = PoseGraph(metric=True)
    g.add_node(0, np.eye(4), anchor=True)
    with pytest.raises(KeyError):
        g.pose(0)  # not optimised yet
    assert not g.has(0)
    g.optimize()
    assert g.has(0) and not g.has(7)
    with pytest.raises(KeyError):
        g.pose(7)


@pytest.mark.parametrize("metric", [True, False])
def test_pose_graph_rejects_bad_inputs_atomically(metric):
    g = PoseGraph(metric=metric)
    g.add_node(0, np.eye(4), anchor=True)
    g.optimize()
    step = pose(np.eye(3), [1.0, 0, 0])
    nan_T = step.copy()
    nan_T[0, 3] = np.nan
    with pytest.raises(ValueError):
        g.add_keyframe(1, step, [(0, step, 0.5, 0.05, 0.05), (0, nan_T, 0.5, 0.05, 0.05)])
    for bad in ((0.0, 0.05, 0.05), (0.5, -1.0, 0.05), (0.5, 0.05, float("nan"))):
        with pytest.raises(ValueError):
            g.add_keyframe(1, step, [(0, step, *bad)])
    with pytest.raises(ValueError):
        g.add_keyframe(1, nan_T, [(0, step, 0.5, 0.05, 0.05)])
    assert g.nodes == 1 and g.factors == 1
    with pytest.raises(ValueError):
        g.add_between(0, 1, step, 0.5, 0.0)
    with pytest.raises(ValueError):
        g.add_between(0, 1, step, 0.5, 0.05, scale=0.0)
    assert g.factors == 1
    # The graph still works after the rejections.
    g.add_keyframe(1, step, [(0, step, 0.5, 0.05, 0.05)])
    g.optimize()
    np.testing.assert_allclose(g.pose(1)[0], step, atol=1e-6)


def test_pose_graph_orthonormalises_drifted_rotations():
    # A float32-chained rotation slightly off SO(3) is accepted (nearest rotation).
    g = PoseGraph(metric=True)
    R = (rotz(20) + 1e-4).astype(np.float32)
    g.add_node(0, pose(R, [0, 0, 0]), anchor=True)
    g.optimize()
    Rg = g.pose(0)[0][:3, :3]
    np.testing.assert_allclose(Rg @ Rg.T, np.eye(3), atol=1e-9)
    assert angle_deg(Rg.T @ rotz(20)) < 0.02


# Sim(3) with a scale that is not 1: PoseGraph's convention is S(p) = s R p + t (core.py's use,
# T_w_old @ _scaled(T_old_new, s_old)), where GTSAM's Similarity3 is s (R p + t).
def test_sim3_convention_composition():
    g = PoseGraph(metric=False, robust_kernel="none")
    g.add_node(0, np.eye(4), anchor=True)
    step = pose(np.eye(3), [1.0, 0, 0])
    g.add_node(1, step)
    g.add_between(0, 1, step, 0.01, 1e-3, scale=2.0, log_scale_sigma=1e-3)
    g.add_node(2, pose(np.eye(3), [3.0, 0, 0]))
    g.add_between(1, 2, step, 0.01, 1e-3, scale=1.0, log_scale_sigma=1e-3)
    g.optimize(5)
    T1, s1 = g.pose(1)
    T2, s2 = g.pose(2)
    assert s1 == pytest.approx(2.0, rel=1e-3) and s2 == pytest.approx(2.0, rel=1e-3)
    np.testing.assert_allclose(T1[:3, 3], [1.0, 0, 0], atol=1e-3)
    # Node 2 is one unit of node 1's frame ahead: s1 * R1 @ [1, 0, 0] + t1 = [3, 0, 0].
    np.testing.assert_allclose(T2[:3, 3], [3.0, 0, 0], atol=1e-3)


def test_sim3_loop_corrects_scale_drift():
    # Monocular scale drift: each keyframe's units grow 2% per step, so odometry translations are in
    # units 1.02^k larger than the truth while the measured relative scale is 1. The loop to node 0
    # measures the end keyframe in node 0's units with the true relative scale 1.02^-n.
    truth = circle_truth()
    end = len(truth) - 1
    g = PoseGraph(metric=False, robust_kernel="huber", robust_k=3.0)
    g.add_node(0, truth[0], anchor=True)
    g.optimize()
    T_w = truth[0]
    for k in range(1, end + 1):
        meas = np.linalg.inv(truth[k - 1]) @ truth[k]
        meas[:3, 3] *= 1.02 ** (k - 1)  # in keyframe k-1's drifted units
        T_w = T_w @ meas
        g.add_keyframe(k, T_w, [(k - 1, meas, 0.1, 0.01 * 1.02 ** k, 0.05)])
        g.optimize()
    before = pos_err(g, end, truth[end])
    assert before > 2.0
    g.add_between(0, end, np.linalg.inv(truth[0]) @ truth[end], 0.1, 0.01, scale=1.02 ** -end,
                  log_scale_sigma=0.01, loop=True)
    g.optimize(iterations=10)
    assert pos_err(g, end, truth[end]) < 0.1 * before
    assert g.pose(end)[1] == pytest.approx(1.02 ** -end, rel=0.05)
    assert max(pos_err(g, k, truth[k]) for k in range(end + 1)) < 0.3


# -- BackendConfig -------------------------------------------------------------------------------
def test_config_defaults_valid_and_documented_values():
    cfg = BackendConfig()
    cfg.validate()
    assert cfg.feature in ("sift", "orb") and 0 < cfg.ratio < 1 and cfg.robust_kernel in ("huber", "cauchy", "none")
    # from_mapping with every default is the default.
    same = BackendConfig.from_mapping({f.name: getattr(cfg, f.name) for f in fields(cfg)})
    assert same == cfg
    got = BackendConfig.from_mapping({"feature": "orb", "min_inliers": 12, "robust_kernel": "cauchy"})
    assert got.feature == "orb" and got.min_inliers == 12 and got.robust_kernel == "cauchy"
    assert BackendConfig.from_mapping({}) == cfg


@pytest.mark.parametrize("name,value", [
    ("feature", "x"), ("feature", "SIFT"), ("place_descriptor", "x"), ("pnp_scale", "x"), ("robust_kernel", "x"),
    ("ratio", 1.5), ("ratio", 1.0), ("ratio", 0.0), ("min_inliers", 0), ("max_features", -1),
    ("keyframe_max_gap", 0), ("loop_consistency", 0), ("keyframe_points", 0), ("max_queue", -1),
    ("loop_min_age", 0), ("ransac_px", 0.0), ("pnp_px", -2.0), ("robust_k", float("nan")),
    *[(n, -1.0) for n in ("scale_chain_sigma", "scale_network_sigma", "scale_network_sigma_poor",
                          "verified_rot_sigma_deg", "verified_trans_sigma", "network_rot_sigma_deg",
                          "network_trans_sigma", "loop_rot_sigma_deg", "loop_trans_sigma",
                          "loop_consistency_deg", "loop_consistency_trans", "sift_contrast",
                          "keyframe_parallax_deg")],
])
def test_config_invalid_value_names_field(name, value):
    with pytest.raises(BackendConfigError, match=name):
        BackendConfig(**{name: value})
    # validate() catches values set after construction too.
    cfg = BackendConfig()
    setattr(cfg, name, value)
    with pytest.raises(BackendConfigError, match=name):
        cfg.validate()


@pytest.mark.parametrize("name", ["min_inlier_ratio", "loop_min_inlier_ratio"])
def test_config_inlier_ratio_error_names_field(name):
    with pytest.raises(BackendConfigError, match=name):
        BackendConfig(**{name: 1.5})


@pytest.mark.parametrize("name", ["min_inlier_ratio", "loop_min_inlier_ratio"])
def test_config_inlier_ratio_range(name):
    for bad in (-0.1, 1.5):
        with pytest.raises(BackendConfigError):
            BackendConfig(**{name: bad})
    for ok in (0.0, 1.0):
        BackendConfig(**{name: ok})


def test_config_from_mapping_unknown_key():
    with pytest.raises(BackendConfigError, match="frobnicate"):
        BackendConfig.from_mapping({"feature": "sift", "frobnicate": 1})
    with pytest.raises(BackendConfigError, match="ratio"):
        BackendConfig.from_mapping({"ratio": 2.0})
    assert issubclass(BackendConfigError, ValueError)
