"""Ray-cast rendering: exact depth, multi-view consistency, determinism, all scene kinds."""

import math

import numpy as np
import pytest
import torch

from loger_core.synthetic import (
    Material,
    Renderer,
    Route,
    Scene,
    SceneConfig,
    SynthConfig,
    SynthError,
    SynthFrame,
    generate_sequence,
    render_frames,
)
from loger_core.synthetic.camera import intrinsics_from_fov, look_rotation
from loger_core.synthetic.renderer import resolve_device
from loger_core.synthetic.sequence import prepare
from loger_core.synthetic.textures import make_detail_bank, make_texture_bank

SMALL_TEX = SceneConfig(texture_size=32, textures=16)


def _cfg(**kw) -> SynthConfig:
    """A config with a small texture bank (these tests do not need fine texels)."""
    return SynthConfig(**{"scene_config": SMALL_TEX, **kw})


def _banks():
    rng = np.random.default_rng(0)
    return make_texture_bank(rng, 4, 16), make_detail_bank(rng, 1, 8)


def _mat(texture=1):
    return Material(texture=texture, scale_m=(1.0, 1.0), offset=(0.0, 0.0), tint=(1.0, 1.0, 1.0))


def _scene(lo, hi, ground=False, outdoor=False):
    lo = np.asarray(lo, dtype=float).reshape(-1, 3)
    hi = np.asarray(hi, dtype=float).reshape(-1, 3)
    mats = [_mat(1 + (i % 3)) for i in range(6 * len(lo))]
    route = Route(points=np.array([[0.0, 0.0], [1.0, 0.0]]))
    ground_mat = _mat(0) if ground else None
    return Scene("custom", lo, hi, mats, route, ground=ground, ground_material=ground_mat, outdoor=outdoor)


def _pose(position, yaw=0.0, pitch=0.0, roll=0.0):
    T = np.eye(4)
    T[:3, :3] = look_rotation([yaw], [pitch], [roll])[0]
    T[:3, 3] = position
    return T


# ------------------------------------------------------------ exact depth
def test_fronto_parallel_wall_has_exact_constant_depth():
    # yaw 0 looks along +x; the wall's -x face is at x = 7.25, camera at x = 1.5.
    scene = _scene([7.25, -40.0, -40.0], [8.0, 40.0, 40.0])
    tex, det = _banks()
    K = intrinsics_from_fov(40, 30, 60.0)
    r = Renderer(scene, tex, det, K, 40, 30, device="cpu")
    out = r.render(_pose([1.5, 0.3, 0.2]))
    depth = out.depth.numpy()
    assert depth.dtype == np.float32 and depth.shape == (30, 40)
    assert np.all(depth == np.float32(5.75))
    assert np.all(out.face.numpy() == 0)  # face 0 = the box's -x face


def test_ground_plane_depth_matches_the_analytic_formula():
    h = 1.5
    scene = _scene(np.zeros((0, 3)), np.zeros((0, 3)), ground=True, outdoor=True)
    tex, det = _banks()
    W, H = 48, 36
    K = intrinsics_from_fov(W, H, 70.0)
    out = Renderer(scene, tex, det, K, W, H, device="cpu").render(_pose([3.0, -2.0, h]))
    depth = out.depth.numpy()
    rows = np.arange(H, dtype=np.float64) - K[1, 2]
    below = rows > 0
    expected = h * K[1, 1] / rows[below]
    # A level camera: z-depth depends only on the row; exact up to float32 rounding.
    np.testing.assert_allclose(depth[below], np.broadcast_to(expected[:, None], (below.sum(), W)), rtol=2e-7)
    assert np.all(np.isinf(depth[~below]))  # sky above the horizon
    sky = out.rgb.numpy()[~below]
    assert sky[..., 2].min() > sky[..., 0].max() - 60  # bluish, not black


