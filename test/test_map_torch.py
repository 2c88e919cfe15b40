"""The tensor voxel map (GPU map fusion) equals the numpy VoxelMap: same voxels, means, confidences,
counts, last-seen indices, drop counters and evictions (CPU here; the same ops run on CUDA)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.mapping.numpy_storage import NumpyVoxelMap
from loger_core.mapping.voxel_map import MapConfig, MapError, VoxelMap
from loger_core.mapping.torch_storage import TorchVoxelMap


def _frames(n_frames=6, n=4000, seed=0, bad=True, weights=False):
    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        pts = (rng.normal(size=(n, 3)) * [0.6, 0.3, 0.8] + [0.02 * f, 0, 1.5]).astype(np.float32)
        col = rng.integers(0, 256, (n, 3), dtype=np.uint8)
        conf = rng.random(n).astype(np.float32)
        if bad:
            pts[:5] = np.nan
            conf[5:9] = np.inf
            pts[9:12] = 1e9  # beyond the key range
        wts = rng.integers(1, 7, n) if weights else None
        out.append((pts, col, conf, rng.normal(size=3) if f % 2 else None, wts))
    return out


def _by_key(vmap):
    """The map's arrays ordered by voxel key (the numpy map keeps insertion order)."""
    if isinstance(vmap, TorchVoxelMap):
        keys = vmap._keys.cpu().numpy()
    else:
        keys = vmap._keys[: len(vmap)]
    order = np.argsort(keys, kind="stable")
    pts, col, conf = vmap.snapshot()
    return keys[order], pts[order], col[order], conf[order], vmap.hit_counts()[order], vmap.last_seen()[order]


def _assert_same(a, b):
    ka, pa, ca, fa, na, sa = _by_key(a)
    kb, pb, cb, fb, nb, sb = _by_key(b)
    np.testing.assert_array_equal(ka, kb)
    np.testing.assert_allclose(pa, pb, rtol=0, atol=2e-6)
    assert np.abs(ca.astype(int) - cb.astype(int)).max(initial=0) <= 1  # rint of float32 means
    np.testing.assert_allclose(fa, fb, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(na, nb)
    np.testing.assert_array_equal(sa, sb)
    sta, stb = a.stats(), b.stats()
    for key in ("points", "evicted", "frames", "dropped_low_confidence", "dropped_non_finite", "dropped_out_of_range"):
        assert sta[key] == stb[key], key


@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("weights", [False, True])
def test_tensor_map_equals_the_numpy_map(reduce, weights):
    cfg = MapConfig(voxel_size=0.05, min_confidence=0.2, confidence_reduce=reduce)
    ref, got = VoxelMap(cfg), TorchVoxelMap(cfg)
    for pts, col, conf, origin, wts in _frames(weights=weights):
        s_ref = ref.insert(pts, col, conf, sensor_origin=origin, weights=wts)
        s_got = got.insert(pts, col, conf, sensor_origin=origin, weights=wts)
        assert (s_got.n_input, s_got.n_kept, s_got.n_voxels, s_got.n_new_voxels) == \
               (s_ref.n_input, s_ref.n_kept, s_ref.n_voxels, s_ref.n_new_voxels)
    assert len(got) > 1000 and got.stats()["dropped_non_finite"] > 0 and got.stats()["dropped_out_of_range"] > 0
    _assert_same(got, ref)


@pytest.mark.parametrize("policy", ["drop_far", "drop_oldest"])
def test_tensor_map_evicts_as_the_numpy_map(policy):
    cfg = MapConfig(voxel_size=0.05, max_points=3000, policy=policy, evict_headroom=0.2)
    ref, got = VoxelMap(cfg), TorchVoxelMap(cfg)
    for pts, col, conf, origin, wts in _frames(n_frames=5, n=2500, seed=3, bad=False):
        ref.insert(pts, col, conf, sensor_origin=origin)
        got.insert(pts, col, conf, sensor_origin=origin)
    assert got.stats()["evicted"] > 0 and len(got) <= cfg.max_points
    _assert_same(got, ref)


def test_tensor_map_snapshots_are_copies():
    got = TorchVoxelMap(MapConfig(voxel_size=0.05))
    frames = _frames(n_frames=2, seed=2, bad=False)
    got.insert(*frames[0][:3])
    pts, col, conf = got.snapshot()
    counts, seen = got.hit_counts(), got.last_seen()
    kept = [a.copy() for a in (pts, col, conf, counts, seen)]
    got.insert(*frames[0][:3])  # the same voxels again: counts and last-seen updated in place
    for a, b in zip((pts, col, conf, counts, seen), kept):
        np.testing.assert_array_equal(a, b)


def test_tensor_map_refuses_bad_input_like_the_numpy_map():
    got = TorchVoxelMap(MapConfig())
    with pytest.raises(MapError, match="points must be a float"):
        got.insert(np.zeros((3, 2), np.float32), np.zeros((3, 3), np.uint8), np.zeros(3, np.float32))
    with pytest.raises(MapError, match="colors must be a uint8"):
        got.insert(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.float32), np.zeros(3, np.float32))
    with pytest.raises(MapError, match="weights must be whole"):
        got.insert(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.uint8), np.zeros(3, np.float32),
                   weights=np.array([1.0, 1.5, 2.0]))
    assert len(got) == 0 and got.stats()["frames"] == 0


