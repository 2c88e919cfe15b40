"""Per-frame voxel merging on the model's device (loger_core.mapping.voxel_downsample) and its use by the map."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.mapping.voxel_map import MapConfig, VoxelMap
from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.mapping.voxel_downsample import VoxelBatch, VoxelDownsampleError, downsample_frames

_OFF = 1 << 20


def make_frames(n=3, h=24, w=32, centre=(0.0, 0.0, 0.0), spread=0.4, valid_frac=0.7, seed=0):
    rng = np.random.default_rng(seed)
    pts = (rng.normal(size=(n, h, w, 3)) * spread + np.asarray(centre)).astype(np.float32)
    col = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    conf = rng.random((n, h, w)).astype(np.float32)
    valid = rng.random((n, h, w)) < valid_frac
    return pts, col, conf, valid


def run(pts, col, conf, valid, voxel):
    return downsample_frames(torch.from_numpy(pts), torch.from_numpy(col), torch.from_numpy(conf),
                             torch.from_numpy(valid), voxel)


def reference(pts, col, conf, valid, voxel):
    """numpy per-frame merge in the map's key order (mergeable points only)."""
    out = []
    for i in range(len(pts)):
        p, c, f = pts[i][valid[i]], col[i][valid[i]], conf[i][valid[i]]
        vox = np.floor(p.astype(np.float64) / voxel).astype(np.int64)
        key = ((vox[:, 0] + _OFF) << 42) | ((vox[:, 1] + _OFF) << 21) | (vox[:, 2] + _OFF)
        ukeys, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        mean = np.stack([np.bincount(inv, p[:, k].astype(np.float64)) for k in range(3)], 1) / counts[:, None]
        mcol = np.stack([np.bincount(inv, c[:, k].astype(np.float64)) for k in range(3)], 1) / counts[:, None]
        best = np.full(len(ukeys), -np.inf, np.float32)
        np.maximum.at(best, inv, f)
        out.append((mean.astype(np.float32), np.rint(mcol).astype(np.uint8), best, counts.astype(np.int32)))
    return out


def tol(points):
    """1e-5 or two float32 ulps of the coordinate (at 1 km one ulp is 6e-5)."""
    return np.maximum(1e-5, 2 * np.spacing(np.abs(points).astype(np.float32)))


def assert_maps_match(raw: VoxelMap, merged: VoxelMap):
    n = len(raw)
    assert len(merged) == n
    np.testing.assert_array_equal(merged._keys[:n], raw._keys[:n])  # same voxels, same slots
    np.testing.assert_array_equal(merged.hit_counts(), raw.hit_counts())
    p_raw, c_raw, f_raw = raw.snapshot()
    p_m, c_m, f_m = merged.snapshot()
    assert np.all(np.abs(p_m - p_raw) <= tol(p_raw))
    assert np.abs(c_m.astype(int) - c_raw.astype(int)).max(initial=0) <= 1
    np.testing.assert_array_equal(f_m, f_raw)
    np.testing.assert_array_equal(merged.last_seen(), raw.last_seen())
    assert merged.stats() == raw.stats()


# ---------------------------------------------------------------- equivalence with the raw map


@pytest.mark.parametrize("centre", [(0.0, 0.0, 0.0), (1000.0, -1000.0, 3.0), (-2.0, -1500.0, -1000.0)])
@pytest.mark.parametrize("ratio", [1, 2])
def test_weighted_insert_of_merged_points_equals_raw_insert(centre, ratio):
    map_voxel = 0.1
    pts, col, conf, valid = make_frames(n=4, centre=centre, spread=0.15, seed=1)
    batch = run(pts, col, conf, valid, map_voxel / ratio)
    raw, merged = VoxelMap(MapConfig(voxel_size=map_voxel)), VoxelMap(MapConfig(voxel_size=map_voxel))
    for i, (p, c, f, w) in enumerate(batch.split_numpy()):
        raw.insert(pts[i][valid[i]], col[i][valid[i]], conf[i][valid[i]], sensor_origin=centre)
        merged.insert(p, c, f, sensor_origin=centre, weights=w)
        assert len(p) < valid[i].sum()  # something was merged
    assert_maps_match(raw, merged)


