"""VoxelMap (numpy and torch storages through one interface): fusion arithmetic, filtering, eviction policies, cost scaling, PLY I/O."""

from collections import defaultdict

import numpy as np
import pytest

from loger_core.mapping.voxel_map import (
    STORAGES, InsertStats, MapConfig, MapError, VoxelMap, load_ply, voxel_downsample_open3d,
)


@pytest.fixture(params=STORAGES)
def storage(request):
    """Every test that takes it runs on both storages of the one VoxelMap interface (the torch
    storage on the CPU here; its CUDA-specific tests are in test_map_torch.py)."""
    return request.param


def _open3d():
    # open3d's wheel needs the system library libusb-1.0; a skip names the missing piece.
    return pytest.importorskip("open3d", exc_type=ImportError, reason="open3d not importable")


def _frame(rng, n, low=(0, 0, 0), high=(2, 2, 2), conf=1.0):
    pts = rng.uniform(low, high, size=(n, 3)).astype(np.float32)
    col = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    return pts, col, np.full(n, conf, dtype=np.float32)


def _reference_fusion(frames, voxel):
    """Per-voxel sums with a plain dict: independent of the map's hashing."""
    acc = defaultdict(lambda: [np.zeros(3), np.zeros(3), -np.inf, 0])
    for pts, col, conf in frames:
        for p, c, w in zip(pts.astype(np.float64), col, conf):
            key = tuple(np.floor(p / voxel).astype(int))
            a = acc[key]
            a[0] += p
            a[1] += c
            a[2] = max(a[2], float(w))
            a[3] += 1
    return {k: (v[0] / v[3], v[1] / v[3], v[2], v[3]) for k, v in acc.items()}


def _by_voxel(vmap, voxel):
    pts, col, conf = vmap.snapshot()
    keys = [tuple(k) for k in np.floor(pts.astype(np.float64) / voxel).astype(int)]
    return {k: (p, c, w, n) for k, p, c, w, n in zip(keys, pts, col, conf, vmap.hit_counts())}


def test_single_voxel_running_means_across_inserts(storage):
    vmap = VoxelMap(MapConfig(voxel_size=1.0), storage=storage)
    vmap.insert(np.array([[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]], np.float32),
                np.array([[0, 0, 0], [100, 50, 10]], np.uint8), np.array([0.2, 0.7], np.float32))
    vmap.insert(np.array([[0.8, 0.9, 0.1]], np.float32), np.array([[200, 250, 20]], np.uint8),
                np.array([0.5], np.float32))
    pts, col, conf = vmap.snapshot()
    assert len(vmap) == 1 and pts.dtype == np.float32 and col.dtype == np.uint8 and conf.dtype == np.float32
    np.testing.assert_allclose(pts[0], [0.4, 0.5, 0.3], atol=1e-6)
    np.testing.assert_array_equal(col[0], [100, 100, 10])
    assert conf[0] == pytest.approx(0.7)
    assert vmap.hit_counts().tolist() == [3]
    assert vmap.last_seen().tolist() == [1]


def test_mean_confidence_mode(storage):
    vmap = VoxelMap(MapConfig(voxel_size=1.0, confidence_reduce="mean"), storage=storage)
    col = np.zeros((2, 3), np.uint8)
    vmap.insert(np.array([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2]], np.float32), col, np.array([1.0, 2.0], np.float32))
    vmap.insert(np.array([[0.3, 0.3, 0.3]], np.float32), col[:1], np.array([6.0], np.float32))
    assert vmap.snapshot()[2][0] == pytest.approx(3.0)


def test_many_voxels_match_reference_fusion(storage):
    rng = np.random.default_rng(0)
    voxel = 0.25
    # Negative coordinates and repeated visits exercise key packing and hash collisions.
    frames = [_frame(rng, 3000, low=(-2, -1, -3), high=(1, 2, 0)) for _ in range(3)]
    for _, _, conf in frames:
        conf[:] = rng.uniform(0, 1, size=len(conf))
    vmap = VoxelMap(MapConfig(voxel_size=voxel, min_confidence=0.0), storage=storage)
    for f in frames:
        vmap.insert(*f)
    ref = _reference_fusion(frames, voxel)
    got = _by_voxel(vmap, voxel)
    assert set(got) == set(ref)
    for key, (p, c, w, n) in ref.items():
        gp, gc, gw, gn = got[key]
        np.testing.assert_allclose(gp, p, atol=1e-5)
        # Colours are float32 running means: a mean of exactly x.5 may round either way.
        assert np.abs(gc.astype(int) - c).max() <= 0.5 + 1e-3
        assert gw == pytest.approx(w) and gn == n


