"""Back end place recognition and loop verification: VLAD PlaceIndex over real SIFT descriptors of
rendered images, verify_loop on a ray-traced textured room (so every keypoint's depth and the true
relative pose are known), and the consistency check between loop corrections."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from loger_core.backend.config import BackendConfig
from loger_core.backend.features import extract_features
from loger_core.backend.keyframes import Keyframe
from loger_core.backend.loop_closure import LoopCandidate, consistent, rotation_angle_deg, verify_loop
from loger_core.backend.place import PlaceIndex, vlad


def textured_image(seed: int, w: int = 400, h: int = 300, shapes: int = 70) -> np.ndarray:
    """Random rectangles, circles and lines over smoothed noise (gray, uint8)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8)), dtype=np.uint8)
    img = np.ascontiguousarray(cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC))
    for _ in range(shapes):
        c = int(rng.integers(0, 256))
        kind = rng.integers(3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 50)), y + int(rng.integers(8, 50))), c, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(4, 25)), c, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), c, int(rng.integers(1, 4)))
    return cv2.GaussianBlur(img, (3, 3), 0)


def warp(img: np.ndarray, deg: float, shift, scale: float = 1.0) -> np.ndarray:
    h, w = img.shape[:2]
    A = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
    A[:, 2] += shift
    return cv2.warpAffine(img, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def rot(axis, deg: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64)
    R, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * math.radians(deg))
    return R


