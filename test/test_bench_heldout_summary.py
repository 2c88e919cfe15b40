"""bench/heldout_eval.py's summary: standard errors over cases and paired differences (synthetic rows)."""
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from heldout_eval import summarize  # noqa: E402


def _row(ckpt: str, case: str, ate: float, direction: float, finite: bool = True) -> dict:
    return {"checkpoint": ckpt, "alignment": "none", "case": case, "finite": finite, "ate_pct": ate,
            "rpe_rot_deg": 0.5, "window_ate_pct": ate, "window_direction_pct": direction, "meets_target": False}


def test_standard_errors_and_paired_differences():
    base_ate = [20.0, 10.0, 30.0, 25.0]
    rows = [_row("a", f"c{i}", x, 50.0 + 10 * i) for i, x in enumerate(base_ate)]
    # "b" is "a" shifted by the same 2 points on every case: a paired difference with no spread,
    # although the cases themselves spread widely.
    rows += [_row("b", f"c{i}", x - 2.0, 60.0 + 10 * i) for i, x in enumerate(base_ate)]
    a, b = summarize(rows)
    assert a["checkpoint"] == "a" and "vs_first_ate_pct" not in a
    assert math.isclose(a["se_ate_pct"], round(np.std(base_ate, ddof=1) / 2.0, 3))
    assert b["vs_first_cases"] == 4
    assert b["vs_first_ate_pct"] == -2.0 and b["vs_first_se_ate_pct"] == 0.0
    assert b["vs_first_window_direction_pct"] == 10.0 and b["vs_first_se_window_direction_pct"] == 0.0
    assert b["se_ate_pct"] > 3.0  # unpaired, the same 2-point gain would hide in the case spread


def test_pairs_only_cases_both_ran():
    rows = [_row("a", "c0", 20.0, 50.0), _row("a", "c1", 22.0, 50.0),
            _row("b", "c0", 18.0, 60.0), _row("b", "c2", 10.0, 40.0),
            _row("b", "c1", float("nan"), 0.0, finite=False)]
    _, b = summarize(rows)
    assert b["cases"] == 2 and b["vs_first_cases"] == 1
    assert b["vs_first_ate_pct"] == -2.0 and math.isnan(b["vs_first_se_ate_pct"])