def test_confidence_threshold_and_non_finite_dropped(storage):
    vmap = VoxelMap(MapConfig(voxel_size=0.1, min_confidence=0.5), storage=storage)
    pts = np.array([[0.05, 0, 0], [1.05, 0, 0], [np.nan, 0, 0], [2.05, np.inf, 0], [3.05, 0, 0], [4.05, 0, 0]],
                   np.float32)
    conf = np.array([0.5, 0.49, 0.9, 0.9, np.nan, 0.9], np.float32)
    stats = vmap.insert(pts, np.zeros((6, 3), np.uint8), conf)
    assert isinstance(stats, InsertStats)
    assert stats.n_input == 6 and stats.n_kept == 2
    kept, _, _ = vmap.snapshot()
    np.testing.assert_allclose(np.sort(kept[:, 0]), [0.05, 4.05], atol=1e-6)
    s = vmap.stats()
    assert s["dropped_low_confidence"] == 1 and s["dropped_non_finite"] == 3


def test_out_of_range_points_are_dropped_not_aliased(storage):
    vmap = VoxelMap(MapConfig(voxel_size=0.05), storage=storage)
    far = 0.05 * (1 << 20) + 1.0  # just past the 21-bit key range
    vmap.insert(np.array([[far, 0, 0], [0.01, 0, 0]], np.float32), np.zeros((2, 3), np.uint8), np.ones(2, np.float32))
    assert len(vmap) == 1 and vmap.stats()["dropped_out_of_range"] == 1


@pytest.mark.parametrize("policy", ["drop_far", "drop_oldest"])
def test_eviction_keeps_bound_and_map_stays_consistent(policy, storage):
    rng = np.random.default_rng(1)
    cfg = MapConfig(voxel_size=0.1, max_points=2000, policy=policy, evict_headroom=0.1)
    vmap = VoxelMap(cfg, storage=storage)
    for f in range(12):
        pts, col, conf = _frame(rng, 800, low=(f, 0, 0), high=(f + 1.5, 1, 1))
        stats = vmap.insert(pts, col, conf, sensor_origin=np.array([f + 0.5, 0.5, 0.5]))
        assert len(vmap) <= cfg.max_points
        if stats.n_evicted:
            assert len(vmap) == int(cfg.max_points * 0.9)
    assert vmap.stats()["evicted"] > 0
    # After evictions the table still finds every stored voxel: re-inserting the
    # snapshot must not create a single new voxel.
    pts, col, conf = vmap.snapshot()
    n_before = len(vmap)
    again = vmap.insert(pts, col, conf)
    assert again.n_new_voxels == 0 and len(vmap) == n_before


def test_drop_far_evicts_farthest_from_latest_origin(storage):
    rng = np.random.default_rng(2)
    frame = _frame(rng, 3000, low=(0, 0, 0), high=(10, 1, 1))
    unbounded = VoxelMap(MapConfig(voxel_size=0.1), storage=storage)
    unbounded.insert(*frame)
    vmap = VoxelMap(MapConfig(voxel_size=0.1, max_points=1000, policy="drop_far", evict_headroom=0.2), storage=storage)
    stats = vmap.insert(*frame, sensor_origin=np.zeros(3))
    assert len(vmap) == 800 and stats.n_evicted == len(unbounded) - 800
    all_pts = unbounded.snapshot()[0]
    nearest = np.sort(np.linalg.norm(all_pts, axis=1))[:800]
    kept = np.sort(np.linalg.norm(vmap.snapshot()[0], axis=1))
    np.testing.assert_allclose(kept, nearest, rtol=1e-6)