def test_merged_points_match_a_numpy_reference_in_map_key_order():
    pts, col, conf, valid = make_frames(n=3, centre=(-20.0, 5.0, -0.3), spread=1.0, seed=2)
    batch = run(pts, col, conf, valid, 0.25)
    for got, want in zip(batch.split_numpy(), reference(pts, col, conf, valid, 0.25)):
        np.testing.assert_allclose(got[0], want[0], rtol=0, atol=2e-6)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_array_equal(got[3], want[3])


def test_centroids_stay_in_their_voxel_far_from_the_origin():
    # Many points per voxel 1 km out: the float64 sums keep every centroid inside its voxel.
    pts, col, conf, valid = make_frames(n=2, h=64, w=64, centre=(1000.0, 1000.0, -1000.0), spread=0.05, seed=3)
    voxel = 0.05
    batch = run(pts, col, conf, valid, voxel)
    for i, (p, _, _, w) in enumerate(batch.split_numpy()):
        vox = np.floor(p.astype(np.float64) / voxel)
        assert len(np.unique(vox, axis=0)) == len(p)
        ref = reference(pts[i:i + 1], col[i:i + 1], conf[i:i + 1], valid[i:i + 1], voxel)[0]
        np.testing.assert_array_equal(w, ref[3])
        assert np.all(np.abs(p - ref[0]) <= tol(ref[0]))
        assert w.max() > 20


# ---------------------------------------------------------------- weights, frames


def test_weights_sum_to_the_valid_pixels_of_each_frame():
    pts, col, conf, valid = make_frames(n=5, seed=4)
    valid[2] = False  # a frame without points
    batch = run(pts, col, conf, valid, 0.2)
    assert batch.weights.dtype == torch.int32 and batch.frame_counts.dtype == torch.int64
    assert batch.points.dtype == torch.float32 and batch.colors.dtype == torch.uint8
    assert batch.confidence.dtype == torch.float32
    assert int(batch.frame_counts.sum()) == len(batch) and batch.frame_counts[2] == 0
    for i, (p, c, f, w) in enumerate(batch.split_numpy()):
        assert w.sum() == valid[i].sum() and len(p) == len(c) == len(f) == len(w)
        assert np.all(w >= 1)


def test_frames_are_merged_separately():
    pts, col, conf, valid = make_frames(n=1, seed=5)
    pts, col, conf, valid = (np.concatenate([a, a, a]) for a in (pts, col, conf, valid))
    conf[1] += 1.0
    batch = run(pts, col, conf, valid, 0.3)
    parts = batch.split_numpy()
    assert batch.frame_counts.tolist() == [len(parts[0][0])] * 3
    for k in (0, 3):
        np.testing.assert_array_equal(parts[0][k], parts[1][k])
        np.testing.assert_array_equal(parts[0][k], parts[2][k])
    np.testing.assert_allclose(parts[1][2], parts[0][2] + 1.0)


def test_one_voxel_and_float64_or_half_inputs():
    pts = np.full((2, 3, 4, 3), 0.51, np.float64)
    pts[1] += 0.01
    col = np.zeros((2, 3, 4, 3), np.uint8)
    col[..., 0] = np.arange(12, dtype=np.uint8).reshape(3, 4)
    conf = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    valid = np.ones((2, 3, 4), bool)
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        b = downsample_frames(torch.from_numpy(pts).to(dtype), col, conf, valid, 1.0)  # numpy accepted too
        assert b.frame_counts.tolist() == [1, 1] and b.weights.tolist() == [12, 12]
        assert b.colors[:, 0].tolist() == [6, 6]  # 5.5 rounds half to even
        assert b.confidence.tolist() == [conf[0].max(), conf[1].max()]
        want = torch.from_numpy(pts[:, 0, 0]).to(dtype).float()
        torch.testing.assert_close(b.points, want)


# ---------------------------------------------------------------- edge cases


