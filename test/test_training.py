"""Training package: scale-invariant losses, synthetic clip data and a short overfit run (CPU)."""
from __future__ import annotations

import math

import pytest
import torch

from loger_core.model import build_model
from loger_core.training import ClipDataConfig, LossWeights, SyntheticClipSource, TrainingDataError, clip_losses
from loger_core.training.data import HELD_OUT_SEEDS, clip_length, downsampled_intrinsics, window_ranges
from loger_core.training.losses import fit_clip_scale, relative_poses, rotation_angle
from loger_core.training.train import clip_loss, lr_at, main, train_step


def _rotation(axis: torch.Tensor, angle: float) -> torch.Tensor:
    a = axis / axis.norm()
    K = torch.tensor([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def _random_gt(B=2, T=5, H=6, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = 1.0 + 3.0 * torch.rand(B, T, H, W, generator=g, dtype=torch.float64)
    xy = (torch.rand(B, T, H, W, 2, generator=g, dtype=torch.float64) - 0.5) * z.unsqueeze(-1)
    points = torch.cat([xy, z.unsqueeze(-1)], -1)
    poses = torch.eye(4, dtype=torch.float64).repeat(B, T, 1, 1)
    for b in range(B):
        for t in range(T):
            poses[b, t, :3, :3] = _rotation(torch.randn(3, generator=g, dtype=torch.float64), 0.3 * t + 0.1 * b)
            poses[b, t, :3, 3] = torch.randn(3, generator=g, dtype=torch.float64)
    valid = torch.ones(B, T, H, W, dtype=torch.bool)
    valid[:, :, 0, 0] = False
    return points, poses, valid


def _similar(points, poses, scale, R, t):
    """Prediction equal to the ground truth up to a global similarity x -> scale * R x + t."""
    G = torch.eye(4, dtype=torch.float64)
    G[:3, :3] = R
    G[:3, 3] = t
    p = poses.clone()
    p[..., :3, 3] = p[..., :3, 3] * scale
    return points * scale, G @ p


SATURATED = 30.0  # conf logit whose BCE against a "correct" target is ~1e-13


def test_losses_vanish_for_prediction_equal_up_to_similarity():
    points, poses, valid = _random_gt()
    pred_pts, pred_poses = _similar(points, poses, 3.7, _rotation(torch.tensor([1.0, 2.0, 0.5]), 1.1), torch.tensor([5.0, -2.0, 1.0]))
    conf = torch.full(points.shape[:-1] + (1,), SATURATED)
    terms = clip_losses(pred_pts, conf, pred_poses, points, poses, valid)
    assert terms.points.item() < 1e-5
    assert terms.rotation.item() < 1e-3
    assert terms.translation.item() < 1e-5
    assert terms.conf.item() < 1e-6
    assert torch.allclose(terms.scale, torch.full((2,), 1 / 3.7), rtol=1e-4)


def test_losses_positive_for_wrong_prediction_and_scale_invariant():
    points, poses, valid = _random_gt()
    g = torch.Generator().manual_seed(1)
    noisy_pts = points * (1 + 0.2 * torch.randn(points.shape, generator=g, dtype=torch.float64))
    noisy_poses = poses.clone()
    noisy_poses[:, 1:, :3, 3] += 0.3 * torch.randn(noisy_poses[:, 1:, :3, 3].shape, generator=g, dtype=torch.float64)
    noisy_poses[:, 2, :3, :3] = noisy_poses[:, 2, :3, :3] @ _rotation(torch.tensor([0.0, 0.0, 1.0]), 0.2)
    conf = torch.zeros(points.shape[:-1] + (1,))
    base = clip_losses(noisy_pts, conf, noisy_poses, points, poses, valid)
    assert base.points.item() > 0.05
    assert base.rotation.item() > 0.01
    assert base.translation.item() > 0.01
    assert base.conf.item() > 0.1
    # A global similarity of the (wrong) prediction changes nothing.
    sim_pts, sim_poses = _similar(noisy_pts, noisy_poses, 0.02, _rotation(torch.tensor([0.3, -1.0, 0.2]), 2.0), torch.tensor([1.0, 1.0, 1.0]))
    moved = clip_losses(sim_pts, conf, sim_poses, points, poses, valid)
    for k, v in base.as_floats().items():
        assert moved.as_floats()[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_motion_normalised_translation_weighs_each_clip_by_its_own_motion():
    points, poses, valid = _random_gt()
    conf = torch.zeros(points.shape[:-1] + (1,))
    G = _rotation(torch.tensor([0.3, -1.0, 0.2]), 0.7)
    pred_pts, pred_poses = _similar(points, poses, 2.0, G, torch.tensor([1.0, 0.0, -3.0]))
    motion = LossWeights(translation_norm="motion")
    # Still zero for a prediction equal up to a similarity.
    assert clip_losses(pred_pts, conf, pred_poses, points, poses, valid, motion).translation.item() < 1e-5
    # Shrink the true motion of one clip tenfold (points unchanged): relative to depth its
    # "no motion" error shrinks tenfold too; relative to its own motion it stays the same.
    small = poses.clone()
    small[1, :, :3, 3] *= 0.1
    still = small.clone()
    still[..., :3, 3] = 0.0
    by_depth = [clip_losses(points, conf, p, points, g, valid).translation.item() for p, g in ((still, poses), (still, small))]
    by_motion = [clip_losses(points, conf, p, points, g, valid, motion).translation.item() for p, g in ((still, poses), (still, small))]
    assert by_depth[1] < 0.6 * by_depth[0]
    assert by_motion[1] == pytest.approx(by_motion[0], rel=1e-4)
    # "No motion" costs exactly 1 per clip relative to its own mean motion.
    assert by_motion[0] == pytest.approx(1.0, rel=1e-4)
    with pytest.raises(ValueError, match="translation_norm"):
        LossWeights(translation_norm="speed")


def test_invalid_pixels_are_ignored():
    points, poses, valid = _random_gt()
    pred = points.clone()
    pred[:, :, 0, 0] = torch.tensor([100.0, -50.0, 0.01], dtype=torch.float64)  # garbage where valid is False
    terms = clip_losses(pred, torch.full(points.shape[:-1] + (1,), SATURATED), poses, points, poses, valid)
    assert terms.points.item() < 1e-6


def test_scale_fit_and_pose_helpers():
    points, poses, valid = _random_gt()
    assert torch.allclose(fit_clip_scale(points * 0.25, points, valid), torch.full((2,), 4.0, dtype=torch.float64))
    rel = relative_poses(poses)
    assert torch.allclose(rel[:, 1, 3], torch.linalg.inv(poses[:, 1]) @ poses[:, 3], atol=1e-10)
    R = _rotation(torch.tensor([0.0, 1.0, 0.0]), 0.7)
    assert rotation_angle(torch.eye(3, dtype=torch.float64), R).item() == pytest.approx(0.7, abs=1e-6)


def test_gradients_reach_the_ttt_update_across_windows():
    """lr_fc only scales the fast-weight update, whose result is used by the *next* window: a
    gradient there means back-propagation runs through the memory."""
    torch.manual_seed(0)
    model = build_model("tiny")
    for gate in model.ttt_gate_projs:  # open the (zero-initialised) gates, as after some training
        torch.nn.init.constant_(gate.bias, 1.0)
    src = SyntheticClipSource(_small_data(windows=(2,)))
    batch = src.next_batch()
    clip_loss(model, batch, LossWeights(), amp=False).total.backward()
    assert all(l.lr_fc.weight.grad is not None and l.lr_fc.weight.grad.abs().sum() > 0 for l in model.ttt_layers)


def _small_data(windows=(2,), batch=1):
    return ClipDataConfig(width=84, height=56, window_sizes=(4,), overlap_size=1, windows_per_clip=windows,
                          frame_strides=(1,), pool_size=1, sequence_frames=12, refresh_every=0, batch_size=batch,
                          seed=3, color_jitter=0.0)


def test_clip_source_geometry():
    cfg = _small_data(windows=(3,))
    src = SyntheticClipSource(cfg)
    b = src.next_batch()
    T = clip_length(4, 1, 3)
    assert T == 10 and b.windows == window_ranges(4, 1, 3) == [(0, 4), (3, 7), (6, 10)]
    assert b.images.shape == (1, T, 3, 56, 84) and 0.0 <= b.images.min() and b.images.max() <= 1.0
    assert b.local_points.shape == (1, T, 56, 84, 3) and b.valid.float().mean() > 0.8
    assert torch.allclose(b.poses[0, 0], torch.eye(4), atol=1e-5)
    z = b.local_points[..., 2][b.valid]
    assert (z > 0.1).all() and (z < 20).all()
    assert 3 not in HELD_OUT_SEEDS


def test_downsampled_intrinsics_keep_pixel_centres():
    K = torch.tensor([[100.0, 0, 111.5], [0, 100.0, 83.5], [0, 0, 1]]).numpy()
    Kd = downsampled_intrinsics(K, 2)
    assert Kd[0, 0] == 50.0 and Kd[0, 2] == pytest.approx((112 - 1) / 2) and Kd[1, 2] == pytest.approx((84 - 1) / 2)


@pytest.mark.parametrize("field,value", [("width", 50), ("window_sizes", (1,)), ("frame_strides", (0,)), ("sequence_frames", 3)])
def test_bad_data_config_is_refused(field, value):
    kw = dict(width=84, height=56, window_sizes=(4,), overlap_size=1, windows_per_clip=(2,), frame_strides=(1,), sequence_frames=12)
    kw[field] = value
    with pytest.raises(TrainingDataError, match=field):
        ClipDataConfig(**kw)


def test_lr_schedule():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.05)


def test_few_steps_overfit_a_fixed_batch():
    torch.manual_seed(0)
    model = build_model("tiny")
    batch = SyntheticClipSource(_small_data(windows=(2,), batch=2)).next_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    with torch.no_grad():
        before = clip_loss(model, batch, LossWeights(), amp=False).total.item()
    for _ in range(12):
        _, _, applied = train_step(model, opt, batch, LossWeights())
        assert applied
    model.eval()
    with torch.no_grad():
        after = clip_loss(model, batch, LossWeights(), amp=False).total.item()
    assert after < 0.8 * before


def test_main_writes_checkpoint_with_metadata(tmp_path):
    import json

    from loger_core.model import load_checkpoint

    out = tmp_path / "w"
    rc = main(["--config", "tiny", "--device", "cpu", "--steps", "2", "--out", str(out), "--size", "42x28", "--window-sizes", "3",
               "--overlap", "1", "--windows-per-clip", "2", "--frame-strides", "1", "--pool-size", "1",
               "--sequence-frames", "6", "--batch-size", "1", "--log-every", "1", "--warmup", "1"])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())["training"]
    assert meta["steps"] == 2 and meta["data"]["width"] == 42 and set(meta["final_losses"]) >= {"total", "points"}
    model = load_checkpoint(out.with_suffix(".safetensors"))
    assert model.cfg.name == "tiny"


def _tiny_run_args(out, steps, config="small"):
    return ["--config", config, "--device", "cpu", "--steps", str(steps), "--out", str(out), "--size", "42x28",
            "--window-sizes", "3", "--overlap", "1", "--windows-per-clip", "2", "--frame-strides", "1",
            "--pool-size", "1", "--sequence-frames", "6", "--batch-size", "1", "--log-every", "1", "--warmup", "1",
            "--save-every", "1"]


def test_small_trains_two_steps_and_resumes(tmp_path):
    """The CI smoke test of `loger-train` for the shipped config: two steps, then a resumed third
    one that continues the step count, the loss history and the optimiser state."""
    import json

    from loger_core.model import load_checkpoint
    from loger_core.training.train import file_sha256, state_path

    out = tmp_path / "w"
    assert main(_tiny_run_args(out, 2)) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    weights = out.with_suffix(".safetensors")
    assert record["sha256"] == file_sha256(weights) and record["training"]["steps"] == 2
    state = torch.load(state_path(out), weights_only=True)
    assert state["step"] == 2 and len(state["history"]) == 2
    moments = next(iter(state["optimizer"]["state"].values()))
    assert moments["exp_avg"].dtype == torch.bfloat16 and float(moments["step"]) == 2.0
    before = load_checkpoint(weights).state_dict()

    assert main(_tiny_run_args(out, 3) + ["--resume", str(state_path(out))]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())["training"]
    assert meta["steps"] == 3 and meta["this_run"]["steps"] == 1 and meta["resumed_from"] == str(state_path(out))
    assert [h["step"] for h in meta["loss_history"]] == [1, 2, 3]
    state = torch.load(state_path(out), weights_only=True)
    assert float(next(iter(state["optimizer"]["state"].values()))["step"]) == 3.0
    after = load_checkpoint(weights)
    assert after.cfg.name == "small"
    assert any(not torch.equal(before[k], v) for k, v in after.state_dict().items())  # the resumed step trained


def test_resume_refuses_another_config(tmp_path):
    from loger_core.training.train import state_path

    out = tmp_path / "w"
    assert main(_tiny_run_args(out, 1, config="tiny")) == 0
    with pytest.raises(SystemExit, match="holds a 'tiny' model"):
        main(_tiny_run_args(out, 2) + ["--resume", str(state_path(out))])


def test_lr_schedule_over_time():
    # With a progress fraction (elapsed / planned seconds) the step count no longer matters.
    assert lr_at(500, 10, 1.0, 10, progress=0.0) == pytest.approx(1.0)
    assert lr_at(500, 10, 1.0, 10, progress=0.5) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_at(500, 10, 1.0, 10, progress=2.0) == pytest.approx(0.05)
    assert lr_at(3, 10, 1.0, 10, progress=0.9) == pytest.approx(0.4)  # warm-up first


def test_scenes_get_matching_motions_and_randomised_settings():
    with pytest.raises(TrainingDataError, match="scene 'street' takes trajectories"):
        ClipDataConfig(width=84, height=56, scenes=("street",), trajectories=("handheld",), window_sizes=(4,),
                       overlap_size=1, windows_per_clip=(2,), frame_strides=(1,), sequence_frames=12)
    cfg = ClipDataConfig(width=56, height=42, scenes=("room", "street"), trajectories=("handheld", "car"),
                         window_sizes=(4,), overlap_size=1, windows_per_clip=(2,), frame_strides=(1,), pool_size=4,
                         sequence_frames=8, refresh_every=0, batch_size=1, seed=2000, randomize=True)
    src = SyntheticClipSource(cfg)
    kinds = {tuple(s.name.split("/")[:2]) for s in src.pool}
    assert kinds <= {("room", "handheld"), ("street", "car")}
    scene_a, traj_a = src._randomized("car")
    scene_b, traj_b = src._randomized("car")
    assert 6.0 <= traj_a.speed_mps <= 15.0 and traj_a.speed_mps != traj_b.speed_mps
    assert scene_a.room_size_m != scene_b.room_size_m


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="CUDA only: compiling the training graphs takes about 3 minutes on a 2-core CPU")
def test_compiled_training_matches_eager(tmp_path):
    """`--compile` (how the shipped weights were trained) computes the same first-step losses as
    eager training from the same seed, and says so in the record."""
    import json

    args = _tiny_run_args(tmp_path / "x", 2, config="tiny")[:-1] + ["0", "--device", "cuda", "--seed", "5", "--no-amp"]
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        torch.manual_seed(0)
        out = tmp_path / name
        a = list(args)
        a[a.index("--out") + 1] = str(out)
        assert main(a + extra) == 0
        runs[name] = json.loads(out.with_suffix(".json").read_text())["training"]
    assert runs["compiled"]["this_run"]["compiled"] and not runs["eager"]["this_run"]["compiled"]
    first = [r["loss_history"][0] for r in (runs["eager"], runs["compiled"])]
    for key in ("points", "rotation", "translation"):
        assert first[1][key] == pytest.approx(first[0][key], rel=1e-3, abs=1e-5)


def test_memory_gates_get_their_own_rate_and_decay():
    """`--gate-lr-mult` / `--gate-weight-decay` put exactly the gate projections in a group whose
    scheduled rate is scaled; without them the groups are the usual two."""
    from loger_core.training.train import MEMORY_GATES, param_groups

    model = build_model("tiny")
    gate_ids = {id(p) for n, p in model.named_parameters() if n.startswith(MEMORY_GATES)}
    assert gate_ids and len(param_groups(model, 0.05)) == 2
    groups = param_groups(model, 0.05, gate_lr_mult=10.0, gate_weight_decay=0.0)
    assert len(groups) == 3 and {id(p) for p in groups[2]["params"]} == gate_ids
    assert groups[2]["lr_mult"] == 10.0 and groups[2]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_gate_lr_mult_scales_the_gates_rate_in_a_run(tmp_path):
    import json

    out = tmp_path / "g"
    assert main(_tiny_run_args(out, 2, config="tiny") + ["--gate-lr-mult", "10", "--gate-weight-decay", "0"]) == 0
    state = torch.load(str(out) + ".state.pt", weights_only=True)
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert len(lrs) == 3 and lrs[2] == pytest.approx(10 * lrs[0])
    opt = json.loads(out.with_suffix(".json").read_text())["training"]["optimizer"]
    assert opt["gate_lr_mult"] == 10.0 and opt["gate_weight_decay"] == 0.0