def test_drop_far_without_origin_uses_latest_points(storage):
    rng = np.random.default_rng(8)
    vmap = VoxelMap(MapConfig(voxel_size=0.1, max_points=400, policy="drop_far", evict_headroom=0.5), storage=storage)
    vmap.insert(*_frame(rng, 1000, low=(0, 0, 0), high=(1, 1, 0.3)))  # region A, ~290 voxels
    vmap.insert(*_frame(rng, 1000, low=(20, 0, 0), high=(21, 1, 0.3)))  # region B triggers eviction
    # Without a sensor origin the latest frame's centroid (in B) is the reference: A goes.
    assert len(vmap) == 200
    assert vmap.snapshot()[0][:, 0].min() >= 20.0


def test_drop_oldest_evicts_least_recently_seen(storage):
    rng = np.random.default_rng(3)
    vmap = VoxelMap(MapConfig(voxel_size=0.1, max_points=1500, policy="drop_oldest", evict_headroom=0.1), storage=storage)
    a = _frame(rng, 2000, low=(0, 0, 0), high=(1, 1, 0.5))
    b = _frame(rng, 2000, low=(5, 0, 0), high=(6, 1, 0.5))
    vmap.insert(*a, sensor_origin=np.array([0.5, 0.5, 0.0]))  # frame 0: region A
    vmap.insert(*b, sensor_origin=np.array([5.5, 0.5, 0.0]))  # frame 1: region B (~500 voxels)
    vmap.insert(*a, sensor_origin=np.array([0.5, 0.5, 0.0]))  # frame 2: A refreshed
    # A (500 voxels, refreshed) plus B (500 voxels) fit; now force eviction with region C.
    c = _frame(rng, 4000, low=(10, 0, 0), high=(12, 1, 0.5))
    vmap.insert(*c, sensor_origin=np.array([11.0, 0.5, 0.0]))  # frame 3
    seen = vmap.last_seen()
    pts = vmap.snapshot()[0]
    assert len(vmap) == 1350
    # B (frame 1) is the oldest and must be gone before any of A (frame 2).
    assert not np.any((pts[:, 0] >= 5) & (pts[:, 0] < 6.5))
    assert set(np.unique(seen)) <= {2, 3}


def test_insert_cost_does_not_grow_with_map_size(storage):
    """Deterministic: count hash probes and map-sized rebuilds, not seconds.

    Apart from the amortised rebuilds (geometric growth, flagged by ``rebuilt``), an
    insert touches only the frame's voxels; its table work is ``probes``, which must stay
    O(1) per voxel while the map grows more than tenfold.
    """
    rng = np.random.default_rng(5)
    vmap = VoxelMap(MapConfig(voxel_size=0.01), storage=storage)
    rebuilds, steady = 0, []
    for f in range(50):
        # Frame f: ~5000 new voxels plus 1000 points revisiting the previous region.
        new = _frame(rng, 5000, low=(f, 0, 0), high=(f + 1, 1, 1))
        old = _frame(rng, 1000, low=(max(f - 1, 0), 0, 0), high=(max(f - 1, 0) + 1, 1, 1))
        stats = vmap.insert(*(np.concatenate([a, b]) for a, b in zip(new, old)))
        if stats.rebuilt:
            rebuilds += 1
        else:
            steady.append((len(vmap), stats.probes / stats.n_voxels))
    sizes, per_voxel = np.array(steady).T
    assert len(vmap) > 240_000 and sizes.max() > 10 * sizes.min()
    # Load factor stays <= 1/2, where linear probing expects ~1.5-2.5 probes per key.
    assert per_voxel.max() < 3.0
    # ~250k voxels from a 1024-slot start: doubling needs ~log2(250k / 1k) ~ 8 rebuilds.
    assert rebuilds <= 12 and len(steady) >= 38