def pose(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


# -- PlaceIndex ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def place_images():
    imgs = [textured_image(100 + i) for i in range(12)]
    return imgs, [extract_features(im, "sift", 300).desc for im in imgs]


def test_vlad_shape_and_normalisation():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (8, 16)).astype(np.float32)
    v = vlad(rng.normal(0, 1, (50, 16)), centers)
    assert v.shape == (8 * 16,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    # Descriptors all at one centre (zero residual) and no descriptors give the zero vector.
    assert not np.any(vlad(np.repeat(centers[:1], 5, 0), centers))
    assert not np.any(vlad(np.zeros((0, 16), np.float32), centers))


def test_place_index_ranks_revisit_first(place_images):
    imgs, descs = place_images
    idx = PlaceIndex(k=16, vocab_keyframes=8, seed=0)
    for key, d in enumerate(descs):
        idx.add(key, d)
    assert idx.centers is not None and idx.centers.shape == (16, 128)
    assert len(idx) == 12  # the keyframes added before the vocabulary are described too
    for target in (5, 0, 11):
        q = extract_features(warp(imgs[target], 4.0, (6.0, -4.0), 1.03), "sift", 300).desc
        got = idx.query(q, top=3)
        assert len(got) == 3
        assert got[0][0] == target, got
        assert got[0][1] > got[1][1] + 0.05  # a clear margin over the next place
        assert all(got[i][1] >= got[i + 1][1] for i in range(2))


def test_place_index_keys_allowed_and_top(place_images):
    imgs, descs = place_images
    idx = PlaceIndex(k=16, vocab_keyframes=8, seed=0)
    for key, d in enumerate(descs):
        idx.add(key * 10, d)  # keys are not positions
    q = extract_features(warp(imgs[5], 3.0, (4.0, 4.0)), "sift", 300).desc
    assert idx.query(q, top=1)[0][0] == 50
    got = idx.query(q, keys_allowed={0, 10, 20, 30}, top=3)
    assert len(got) == 3 and {k for k, _ in got} <= {0, 10, 20, 30}
    assert idx.query(q, keys_allowed={70}, top=3)[0][0] == 70
    assert idx.query(q, keys_allowed=set(), top=3) == []
    assert len(idx.query(q, top=50)) == 12


def test_place_index_before_vocabulary(place_images):
    _, descs = place_images
    idx = PlaceIndex(k=16, vocab_keyframes=8)
    for key in range(7):
        idx.add(key, descs[key])
        assert idx.query(descs[key]) == []
    assert idx.centers is None and len(idx) == 0
    idx.add(7, descs[7])
    assert idx.centers is not None and len(idx) == 8
    assert idx.query(descs[3], top=1)[0][0] == 3


def test_place_index_waits_for_enough_descriptors():
    # Too few descriptors for k centres: no vocabulary yet, and no crash.
    rng = np.random.default_rng(1)
    idx = PlaceIndex(k=16, vocab_keyframes=2)
    idx.add(0, rng.normal(0, 1, (10, 128)).astype(np.float32))
    idx.add(1, rng.normal(0, 1, (10, 128)).astype(np.float32))
    assert idx.centers is None and idx.query(rng.normal(0, 1, (5, 128))) == []
    idx.add(2, rng.normal(0, 1, (80, 128)).astype(np.float32))
    assert idx.centers is not None and len(idx) == 3


def test_place_index_deterministic(place_images):
    _, descs = place_images
    a, b = PlaceIndex(k=16, vocab_keyframes=8, seed=3), PlaceIndex(k=16, vocab_keyframes=8, seed=3)
    for key, d in enumerate(descs):
        a.add(key, d)
        b.add(key, d)
    np.testing.assert_array_equal(a.centers, b.centers)
    assert a.query(descs[2], top=5) == b.query(descs[2], top=5)
    st = a.state()
    assert st["vecs"].shape == (12, 16 * 128) and st["keys"].tolist() == list(range(12))


def test_place_index_featureless_keyframes():
    idx = PlaceIndex(k=4, vocab_keyframes=2)
    idx.add(0, np.zeros((0, 128), np.float32))
    idx.add(1, np.zeros((0, 128), np.float32))
    assert idx.centers is None and idx.query(np.zeros((0, 128), np.float32)) == []


# -- verify_loop on a ray-traced room ------------------------------------------------------------
IMG_W, IMG_H = 320, 240
K = np.array([[260.0, 0, 160.0], [0, 260.0, 120.0], [0, 0, 1]])
PX_PER_M = 60.0
# Axis-aligned planes of a room in the old keyframe's camera frame (x right, y down, z forward):
# (axis, value, texture axes (u, v), (u0, v0) texture origin in metres, texture size in metres).
PLANES = [
    (2, 9.0, (0, 1), (-4.0, -2.5), (8.0, 4.5)),   # back wall
    (1, 2.0, (0, 2), (-4.0, -1.0), (8.0, 10.5)),  # floor
    (1, -2.5, (0, 2), (-4.0, -1.0), (8.0, 10.5)),  # ceiling
    (0, -4.0, (2, 1), (-1.0, -2.5), (10.5, 4.5)),  # left wall
    (0, 4.0, (2, 1), (-1.0, -2.5), (10.5, 4.5)),   # right wall
]


def room_textures(seed: int) -> list[np.ndarray]:
    out = []
    for i, (_, _, _, _, size) in enumerate(PLANES):
        w, h = int(size[0] * PX_PER_M), int(size[1] * PX_PER_M)
        out.append(textured_image(seed * 10 + i, w, h, shapes=int(w * h / 2500)))
    return out


def render(textures: list[np.ndarray], T_old_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8, z-depth float64) of the room seen by a camera at ``T_old_cam`` (x_old = T x_cam)."""
    v, u = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float64)
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = d_cam @ T_old_cam[:3, :3].T
    c = T_old_cam[:3, 3]
    best = np.full(u.shape, np.inf)
    image = np.zeros(u.shape, np.float32)
    for (axis, value, (ua, va), (u0, v0), _), tex in zip(PLANES, textures):
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (value - c[axis]) / d[..., axis]
        hit = np.isfinite(lam) & (lam > 0) & (lam < best)
        lam = np.where(np.isfinite(lam), lam, 0.0)
        P = c + lam[..., None] * d
        # Clipped: rays missing this plane give huge coordinates, which OpenCV's border handling
        # walks slowly (and they are masked out anyway).
        mu = np.nan_to_num(np.clip((P[..., ua] - u0) * PX_PER_M - 0.5, -2, tex.shape[1] + 1)).astype(np.float32)
        mv = np.nan_to_num(np.clip((P[..., va] - v0) * PX_PER_M - 0.5, -2, tex.shape[0] + 1)).astype(np.float32)
        col = cv2.remap(tex.astype(np.float32), mu, mv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        image[hit] = col[hit]
        best[hit] = lam[hit]
    assert np.all(np.isfinite(best))  # a closed room: every ray hits a wall
    return np.clip(image, 0, 255).astype(np.uint8), best  # d_cam has z = 1: lambda is the z-depth


def depth_at(depth: np.ndarray, uv: np.ndarray) -> np.ndarray:
    return cv2.remap(depth.astype(np.float32), uv[:, :1].astype(np.float32), uv[:, 1:].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).ravel()


def make_keyframe(image: np.ndarray, depth: np.ndarray, q: float = 1.0, net_scale: float = 1.0) -> Keyframe:
    """A keyframe with network depth = true depth * net_scale; place: 300 random features as the
    back end keeps them (SIFT descriptors quantised to uint8 values)."""
    feats = extract_features(image, "sift", 2000)
    idx = np.sort(np.random.default_rng(0).choice(len(feats), min(300, len(feats)), replace=False))
    place = feats.subset(idx)
    place.desc = np.clip(place.desc, 0, 255).astype(np.uint8).astype(np.float32)
    z = depth_at(depth, place.uv) * net_scale
    return Keyframe(key=0, index=0, stamp_ns=0, T_net=np.eye(4), K=K, feats=None, depth_feats=None, place=place,
                    depth_place=z.astype(np.float32), points=np.zeros((0, 3), np.float32),
                    colors=np.zeros((0, 3), np.uint8), conf=np.zeros(0, np.float32), median_depth=float(np.median(z)), q=q)


T_REVISIT = pose(rot([0.1, 1.0, 0.05], 6.0), [0.5, -0.1, 0.7])  # the new camera in the old one's frame


@pytest.fixture(scope="module")
def room():
    tex = room_textures(1)
    old_img, old_depth = render(tex, np.eye(4))
    new_img, new_depth = render(tex, T_REVISIT)
    return tex, old_img, old_depth, new_img, new_depth


def check_pose(T_est: np.ndarray, T_true: np.ndarray, len_tol: float = 0.15):
    assert rotation_angle_deg(T_est[:3, :3].T @ T_true[:3, :3]) < 1.0
    a, b = T_est[:3, 3], T_true[:3, 3]
    assert math.degrees(math.acos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))) < 5.0
    assert np.linalg.norm(a) == pytest.approx(np.linalg.norm(b), rel=len_tol)


def test_render_is_consistent(room):
    # The renderer itself: a pixel of the old view lands where the true pose projects it in the new one.
    _, old_img, old_depth, new_img, new_depth = room
    assert old_img.std() > 20 and new_img.std() > 20
    uv = np.array([[100.0, 80.0], [200.0, 150.0], [160.0, 60.0]])
    z = old_depth[uv[:, 1].astype(int), uv[:, 0].astype(int)]
    X_old = np.column_stack([(uv - K[:2, 2]) / K[0, 0] * z[:, None], z])
    X_new = (X_old - T_REVISIT[:3, 3]) @ T_REVISIT[:3, :3]
    p = X_new @ K.T
    uvn = p[:, :2] / p[:, 2:]
    zn = new_depth[np.round(uvn[:, 1]).astype(int), np.round(uvn[:, 0]).astype(int)]
    np.testing.assert_allclose(zn, X_new[:, 2], rtol=0.02)


def test_verify_loop_accepts_true_revisit(room):
    _, old_img, old_depth, new_img, new_depth = room
    cfg = BackendConfig()
    old = make_keyframe(old_img, old_depth)
    new = extract_features(new_img, "sift", 2000)
    got = verify_loop(cfg, old, new, K, 1.0)
    assert got is not None
    T_old_new, scale, inliers, ratio = got
    assert T_old_new.shape == (4, 4) and np.allclose(T_old_new[3], [0, 0, 0, 1])
    check_pose(T_old_new, T_REVISIT)
    assert inliers >= cfg.loop_min_inliers and ratio >= cfg.loop_min_inlier_ratio
    assert scale == 1.0  # no new depth given


def test_verify_loop_scale_units(room):
    # The old keyframe's network depth is 2x the truth and its q (map units per network unit) 1.5:
    # the translation comes out in the old keyframe's map units (3x metres). The new keyframe's
    # depth at 0.5x in units of q=1: its Sim(3) scale in the old keyframe's units is 6.
    _, old_img, old_depth, new_img, new_depth = room
    cfg = BackendConfig()
    old = make_keyframe(old_img, old_depth, q=1.5, net_scale=2.0)
    new = extract_features(new_img, "sift", 2000)
    new_net_depth = depth_at(new_depth, new.uv) * 0.5
    got = verify_loop(cfg, old, new, K, 1.0, new_net_depth)
    assert got is not None
    T_old_new, scale, _, _ = got
    T_true = T_REVISIT.copy()
    T_true[:3, 3] *= 3.0
    check_pose(T_old_new, T_true)
    assert scale == pytest.approx(6.0, rel=0.15)
    # new_q converts the new keyframe's network units: q=2 halves the scale.
    got2 = verify_loop(cfg, old, new, K, 2.0, new_net_depth)
    assert got2[1] == pytest.approx(scale / 2.0, rel=1e-6)


def test_verify_loop_rejects_other_places(room):
    # Perceptual aliasing proxy: rooms of the same geometry and texture statistics, other seeds.
    _, old_img, old_depth, _, _ = room
    cfg = BackendConfig()
    old = make_keyframe(old_img, old_depth)
    accepted = 0
    for seed in range(2, 12):
        img, _ = render(room_textures(seed), T_REVISIT)
        accepted += verify_loop(cfg, old, extract_features(img, "sift", 2000), K, 1.0) is not None
    assert accepted == 0


def test_verify_loop_rejects_without_depth_or_matches(room):
    _, old_img, old_depth, new_img, _ = room
    cfg = BackendConfig()
    new = extract_features(new_img, "sift", 2000)
    old = make_keyframe(old_img, old_depth)
    old.depth_place = np.full_like(old.depth_place, np.nan)  # the network gave no depth there
    assert verify_loop(cfg, old, new, K, 1.0) is None
    # Stricter than the matches can give.
    old = make_keyframe(old_img, old_depth)
    assert verify_loop(BackendConfig(loop_min_inliers=400), old, new, K, 1.0) is None
    assert verify_loop(cfg, old, extract_features(np.full((IMG_H, IMG_W), 90, np.uint8)), K, 1.0) is None


# -- consistency ---------------------------------------------------------------------------------
def candidate(correction: np.ndarray, new: int = 1) -> LoopCandidate:
    return LoopCandidate(old=0, new=new, T_old_new=np.eye(4), scale=1.0, correction=correction, inliers=100,
                         inlier_ratio=0.5, similarity=0.3)


def test_consistent_thresholds():
    base = pose(rot([0, 0, 1], 20.0), [1.0, 2.0, 0.0])
    span = 10.0  # max_frac 0.2 -> 2 map units
    near = pose(rot([0.3, 1, 0], 2.0), [0.5, -0.3, 0.2]) @ base
    assert consistent(candidate(base), candidate(near, 2), span, 5.0, 0.2)
    assert consistent(candidate(base), candidate(base, 2), span, 5.0, 0.2)
    # Rotation beyond max_deg.
    turned = pose(rot([0.3, 1, 0], 6.0), [0, 0, 0]) @ base
    turned[:3, 3] = base[:3, 3]
    assert not consistent(candidate(base), candidate(turned, 2), span, 5.0, 0.2)
    assert consistent(candidate(base), candidate(turned, 2), span, 7.0, 0.2)
    # Translation beyond max_frac * span, and the same offset within a longer loop's allowance.
    moved = base.copy()
    moved[:3, 3] += [1.8, 1.0, 0.0]  # 2.06 units
    assert not consistent(candidate(base), candidate(moved, 2), span, 5.0, 0.2)
    assert consistent(candidate(base), candidate(moved, 2), 12.0, 5.0, 0.2)
    # Symmetric.
    assert consistent(candidate(near), candidate(base), span, 5.0, 0.2)
    assert not consistent(candidate(turned), candidate(base), span, 5.0, 0.2)


def test_rotation_angle_deg():
    for deg in (0.0, 0.5, 30.0, 179.0):
        assert rotation_angle_deg(pose(rot([1, 2, 3], deg), [5, 5, 5])) == pytest.approx(deg, abs=1e-4)
