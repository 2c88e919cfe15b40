"""The training-only token-matching loss (training.correspondence)."""
import json
import math

import pytest
import torch

from loger_core.training.correspondence import (centre_landings, correspondence_loss, fit_intrinsics,
                                                token_correspondences, window_pairs)
from loger_core.training.data import ClipDataConfig, SyntheticClipSource
from loger_core.training.losses import LossWeights


def test_fit_intrinsics_recovers_the_camera_despite_invalid_pixels():
    H, W = 30, 40
    fx, fy, cx, cy = 35.0, 33.0, 19.2, 14.7
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    z = 1.0 + torch.rand(H, W) * 4
    pts = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], -1)[None]
    valid = torch.rand(1, H, W) > 0.3
    pts[~valid] = float("nan")  # what invalid pixels hold must not matter
    K = fit_intrinsics(torch.nan_to_num(pts), valid)[0]
    assert torch.allclose(K, torch.tensor([fx, fy, cx, cy]), atol=1e-3)


def test_window_pairs_stay_inside_windows():
    pairs = window_pairs([3, 4])
    assert pairs.shape == (3 * 2 + 4 * 3, 2)
    assert bool((pairs[:, 0] != pairs[:, 1]).all())
    first = pairs[(pairs < 3).any(1)]
    assert bool((first < 3).all())  # no pair crosses from the first window (frames 0-2) into the second


@pytest.fixture(scope="module")
def clip():
    cfg = ClipDataConfig(width=112, height=84, pool_size=1, sequence_frames=32, batch_size=2, window_sizes=(8,),
                         windows_per_clip=(2,), frame_strides=(2,), scenes=("room",), trajectories=("handheld",),
                         seed=123, color_jitter=0.0)
    batch = SyntheticClipSource(cfg, "cpu").next_batch()
    idx = torch.cat([torch.arange(s, e) for s, e in batch.windows])
    pairs = window_pairs([e - s for s, e in batch.windows])
    return batch.images[:, idx], batch.local_points[:, idx], batch.poses[:, idx], batch.valid[:, idx], pairs


def test_patch_centres_land_on_the_same_surface_colour(clip):
    images, pts, poses, valid, pairs = clip
    u, v, ok = centre_landings(pts, poses, valid, 14, pairs)
    assert 0.5 < float(ok.float().mean()) < 1.0  # most centres stay in view, some leave or are hidden
    B, _, _, H, W = images.shape
    rgb = images.permute(0, 1, 3, 4, 2)
    cy, cx = torch.arange(6) * 14 + 7, torch.arange(8) * 14 + 7
    src = rgb[:, :, cy][:, :, :, cx].reshape(B, -1, 48, 3)[:, pairs[:, 0]]
    bi, bf = torch.arange(B).view(B, 1, 1), pairs[:, 1].view(1, -1, 1)
    landed = rgb[bi, bf, v.round().long().clamp(0, H - 1), u.round().long().clamp(0, W - 1)]
    err = (src - landed).abs().mean(-1)[ok].mean()
    other = (src - landed.roll(7, dims=2)).abs().mean(-1)[ok].mean()
    assert float(err) < 0.06 and float(other) > 4 * float(err)


def test_a_frame_matches_itself_and_moving_frames_shift_patches(clip):
    _, pts, poses, valid, pairs = clip
    own = token_correspondences(pts, poses, valid, 14, torch.tensor([[0, 0], [3, 3]]))
    ok = own >= 0
    assert bool(ok.any()) and bool((own[ok] == torch.arange(48).expand_as(own)[ok]).all())
    moved = token_correspondences(pts, poses, valid, 14, pairs)
    far = (pairs[:, 1] - pairs[:, 0]).abs() >= 5
    sel = moved[:, far]
    assert float((sel[sel >= 0] != torch.arange(48).expand_as(sel)[sel >= 0]).float().mean()) > 0.3


def test_loss_is_low_for_matching_tokens_and_high_for_random_ones(clip):
    _, pts, poses, valid, pairs = clip
    target = token_correspondences(pts, poses, valid, 14, pairs)
    B, T = pts.shape[:2]
    # A perfect matcher for one pair: frame b's tokens one-hot of their own patch, frame a's tokens
    # one-hot of the patch they land on in b.
    pair = pairs[:1]
    t1 = token_correspondences(pts, poses, valid, 14, pair)  # (B, 1, 48)
    tokens = torch.zeros(B, T, 48, 48)
    a, b = int(pair[0, 0]), int(pair[0, 1])
    tokens[:, b] = torch.eye(48)
    tokens[:, a] = torch.nn.functional.one_hot(t1[:, 0].clamp_min(0), 48).float()
    good = correspondence_loss(tokens, t1, pair, temperature=0.05)
    rand = correspondence_loss(torch.randn(B, T, 48, 64), target, pairs, temperature=0.1)
    assert float(good) < 0.01
    assert abs(float(rand) - math.log(48)) < 1.5
    feats = torch.randn(B, T, 48, 16, requires_grad=True)
    correspondence_loss(feats, target, pairs).backward()
    assert float(feats.grad.abs().sum()) > 0


def test_no_target_gives_zero_loss_with_a_graph():
    feats = torch.randn(1, 2, 4, 8, requires_grad=True)
    loss = correspondence_loss(feats, torch.full((1, 2, 4), -1), torch.tensor([[0, 1], [1, 0]]))
    assert float(loss.detach()) == 0.0
    loss.backward()


@pytest.mark.parametrize("kw", [{"correspondence": -1.0}, {"correspondence_temperature": 0.0}])
def test_bad_weights_are_refused(kw):
    with pytest.raises(ValueError, match="correspondence"):
        LossWeights(**kw)


def test_training_with_the_loss_records_it_and_moves_the_decoder(tmp_path):
    from loger_core.model import load_checkpoint
    from loger_core.training.train import main

    out = tmp_path / "w"
    args = ["--config", "tiny", "--device", "cpu", "--steps", "2", "--out", str(out), "--size", "56x42",
            "--window-sizes", "3", "--overlap", "1", "--windows-per-clip", "2", "--frame-strides", "2",
            "--pool-size", "1", "--sequence-frames", "12", "--batch-size", "2", "--log-every", "1", "--warmup", "1",
            "--w-correspondence", "0.5", "--seed", "7"]
    assert main(args) == 0
    meta = json.loads(out.with_suffix(".json").read_text())["training"]
    assert meta["loss_weights"]["correspondence"] == 0.5
    corr = [h["correspondence"] for h in meta["loss_history"]]
    assert len(corr) == 2 and all(math.isfinite(c) and c > 0 for c in corr)
    assert load_checkpoint(out.with_suffix(".safetensors")).cfg.name == "tiny"