def test_clear_and_stats(storage):
    rng = np.random.default_rng(6)
    vmap = VoxelMap(storage=storage)
    vmap.insert(*_frame(rng, 1000))
    s = vmap.stats()
    assert s["points"] == len(vmap) > 0 and s["frames"] == 1 and s["bytes"] > 0
    vmap.clear()
    assert len(vmap) == 0 and vmap.stats()["frames"] == 0
    assert vmap.snapshot()[0].shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"voxel_size": 0.0}, "voxel_size"),
        ({"voxel_size": float("nan")}, "voxel_size"),
        ({"max_points": 0}, "max_points"),
        ({"policy": "drop_random"}, "policy must be one of"),
        ({"evict_headroom": 1.0}, "evict_headroom"),
        ({"confidence_reduce": "min"}, "confidence_reduce"),
        ({"min_confidence": float("nan")}, "min_confidence"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(MapError, match=match):
        MapConfig(**kwargs)


def test_bad_insert_inputs(storage):
    vmap = VoxelMap(storage=storage)
    pts = np.zeros((4, 3), np.float32)
    col = np.zeros((4, 3), np.uint8)
    conf = np.ones(4, np.float32)
    with pytest.raises(MapError, match=r"points must be a float \(N, 3\)"):
        vmap.insert(np.zeros((4, 2), np.float32), col, conf)
    with pytest.raises(MapError, match="colors must be a uint8"):
        vmap.insert(pts, col.astype(np.float32), conf)
    with pytest.raises(MapError, match=r"confidence must be a float \(4,\)"):
        vmap.insert(pts, col, np.ones(3, np.float32))
    with pytest.raises(MapError, match="sensor_origin"):
        vmap.insert(pts, col, conf, sensor_origin=np.array([0.0, np.nan, 0.0]))
    assert len(vmap) == 0


def test_ply_round_trip(tmp_path, storage):
    o3d = _open3d()
    rng = np.random.default_rng(7)
    vmap = VoxelMap(MapConfig(voxel_size=0.2), storage=storage)
    vmap.insert(*_frame(rng, 2000), sensor_origin=np.zeros(3))
    pts, col, conf = vmap.snapshot()
    path = tmp_path / "map.ply"
    vmap.save_ply(path)
    legacy = o3d.io.read_point_cloud(str(path))
    assert len(legacy.points) == len(vmap)
    np.testing.assert_allclose(np.asarray(legacy.points), pts, atol=1e-6)
    np.testing.assert_allclose(np.asarray(legacy.colors), col / 255.0, atol=1e-6)
    p2, c2, w2 = load_ply(path)
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(c2, col)
    np.testing.assert_array_equal(w2, conf)


def test_load_ply_of_plain_open3d_cloud(tmp_path):
    o3d = _open3d()
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.eye(3)))
    cloud.colors = o3d.utility.Vector3dVector(np.array([[1.0, 0, 0], [0, 0.5, 0], [0, 0, 0.2]]))
    path = tmp_path / "plain.ply"
    o3d.io.write_point_cloud(str(path), cloud)
    pts, col, conf = load_ply(path)
    assert conf is None and pts.dtype == np.float32
    np.testing.assert_array_equal(col, [[255, 0, 0], [0, 128, 0], [0, 0, 51]])
    with pytest.raises(MapError, match="not found"):
        load_ply(tmp_path / "missing.ply")


def test_voxel_downsample_open3d_means():
    _open3d()
    pts = np.array([[0.01, 0.01, 0.01], [0.03, 0.03, 0.03], [0.51, 0.51, 0.51]], np.float32)
    col = np.array([[0, 0, 0], [100, 200, 50], [9, 9, 9]], np.uint8)
    out_pts, out_col = voxel_downsample_open3d(pts, col, voxel_size=0.1)
    order = np.argsort(out_pts[:, 0])
    np.testing.assert_allclose(out_pts[order], [[0.02, 0.02, 0.02], [0.51, 0.51, 0.51]], atol=1e-6)
    np.testing.assert_array_equal(out_col[order], [[50, 100, 25], [9, 9, 9]])


# ------------------------------------------------------------------ weighted insert


def _state(vmap):
    n = len(vmap)
    arrays = (vmap._keys, vmap._pos, vmap._col, vmap._conf, vmap._count, vmap._seen)
    used = vmap._table_keys != -1  # unused table slots are uninitialised
    return [a[:n].copy() for a in arrays] + [vmap._table_keys.copy(), vmap._table_slot[used], vmap.stats(),
                                             None if vmap._origin is None else vmap._origin.copy()]


def _assert_same_state(a, b):
    for x, y in zip(_state(a), _state(b)):
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y


