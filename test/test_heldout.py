"""Held-out evaluation helpers (loger_core.training.heldout): metrics, window-by-window poses, ablation options."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.training.data import HELD_OUT_SEEDS
from loger_core.training.heldout import (ABLATION_VARIANTS, HELD_OUT_CASES, HeldOutCase, ablation_options,
                                         evaluate_case, render_case, trajectory_metrics, window_metrics)


def _gt(n=60):
    t = np.linspace(0, 2 * np.pi, n)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = 2 * np.cos(t), np.sin(t), 0.1 * t
    c, s = np.cos(t), np.sin(t)
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
    return T


def test_metrics_of_a_similar_trajectory_are_perfect_and_of_a_shrinking_one_show_drift():
    gt = _gt()
    est = gt.copy()
    est[:, :3, 3] = 0.3 * gt[:, :3, 3] + np.array([1.0, -2.0, 0.5])  # a Sim(3) away (scale 0.3)
    m = trajectory_metrics(est, gt)
    assert m["ate_pct"] < 1e-6 and m["rpe_rot_deg"] < 1e-6 and m["scale_drift"] == pytest.approx(1.0)
    assert m["path_m"] == pytest.approx(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum(), rel=1e-3)
    shrink = gt.copy()
    shrink[:, :3, 3] *= np.linspace(1.0, 0.5, len(gt))[:, None]
    m = trajectory_metrics(shrink, gt)
    assert m["ate_pct"] > 1.0 and m["scale_drift"] > 1.3  # later segments need a larger scale
    nan = trajectory_metrics(np.full_like(gt, np.nan), gt)
    assert not nan["finite"] and math.isnan(nan["ate_pct"])


def test_held_out_cases_never_meet_the_training_seeds():
    assert {c.seed for c in HELD_OUT_CASES} <= set(HELD_OUT_SEEDS)
    assert {(c.frames, c.scene) for c in HELD_OUT_CASES} >= {(256, "room"), (256, "corridor"), (1024, "street"), (1024, "loop")}


def test_ablation_variants_switch_the_memories():
    got = {v: ablation_options(v, 100, 16, 3) for v in ABLATION_VARIANTS}
    assert (got["both"].use_ttt, got["both"].use_swa) == (True, True)
    assert (got["ttt_off"].use_ttt, got["ttt_off"].use_swa) == (False, True)
    assert (got["swa_off"].use_ttt, got["swa_off"].use_swa) == (True, False)
    assert (got["both_off"].use_ttt, got["both_off"].use_swa) == (False, False)
    assert (got["one_window"].window_size, got["one_window"].overlap_size) == (100, 0)
    with pytest.raises(ValueError, match="unknown ablation variant"):
        ablation_options("ttt_only", 100, 16, 3)


def test_evaluate_case_runs_windows_with_memory_and_reports_metrics():
    case = HeldOutCase("room", "handheld", 12, 7)
    images, gt = render_case(case, 56, 42)
    assert images.shape == (12, 3, 42, 56) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert gt.shape == (12, 4, 4)
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()
    from loger_core.model.state import MemoryOptions

    row = evaluate_case(model, case, MemoryOptions(window_size=5, overlap_size=2), 56, 42, alignment="sim3",
                        images=images, gt=gt)
    assert row["finite"] and row["frames"] == 12 and row["window"] == 5 and row["alignment"] == "sim3"
    assert row["ate_pct"] >= 0 and row["frames_per_s"] > 0
    assert 0 <= row["window_ate_pct"] < row["window_still_pct"] * 1.5 and row["window_ate_m"] >= 0


def test_window_metrics_judge_each_window_apart_from_the_chaining():
    """Each window is aligned on its own: windows that are each right up to a different similarity
    score zero (however badly chained); a window that learned no motion scores the motionless share."""
    gt = _gt(30)
    windows = []
    for k, (s, e) in enumerate([(0, 10), (8, 18), (16, 26), (24, 30)]):
        est = gt[s:e].copy()
        est[:, :3, 3] = (0.5 + k) * gt[s:e, :3, 3] + np.array([k, -k, 2.0 * k])  # own scale and shift
        windows.append((s, e, torch.from_numpy(est)))
    m = window_metrics(windows, gt)
    assert m["window_ate_pct"] < 1e-6 and m["window_ate_m"] < 1e-8
    assert 20.0 < m["window_still_pct"] < 40.0  # about path / sqrt(12) for steady motion
    still = [(s, e, np.repeat(gt[s:s + 1], e - s, axis=0)) for s, e, _ in windows]
    m = window_metrics(still, gt)
    assert m["window_ate_pct"] == pytest.approx(m["window_still_pct"], rel=1e-6)
    assert math.isnan(window_metrics([(0, 2, torch.zeros(2, 4, 4))], gt)["window_ate_pct"])  # too short


def test_window_direction_counts_windows_that_move_the_right_way():
    gt = _gt(30)
    spans = [(0, 10), (8, 18), (16, 26), (24, 30)]
    right = [(s, e, gt[s:e].copy()) for s, e in spans]
    assert window_metrics(right, gt)["window_direction_pct"] == 100.0
    # Two windows travel their path backwards (positions mirrored about their first frame): the
    # right axis, the wrong way, as the shipped small model often does.
    mixed = []
    for k, (s, e) in enumerate(spans):
        est = gt[s:e].copy()
        if k % 2:
            est[:, :3, 3] = 2.0 * est[:1, :3, 3] - est[:, :3, 3]
        mixed.append((s, e, est))
    assert window_metrics(mixed, gt)["window_direction_pct"] == 50.0
    still = [(s, e, np.repeat(gt[s:s + 1], e - s, axis=0)) for s, e in spans]
    assert window_metrics(still, gt)["window_direction_pct"] == 0.0  # no motion is no direction
