"""Inter-window SE(3)/Sim(3) alignment recovers windows expressed in unknown frames."""
import math

import pytest
import torch

from loger_core.model import SequenceMerger, WindowAligner, WindowPrediction
from loger_core.model.prediction import transform_points


def rot(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def true_sequence(n, h=6, w=8):
    poses = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    for i in range(n):
        poses[i, :3, :3] = rot([0.1, 1, 0.2], 0.05 * i)
        poses[i, :3, 3] = torch.tensor([0.3 * i, 0.02 * i * i, 0.1 * math.sin(i)])
    g = torch.Generator().manual_seed(1)
    depth = 1 + 4 * torch.rand(n, h, w, generator=g, dtype=torch.float64)
    u = torch.arange(w, dtype=torch.float64).view(1, 1, w).expand(n, h, w)
    v = torch.arange(h, dtype=torch.float64).view(1, h, 1).expand(n, h, w)
    local = torch.stack([(u - w / 2) / 5 * depth, (v - h / 2) / 5 * depth, depth], -1)
    return poses, local


def window_in_frame(poses, local, s, e, S):
    """Predictions for frames [s, e) expressed in frame S (a 4x4 similarity world->window)."""
    scale = torch.linalg.det(S[:3, :3]).abs() ** (1 / 3)
    T = S @ poses[s:e]
    T[:, :3, :3] = T[:, :3, :3] / scale  # rotation part stays orthonormal; translation carries the scale
    lp = local[s:e] * scale
    P = T.unsqueeze(0)
    return WindowPrediction(lp.unsqueeze(0), torch.zeros(1, e - s, *lp.shape[1:3], 1, dtype=lp.dtype), P, transform_points(P, lp.unsqueeze(0)))


@pytest.mark.parametrize("mode,with_scale", [("se3", False), ("sim3", True)])
def test_aligner_recovers_sequence(mode, with_scale):
    n, win, ov = 13, 5, 2
    poses, local = true_sequence(n)
    merger = SequenceMerger(mode, ov)
    g = torch.Generator().manual_seed(7)
    from loger_core.model import window_schedule

    for k, (s, e) in enumerate(window_schedule(n, win, ov)):
        S = torch.eye(4, dtype=torch.float64)
        if k:
            S[:3, :3] = rot(torch.rand(3, generator=g).tolist(), 1.0) * (1.7 if with_scale else 1.0)
            S[:3, 3] = torch.randn(3, generator=g, dtype=torch.float64)
        merger.add(window_in_frame(poses, local, s, e, S))
    out = merger.result()
    assert out.camera_poses.shape[1] == n
    # Sim(3) scales are estimated in float32, as the authors do.
    tol = 1e-5 if with_scale else 1e-9
    torch.testing.assert_close(out.camera_poses[0], poses, atol=tol, rtol=0)
    world = transform_points(poses.unsqueeze(0), local.unsqueeze(0))
    torch.testing.assert_close(out.points, world, atol=tol, rtol=0)


def test_none_alignment_passes_windows_through():
    poses, local = true_sequence(4)
    pred = window_in_frame(poses, local, 0, 4, torch.eye(4, dtype=torch.float64))
    al = WindowAligner("none", 1, 0)
    assert al.align(pred) is pred


def test_block_transform_reused_within_reset_block():
    """alignment 'none' + reset_every: estimate at reset windows only (authors' behaviour)."""
    n, win, ov = 14, 4, 1
    poses, local = true_sequence(n)
    from loger_core.model import window_schedule

    al = WindowAligner("none", ov, reset_every=2, history=10)
    S = torch.eye(4, dtype=torch.float64)
    S[:3, 3] = torch.tensor([5.0, 0, 0])
    for k, (s, e) in enumerate(window_schedule(n, win, ov)):
        frame = torch.eye(4, dtype=torch.float64) if k < 2 else S  # memory 'jumps' at the reset
        al.align(window_in_frame(poses, local, s, e, frame))
    t = [tf.t[0] for tf in al.transforms]
    assert torch.equal(t[1], t[0])  # window 1 reuses window 0's (identity) transform
    torch.testing.assert_close(t[2], torch.tensor([-5.0, 0, 0], dtype=torch.float64))  # estimated at the reset
    assert torch.equal(t[3], t[2])


def test_peek_does_not_change_the_aligner_and_history_is_bounded():
    n, win, ov = 10, 4, 1
    poses, local = true_sequence(n)
    from loger_core.model import window_schedule

    al = WindowAligner("se3", ov)
    S = torch.eye(4, dtype=torch.float64)
    S[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    wins = window_schedule(n, win, ov)
    al.align(window_in_frame(poses, local, *wins[0], torch.eye(4, dtype=torch.float64)))
    nxt = window_in_frame(poses, local, *wins[1], S)
    peeked = al.peek(nxt)
    assert al.window_index == 1 and len(al.transforms) == 1
    committed = al.align(nxt)
    torch.testing.assert_close(peeked.camera_poses, committed.camera_poses, rtol=0, atol=0)
    al.align(window_in_frame(poses, local, *wins[2], S))
    assert len(al.transforms) == 1  # history=1 by default: constant memory over long runs


def test_bad_alignment_names_are_refused():
    with pytest.raises(ValueError, match="alignment"):
        WindowAligner("affine")
    with pytest.raises(ValueError, match="scale mode"):
        WindowAligner("sim3", 1, 0, "mean")