@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("policy", ["drop_far", "drop_oldest"])
def test_unit_weights_are_bitwise_the_unweighted_insert(reduce, policy):
    rng = np.random.default_rng(11)
    cfg = dict(voxel_size=0.1, max_points=300, min_confidence=0.2, confidence_reduce=reduce, policy=policy)
    plain, ones, ints = VoxelMap(MapConfig(**cfg)), VoxelMap(MapConfig(**cfg)), VoxelMap(MapConfig(**cfg))
    for i in range(6):
        pts, col, _ = _frame(rng, 500, low=(i, 0, 0), high=(i + 1, 1, 1))
        conf = rng.random(500).astype(np.float32)
        pts[:3] = np.nan
        pts[3] = 1e9
        origin = (i + 0.5, 0.0, 0.0)  # (the fallback origin, a weighted mean in float64, is tested below)
        plain.insert(pts, col, conf, sensor_origin=origin)
        ones.insert(pts, col, conf, sensor_origin=origin, weights=np.ones(500))
        ints.insert(pts, col, conf, sensor_origin=origin, weights=np.ones(500, np.int32))
    assert plain.stats()["evicted"] > 0
    _assert_same_state(plain, ones)
    _assert_same_state(plain, ints)


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_a_weight_counts_as_that_many_identical_points(reduce, storage):
    rng = np.random.default_rng(12)
    cfg = MapConfig(voxel_size=0.5, confidence_reduce=reduce, min_confidence=0.3)
    weighted, repeated = VoxelMap(cfg, storage=storage), VoxelMap(cfg, storage=storage)
    for _ in range(3):
        pts, col, _ = _frame(rng, 200)
        conf = rng.random(200).astype(np.float32)
        pts[:2] = np.inf
        w = rng.integers(1, 6, size=200)
        weighted.insert(pts, col, conf, weights=w)
        rep = np.repeat(np.arange(200), w)
        repeated.insert(pts[rep], col[rep], conf[rep])
    assert len(weighted) == len(repeated)
    np.testing.assert_array_equal(weighted._keys[: len(weighted)], repeated._keys[: len(repeated)])
    np.testing.assert_array_equal(weighted.hit_counts(), repeated.hit_counts())
    for x, y in zip(weighted.snapshot(), repeated.snapshot()):
        np.testing.assert_allclose(x.astype(np.float64), y.astype(np.float64), rtol=1e-6, atol=1e-6)
    assert weighted.stats() == repeated.stats()  # dropped_* count weights
    assert weighted.last_insert.n_input == 200  # rows, not weights


def test_weighted_origin_fallback_is_the_weighted_mean(storage):
    vmap = VoxelMap(MapConfig(voxel_size=0.1), storage=storage)
    vmap.insert(np.array([[0, 0, 0], [4, 0, 0]], np.float32), np.zeros((2, 3), np.uint8),
                np.ones(2, np.float32), weights=np.array([3, 1]))
    np.testing.assert_allclose(vmap._origin, [1.0, 0.0, 0.0])


@pytest.mark.parametrize("weights, match", [
    (np.ones(3), r"\(4,\)"),
    (np.ones((4, 1)), r"\(4,\)"),
    (np.array([True] * 4), "integer or float"),
    (np.array(["1"] * 4), "integer or float"),
    (np.array([1, 2, 0, 1]), "> 0"),
    (np.array([1.0, -2.0, 1.0, 1.0]), "> 0"),
    (np.array([1.0, np.nan, 1.0, 1.0]), "finite"),
    (np.array([1.0, np.inf, 1.0, 1.0]), "finite"),
    (np.array([1.0, 1.5, 1.0, 1.0]), "whole numbers"),
    (np.array([1, 2**40, 1, 1]), "2\\^31"),
])
def test_bad_weights(weights, match, storage):
    vmap = VoxelMap(storage=storage)
    pts, col, conf = _frame(np.random.default_rng(0), 4)
    with pytest.raises(MapError, match=match):
        vmap.insert(pts, col, conf, weights=weights)
    assert len(vmap) == 0 and vmap.stats()["frames"] == 0


def test_empty_weighted_insert(storage):
    vmap = VoxelMap(storage=storage)
    stats = vmap.insert(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.float32),
                        weights=np.zeros(0, np.int32))
    assert stats.n_kept == 0 and len(vmap) == 0
