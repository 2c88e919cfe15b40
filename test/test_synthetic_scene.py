"""Synthetic sequences without rendering: configuration, textures, scenes and camera motion."""

import math

import numpy as np
import pytest

from loger_core.synthetic import SceneConfig, SynthConfig, SynthError, TrajectoryConfig
from loger_core.synthetic.camera import intrinsics_from_fov, look_rotation
from loger_core.synthetic.config import parse_size
from loger_core.synthetic.sequence import prepare
from loger_core.synthetic.textures import TEXTURE_KINDS, make_detail_bank, make_texture_bank

SCENES = ("room", "corridor", "street", "loop")
TRAJECTORIES = ("handheld", "ground_robot", "car")
# Geometry and motion tests do not look at texels: small banks keep them fast.
SMALL_TEX = SceneConfig(texture_size=16, textures=12)


def _cfg(**kw) -> SynthConfig:
    return SynthConfig(**{"scene_config": SMALL_TEX, **kw})


# ------------------------------------------------------------------ config
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"scene": "kitchen"}, "scene"),
        ({"trajectory": "drone"}, "trajectory"),
        ({"frames": 0}, "frames"),
        ({"width": 4}, "width"),
        ({"height": 2.5}, "height"),
        ({"fov_deg": 179.0}, "fov_deg"),
        ({"fps": 0.0}, "fps"),
        ({"seed": -1}, "seed"),
        ({"scene_config": SceneConfig(texture_size=100)}, "texture_size"),
        ({"scene_config": SceneConfig(room_size_m=(1.0, 5.0, 3.0))}, "room_size_m"),
        ({"scene_config": SceneConfig(building_height_m=(30.0, 10.0))}, "building_height_m"),
        ({"trajectory_config": TrajectoryConfig(tilt_deg=75.0)}, "tilt_deg"),
        ({"trajectory_config": TrajectoryConfig(speed_mps=-1.0)}, "speed_mps"),
        ({"trajectory_config": TrajectoryConfig(wobble=-0.1)}, "wobble"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    with pytest.raises(SynthError, match=field):
        SynthConfig(**kwargs)


def test_parse_size():
    assert parse_size("320x240") == (320, 240)
    assert parse_size("64X48") == (64, 48)
    for bad in ("320-240", "x240", "4x4", "axb"):
        with pytest.raises(SynthError, match="size"):
            parse_size(bad)


def test_stamps_follow_fps_in_integer_ns():
    cfg = SynthConfig(frames=4, fps=24.0, start_stamp_ns=5)
    assert cfg.stamps_ns == [5, 5 + 41666667, 5 + 83333333, 5 + 125000000]
    assert all(isinstance(s, int) for s in cfg.stamps_ns)


# ----------------------------------------------------------------- camera
def test_intrinsics_from_fov_puts_image_edges_at_half_fov():
    K = intrinsics_from_fov(320, 240, 90.0)
    # The outer pixel edges (-0.5 and W - 0.5) are at +-45 degrees.
    assert K[0, 0] == pytest.approx(160.0)
    assert K[0, 2] == pytest.approx(159.5) and K[1, 2] == pytest.approx(119.5)
    assert K[0, 0] == K[1, 1]
    with pytest.raises(SynthError, match="fov_deg"):
        intrinsics_from_fov(320, 240, 180.0)


def test_look_rotation_axes():
    R = look_rotation([0.0], [0.0], [0.0])[0]
    # yaw 0: optical axis along +x, image right = -y, image down = -z (z-up world).
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(R[:, 0], [0, -1, 0], atol=1e-15)
    np.testing.assert_allclose(R[:, 1], [0, 0, -1], atol=1e-15)
    R = look_rotation([math.pi / 2], [math.radians(30)], [0.2])[0]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert R[2, 2] == pytest.approx(-0.5)  # looking 30 degrees down


# --------------------------------------------------------------- textures
def test_texture_bank_kinds_mips_and_distinctness():
    bank = make_texture_bank(np.random.default_rng(0), 18, 32)
    assert bank.kinds[0] == "asphalt"
    assert set(TEXTURE_KINDS) <= set(bank.kinds)
    assert bank.texels.dtype == np.float32 and bank.texels.shape[1] == 3
    assert 0.0 <= bank.texels.min() and bank.texels.max() <= 1.0
    assert bank.levels == 6 and bank.texels.shape[0] == 18 * bank.texels_per_texture
    # Level 1 is the 2x2 box average of level 0.
    t = 5
    start = t * bank.texels_per_texture
    lvl0 = bank.level0(t)
    lvl1 = bank.texels[start + bank.level_offsets[1] : start + bank.level_offsets[2]].reshape(16, 16, 3)
    np.testing.assert_allclose(lvl1, lvl0.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)), atol=1e-6)
    # No two textures alike, and none is flat.
    imgs = np.stack([bank.level0(i) for i in range(bank.count)])
    assert imgs.reshape(18, -1).std(axis=1).min() > 0.02
    diffs = [np.abs(imgs[i] - imgs[j]).mean() for i in range(18) for j in range(i + 1, 18)]
    assert min(diffs) > 0.02