def test_nearer_box_occludes_and_its_faces_report_their_own_depth():
    # A small box in front of a wall; seen from the side, its front (-x) face and its
    # side (-y) face are visible.
    scene = _scene([[10.0, -30.0, -30.0], [4.0, -0.5, -0.5]], [[11.0, 30.0, 30.0], [5.0, 0.5, 0.5]])
    tex, det = _banks()
    W, H = 64, 48
    K = intrinsics_from_fov(W, H, 60.0)
    r = Renderer(scene, tex, det, K, W, H, device="cpu")
    out = r.render(_pose([0.0, -1.5, 0.0], yaw=math.radians(15)))
    face = out.face.numpy()
    depth = out.depth.numpy().astype(np.float64)
    faces = r.faces
    ids = set(np.unique(face).tolist())
    assert {0, 6, 8} <= ids  # wall -x face, small box -x face, small box -y face
    T = _pose([0.0, -1.5, 0.0], yaw=math.radians(15))
    v, u = np.mgrid[0:H, 0:W]
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1) @ T[:3, :3].T
    hit = T[:3, 3] + rays * depth[..., None]
    for fid in (0, 6, 8):
        m = face == fid
        # Every pixel's 3D point lies on its face's plane and inside its rectangle.
        np.testing.assert_allclose(hit[m][:, faces.axis[fid]], faces.plane[fid], atol=2e-5)
    # Depth is finite everywhere (the wall fills the background) and the box is nearer.
    assert np.all(np.isfinite(depth))
    assert depth[face == 6].max() < depth[face == 0].min()


def test_tiling_does_not_change_the_image():
    setup = prepare(_cfg(scene="street", trajectory="car", frames=10, width=48, height=32, seed=1))
    a = setup.renderer(48, 32, "cpu", tile=(8, 8)).render(setup.poses[9])
    b = setup.renderer(48, 32, "cpu", tile=(48, 32)).render(setup.poses[9])
    assert torch.equal(a.depth, b.depth)
    assert torch.equal(a.face, b.face)
    assert torch.equal(a.rgb, b.rgb)


@pytest.mark.parametrize("scene,trajectory", [("room", "handheld"), ("street", "car"), ("loop", "car")])
def test_batched_views_equal_views_rendered_one_by_one(scene, trajectory):
    """render_batch (what CUDA uses: one set of kernels for many views, no tiles) gives the very
    images of render() (tiled) for each view: depth, face ids and colours bit for bit."""
    setup = prepare(_cfg(scene=scene, trajectory=trajectory, frames=9, width=40, height=30, seed=4))
    renderer = setup.renderer(40, 30, "cpu")
    batched = renderer.render_batch(setup.poses)
    assert len(batched) == 9 and renderer.render_batch([]) == []
    for pose, b in zip(setup.poses, batched):
        a = renderer.render(pose)
        assert torch.equal(a.depth, b.depth) and torch.equal(a.face, b.face) and torch.equal(a.rgb, b.rgb)
    assert any(torch.isfinite(b.depth).any() for b in batched)
    with pytest.raises(SynthError, match="T_world_cam"):
        renderer.render_batch([setup.poses[0], np.full((4, 4), np.nan)])


