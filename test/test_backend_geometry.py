"""Back end geometry: features, two-view essential matrix, PnP, keyframe depth sampling / local points.

Everything is synthetic with fixed seeds: textured images rendered with OpenCV (so warps are known
exactly) and random 3D points projected through a known K (so poses and depths are known exactly).
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from loger_core.backend.features import Features, extract_features, match_features, to_gray
from loger_core.backend.keyframes import FrameInput, local_points, model_pixels, sample_depth
from loger_core.backend.two_view import estimate_pnp, estimate_two_view, relative_rotation_only

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])
W, H = 640, 480


# -- helpers ------------------------------------------------------------------------------------
def textured_image(seed: int, w: int = 480, h: int = 360, color: bool = False) -> np.ndarray:
    """Random rectangles, circles and lines over smoothed noise: corner/blob-rich like a real scene."""
    rng = np.random.default_rng(seed)
    ch = 3 if color else 1
    img = rng.integers(0, 256, (h // 8, w // 8, ch), dtype=np.uint8)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, ch)
    img = np.ascontiguousarray(img)
    for _ in range(60):
        c = tuple(int(v) for v in rng.integers(0, 256, ch))
        kind = rng.integers(3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 60)), y + int(rng.integers(8, 60))), c, -1)
        elif kind == 1:
            cv2.circle(img, (x, y), int(rng.integers(4, 30)), c, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), c, int(rng.integers(1, 4)))
    img = cv2.GaussianBlur(img, (3, 3), 0).reshape(h, w, ch)
    return img if color else img[..., 0]


def warp(img: np.ndarray, deg: float, shift: tuple[float, float], scale: float = 1.0):
    h, w = img.shape[:2]
    A = cv2.getRotationMatrix2D((w / 2, h / 2), deg, scale)
    A[:, 2] += shift
    return cv2.warpAffine(img, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), A


def rot(axis, deg: float) -> np.ndarray:
    axis = np.asarray(axis, np.float64)
    R, _ = cv2.Rodrigues(axis / np.linalg.norm(axis) * math.radians(deg))
    return R


def angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def vec_angle_deg(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))))


def project(X: np.ndarray) -> np.ndarray:
    p = X @ K.T
    return p[:, :2] / p[:, 2:]


def scene(seed: int = 0, n: int = 300, baseline: float = 0.5, noise: float = 0.3, R=None, t_dir=(0.8, 0.1, 0.3)):
    """Points in front of a (depth 4-12) seen in both a and b (x_b = R x_a + t); keypoint arrays
    hold the points in shuffled order on each side so pairs are not the identity."""
    rng = np.random.default_rng(seed)
    R = rot([0.3, 1.0, 0.2], 3.0) if R is None else R
    t = np.asarray(t_dir, float)
    t = t / np.linalg.norm(t) * baseline
    uv = rng.uniform([0, 0], [W, H], (4 * n, 2))
    z = rng.uniform(4.0, 12.0, 4 * n)
    Xa = np.column_stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z])
    Xb = Xa @ R.T + t
    uvb = project(Xb)
    keep = (Xb[:, 2] > 0) & np.all((uvb >= 0) & (uvb < [W, H]), axis=1)
    Xa, Xb = Xa[keep][:n], Xb[keep][:n]
    assert len(Xa) == n
    uva = project(Xa) + rng.normal(0, noise, (n, 2))
    uvb = project(Xb) + rng.normal(0, noise, (n, 2))
    pa, pb = rng.permutation(n), rng.permutation(n)  # keypoint i of a is point pa[i]
    uv_a = np.empty_like(uva); uv_a[pa] = uva
    uv_b = np.empty_like(uvb); uv_b[pb] = uvb
    pairs = np.column_stack([pa, pb]).astype(np.int64)  # point j: (index in a, index in b)
    depth_a = np.empty(n); depth_a[pa] = Xa[:, 2]
    return dict(R=R, t=t, uv_a=uv_a, uv_b=uv_b, pairs=pairs, Xa=Xa, Xb=Xb, depth_a=depth_a, rng=rng)


# -- to_gray / features -------------------------------------------------------------------------
def test_to_gray_shapes_and_dtype():
    rgb = textured_image(1, 64, 48, color=True)
    g = to_gray(rgb)
    assert g.shape == (48, 64) and g.dtype == np.uint8
    np.testing.assert_array_equal(to_gray(g), g)
    np.testing.assert_array_equal(to_gray(g[..., None]), g)
    # Float input is clipped into uint8, not wrapped around.
    f = to_gray(np.array([[-5.0, 300.0, 12.7]]))
    assert f.dtype == np.uint8 and f.tolist() == [[0, 255, 12]]
    # Red and blue weigh differently in RGB->gray: the channel order is honoured.
    red = np.zeros((2, 2, 3), np.uint8); red[..., 0] = 255
    assert int(to_gray(red)[0, 0]) == 76  # 0.299 * 255


def _warp_err(fa: Features, fb: Features, pairs: np.ndarray, A: np.ndarray) -> np.ndarray:
    pa = fa.uv[pairs[:, 0]].astype(np.float64)
    pred = pa @ A[:, :2].T + A[:, 2]
    return np.linalg.norm(pred - fb.uv[pairs[:, 1]], axis=1)


@pytest.mark.parametrize("kind", ["sift", "orb"])
def test_matches_follow_known_warp(kind):
    img = textured_image(3)
    img2, A = warp(img, 7.0, (12.5, -8.0))
    fa = extract_features(img, kind, 1500)
    fb = extract_features(img2, kind, 1500)
    assert len(fa) > 200 and len(fb) > 200
    assert fa.kind == kind and fa.uv.dtype == np.float32 and fa.uv.shape == (len(fa), 2)
    assert fa.desc.dtype == (np.float32 if kind == "sift" else np.uint8)
    pairs = match_features(fa, fb)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2 and len(pairs) > 100
    # One match per b keypoint.
    assert len(np.unique(pairs[:, 1])) == len(pairs)
    err = _warp_err(fa, fb, pairs, A)
    tol = 1.5 if kind == "sift" else 2.0  # ORB: integer-ish pyramid positions
    assert np.mean(err < tol) > 0.9, np.percentile(err, [50, 90])


def test_match_keeps_closest_a_per_b_keypoint():
    # a[0] and a[1] both choose b[0]: only the nearer a[0] keeps it; b[1] keeps its own match.
    a = Features(np.zeros((3, 2), np.float32),
                 np.array([[0.0, 0, 0], [0.25, 0, 0], [10.0, 10, 10]], np.float32), "sift")
    b = Features(np.zeros((3, 2), np.float32),
                 np.array([[0.1, 0, 0], [10.0, 10, 10.1], [-50.0, 50, 50]], np.float32), "sift")
    assert match_features(a, b, ratio=0.8).tolist() == [[0, 0], [2, 1]]
    # Swapping a's rows swaps the winner: nearest wins, not first.
    a2 = Features(a.uv, a.desc[[1, 0, 2]], "sift")
    assert match_features(a2, b, ratio=0.8).tolist() == [[1, 0], [2, 1]]


def test_ratio_test_rejects_ambiguous():
    # b holds two identical copies of every descriptor: no match passes Lowe's test.
    fa = extract_features(textured_image(4), "sift", 500)
    fb = Features(np.concatenate([fa.uv, fa.uv]), np.concatenate([fa.desc, fa.desc]), "sift")
    assert len(fa) > 50
    assert match_features(fa, fb).shape == (0, 2)
    assert len(match_features(fa, fa)) > 0.9 * len(fa)


def test_downscaled_features_are_in_original_pixels():
    big = cv2.resize(textured_image(5, 480, 360), (1200, 900), interpolation=cv2.INTER_CUBIC)
    big2, A = warp(big, -5.0, (30.0, 20.0))
    fa = extract_features(big, "sift", 1500, max_width=480)
    fb = extract_features(big2, "sift", 1500, max_width=480)
    # Coordinates span the original image, not the 480-wide one.
    assert fa.uv[:, 0].max() > 900 and fa.uv[:, 1].max() > 650
    err = _warp_err(fa, fb, match_features(fa, fb), A)
    assert np.mean(err < 3.0) > 0.9, np.percentile(err, [50, 90])  # 1 px at 480 wide is 2.5 px here


def test_downscale_maps_pixel_centres():
    # Downscaled detection equals detecting on the INTER_AREA-resized image and mapping about the
    # pixel centre (u + 0.5) / f - 0.5: not u / f (a 0.5 * (1/f - 1) px shift) nor the small frame.
    big = cv2.resize(textured_image(5, 400, 300), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    f = 400 / 1600
    small = cv2.resize(big, (400, 300), interpolation=cv2.INTER_AREA)
    ref = extract_features(small, "sift", 800, max_width=400)
    got = extract_features(big, "sift", 800, max_width=400)
    assert len(got) == len(ref) > 100
    np.testing.assert_allclose(got.uv, (ref.uv + 0.5) / f - 0.5, atol=1e-3)
    np.testing.assert_array_equal(got.desc, ref.desc)
    # At or below max_width nothing is resized.
    same = extract_features(small, "sift", 800, max_width=400)
    np.testing.assert_array_equal(same.uv, ref.uv)


def test_gray_and_rgb_give_same_keypoints():
    rgb = textured_image(6, color=True)
    a = extract_features(rgb)
    b = extract_features(to_gray(rgb))
    np.testing.assert_array_equal(a.uv, b.uv)
    np.testing.assert_array_equal(a.desc, b.desc)


@pytest.mark.parametrize("kind,dim,dtype", [("sift", 128, np.float32), ("orb", 32, np.uint8)])
def test_flat_image_gives_no_features(kind, dim, dtype):
    f = extract_features(np.full((240, 320), 128, np.uint8), kind)
    assert len(f) == 0 and f.uv.shape == (0, 2) and f.desc.shape == (0, dim) and f.desc.dtype == dtype
    other = extract_features(textured_image(7, 320, 240), kind)
    for x, y in ((f, other), (other, f), (f, f)):
        m = match_features(x, y)
        assert m.shape == (0, 2) and m.dtype == np.int64


def test_max_features_caps_and_subset():
    f = extract_features(textured_image(8), "sift", 100)
    assert 0 < len(f) <= 110  # SIFT may keep ties at the cut
    s = f.subset(np.arange(0, len(f), 2))
    assert len(s) == (len(f) + 1) // 2 and s.kind == "sift"
    np.testing.assert_array_equal(s.desc, f.desc[::2])


# -- two-view ------------------------------------------------------------------------------------
def _two_view_errors(s, tv):
    point = {tuple(p): j for j, p in enumerate(s["pairs"].tolist())}
    j = np.array([point[tuple(p)] for p in tv.pairs.tolist()])
    rel_a = tv.depth_a / (s["Xa"][j, 2] / np.linalg.norm(s["t"])) - 1
    rel_b = tv.depth_b / (s["Xb"][j, 2] / np.linalg.norm(s["t"])) - 1
    ra = s["Xa"] @ s["R"].T
    ra /= np.linalg.norm(ra, axis=1, keepdims=True)
    rb = s["Xb"] / np.linalg.norm(s["Xb"], axis=1, keepdims=True)
    true_par = float(np.median(np.degrees(np.arccos(np.clip(np.sum(ra * rb, 1), -1, 1)))))
    return angle_deg(tv.R.T @ s["R"]), vec_angle_deg(tv.t, s["t"]), rel_a, rel_b, true_par


@pytest.mark.parametrize("seed", range(5))
def test_two_view_recovers_pose_depths_and_parallax(seed):
    # Coarse bounds: catch convention errors (R vs R^T is 6 deg here, a flipped t 180 deg, depths
    # at the wrong baseline); the accuracy of a well-conditioned scene is the next test's.
    s = scene(seed)
    tv = estimate_two_view(s["uv_a"], s["uv_b"], K, K, s["pairs"], ransac_px=1.0, min_inliers=30)
    assert tv is not None
    r_err, t_err, rel_a, rel_b, true_par = _two_view_errors(s, tv)
    assert r_err < 1.0 and t_err < 6.0
    assert np.linalg.norm(tv.t) == pytest.approx(1.0, abs=1e-9)
    assert tv.inliers > 0.9 * len(s["pairs"]) and tv.inlier_ratio == pytest.approx(tv.inliers / len(s["pairs"]))
    assert np.all(tv.depth_a > 0) and np.all(tv.depth_b > 0)
    for rel in (rel_a, rel_b):
        assert abs(np.median(rel)) < 0.25
    assert tv.parallax_deg == pytest.approx(true_par, rel=0.25)
    # depth_b is depth_a moved by (R, t): the same triangulated points in both cameras.
    xa = (s["uv_a"][tv.pairs[:, 0]] - K[:2, 2]) / [K[0, 0], K[1, 1]]
    Xa = np.column_stack([xa, np.ones(len(xa))]) * tv.depth_a[:, None]
    np.testing.assert_allclose((Xa @ tv.R.T + tv.t)[:, 2], tv.depth_b, rtol=1e-3)  # DLT points sit off the noisy rays
    # T_b_a scales the translation only.
    T = tv.T_b_a(0.5)
    np.testing.assert_allclose(T[:3, :3], tv.R)
    np.testing.assert_allclose(T[:3, 3], tv.t * 0.5)
    np.testing.assert_allclose(T[3], [0, 0, 0, 1])


def test_two_view_accuracy_on_well_conditioned_scene():
    for seed in range(5):
        s = scene(seed)
        tv = estimate_two_view(s["uv_a"], s["uv_b"], K, K, s["pairs"], ransac_px=1.0, min_inliers=30)
        r_err, t_err, rel_a, rel_b, true_par = _two_view_errors(s, tv)
        assert r_err < 0.2 and t_err < 2.0, (seed, r_err, t_err)
        for rel in (rel_a, rel_b):
            assert abs(np.median(rel)) < 0.02 and np.percentile(np.abs(rel), 90) < 0.05, seed
        assert tv.parallax_deg == pytest.approx(true_par, rel=0.05)


def test_two_view_with_outliers():
    s = scene(1)
    rng = s["rng"]
    pairs = s["pairs"].copy()
    n = len(pairs)
    bad = rng.choice(n, int(0.3 * n), replace=False)
    pairs[bad, 1] = rng.permutation(pairs[bad, 1])  # wrong partners: 30% outliers
    truly = np.ones(n, bool)
    truly[bad] = pairs[bad, 1] == s["pairs"][bad, 1]
    tv = estimate_two_view(s["uv_a"], s["uv_b"], K, K, pairs)
    assert tv is not None
    assert angle_deg(tv.R.T @ s["R"]) < 1.0 and vec_angle_deg(tv.t, s["t"]) < 6.0
    good = {tuple(p) for p in pairs[truly].tolist()}
    got = [tuple(p) in good for p in tv.pairs.tolist()]
    assert 0.9 * truly.sum() <= tv.inliers <= truly.sum() + 0.03 * n
    assert np.mean(got) > 0.97
    assert tv.inlier_ratio == pytest.approx(tv.inliers / n)


def test_two_view_rejects_too_few_and_noise():
    s = scene(2)
    assert estimate_two_view(s["uv_a"], s["uv_b"], K, K, s["pairs"][:20], min_inliers=30) is None
    assert estimate_two_view(s["uv_a"], s["uv_b"], K, K, s["pairs"][:7], min_inliers=5) is None  # < 8 points
    rng = np.random.default_rng(3)
    ua, ub = rng.uniform([0, 0], [W, H], (300, 2)), rng.uniform([0, 0], [W, H], (300, 2))
    pairs = np.column_stack([np.arange(300), np.arange(300)])
    assert estimate_two_view(ua, ub, K, K, pairs, min_inliers=30) is None


def test_two_view_different_intrinsics():
    # b's keypoints under another K: normalisation must use each camera's own intrinsics.
    s = scene(4)
    K_b = np.array([[420.0, 0, 300.0], [0, 430.0, 250.0], [0, 0, 1]])
    xb = (s["uv_b"] - K[:2, 2]) / [K[0, 0], K[1, 1]]
    uv_b = xb * [K_b[0, 0], K_b[1, 1]] + K_b[:2, 2]
    tv = estimate_two_view(s["uv_a"], uv_b, K, K_b, s["pairs"])
    assert tv is not None and angle_deg(tv.R.T @ s["R"]) < 1.0 and vec_angle_deg(tv.t, s["t"]) < 6.0
    assert tv.inliers > 0.9 * len(s["pairs"])


def test_relative_rotation_only():
    R = rot([0.2, 1.0, -0.1], 4.0)
    s = scene(5, R=R, baseline=1e-9)  # pure rotation
    got = relative_rotation_only(s["uv_a"], s["uv_b"], K, K, s["pairs"])
    assert got is not None
    assert angle_deg(got.T @ R) < 0.05
    assert np.linalg.det(got) == pytest.approx(1.0)
    assert relative_rotation_only(s["uv_a"], s["uv_b"], K, K, s["pairs"][:10], min_inliers=30) is None


# -- PnP -----------------------------------------------------------------------------------------
def test_pnp_metric_pose_and_scale():
    s = scene(6)
    p = estimate_pnp(s["uv_a"], s["depth_a"], K, s["uv_b"], K, s["pairs"], ransac_px=2.0)
    assert p is not None and p.inliers > 0.95 * len(s["pairs"])
    assert angle_deg(p.R.T @ s["R"]) < 0.1
    assert np.linalg.norm(p.t - s["t"]) < 0.01  # metric: 0.5 m baseline to a centimetre
    # Depth twice as large: the same rotation, twice the translation.
    p2 = estimate_pnp(s["uv_a"], 2 * s["depth_a"], K, s["uv_b"], K, s["pairs"], ransac_px=2.0)
    assert p2 is not None
    assert angle_deg(p2.R.T @ p.R) < 0.02
    np.testing.assert_allclose(p2.t, 2 * p.t, rtol=0, atol=0.01)


def test_pnp_with_missing_depth_and_outliers():
    s = scene(7)
    rng = s["rng"]
    depth = s["depth_a"].copy()
    n = len(depth)
    depth[rng.choice(n, n // 3, replace=False)] = np.nan
    depth[rng.choice(n, 10, replace=False)] = -1.0
    pairs = s["pairs"].copy()
    bad = rng.choice(n, n // 5, replace=False)
    pairs[bad, 1] = rng.permutation(pairs[bad, 1])
    p = estimate_pnp(s["uv_a"], depth, K, s["uv_b"], K, pairs)
    assert p is not None
    assert angle_deg(p.R.T @ s["R"]) < 0.15 and np.linalg.norm(p.t - s["t"]) < 0.02
    # Inliers only where there was depth.
    z = depth[p.pairs[:, 0]]
    assert np.all(np.isfinite(z) & (z > 0))
    valid = np.isfinite(depth[pairs[:, 0]]) & (depth[pairs[:, 0]] > 0)
    assert p.inliers <= valid.sum()


def test_pnp_too_few():
    s = scene(8)
    assert estimate_pnp(s["uv_a"], s["depth_a"], K, s["uv_b"], K, s["pairs"][:20], min_inliers=30) is None
    depth = np.full_like(s["depth_a"], np.nan)
    depth[s["pairs"][:25, 0]] = s["depth_a"][s["pairs"][:25, 0]]
    assert estimate_pnp(s["uv_a"], depth, K, s["uv_b"], K, s["pairs"], min_inliers=30) is None
    assert estimate_pnp(s["uv_a"], depth, K, s["uv_b"], K, s["pairs"], min_inliers=20) is not None


# -- keyframe helpers ----------------------------------------------------------------------------
CROP = (40, 20, 560, 420)  # x0, y0, cw, ch of the original image
MODEL = (280, 210)  # w, h of the model input: half the crop


def test_model_pixels_maps_pixel_edges():
    x0, y0, cw, ch = CROP
    w, h = MODEL
    # The crop's outer pixel edges land on the model input's outer pixel edges.
    uv = np.array([[x0 - 0.5, y0 - 0.5], [x0 + cw - 0.5, y0 + ch - 0.5], [x0 + 0.5, y0 + 0.5]])
    m = model_pixels(uv, CROP, MODEL)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m[0], [-0.5, -0.5], atol=1e-5)
    np.testing.assert_allclose(m[1], [w - 0.5, h - 0.5], atol=1e-5)
    np.testing.assert_allclose(m[2], [0.0, 0.0], atol=1e-5)  # two original pixels -> one model pixel centre
    # Anisotropic resize.
    m2 = model_pixels(np.array([[x0 + cw - 0.5, y0 + ch - 0.5]]), CROP, (140, 420))
    np.testing.assert_allclose(m2[0], [139.5, 419.5], atol=1e-4)


def test_sample_depth_linear_field():
    w, h = MODEL
    gx, gy, c = 0.01, 0.02, 2.0
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = c + gx * xx + gy * yy  # linear in model pixel coordinates: bilinear sampling is exact
    rng = np.random.default_rng(9)
    x0, y0, cw, ch = CROP
    uv = rng.uniform([x0 + 1, y0 + 1], [x0 + cw - 3, y0 + ch - 3], (500, 2)).astype(np.float32)
    m = model_pixels(uv, CROP, MODEL)
    z = sample_depth(depth, uv, CROP)
    assert z.shape == (500,) and z.dtype == np.float32
    # OpenCV's bilinear remap works at 1/32 pixel.
    np.testing.assert_allclose(z, c + gx * m[:, 0] + gy * m[:, 1], rtol=0, atol=(gx + gy) / 32 + 1e-5)
    # Outside the crop: NaN.
    out = np.array([[x0 - 10, y0 + 50], [x0 + cw + 10, y0 + 50], [x0 + 50, y0 - 10], [x0 + 50, y0 + ch + 10],
                    [5000, 5000], [-1e4, 3]], np.float32)
    assert np.all(np.isnan(sample_depth(depth, out, CROP)))
    assert sample_depth(depth, np.zeros((0, 2), np.float32), CROP).shape == (0,)


def test_sample_depth_nan_holes():
    w, h = MODEL
    depth = np.full((h, w), 3.0, np.float32)
    depth[100, 100] = np.nan
    x0, y0, cw, ch = CROP
    near = np.array([[x0 + 2 * 100 + 1.0, y0 + 2 * 100 + 1.5]], np.float32)  # between model pixels 100 and 101
    far = np.array([[x0 + 2 * 50 + 0.5, y0 + 2 * 50 + 0.5]], np.float32)
    assert np.isnan(sample_depth(depth, near, CROP)[0])
    assert sample_depth(depth, far, CROP)[0] == pytest.approx(3.0)


def _frame(n: int, seed: int = 0) -> tuple[FrameInput, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = rot([1.0, -0.5, 0.3], 40.0)
    T[:3, 3] = [3.0, -1.0, 2.0]
    world = rng.normal(0, 5, (n, 3)).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    conf = rng.uniform(0, 1, n).astype(np.float32)
    f = FrameInput(0, 0, T, np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), K, None, (0, 0, 4, 4),
                   world, colors, conf)
    return f, T


def test_local_points_inverse_of_pose():
    f, T = _frame(200)
    local, cols, conf = local_points(f, 1000, np.random.default_rng(0))
    assert local.shape == (200, 3) and local.dtype == np.float32
    back = local.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(back, f.points, atol=1e-4)
    np.testing.assert_array_equal(cols, f.colors)
    np.testing.assert_array_equal(conf, f.point_confidence)


def test_local_points_subsample_capped_deterministic_aligned():
    f, T = _frame(5000, seed=1)
    a = local_points(f, 700, np.random.default_rng(42))
    b = local_points(f, 700, np.random.default_rng(42))
    c = local_points(f, 700, np.random.default_rng(43))
    assert len(a[0]) == 700
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    # The subset keeps points, colours and confidences together.
    back = a[0].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    idx = np.array([np.argmin(np.linalg.norm(f.points - p, axis=1)) for p in back[:50]])
    np.testing.assert_allclose(f.points[idx], back[:50], atol=1e-4)
    np.testing.assert_array_equal(f.colors[idx], a[1][:50])
    np.testing.assert_array_equal(f.point_confidence[idx], a[2][:50])