def test_empty_inputs():
    pts, col, conf, valid = make_frames(n=2, seed=6)
    valid[:] = False
    b = run(pts, col, conf, valid, 0.1)
    assert len(b) == 0 and b.frame_counts.tolist() == [0, 0]
    assert b.points.shape == (0, 3) and b.colors.shape == (0, 3) and b.weights.shape == (0,)
    assert [len(x[0]) for x in b.split_numpy()] == [0, 0]
    b = run(pts[:0], col[:0], conf[:0], valid[:0], 0.1)
    assert len(b) == 0 and b.frame_counts.shape == (0,) and b.split_numpy() == []
    b = run(pts[:, :0], col[:, :0], conf[:, :0], valid[:, :0], 0.1)
    assert b.frame_counts.tolist() == [0, 0]


def test_non_finite_points_are_dropped_and_unmergeable_ones_pass_through():
    pts, col, conf, valid = make_frames(n=2, h=8, w=8, seed=7)
    valid[:] = True
    pts[0, 0, 0] = [np.nan, 0.0, 0.0]  # not a point: dropped
    pts[0, 0, 1] = [np.inf, 0.0, 0.0]
    pts[0, 0, 2] = [5e6, 0.0, 0.0]  # beyond 2^20 voxels of 0.1 m: merged, then dropped by the map
    pts[1, 0, 3] = [0.0, -5e6, 0.0]
    pts[1, 0, 4] = [1e30, 1e30, -1e30]  # voxel index beyond int64: passed through
    conf[1, 0, 5] = np.nan  # passed through: must not poison the confidence of its voxel
    pts[1, 0, 5] = pts[1, 0, 6]
    finite = np.isfinite(pts).all(-1)
    b = run(pts, col, conf, valid, 0.1)
    parts = b.split_numpy()
    for i, n_unmerged in ((0, 0), (1, 2)):
        p, c, f, w = parts[i]
        assert w.sum() == finite[i].sum()
        assert np.isfinite(p).all()
        merged_part = slice(0, len(p) - n_unmerged)
        assert np.isfinite(f[merged_part]).all()
        assert np.all(w[len(p) - n_unmerged:] == 1)
    np.testing.assert_array_equal(parts[1][0][-2:], pts[1, 0, 4:6])
    assert np.isnan(parts[1][2][-1])
    raw, merged = VoxelMap(MapConfig(voxel_size=0.1)), VoxelMap(MapConfig(voxel_size=0.1))
    for i, (p, c, f, w) in enumerate(parts):
        raw.insert(pts[i][finite[i]], col[i][finite[i]], conf[i][finite[i]])
        merged.insert(p, c, f, weights=w)
    assert raw.stats()["dropped_non_finite"] == 1 and raw.stats()["dropped_out_of_range"] == 3
    assert_maps_match(raw, merged)


def test_a_batch_too_wide_for_one_key_uses_ranked_map_keys():
    # Voxel ranges of ~2^21 on every axis: 4 frames x 2^63 local keys do not fit in int64.
    pts, col, conf, valid = make_frames(n=4, h=16, w=16, seed=8)
    pts[:, 0, 0] = [-104000.0, -104000.0, -104000.0]
    pts[:, 0, 1] = [104000.0, 104000.0, 104000.0]
    pts[:, 1, :3] = pts[:, 0, :3]  # a few far points share voxels too
    valid[:, :2] = True
    b = run(pts, col, conf, valid, 0.1)
    for got, want in zip(b.split_numpy(), reference(pts, col, conf, valid, 0.1)):
        for k in range(4):
            np.testing.assert_allclose(got[k], want[k], rtol=0, atol=tol(want[0]).max() if k == 0 else 0)