# ------------------------------------------------------------ multi-view
def _reprojection(setup, renderer, i, j, T_j=None):
    """Reproject frame i's depth into frame j; returns (relative depth errors on pixels
    whose four neighbours in j see the same face, fraction of such pixels)."""
    K = setup.K
    a, b = renderer.render(setup.poses[i]), renderer.render(setup.poses[j])
    T_j = setup.poses[j] if T_j is None else T_j
    da, fa = a.depth.numpy().astype(np.float64), a.face.numpy()
    db, fb = b.depth.numpy().astype(np.float64), b.face.numpy()
    H, W = da.shape
    v, u = np.mgrid[0:H, 0:W]
    ok = np.isfinite(da)
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * da, (v - K[1, 2]) / K[1, 1] * da, da, np.ones_like(da)], -1)[ok]
    pb = pts @ (np.linalg.inv(T_j) @ setup.poses[i]).T
    z = pb[:, 2]
    ub, vb = K[0, 0] * pb[:, 0] / z + K[0, 2], K[1, 1] * pb[:, 1] / z + K[1, 2]
    u0, v0 = np.floor(ub).astype(int), np.floor(vb).astype(int)
    inside = (z > 0) & (u0 >= 0) & (u0 < W - 1) & (v0 >= 0) & (v0 < H - 1)
    u0, v0, ub, vb, z, src = u0[inside], v0[inside], ub[inside], vb[inside], z[inside], fa[ok][inside]
    same = np.ones(u0.size, bool)
    for dv in (0, 1):
        for du in (0, 1):
            same &= fb[v0 + dv, u0 + du] == src
    au, av = ub - u0, vb - v0
    # On a plane 1/z is affine in pixel coordinates, so bilinear 1/z is exact.
    inv = (
        (1 - au) * (1 - av) / db[v0, u0] + au * (1 - av) / db[v0, u0 + 1]
        + (1 - au) * av / db[v0 + 1, u0] + au * av / db[v0 + 1, u0 + 1]
    )
    return np.abs(1.0 / inv[same] - z[same]) / z[same], same.mean()


@pytest.mark.parametrize("scene, trajectory", [("room", "handheld"), ("street", "car")])
def test_depth_reprojects_exactly_between_frames(scene, trajectory):
    setup = prepare(_cfg(scene=scene, trajectory=trajectory, frames=9, width=80, height=60, seed=5))
    r = setup.renderer(80, 60, "cpu")
    rel, frac = _reprojection(setup, r, 0, 8)
    assert frac > 0.6 and rel.size > 1000
    assert rel.max() < 2e-6  # float32 precision
    # Control: a 1 cm error in the true pose is clearly visible. (Diagonal, because a
    # shift parallel to a plane leaves that plane's depth image unchanged.)
    T = setup.poses[8].copy()
    T[:3, 3] += [0.01, 0.01, 0.01]
    rel_bad, _ = _reprojection(setup, r, 0, 8, T_j=T)
    assert np.percentile(rel_bad, 90) > 100 * rel.max()


def test_colours_are_consistent_across_views():
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=9, width=96, height=72, seed=5))

    def colour_error(fa: SynthFrame, fb: SynthFrame, shift: float) -> np.ndarray:
        K, d = fa.K, fa.depth.astype(np.float64)
        H, W = d.shape
        v, u = np.mgrid[0:H, 0:W]
        x, y = (u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d
        pts = np.stack([x, y, d, np.ones_like(d)], -1).reshape(-1, 4)
        Tb = fb.T_world_cam.copy()
        Tb[:3, 3] += shift
        pb = pts @ (np.linalg.inv(Tb) @ fa.T_world_cam).T
        ub = np.round(K[0, 0] * pb[:, 0] / pb[:, 2] + K[0, 2]).astype(int)
        vb = np.round(K[1, 1] * pb[:, 1] / pb[:, 2] + K[1, 2]).astype(int)
        ok = (pb[:, 2] > 0) & (ub >= 0) & (ub < W) & (vb >= 0) & (vb < H)
        ca = fa.rgb.reshape(-1, 3)[ok].astype(int)
        return np.abs(ca - fb.rgb[vb[ok], ub[ok]].astype(int)).mean(axis=1)

    good = colour_error(frames[0], frames[8], 0.0)
    bad = colour_error(frames[0], frames[8], 0.05)
    assert np.median(good) <= 4.0
    assert np.mean(good < 16) > 0.8
    assert np.mean(bad) > 1.5 * np.mean(good)


# ------------------------------------------------------ sequences, determinism
def test_tiny_sequence_contract():
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=12, width=64, height=48))
    assert len(frames) == 12
    stamps = [f.stamp_ns for f in frames]
    assert stamps == sorted(stamps) and isinstance(stamps[0], int)
    for f in frames:
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (48, 64) and f.depth.dtype == np.float32
        assert f.T_world_cam.shape == (4, 4) and f.T_world_cam.dtype == np.float64
        assert f.K.shape == (3, 3) and f.K.dtype == np.float64
        assert np.all(np.isfinite(f.depth)) and f.depth.min() > 0.05  # a closed room
        assert f.depth.max() < 10.0
        assert f.rgb.std() > 10  # textured, not flat
    assert not np.array_equal(frames[0].rgb, frames[-1].rgb)


