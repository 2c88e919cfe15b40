"""Preprocessing as the authors' demo, and intrinsics mapped between network input and image."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from loger_core.stream import (
    StreamInputError,
    demo_resolution,
    estimate_intrinsics,
    model_to_original,
    original_to_model,
    prepare_image,
    resample_depth,
)
from loger_core.stream.preprocess import image_geometry
from loger_core.synthetic.camera import camera_rays, intrinsics_from_fov


def test_demo_resolution_rule():
    # Worked by hand from the demo's rule (scale to 255000 px, round to 14, shrink the long side).
    assert demo_resolution(640, 480, 255_000) == (574, 434)
    assert demo_resolution(1920, 1080, 255_000) == (672, 378)
    for w, h in [(640, 480), (1280, 720), (300, 1000), (50, 40), (4000, 3000)]:
        rw, rh = demo_resolution(w, h, 255_000)
        assert rw % 14 == 0 and rh % 14 == 0 and rw * rh <= 255_000


def test_resize_is_pil_lanczos_scaled_to_unit_range():
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    prep = prepare_image(img, (42, 28))
    ref = np.asarray(Image.fromarray(img).resize((42, 28), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    assert prep.tensor.shape == (3, 28, 42)
    np.testing.assert_array_equal(prep.tensor.permute(1, 2, 0).numpy(), ref)
    np.testing.assert_array_equal(prep.rgb, np.asarray(Image.fromarray(img).resize((42, 28), Image.Resampling.LANCZOS)))
    assert prep.geometry.crop == (0, 0, 64, 48) and prep.geometry.model_size == (42, 28)


def test_crop_mode_keeps_the_aspect_ratio():
    geo = image_geometry(640, 480, (84, 56), "crop")
    # 84:56 = 3:2 is wider than 4:3: full width, height 640 / 1.5 = 426.67 -> 427, centred.
    assert geo.crop == (0, 26, 640, 427)
    geo = image_geometry(400, 100, (84, 56), "crop")
    assert geo.crop == (125, 0, 150, 100)


@pytest.mark.parametrize("mode", ["resize", "crop"])
def test_pixel_centres_map_through_resize_and_crop(mode):
    """A bright 2x2 block at original pixels (2u, 2v)..(2u+1, 2v+1) shows up, after halving, at
    model pixel (u, v) shifted by the crop; `original_to_model` must move the principal point alike."""
    W, H = 168, 112 + (20 if mode == "crop" else 0)
    img = np.zeros((H, W, 3), np.uint8)
    y0 = 10 if mode == "crop" else 0
    u, v = 30, 17
    img[y0 + 2 * v : y0 + 2 * v + 2, 2 * u : 2 * u + 2] = 255
    prep = prepare_image(img, (84, 56), mode)
    assert prep.geometry.crop == (0, y0, 168, 112)
    peak = np.unravel_index(np.argmax(prep.rgb[..., 0]), (56, 84))
    assert peak == (v, u)
    # A principal point on that block's centre maps to that model pixel's centre.
    K = np.array([[100.0, 0, 2 * u + 0.5], [0, 90.0, y0 + 2 * v + 0.5], [0, 0, 1]])
    Km = original_to_model(K, prep.geometry)
    np.testing.assert_allclose(Km[:2, 2], [u, v], atol=1e-12)
    np.testing.assert_allclose([Km[0, 0], Km[1, 1]], [50.0, 45.0])
    np.testing.assert_allclose(model_to_original(Km, prep.geometry), K, atol=1e-12)


def test_estimated_intrinsics_of_exact_points_are_exact():
    K = intrinsics_from_fov(84, 56, 75.0)
    K[1, 1] *= 1.3  # non-square pixels, as after the demo's aspect-changing resize
    depth = np.random.default_rng(1).uniform(1.0, 5.0, (56, 84))
    local = camera_rays(K, 84, 56) * depth[..., None]
    np.testing.assert_allclose(estimate_intrinsics(local), K, rtol=1e-9)
    # Masked pixels are ignored: corrupt them and estimate from the rest.
    mask = np.ones((56, 84), bool)
    mask[:, :10] = False
    local[:, :10, 0] *= 3.0
    np.testing.assert_allclose(estimate_intrinsics(local, mask), K, rtol=1e-9)
    assert np.isnan(estimate_intrinsics(np.full((56, 84, 3), np.nan))[0, 0])


def test_intrinsics_back_to_the_original_after_resize():
    K_orig = intrinsics_from_fov(640, 480, 60.0)
    geo = image_geometry(640, 480, (504, 280), "resize")
    Km = original_to_model(K_orig, geo)
    np.testing.assert_allclose(Km[0, 0], K_orig[0, 0] * 504 / 640)
    np.testing.assert_allclose(Km[1, 1], K_orig[1, 1] * 280 / 480)
    # Centred principal point stays centred.
    np.testing.assert_allclose(Km[:2, 2], [(504 - 1) / 2, (280 - 1) / 2])
    np.testing.assert_allclose(model_to_original(Km, geo), K_orig, atol=1e-9)


def test_depth_is_resampled_with_the_image():
    geo = image_geometry(168, 112, (84, 56), "resize")
    mm = np.arange(168 * 112, dtype=np.uint16).reshape(112, 168)
    d = resample_depth(mm, geo, 0.001)
    assert d.shape == (56, 84) and d.dtype == np.float32
    # Nearest neighbour: every value is one of the original pixels (no blending across edges).
    assert np.isin(np.round(d * 1000).astype(np.int64), mm.astype(np.int64)).all()
    np.testing.assert_allclose(resample_depth(np.full((112, 168), 2.5, np.float32), geo, 0.001), 2.5)
    with pytest.raises(StreamInputError, match="image's shape"):
        resample_depth(np.ones((56, 84), np.float32), geo, 0.001)


def test_confidence_percentile_matches_numpy():
    import torch

    from loger_core.stream.confidence_cuts import percentile

    rng = np.random.default_rng(1)
    for n in (1, 2, 7, 1000, 50_000):
        x = rng.random(n).astype(np.float32)
        for q in (0.0, 20.0, 37.5, 99.0, 100.0):
            assert abs(float(percentile(torch.from_numpy(x), q)) - np.percentile(x.astype(np.float64), q)) < 1e-7


def test_percentile_cuts_by_sort_equal_the_selections():
    """The CUDA default (one sort of all frames) gives bitwise the per-frame selections' cuts, with
    empty and one-pixel masks, ties and every interpolation case (checked on the CPU)."""
    import torch

    from loger_core.stream.confidence_cuts import percentile_cuts

    rng = np.random.default_rng(2)
    values = torch.from_numpy(rng.random((6, 20, 30)).astype(np.float32))
    values[3] = torch.round(values[3] * 4) / 4  # ties
    mask = torch.from_numpy(rng.random((6, 20, 30)) > 0.3)
    mask[1] = False
    mask[2] = False
    mask[2, 5, 7] = True
    for q in (0.0, 20.0, 37.5, 99.0, 100.0):
        by_sort = percentile_cuts(values, mask, q, by_sort=True)
        by_select = percentile_cuts(values, mask, q, by_sort=False)
        assert torch.equal(by_sort, by_select), q
        assert by_sort[1] == float("-inf") and by_sort[2] == values[2, 5, 7].double()
        for i in (0, 3, 4):
            want = np.percentile(values[i][mask[i]].double().numpy(), q)
            assert abs(float(by_sort[i]) - want) < 1e-7


def test_batched_intrinsics_equal_the_per_frame_fit():
    """The stream fits K for all frames of a window at once on the model's device; on the CPU it
    equals the per-frame numpy reference (sub-grid, mask fallback, NaN where nothing is usable)."""
    import torch

    from loger_core.stream.intrinsics import estimate_intrinsics_batch

    rng = np.random.default_rng(0)
    h, w = 280, 504
    frames, masks = [], []
    for i in range(4):
        z = rng.uniform(1.0, 5.0, (h, w))
        u, v = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
        local = np.stack([u * z / (300 + 10 * i), v * z / (280 - 5 * i), z], -1).astype(np.float32)
        local[rng.random((h, w)) < 0.1] = np.nan
        mask = rng.random((h, w)) < (0.5 if i != 2 else 1e-4)  # frame 2: too few masked pixels -> fallback
        frames.append(local)
        masks.append(mask)
    frames.append(np.full((h, w, 3), np.nan, np.float32))  # nothing usable
    masks.append(np.ones((h, w), bool))
    got = estimate_intrinsics_batch(torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(masks))).numpy()
    for i, (local, mask) in enumerate(zip(frames, masks)):
        np.testing.assert_allclose(got[i], estimate_intrinsics(local, mask), rtol=1e-12, equal_nan=True)
    assert np.isnan(got[-1, 0, 0]) and np.isnan(got[-1, 1, 1])


def test_batched_confidence_cuts_equal_numpy_percentiles():
    import torch

    from loger_core.stream.confidence_cuts import percentile_cuts

    rng = np.random.default_rng(1)
    conf = torch.from_numpy(rng.random((3, 20, 30)).astype(np.float32))
    mask = torch.from_numpy(rng.random((3, 20, 30)) < 0.7)
    mask[1] = False
    cuts = percentile_cuts(conf, mask, 20.0).numpy()
    for i in (0, 2):
        assert cuts[i] == np.percentile(conf[i][mask[i]].numpy().astype(np.float64), 20.0)
    assert cuts[1] == -np.inf
