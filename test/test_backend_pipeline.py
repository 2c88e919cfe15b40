"""The geometric back end on whole sequences: rendered synthetic frames whose exact depth plays the
network's depth and whose exact poses, bent by a known drift, play the network's poses. The back end
must undo the drift from the images alone, close true loops, refuse false ones, survive a session
round trip exactly, and leave the front end's output untouched when it is off."""
from __future__ import annotations

import json

import numpy as np
import pytest

from loger_core.backend import BackendConfig, GeometricBackend
from loger_core.backend.keyframes import FrameInput
from loger_core.backend.loop_closure import rotation_angle_deg
from loger_core.eval.metrics import compute_ate
from loger_core.synthetic import SynthConfig, render_frames


def _drifted(poses: np.ndarray, yaw_per_frame_deg: float, scale_per_frame: float) -> np.ndarray:
    """The true poses with a growing heading error and scale drift, as a drifting odometry makes them."""
    out = [poses[0].copy()]
    s = 1.0
    for i in range(1, len(poses)):
        rel = np.linalg.inv(poses[i - 1]) @ poses[i]
        a = np.radians(yaw_per_frame_deg)
        # A yaw about the camera's y axis (down in OpenCV axes: a heading error for a level camera).
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        s *= scale_per_frame
        bent = rel.copy()
        bent[:3, :3] = R @ rel[:3, :3]
        bent[:3, 3] = rel[:3, 3] * s
        out.append(out[-1] @ bent)
    return np.stack(out)


def _inputs(frames, net_poses: np.ndarray, depth_step: int = 2, points: int = 1500) -> list[FrameInput]:
    rng = np.random.default_rng(0)
    out = []
    for i, (f, T) in enumerate(zip(frames, net_poses)):
        depth = f.depth[depth_step // 2::depth_step, depth_step // 2::depth_step].astype(np.float32)
        depth = np.where(np.isfinite(depth), depth, np.nan).astype(np.float32)
        H, W = f.depth.shape
        v, u = np.nonzero(np.isfinite(f.depth))
        pick = rng.choice(len(u), size=min(points, len(u)), replace=False)
        u, v = u[pick], v[pick]
        z = f.depth[v, u]
        K = f.K
        cam = np.column_stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])
        world = cam @ T[:3, :3].T + T[:3, 3]
        out.append(FrameInput(stamp_ns=int(f.stamp_ns), index=i, T_world_cam=T, depth=depth,
                              confidence=np.ones_like(depth), K=np.asarray(K, np.float64), image=f.rgb,
                              crop=(0, 0, W, H), points=world.astype(np.float32), colors=f.rgb[v, u],
                              point_confidence=np.ones(len(u), np.float32)))
    return out


def _run(inputs, **cfg) -> GeometricBackend:
    be = GeometricBackend(BackendConfig(threaded=False, **cfg))
    for fi in inputs:
        be.submit(fi)
    return be


def _path_length(poses: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum())


@pytest.fixture(scope="module")
def room():
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=90, width=224, height=168,
                                       fps=15, seed=5011), device="cpu")
    return frames, np.stack([f.T_world_cam for f in frames])


def test_the_back_end_undoes_a_drifting_front_end_from_the_images(room):
    frames, gt = room
    net = _drifted(gt, yaw_per_frame_deg=0.3, scale_per_frame=1.004)
    before = compute_ate(net, gt, align="sim3").rmse
    be = _run(_inputs(frames, net), loop_closure=False)
    stamps, est = be.poses()
    assert list(stamps) == [f.stamp_ns for f in frames]  # every frame has a pose, in order
    after = compute_ate(est, gt, align="sim3").rmse
    path = _path_length(gt)
    stats = be.stats()
    assert stats["steps_verified"] >= 0.8 * (stats["keyframes"] - 1)  # the images verify (almost) every step
    assert 5 <= stats["keyframes"] <= 90
    assert after < 0.3 * before, (before, after)
    assert after < 0.02 * path, (after, path)
    # Keyframe-to-keyframe rotation follows the images, not the 0.3 deg/frame bias (which adds up
    # to about 1 deg between keyframes).
    k = [i for i, r in enumerate(be.core.frames) if r.is_keyframe]
    rel_err = [rotation_angle_deg((np.linalg.inv(est[a]) @ est[b])[:3, :3].T @ (np.linalg.inv(gt[a]) @ gt[b])[:3, :3])
               for a, b in zip(k[:-1], k[1:])]
    bias = [0.3 * (b - a) for a, b in zip(k[:-1], k[1:])]
    assert np.mean(rel_err) < 0.25 * np.mean(bias), (np.mean(rel_err), np.mean(bias))