def test_same_seed_same_bytes_other_seed_other_bytes():
    cfg = _cfg(scene="loop", trajectory="handheld", frames=3, width=40, height=30, seed=21)
    a = render_frames(cfg)
    b = list(generate_sequence(cfg, device="cpu"))
    for fa, fb in zip(a, b):
        assert fa.rgb.tobytes() == fb.rgb.tobytes()
        assert fa.depth.tobytes() == fb.depth.tobytes()
        assert fa.T_world_cam.tobytes() == fb.T_world_cam.tobytes()
        assert fa.stamp_ns == fb.stamp_ns
    cfg.seed = 22
    c = render_frames(cfg)
    assert c[0].rgb.tobytes() != a[0].rgb.tobytes()


@pytest.mark.parametrize("scene", ["corridor", "street", "loop"])
def test_every_scene_renders_plausible_frames(scene):
    frames = render_frames(_cfg(scene=scene, trajectory="ground_robot", frames=2, width=48, height=36, seed=3))
    for f in frames:
        finite = np.isfinite(f.depth)
        assert finite.mean() > 0.5
        assert f.depth[finite].min() > 0.0
        if scene == "corridor":
            assert finite.all()  # closed
        assert f.rgb.std() > 10


# ------------------------------------------------------------- bad input
def test_renderer_rejects_bad_input():
    scene = _scene([1.0, -1.0, -1.0], [2.0, 1.0, 1.0])
    tex, det = _banks()
    K = intrinsics_from_fov(16, 12, 60.0)
    r = Renderer(scene, tex, det, K, 16, 12, device="cpu")
    with pytest.raises(SynthError, match="T_world_cam"):
        r.render(np.full((4, 4), np.nan))
    with pytest.raises(SynthError, match="K must"):
        Renderer(scene, tex, det, np.eye(2), 16, 12, device="cpu")
    with pytest.raises(SynthError, match="tile"):
        Renderer(scene, tex, det, K, 16, 12, device="cpu", tile=(0, 4))
    with pytest.raises(SynthError, match="threads"):
        Renderer(scene, tex, det, K, 16, 12, device="cpu", threads=0)
    bad = _scene([1.0, -1.0, -1.0], [2.0, 1.0, 1.0])
    bad.materials[0] = _mat(texture=99)
    with pytest.raises(SynthError, match="texture 99"):
        Renderer(bad, tex, det, K, 16, 12, device="cpu")
    with pytest.raises(SynthError, match="empty"):
        _scene([1.0, 1.0, 1.0], [1.0, 2.0, 2.0])
    with pytest.raises(SynthError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SynthError, match="CUDA"):
            resolve_device("cuda")


def test_render_restores_torch_thread_count():
    before = torch.get_num_threads()
    render_frames(_cfg(frames=1, width=16, height=12), threads=1)
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = _cfg(scene="street", trajectory="car", frames=3, width=64, height=48)
    cpu, gpu = render_frames(cfg, device="cpu"), render_frames(cfg, device="cuda")
    for a, b in zip(cpu, gpu):
        finite = np.isfinite(a.depth)
        assert np.array_equal(finite, np.isfinite(b.depth)) or np.mean(finite != np.isfinite(b.depth)) < 0.002
        both = finite & np.isfinite(b.depth)
        assert np.median(np.abs(a.depth[both] - b.depth[both]) / a.depth[both]) < 1e-5
        assert np.mean(np.abs(a.rgb.astype(int) - b.rgb.astype(int)) > 8) < 0.02