def test_textures_tile_seamlessly():
    bank = make_texture_bank(np.random.default_rng(3), 17, 64)
    for i in range(bank.count):
        img = bank.level0(i)
        for axis in (0, 1):
            steps = np.abs(np.diff(img, axis=axis)).mean(axis=(1 - axis, 2))  # per row/column boundary
            seam = np.abs(np.take(img, 0, axis=axis) - np.take(img, -1, axis=axis)).mean()
            # The wrap-around seam is no more abrupt than the texture's own boundaries.
            assert seam <= 1.5 * steps.max() + 0.01, (bank.kinds[i], axis, seam, steps.max())


def test_texture_bank_is_deterministic():
    a = make_texture_bank(np.random.default_rng(7), 9, 16)
    b = make_texture_bank(np.random.default_rng(7), 9, 16)
    c = make_texture_bank(np.random.default_rng(8), 9, 16)
    assert a.kinds == b.kinds and np.array_equal(a.texels, b.texels)
    assert not np.array_equal(a.texels, c.texels)
    d = make_detail_bank(np.random.default_rng(7), 3, 16)
    assert d.texels.shape == (3 * d.texels_per_texture, 1)


# ---------------------------------------------------- scenes and trajectories
def _horizontal_clearance(setup) -> np.ndarray:
    """Per frame: distance (xy) from the camera to the nearest box at camera height."""
    P = setup.poses[:, None, :3, 3]
    lo, hi = setup.scene.box_lo, setup.scene.box_hi
    gap = np.maximum(np.maximum(lo[:, :2] - P[..., :2], P[..., :2] - hi[:, :2]), 0.0)
    dist = np.linalg.norm(gap, axis=-1)
    spans = (lo[:, 2] <= P[..., 2] + 0.1) & (hi[:, 2] >= P[..., 2] - 0.1)
    return np.where(spans, dist, np.inf).min(axis=1)


@pytest.mark.parametrize("scene", SCENES)
@pytest.mark.parametrize("trajectory", TRAJECTORIES)
def test_camera_never_runs_into_geometry(scene, trajectory):
    setup = prepare(
        _cfg(scene=scene, trajectory=trajectory, frames=600, width=32, height=24, seed=11)
    )
    poses = setup.poses
    assert poses.shape == (600, 4, 4)
    R = poses[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    assert _horizontal_clearance(setup).min() > 0.3
    if scene in ("room", "corridor"):
        W, D, H = SceneConfig().room_size_m if scene == "room" else (None, None, SceneConfig().corridor_height_m)
        assert poses[:, 2, 3].max() < H - 0.3  # below the ceiling


def test_materials_make_every_surface_unique():
    setup = prepare(_cfg(scene="street", trajectory="car", frames=300, seed=2))
    faces = setup.scene.faces()
    keys = {(int(t), *np.round(o, 6), *np.round(c, 6)) for t, o, c in zip(faces.texture, faces.tex_offset, faces.tint)}
    assert len(keys) == len(faces)
    assert len(set(faces.texture.tolist())) == SMALL_TEX.textures  # the whole bank is in use


def test_repeated_materials_on_request():
    sc = SceneConfig(texture_size=16, textures=6, repeat_materials=True)
    setup = prepare(SynthConfig(scene="room", trajectory="handheld", frames=10, seed=2, scene_config=sc))
    faces = setup.scene.faces()
    keys = {(int(t), *np.round(o, 6), *np.round(c, 6)) for t, o, c in zip(faces.texture, faces.tex_offset, faces.tint)}
    assert len(keys) == 5  # the palette: every texture but the reserved road texture
    assert len(faces) > 100


def test_street_supports_kilometre_drives():
    # 2 minutes at 10 m/s.
    cfg = _cfg(scene="street", trajectory="car", frames=3600, fps=30.0, seed=4)
    setup = prepare(cfg)
    P = setup.poses[:, :3, 3]
    travelled = np.linalg.norm(np.diff(P, axis=0), axis=1).sum()
    assert travelled > 1000.0
    assert _horizontal_clearance(setup).min() > 0.3
    # The road turns (staircase of legs), so the drive is not a straight line.
    heading = setup.poses[:, :2, 2]
    assert np.abs(heading[:, 1]).max() > 0.9 and np.abs(heading[:, 0]).max() > 0.9
    assert setup.scene.outdoor and setup.scene.ground


def test_ground_robot_is_planar_with_fixed_height_and_tilt():
    tc = TrajectoryConfig(height_m=0.4, tilt_deg=12.0)
    setup = prepare(
        _cfg(scene="room", trajectory="ground_robot", frames=200, seed=1, trajectory_config=tc)
    )
    T = setup.poses
    np.testing.assert_allclose(T[:, 2, 3], 0.4, atol=1e-12)
    np.testing.assert_allclose(T[:, 2, 2], -math.sin(math.radians(12.0)), atol=1e-12)  # optical axis tilt
    np.testing.assert_allclose(T[:, 2, 0], 0.0, atol=1e-12)  # image x stays horizontal: no roll
    yaw = np.unwrap(np.arctan2(T[:, 1, 2], T[:, 0, 2]))
    assert np.ptp(yaw) > math.radians(45)  # it turns
    # Forward motion: displacement along the optical axis' ground projection.
    step = np.diff(T[:, :2, 3], axis=0)
    fwd = T[:-1, :2, 2] / np.linalg.norm(T[:-1, :2, 2], axis=1, keepdims=True)
    assert np.all(np.sum(step * fwd, axis=1) > 0)


def test_car_speed_and_heading_follow_the_configuration():
    fps = 20.0
    tc = TrajectoryConfig(speed_mps=15.0)
    setup = prepare(
        _cfg(scene="street", trajectory="car", frames=400, fps=fps, seed=3, trajectory_config=tc)
    )
    T = setup.poses
    speed = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1) * fps
    assert speed.mean() == pytest.approx(15.0, rel=0.15)
    assert speed.min() > 0.7 * 15.0
    vel = np.diff(T[:, :3, 3], axis=0)
    cos = np.sum(vel * T[:-1, :3, 2], axis=1) / np.linalg.norm(vel, axis=1) / np.linalg.norm(T[:-1, :3, 2], axis=1)
    assert cos.min() > math.cos(math.radians(12))  # looks where it drives
    assert np.diff(setup.stamps_ns).tolist() == [50_000_000] * 399