def test_keyframes_are_spaced_by_parallax_and_the_graph_is_bounded(room):
    frames, gt = room
    inputs = _inputs(frames, gt)
    dense = _run(inputs, loop_closure=False, keyframe_parallax_deg=0.5).stats()["keyframes"]
    sparse = _run(inputs, loop_closure=False, keyframe_parallax_deg=3.0).stats()["keyframes"]
    assert dense > sparse
    be = _run(inputs, loop_closure=False)
    kept = [k for k in be.core.keyframes.values() if k.feats is not None]
    assert len(kept) <= 2  # only the newest keyframes keep their full features
    assert all(len(k.place) <= be.cfg.place_features_per_keyframe for k in be.core.keyframes.values())


def test_a_back_end_restored_from_its_session_state_continues_exactly(room):
    from loger_core.backend.session_state import capture_backend, restore_backend

    frames, gt = room
    inputs = _inputs(frames, _drifted(gt, 0.2, 1.002))
    cfg = BackendConfig(threaded=False, loop_closure=False)
    whole = _run(inputs, loop_closure=False)
    half = _run(inputs[:47], loop_closure=False)
    tensors, meta = capture_backend(half.core)
    json.dumps(meta)  # the meta part goes into the session's JSON header
    resumed = GeometricBackend(cfg, core=restore_backend(cfg, tensors, meta))
    for fi in inputs[47:]:
        resumed.submit(fi)
    s1, p1 = whole.poses()
    s2, p2 = resumed.poses()
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_allclose(p2, p1, atol=1e-6)
    assert resumed.stats()["keyframes"] == whole.stats()["keyframes"]


@pytest.fixture(scope="module")
def loop_drive():
    # The car laps its block (about 130 m) in about 360 frames, then drives on past its start.
    frames = render_frames(SynthConfig(scene="loop", trajectory="car", frames=400, width=320, height=240, fps=10,
                                       seed=5003), device="cpu")
    return frames, np.stack([f.T_world_cam for f in frames])


def test_a_true_loop_is_closed_and_straightens_the_drive(loop_drive):
    frames, gt = loop_drive
    net = _drifted(gt, yaw_per_frame_deg=0.05, scale_per_frame=1.0)
    inputs = _inputs(frames, net)
    open_loop = _run(inputs, loop_closure=False)
    closed = _run(inputs)
    stats = closed.stats()
    assert stats["loop_closures"] >= 1, stats
    kfs = closed.core.keyframes
    loops = [r for r in closed.core.graph.records if r[0] == "between" and r[8]]
    assert len(loops) == stats["loop_closures"]
    for _, a, b, T_a_b, *_ in loops:
        # Every accepted closure measured the true relative pose of the two places (the second lap
        # runs one lane over, so they can be metres apart): rotation and direction of travel agree.
        G = np.linalg.inv(gt[kfs[a].index]) @ gt[kfs[b].index]
        assert rotation_angle_deg(T_a_b[:3, :3].T @ G[:3, :3]) < 3.0
        cos = T_a_b[:3, 3] @ G[:3, 3] / (np.linalg.norm(T_a_b[:3, 3]) * np.linalg.norm(G[:3, 3]) + 1e-12)
        assert cos > np.cos(np.radians(20.0)), (a, b, T_a_b[:3, 3], G[:3, 3])
    e_open = compute_ate(open_loop.poses()[1], gt, align="sim3").rmse
    e_closed = compute_ate(closed.poses()[1], gt, align="sim3").rmse
    assert e_closed <= e_open * 1.05, (e_open, e_closed)