@pytest.mark.parametrize("voxel", [0.0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_bad_voxel_size_is_an_error(voxel):
    pts, col, conf, valid = make_frames(n=1, h=2, w=2)
    with pytest.raises(VoxelDownsampleError, match="voxel_size"):
        run(pts, col, conf, valid, voxel)


def test_bad_shapes_and_dtypes_are_errors():
    pts, col, conf, valid = (torch.from_numpy(a) for a in make_frames(n=1, h=2, w=2))
    cases = [
        ((pts[0], col, conf, valid), "points"),
        ((pts.to(torch.int32), col, conf, valid), "points"),
        ((pts, col.float(), conf, valid), "colors"),
        ((pts, col[:, :1], conf, valid), "colors"),
        ((pts, col, conf[..., None], valid), "confidence"),
        ((pts, col, conf.to(torch.int64), valid), "confidence"),
        ((pts, col, conf, valid.to(torch.uint8)), "valid"),
        ((pts, col, conf, [[True]]), "valid"),
        (([1.0], col, conf, valid), "points"),
    ]
    for args, name in cases:
        with pytest.raises(VoxelDownsampleError, match=name):
            downsample_frames(*args, 0.1)


# ---------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the CPU/CUDA comparison needs one")
def test_cuda_matches_cpu():
    pts, col, conf, valid = make_frames(n=6, h=60, w=80, centre=(1000.0, -3.0, -1000.0), spread=0.3, seed=9)
    pts[0, 0, 0] = np.nan
    valid[0, 0, 0] = True
    args = [torch.from_numpy(a) for a in (pts, col, conf, valid)]
    cpu = downsample_frames(*args, 0.05)
    gpu = downsample_frames(args[0].cuda(), *args[1:], 0.05)  # the others follow points to the device
    assert gpu.points.is_cuda and gpu.weights.is_cuda
    torch.testing.assert_close(gpu.frame_counts.cpu(), cpu.frame_counts)
    torch.testing.assert_close(gpu.weights.cpu(), cpu.weights)
    torch.testing.assert_close(gpu.confidence.cpu(), cpu.confidence, equal_nan=True)
    torch.testing.assert_close(gpu.points.cpu(), cpu.points, rtol=0, atol=1.3e-4, equal_nan=True)
    assert (gpu.colors.cpu().int() - cpu.colors.int()).abs().max() <= 1


# ---------------------------------------------------------------- node wiring


def test_map_fusion_fuses_weighted_and_unweighted_frames():
    from loger_ros.conversions import rosbags_factory
    from loger_core.pipeline.map_fusion import MapFusion, MapJob
    from loger_ros.publications import MessageBuilder

    class Log:
        def error(self, msg):
            raise AssertionError(msg)

        warning = error

    pts, col, conf, valid = make_frames(n=2, seed=10)
    b = run(pts, col, conf, valid, 0.05).split_numpy()
    fusion = MapFusion(MapConfig(voxel_size=0.1), MessageBuilder(rosbags_factory()), "map", 10_000, Log())
    frames = [(b[0][0], b[0][1], b[0][2], np.zeros(3), b[0][3]),
              (pts[1][valid[1]], col[1][valid[1]], conf[1][valid[1]], np.zeros(3), None)]
    fusion.submit(MapJob(np.eye(4), frames, 5, ([5], np.eye(4)[None]), fusion.generation))
    pubs = fusion.run_pending()
    assert [p.channel for p in pubs] == ["cloud", "path"]
    assert pubs[0].msg.width == len(b[0][0]) + valid[1].sum()
    assert fusion.map.hit_counts().sum() == valid.sum()


def test_node_point_voxel_size_resolution():
    from loger_ros.params import NodeParams, ParamsError

    p = NodeParams(allow_synthetic_weights=True, voxel_size=0.04)
    assert p.point_voxel_size == -1.0
    assert p.resolved_point_voxel_size(cuda=True) == pytest.approx(0.02)
    assert p.resolved_point_voxel_size(cuda=False) == 0.0
    assert NodeParams(allow_synthetic_weights=True, device="cpu").stream_config().point_voxel_size == 0.0
    assert NodeParams(allow_synthetic_weights=True, point_voxel_size=0.0).resolved_point_voxel_size(True) == 0.0
    fixed = NodeParams(allow_synthetic_weights=True, point_voxel_size=0.03, scale_source="fixed", scale_factor=2.0)
    assert fixed.resolved_point_voxel_size(cuda=False) == pytest.approx(0.015)  # metres -> model units
    assert fixed.stream_config().point_voxel_size == pytest.approx(0.015)
    with pytest.raises(ParamsError, match="point_voxel_size"):
        NodeParams(allow_synthetic_weights=True, point_voxel_size=-0.5)
    with pytest.raises(ParamsError, match="point_voxel_size"):
        NodeParams(allow_synthetic_weights=True, point_voxel_size=-2.0)


def test_voxel_batch_is_exported():
    assert VoxelBatch.__dataclass_fields__.keys() == {"points", "colors", "confidence", "weights", "frame_counts"}


# ---------------------------------------------------------------- against a plain numpy grouping; the stream


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