def test_tensor_map_converts_to_and_from_the_numpy_map_and_merges_on_identically():
    cfg = MapConfig(voxel_size=0.05)
    frames = _frames(n_frames=4, seed=5)
    got = TorchVoxelMap(cfg)
    for pts, col, conf, origin, wts in frames[:3]:
        got.insert(pts, col, conf, sensor_origin=origin)
    as_numpy = got.to_voxel_map()
    _assert_same(got, as_numpy)
    back = TorchVoxelMap(cfg)
    back.load_voxel_map(as_numpy)
    pts, col, conf, origin, _ = frames[3]
    for m in (got, as_numpy, back):
        m.insert(pts, col, conf, sensor_origin=origin)
    _assert_same(got, as_numpy)
    _assert_same(back, as_numpy)


def test_tensor_map_takes_tensors_and_writes_ply(tmp_path):
    from loger_core.mapping.voxel_map import load_ply

    got = TorchVoxelMap(MapConfig(voxel_size=0.1))
    pts, col, conf, _, _ = _frames(n_frames=1, bad=False)[0]
    got.insert(torch.from_numpy(pts), torch.from_numpy(col), torch.from_numpy(conf))
    ref = VoxelMap(MapConfig(voxel_size=0.1))
    ref.insert(pts, col, conf)
    _assert_same(got, ref)
    got.save_ply(tmp_path / "m.ply")
    loaded = load_ply(tmp_path / "m.ply")[0]
    assert loaded.shape == (len(got), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU machine)")
def test_tensor_map_on_cuda_equals_the_numpy_map():
    cfg = MapConfig(voxel_size=0.05, max_points=20_000)
    ref, got = VoxelMap(cfg), TorchVoxelMap(cfg, device="cuda")
    for pts, col, conf, origin, wts in _frames(n_frames=8, n=6000, weights=True):
        ref.insert(pts, col, conf, sensor_origin=origin, weights=wts)
        got.insert(pts, col, conf, sensor_origin=origin, weights=wts)
    _assert_same(got, ref)


class _Log:
    def __init__(self):
        self.errors = []

    def error(self, text):
        self.errors.append(text)

    warning = info = debug = error


def _fusion(device_map: bool):
    from loger_ros.conversions import rosbags_factory
    from loger_ros.publications import MessageBuilder
    from loger_core.pipeline.map_fusion import MapFusion

    fusion = MapFusion(MapConfig(voxel_size=0.05), MessageBuilder(rosbags_factory("ros2_humble")), "map", 1000, _Log())
    if device_map:  # the map a CUDA node gets, here on the CPU
        fusion.map = TorchVoxelMap(fusion.map.cfg)
    return fusion


def test_a_failing_tensor_map_moves_to_the_cpu_and_loses_nothing():
    fusion, ref = _fusion(True), VoxelMap(MapConfig(voxel_size=0.05))
    frames = _frames(n_frames=3, seed=7)
    real, calls = fusion.map.insert, []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered (fake)")
        return real(*a, **kw)

    fusion.map.insert = flaky
    for pts, col, conf, origin, wts in frames:
        fusion._insert(pts, col, conf, origin, wts)
        ref.insert(pts, col, conf, sensor_origin=origin, weights=wts)
    assert isinstance(fusion.map, NumpyVoxelMap) and len(fusion.log.errors) == 1
    assert "moving the map" in fusion.log.errors[0] and "illegal memory access" in fusion.log.errors[0]
    _assert_same(fusion.map, ref)


def test_sessions_save_the_tensor_map_and_resume_it_on_either_map():
    from types import SimpleNamespace

    from loger_core.pipeline.session_parts import MapPart

    frames = _frames(n_frames=4, seed=11)
    saved = _fusion(True)
    for pts, col, conf, origin, wts in frames[:3]:
        saved._insert(pts, col, conf, origin, wts)
    component = MapPart(SimpleNamespace(fusion=saved)).capture()
    for device_map in (True, False):
        resumed = _fusion(device_map)
        MapPart(SimpleNamespace(fusion=resumed)).restore(component, None)
        pts, col, conf, origin, wts = frames[3]
        resumed._insert(pts, col, conf, origin, wts)
        if device_map:
            saved._insert(pts, col, conf, origin, wts)
        _assert_same(resumed.map, saved.map)


def test_a_tensor_map_failing_half_way_through_an_insert_moves_to_the_cpu_without_empty_voxels():
    fusion, ref = _fusion(True), VoxelMap(MapConfig(voxel_size=0.05))
    frames = _frames(n_frames=3, seed=8)
    real = fusion.map._insert_keys
    calls = []

    def keys_then_fail(ukeys):
        out = real(ukeys)  # the new voxels are in, with no point yet
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA error: unspecified launch failure (fake)")
        return out

    fusion.map._insert_keys = keys_then_fail
    for pts, col, conf, origin, wts in frames:
        fusion._insert(pts, col, conf, origin, wts)
        ref.insert(pts, col, conf, sensor_origin=origin, weights=wts)
    assert isinstance(fusion.map, NumpyVoxelMap) and fusion.map.hit_counts().min() > 0
    # The frame whose insert failed was fused again on the CPU: the same map as the reference,
    # except the frame counter, which the failed attempt advanced.
    keys_a, pts_a = _by_key(fusion.map)[:2]
    keys_b, pts_b = _by_key(ref)[:2]
    np.testing.assert_array_equal(keys_a, keys_b)
    np.testing.assert_allclose(pts_a, pts_b, atol=2e-6)
    np.testing.assert_array_equal(_by_key(fusion.map)[4], _by_key(ref)[4])