def test_handheld_moves_in_all_six_degrees_of_freedom_smoothly():
    fps = 30.0
    setup = prepare(_cfg(scene="corridor", trajectory="handheld", frames=300, fps=fps, seed=5))
    T = setup.poses
    assert np.std(T[:, 2, 3]) > 0.005  # height bobs
    roll = np.arcsin(np.clip(T[:, 2, 0], -1, 1))
    assert np.ptp(roll) > math.radians(1.0)
    pitch = np.arcsin(np.clip(-T[:, 2, 2], -1, 1))
    assert np.ptp(pitch) > math.radians(2.0)
    # Smooth: accelerations of a walking hand, not frame-to-frame jumps.
    acc = np.diff(T[:, :3, 3], n=2, axis=0) * fps * fps
    assert np.linalg.norm(acc, axis=1).max() < 3.0
    rel = np.einsum("nji,njk->nik", T[:-1, :3, :3], T[1:, :3, :3])  # R_k^T R_k+1
    ang_step = np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1))
    assert ang_step.max() < math.radians(2.0)


def test_loop_revisits_its_start():
    fps = 30.0
    tc = TrajectoryConfig(wobble=0.0)
    cfg = SynthConfig(
        scene="loop", trajectory="car", frames=900, fps=fps, seed=6, trajectory_config=tc, scene_config=SMALL_TEX
    )
    setup = prepare(cfg)
    P = setup.poses[:, :3, 3]
    half = len(P) // 2
    far = np.linalg.norm(P[:half] - P[0], axis=1).max()
    back = np.linalg.norm(P[half:] - P[0], axis=1)
    assert far > 50.0  # it really went around the block
    assert back.min() < 10.0 / fps + 1e-6  # and came back within one frame step
    k = half + int(np.argmin(back))
    np.testing.assert_allclose(setup.poses[k, :3, :3], setup.poses[0, :3, :3], atol=0.05)


def test_prepare_is_deterministic_and_seed_dependent():
    cfg = _cfg(scene="loop", trajectory="handheld", frames=50, width=32, height=24, seed=9)
    a, b = prepare(cfg), prepare(cfg)
    assert np.array_equal(a.poses, b.poses)
    assert np.array_equal(a.scene.box_lo, b.scene.box_lo) and np.array_equal(a.textures.texels, b.textures.texels)
    c = prepare(_cfg(scene="loop", trajectory="handheld", frames=50, width=32, height=24, seed=10))
    assert not np.array_equal(a.poses, c.poses)
    assert not np.array_equal(a.textures.texels, c.textures.texels)