@pytest.fixture(scope="module")
def corridor():
    return render_frames(SynthConfig(scene="corridor", trajectory="handheld", frames=160, width=160, height=120,
                                     fps=15, seed=5015), device="cpu")


def _token_descriptors(frames) -> np.ndarray:
    """(N, 128) the shipped `small` model's encoder-token descriptors (``FrameResult.descriptor``)."""
    import torch

    from loger_core.model import load_checkpoint
    from loger_core.model.descriptor import encoder_descriptors
    from loger_core.model.selection import BUNDLED_CHECKPOINT
    from loger_core.stream.preprocess import prepare_image

    model = load_checkpoint(str(BUNDLED_CHECKPOINT), config="small", device="cpu").eval()
    return encoder_descriptors(model, torch.from_numpy(np.stack([prepare_image(f.rgb, (112, 84)).rgb for f in frames]))).numpy()


@pytest.fixture(scope="module")
def corridor_tokens(corridor):
    return _token_descriptors(corridor)


@pytest.mark.parametrize("place", ["vlad", "tokens", "fusion"])
def test_a_corridor_of_repeated_doors_closes_no_loop(corridor, place, request):
    # One pass down a corridor never revisits a place: any closure would be perceptual aliasing,
    # whichever descriptor ranks the candidates.
    frames = corridor
    gt = np.stack([f.T_world_cam for f in frames])
    inputs = _inputs(frames, _drifted(gt, 0.1, 1.0))
    if place != "vlad":
        for fi, d in zip(inputs, request.getfixturevalue("corridor_tokens")):
            fi.descriptor = d
    be = _run(inputs, loop_min_age=30, place_descriptor=place)
    assert be.stats()["loop_candidates"] > 0  # the descriptor did propose (false) candidates
    stats = be.stats()
    for a, b in stats["loops"]:
        kfs = be.core.keyframes
        assert np.linalg.norm(gt[kfs[a].index, :3, 3] - gt[kfs[b].index, :3, 3]) < 1.0, "false loop closure"
    assert stats["loop_closures"] == 0 or all(
        np.linalg.norm(gt[be.core.keyframes[a].index, :3, 3] - gt[be.core.keyframes[b].index, :3, 3]) < 1.0
        for a, b in stats["loops"])


def test_a_frame_without_image_or_with_garbage_keeps_its_network_pose(room):
    frames, gt = room
    inputs = _inputs(frames[:20], gt[:20])
    inputs[7].image = None  # not pushed through this pipeline (e.g. resumed mid-window)
    inputs[9].T_world_cam = np.full((4, 4), np.nan)
    be = _run(inputs, loop_closure=False)
    stamps, poses = be.poses()
    assert len(stamps) == 20
    assert np.all(np.isfinite(np.delete(poses, 9, axis=0)))


def test_reconstruct_with_the_back_end_off_is_the_front_end_exactly(tmp_path):
    from loger_core.cli.reconstruct import main
    from loger_core.io.image_folder_writer import write_image_folder
    from loger_core.io.trajectory import read_tum

    frames = render_frames(SynthConfig(scene="room", frames=14, width=112, height=84, fps=10, seed=3), device="cpu")
    seq = write_image_folder(tmp_path / "seq", frames, fps=10)
    fast = [str(seq), "--resolution", "84x56", "--window", "5", "--overlap", "1", "--device", "cpu", "--quiet",
            "--synthetic-weights"]
    assert main([*fast, "--out", str(tmp_path / "off"), "--backend", "off"]) == 0
    assert main([*fast, "--out", str(tmp_path / "on")]) == 0
    assert not (tmp_path / "off" / "trajectory_frontend.tum").exists()
    off = read_tum(tmp_path / "off" / "trajectory.tum")
    front = read_tum(tmp_path / "on" / "trajectory_frontend.tum")
    np.testing.assert_array_equal(off.stamps_ns, front.stamps_ns)
    np.testing.assert_array_equal(off.poses, front.poses)  # the back end never touches the front end's poses
    run = json.loads((tmp_path / "on" / "run.json").read_text())
    assert run["backend"]["frames"] == 14 and json.loads((tmp_path / "off" / "run.json").read_text())["backend"] is None
