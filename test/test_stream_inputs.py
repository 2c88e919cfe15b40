"""Bad input to the stream: one error type (StreamInputError), naming the field and value;
out-of-order stamps dropped or refused; nothing changes on a refused frame."""
from __future__ import annotations

import numpy as np
import pytest

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import ScaleConfig, StreamConfig, StreamingReconstructor, StreamInputError

H, W = 56, 84


@pytest.fixture(scope="module")
def tiny():
    return fill_deterministic_(build_model("tiny", device="meta"))


def _rec(tiny, **kw) -> StreamingReconstructor:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=3, overlap_size=1)
    base.update(kw)
    return StreamingReconstructor(StreamConfig(**base), model=tiny)


def _img(seed=0, h=H, w=W):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("image,match", [
    (np.zeros((H, W, 3), np.float32), "dtype uint8"),
    (np.zeros((H, W), np.uint8), r"shape \(H, W, 3\)"),
    (np.zeros((H, W, 4), np.uint8), r"\(56, 84, 4\)"),
    (np.zeros((0, W, 3), np.uint8), "shape"),
    ([[1, 2, 3]], "numpy"),
])
def test_bad_images_are_refused(tiny, image, match):
    rec = _rec(tiny)
    with pytest.raises(StreamInputError, match=match):
        rec.push(image, 1)
    assert rec.stats.frames_accepted == 0 and rec.buffered_frames == 0


@pytest.mark.parametrize("stamp", [1.5, "10", None, True])
def test_stamps_must_be_integer_nanoseconds(tiny, stamp):
    with pytest.raises(StreamInputError, match="stamp_ns"):
        _rec(tiny).push(_img(), stamp)


def test_numpy_integer_stamps_are_accepted(tiny):
    rec = _rec(tiny)
    rec.push(_img(), np.int64(5))
    assert rec.buffered_frames == 1


def test_out_of_order_frames_are_dropped_and_counted_by_default(tiny):
    rec = _rec(tiny)
    rec.push(_img(0), 100)
    assert rec.push(_img(1), 100) == []  # equal stamp
    assert rec.push(_img(2), 50) == []
    assert rec.stats.frames_dropped_out_of_order == 2
    assert rec.buffered_frames == 1
    rec.push(_img(3), 101)
    out = rec.push(_img(4), 102)
    assert [r.stamp_ns for r in out] == [100, 101]


def test_out_of_order_frames_can_raise(tiny):
    rec = _rec(tiny, out_of_order="raise")
    rec.push(_img(0), 100)
    with pytest.raises(StreamInputError, match="stamp_ns 99 is not after the previous frame's 100"):
        rec.push(_img(1), 99)
    assert rec.buffered_frames == 1


@pytest.mark.parametrize("K", [np.eye(2), np.full((3, 3), np.nan), np.diag([-1.0, 1.0, 1.0])])
def test_bad_intrinsics_are_refused(tiny, K):
    rec = _rec(tiny)
    with pytest.raises(StreamInputError, match="K must be"):
        rec.push(_img(), 1, K=K)
    assert rec.buffered_frames == 0


def test_bad_depth_and_odometry_are_refused(tiny):
    rec = _rec(tiny, scale=ScaleConfig(source="depth"))
    with pytest.raises(StreamInputError, match=r"depth must have the image's shape \(56, 84\)"):
        rec.push(_img(), 1, depth=np.ones((10, 10), np.float32))
    with pytest.raises(StreamInputError, match="integer or float"):
        rec.push(_img(), 1, depth=np.ones((H, W), bool))
    with pytest.raises(StreamInputError, match="odom must be"):
        _rec(tiny, scale=ScaleConfig(source="odometry")).push(_img(), 1, odom=np.ones(2))


def test_push_after_flush_needs_reset(tiny):
    rec = _rec(tiny)
    rec.push(_img(0), 1)
    assert len(rec.flush()) == 1
    with pytest.raises(StreamInputError, match="reset"):
        rec.push(_img(1), 2)
    rec.reset()
    # A new map: stamps may start over, frame indices restart, memory is empty.
    assert rec.memory_state is None
    rec.push(_img(2), 1)
    assert [r.index for r in rec.flush()] == [0]
    assert rec.stats.resets == 1


def test_reset_starts_a_new_world_frame(tiny):
    rec = _rec(tiny, alignment="se3")
    imgs = [_img(i) for i in range(6)]
    first = [r for i, im in enumerate(imgs) for r in rec.push(im, i)] + rec.flush()
    rec.reset()
    again = [r for i, im in enumerate(imgs[3:]) for r in rec.push(im, i)] + rec.flush()
    # Frame 3 was mid-sequence before; after reset it is the first frame of a fresh map, and
    # the model's first-window pose for it no longer depends on what came before.
    fresh = _rec(tiny, alignment="se3")
    alone = [r for i, im in enumerate(imgs[3:]) for r in fresh.push(im, i)] + fresh.flush()
    np.testing.assert_allclose(again[0].T_world_cam, alone[0].T_world_cam, atol=1e-6)
    assert not np.allclose(again[0].T_world_cam, first[3].T_world_cam, atol=1e-4)


@pytest.mark.parametrize("kw,field", [
    (dict(model="big"), "StreamConfig.model"),
    (dict(window_size=0), "StreamConfig.window_size"),
    (dict(window_size=4, overlap_size=4), "StreamConfig.overlap_size"),
    (dict(reset_every=-1), "StreamConfig.reset_every"),
    (dict(alignment="affine"), "StreamConfig.alignment"),
    (dict(sim3_scale_mode="mean"), "StreamConfig.sim3_scale_mode"),
    (dict(resolution=(84,)), "StreamConfig.resolution"),
    (dict(resolution=(84.0, 56)), "StreamConfig.resolution"),
    (dict(conf_threshold=1.5), "StreamConfig.conf_threshold"),
    (dict(conf_percentile=100), "StreamConfig.conf_percentile"),
    (dict(provisional_every=-2), "StreamConfig.provisional_every"),
    (dict(out_of_order="keep"), "StreamConfig.out_of_order"),
    (dict(dtype="int8"), "StreamConfig.dtype"),
    (dict(device="tpu:0"), "StreamConfig.device"),
    (dict(resize_mode="pad"), "StreamConfig.resize_mode"),
    (dict(scale="depth"), "StreamConfig.scale"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(StreamInputError, match=field):
        StreamConfig(**kw)


@pytest.mark.parametrize("kw,field", [
    (dict(source="gps"), "ScaleConfig.source"),
    (dict(factor=0.0), "ScaleConfig.factor"),
    (dict(depth_range_m=(5.0, 1.0)), "ScaleConfig.depth_range_m"),
    (dict(history=0), "ScaleConfig.history"),
    (dict(min_displacement_m=-1.0), "ScaleConfig.min_displacement_m"),
    (dict(freeze_after=-1), "ScaleConfig.freeze_after"),
])
def test_scale_config_errors_name_the_field(kw, field):
    with pytest.raises(StreamInputError, match=field):
        ScaleConfig(**kw)


def test_resolution_must_be_a_patch_multiple(tiny):
    with pytest.raises(StreamInputError, match=r"multiples of the patch size 14, got \(80, 56\)"):
        _rec(tiny, resolution=(80, 56))


def test_cuda_device_without_cuda_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(StreamInputError, match="CUDA is not available"):
        StreamConfig(device="cuda")
