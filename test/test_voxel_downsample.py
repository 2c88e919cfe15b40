"""Device-side per-frame voxel merge (`loger_core.voxel_downsample`) against a plain numpy grouping."""
import numpy as np
import pytest
import torch

from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.voxel_downsample import downsample_frames


def _inputs(seed=0, N=3, h=20, w=30, offset=0.0):
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-1, 1, (N, h, w, 3)) + offset
    pts[0, 0, 0] = np.nan
    col = rng.integers(0, 256, (N, h, w, 3), dtype=np.uint8)
    conf = rng.random((N, h, w)).astype(np.float32)
    valid = rng.random((N, h, w)) < 0.8
    valid[1] = False  # an empty frame
    return pts, col, conf, valid


@pytest.mark.parametrize("offset", [0.0, -1000.0])
def test_merge_equals_numpy_grouping(offset):
    pts, col, conf, valid = _inputs(offset=offset)
    voxel = 0.25
    got = downsample_frames(torch.from_numpy(pts).float(), torch.from_numpy(col), torch.from_numpy(conf),
                            torch.from_numpy(valid), voxel)
    counts = got.frame_counts.numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    assert counts[1] == 0
    pts32 = pts.astype(np.float32).astype(np.float64)
    for i in range(pts.shape[0]):
        keep = valid[i] & np.isfinite(pts32[i]).all(-1)
        p, c, q = pts32[i][keep], col[i][keep].astype(np.float64), conf[i][keep]
        cells = np.floor(p / voxel).astype(np.int64)
        uniq, inv = np.unique(cells, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        a, b = offsets[i], offsets[i + 1]
        assert b - a == len(uniq)
        w = np.bincount(inv)
        np.testing.assert_array_equal(got.weights.numpy()[a:b], w)
        assert got.weights.numpy()[a:b].sum() == keep.sum()  # no pixel lost
        mean = np.stack([np.bincount(inv, p[:, k]) for k in range(3)], 1) / w[:, None]
        np.testing.assert_allclose(got.points.numpy()[a:b], mean, rtol=1e-6, atol=1e-4)
        rgb = np.stack([np.bincount(inv, c[:, k]) for k in range(3)], 1) / w[:, None]
        np.testing.assert_array_equal(got.colors.numpy()[a:b], np.clip(np.round(rgb), 0, 255))
        qmax = np.full(len(uniq), -np.inf, np.float32)
        np.maximum.at(qmax, inv, q)
        np.testing.assert_array_equal(got.confidence.numpy()[a:b], qmax)


def test_voxel_size_must_be_positive():
    pts, col, conf, valid = (torch.from_numpy(a) for a in _inputs())
    with pytest.raises(ValueError, match="voxel_size"):
        downsample_frames(pts.float(), col, conf, valid, 0.0)


def test_stream_returns_weighted_points_that_cover_every_valid_pixel():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (42, 56, 3), dtype=np.uint8) for _ in range(6)]
    torch.manual_seed(0)
    rec = StreamingReconstructor(StreamConfig(model="tiny", device="cpu", resolution=(56, 42), window_size=4,
                                              overlap_size=1, point_voxel_size=0.05))
    results = [r for i, f in enumerate(frames) for r in rec.push(f, i)] + rec.flush()
    assert [r.index for r in results] == list(range(6))
    for r in results:
        assert r.point_weights is not None and r.point_weights.sum() == r.valid.sum()
        assert len(r.points) == len(r.colors) == len(r.point_confidence) == len(r.point_weights)
        assert len(r.points) < r.valid.sum() or r.valid.sum() == 0
