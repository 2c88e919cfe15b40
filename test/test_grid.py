"""The 2D occupancy grid for Nav2: ray casting, height band, bounded cost, messages, map_server files,
the node core's ~/grid and the floor frame used where there is no TF."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.spatial.transform import Rotation

from loger_core.mapping.floor_grid import FloorGridBuilder, estimate_ground_frame
from loger_core.mapping.grid_files import MAP_SERVER_FREE_THRESH, write_map_server
from loger_core.mapping.occupancy_grid import (
    FREE,
    OCCUPIED,
    UNKNOWN,
    GridConfig,
    GridError,
    GridSnapshot,
    OccupancyGrid2D,
    heights_above_ground,
)
from loger_core.stream import FrameResult
from loger_ros.conversions import ConversionError, occupancy_grid_from_array, occupancy_grid_to_array, rosbags_factory
from loger_ros.mapping_core import MappingCore
from loger_ros.params import NodeParams, ParamsError

F = rosbags_factory("ros2_humble")
CAMERA_HEIGHT = 1.0


def wall_scene(wall_x=3.0, ceiling=True):
    """Points seen from a camera at the origin, 1 m up: a wall at x = wall_x (y in [-1, 1], heights
    0.2-1.4 m), the floor in front of it and (optionally) a ceiling at 2.5 m. Returns xy (N, 2), heights (N,)."""
    ys, hs = np.meshgrid(np.linspace(-1, 1, 41), np.linspace(0.2, 1.4, 13))
    wall = np.c_[np.full(ys.size, wall_x), ys.ravel()]
    fx, fy = np.meshgrid(np.linspace(0.5, wall_x - 0.1, 25), np.linspace(-1, 1, 21))
    floor = np.c_[fx.ravel(), fy.ravel()]
    parts = [(wall, hs.ravel()), (floor, np.zeros(len(floor)))]
    if ceiling:
        parts.append((floor + [0.0, 0.0], np.full(len(floor), 2.5)))
    return np.concatenate([p for p, _ in parts]), np.concatenate([h for _, h in parts])


# ------------------------------------------------------------------ ray casting and the band
def test_free_along_rays_occupied_in_the_band_unknown_elsewhere():
    grid = OccupancyGrid2D(GridConfig(resolution=0.1, min_height=0.1, max_height=1.5))
    xy, h = wall_scene()
    stats = grid.insert(xy, h, np.zeros(2), CAMERA_HEIGHT)
    snap = grid.snapshot()
    assert stats.occupied_cells == 21 and stats.cells_touched == stats.occupied_cells + stats.free_cells
    # Between the camera and the wall: free (rays and floor); the wall: occupied; behind it: unknown.
    for x in (0.05, 0.5, 1.5, 2.5, 2.95):
        assert snap.value_at(x, 0.0) == FREE, x
    for y in (-0.95, 0.0, 0.95):
        assert snap.value_at(3.05, y) == OCCUPIED, y
    assert snap.value_at(3.5, 0.0) == UNKNOWN and snap.value_at(1.0, 1.6) == UNKNOWN
    assert snap.value_at(-1.0, 0.0) == UNKNOWN  # behind the camera
    assert set(np.unique(snap.data).tolist()) == {FREE, OCCUPIED, UNKNOWN}
    # The ceiling (above the band) occupies nothing: the same scene without it gives the same grid.
    no_ceiling = OccupancyGrid2D(GridConfig(resolution=0.1))
    no_ceiling.insert(*wall_scene(ceiling=False), np.zeros(2), CAMERA_HEIGHT)
    assert (no_ceiling.snapshot().data == OCCUPIED).sum() == (snap.data == OCCUPIED).sum()


def test_band_bounds_and_range_limit():
    cfg = GridConfig(resolution=0.1, min_height=0.3, max_height=1.0, max_range=4.0)
    grid = OccupancyGrid2D(cfg)
    # Four single points straight ahead: too low (floor), in the band, too high, beyond max_range.
    xy = np.array([[1.0, 0.0], [2.0, 1.0], [2.0, -1.0], [6.0, 0.0]])
    h = np.array([0.2, 0.5, 1.2, 0.5])
    grid.insert(xy, h, np.zeros(2), 0.5)
    snap = grid.snapshot()
    assert snap.value_at(1.05, 0.05) == FREE  # a floor point is free ground
    assert snap.value_at(2.05, 1.05) == OCCUPIED
    assert snap.value_at(2.05, -0.95) != OCCUPIED  # above the band: not an obstacle
    assert snap.value_at(6.05, 0.05) == UNKNOWN  # beyond range: no endpoint ...
    assert snap.value_at(3.5, 0.05) == FREE  # ... but the ray is free up to max_range
    assert snap.value_at(4.5, 0.05) == UNKNOWN


def test_heights_are_measured_in_the_observing_base_frame():
    # A base 2 m up a ramp, pitched 10 degrees: a point 0.5 m above its base plane is an obstacle,
    # a point on its own floor (z = ground_z in base) is ground, though both are far above map z = 0.
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("y", -10, degrees=True).as_matrix()
    T[:3, 3] = (5.0, 1.0, 2.0)
    in_base = np.array([[1.0, 0.0, 0.5 - 0.2], [1.5, 0.0, -0.2]])  # ground_z = -0.2
    in_map = in_base @ T[:3, :3].T + T[:3, 3]
    np.testing.assert_allclose(heights_above_ground(in_map, T, -0.2), [0.5, 0.0], atol=1e-6)


def test_log_odds_lets_later_rays_clear_a_moved_obstacle():
    grid = OccupancyGrid2D(GridConfig(resolution=0.1))
    obstacle = (np.array([[2.0, 0.0]]), np.array([0.5]))
    grid.insert(*obstacle, np.zeros(2), CAMERA_HEIGHT)
    assert grid.snapshot().value_at(2.05, 0.05) == OCCUPIED
    wall = (np.array([[4.0, 0.0]]), np.array([0.5]))  # the obstacle left: rays now reach a wall behind it
    for _ in range(3):
        grid.insert(*wall, np.zeros(2), CAMERA_HEIGHT)
    snap = grid.snapshot()
    assert snap.value_at(2.05, 0.05) == FREE and snap.value_at(4.05, 0.05) == OCCUPIED


def test_update_cost_is_bounded_by_the_new_frame_not_the_map():
    """A camera walks 40 m down a corridor: the map keeps growing, the cells one update touches do not."""
    cfg = GridConfig(resolution=0.1, max_range=4.0, rays_per_frame=400)
    grid = OccupancyGrid2D(cfg)
    rng = np.random.default_rng(0)
    touched, known, samples = [], [], []
    for i in range(200):
        x = 0.2 * i
        n = 2000
        px = x + rng.uniform(0.5, 6.0, n)
        py = rng.choice([-1.5, 1.5], n) + rng.normal(0, 0.02, n)
        stats = grid.insert(np.c_[px, py], rng.uniform(0.0, 2.0, n), np.array([x, 0.0]), CAMERA_HEIGHT)
        touched.append(stats.cells_touched)
        samples.append(stats.samples)
        known.append(grid.known_cells())
        # The per-frame bound that follows from the config, whatever the map size.
        assert stats.samples <= cfg.rays_per_frame * cfg.max_samples_per_ray
        assert stats.cells_touched <= (2 * cfg.max_range / cfg.resolution + 2) ** 2
    assert known[-1] > 5 * known[19]
    early, late = np.mean(touched[10:30]), np.mean(touched[-20:])
    assert 0.7 < late / early < 1.3, (early, late)
    assert 0.7 < np.mean(samples[-20:]) / np.mean(samples[10:30]) < 1.3


def test_the_grid_never_grows_beyond_its_extent():
    cfg = GridConfig(resolution=0.5, max_extent=10.0, max_range=100.0)
    grid = OccupancyGrid2D(cfg)
    stats = grid.insert(np.array([[50.0, 0.0], [5.0, 5.0]]), np.array([0.5, 0.5]), np.zeros(2), CAMERA_HEIGHT)
    assert stats.outside_extent > 0 and stats.occupied_cells == 1
    assert max(grid.storage_shape) <= 2 * 10.0 / 0.5
    snap = grid.snapshot()
    assert snap.origin[0] >= -10.0 and snap.origin[0] + snap.width * 0.5 <= 10.0


def test_bad_config_and_input_are_refused():
    with pytest.raises(GridError, match="max_height 0.5 must be > min_height 1.0"):
        GridConfig(min_height=1.0, max_height=0.5)
    with pytest.raises(GridError, match="resolution"):
        GridConfig(resolution=0.0)
    with pytest.raises(GridError, match="heights has 1"):
        OccupancyGrid2D().insert(np.zeros((2, 2)), np.zeros(1), np.zeros(2), 1.0)
    with pytest.raises(GridError, match="camera_xy"):
        OccupancyGrid2D().insert(np.zeros((2, 2)), np.zeros(2), np.array([np.nan, 0.0]), 1.0)
    # NaN points are skipped, not fatal.
    grid = OccupancyGrid2D(GridConfig(resolution=0.1))
    stats = grid.insert(np.array([[np.nan, 0.0], [1.0, 0.0]]), np.array([0.5, 0.5]), np.zeros(2), 1.0)
    assert stats.points == 1 and stats.occupied_cells == 1


# ------------------------------------------------------------------ messages
def test_occupancy_grid_message_round_trips_through_the_rosbags_typestore():
    grid = OccupancyGrid2D(GridConfig(resolution=0.1))
    grid.insert(*wall_scene(), np.zeros(2), CAMERA_HEIGHT)
    snap = grid.snapshot()
    msg = occupancy_grid_from_array(F, 1_700_000_000_123_456_789, "map", snap.data, snap.resolution, snap.origin, -0.1)
    raw = F.typestore.serialize_cdr(msg, "nav_msgs/msg/OccupancyGrid")
    back = occupancy_grid_to_array(F.typestore.deserialize_cdr(raw, "nav_msgs/msg/OccupancyGrid"))
    np.testing.assert_array_equal(back.data, snap.data)
    assert back.frame_id == "map" and back.stamp_ns == 1_700_000_000_123_456_789
    assert back.resolution == pytest.approx(0.1) and back.data.shape == (snap.height, snap.width)
    np.testing.assert_allclose(back.T_frame_origin[:3, 3], [*snap.origin, -0.1])
    np.testing.assert_allclose(back.T_frame_origin[:3, :3], np.eye(3))
    # Row 0 is the lowest y (Nav2 order): the wall at x = 3 m is in column (3 - origin_x) / res of every row.
    col = int(round((3.0 - snap.origin[0]) / 0.1))
    assert (back.data[:, col] == OCCUPIED).sum() == 21
    with pytest.raises(ConversionError, match="-1, 0 or 100"):
        occupancy_grid_from_array(F, 0, "map", np.array([[0, 50]]), 0.1, (0.0, 0.0))
    with pytest.raises(ConversionError, match="2-D"):
        occupancy_grid_from_array(F, 0, "map", np.zeros(3), 0.1, (0.0, 0.0))


# ------------------------------------------------------------------ map_server files
def map_server_trinary(yaml_path):
    """What nav2_map_server's loadMapFromFile does in trinary mode (map_io.cpp): the grid and its origin."""
    meta = yaml.safe_load(yaml_path.read_text())
    assert meta["mode"] == "trinary"
    img = np.asarray(Image.open(yaml_path.parent / meta["image"]))
    shade = (img if img.ndim == 2 else img[..., :3].mean(axis=2)).astype(np.float64) / 255.0
    occ = shade if meta["negate"] else 1.0 - shade
    cells = np.full(img.shape[:2], UNKNOWN, dtype=np.int8)
    cells[occ < meta["free_thresh"]] = FREE
    cells[meta["occupied_thresh"] < occ] = OCCUPIED
    # Image row y becomes grid row height - y - 1: the image's top row is the grid's highest y.
    return cells[::-1], meta


def test_map_server_files_load_back_as_the_same_grid(tmp_path):
    grid = OccupancyGrid2D(GridConfig(resolution=0.1))
    grid.insert(*wall_scene(), np.array([0.0, 0.0]), CAMERA_HEIGHT)
    grid.insert(*wall_scene(wall_x=2.0), np.array([0.3, -0.4]), CAMERA_HEIGHT)
    snap = grid.snapshot()
    assert snap.width != snap.height  # so a transposed image could not pass
    pgm, yml = write_map_server(tmp_path, snap)
    assert pgm.read_bytes().startswith(b"P5\n")
    cells, meta = map_server_trinary(yml)
    np.testing.assert_array_equal(cells, snap.data)
    assert meta["image"] == "map.pgm" and meta["resolution"] == pytest.approx(snap.resolution)
    np.testing.assert_allclose(meta["origin"], [*snap.origin, 0.0], atol=1e-9)
    assert set(meta) >= {"image", "resolution", "origin", "negate", "occupied_thresh", "free_thresh", "mode"}
    assert set(np.unique(np.asarray(Image.open(pgm))).tolist()) == {0, 205, 254}
    # Why free_thresh is 0.196 and not Nav2's default 0.25: with 0.25 unknown grey (205) loads as free.
    assert MAP_SERVER_FREE_THRESH < (255 - 205) / 255 < 0.25
    yml.write_text(yml.read_text().replace(f"free_thresh: {MAP_SERVER_FREE_THRESH}", "free_thresh: 0.25"))
    assert (map_server_trinary(yml)[0] == UNKNOWN).sum() == 0 < (snap.data == UNKNOWN).sum()


def test_an_empty_grid_is_not_saved(tmp_path):
    with pytest.raises(GridError, match="empty"):
        write_map_server(tmp_path, GridSnapshot(np.zeros((0, 0), np.int8), 0.05, (0.0, 0.0)))


# ------------------------------------------------------------------ the node core
class WallStream:
    """A minimal StreamingReconstructor: windows of 3 frames (overlap 0) whose committed frames all see
    the wall scene from a camera moving along x. The camera is an optical frame (z forward, y down)."""

    def __init__(self):
        self.buffer, self.device, self.stats = [], "cpu", None
        xy, h = wall_scene()
        # Camera optical frame at height CAMERA_HEIGHT looking along +x: x_cam = -y, y_cam = -(z - h), z_cam = x.
        self.points_cam = np.c_[-xy[:, 1], -(h - CAMERA_HEIGHT), xy[:, 0]].astype(np.float32)

    @property
    def buffered_frames(self):
        return len(self.buffer)

    def result(self, index, stamp_ns):
        T = np.eye(4)
        T[2, 3] = 0.1 * index  # forward along the camera's z
        pts = (self.points_cam @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
        n = len(pts)
        return FrameResult(
            index=index, stamp_ns=stamp_ns, T_world_cam=T, depth=np.ones((2, 2), np.float32),
            confidence=np.ones((2, 2), np.float32), valid=np.ones((2, 2), bool), points=pts,
            colors=np.zeros((n, 3), np.uint8), point_confidence=np.ones(n, np.float32), K=np.eye(3),
            K_model=np.eye(3), image_size=(4, 4), model_size=(2, 2), scale=1.0, scale_std=0.0, scale_valid=True,
            window_index=index // 3, provisional=False)

    def push(self, image, stamp_ns, K=None, depth=None, odom=None, provisional=True):
        self.buffer.append(stamp_ns)
        if len(self.buffer) == 3:
            start = getattr(self, "count", 0)
            out = [self.result(start + i, s) for i, s in enumerate(self.buffer)]
            self.count, self.buffer = start + 3, []
            return out
        return []

    def flush(self):
        return []

    def reset(self):
        self.buffer = []


def mount_lookup(target, source, stamp_ns):
    """TF: base_link <- camera_optical_frame, the camera CAMERA_HEIGHT up looking along base x (REP-103)."""
    if (target, source) != ("base_link", "camera_optical_frame"):
        return None
    T = np.eye(4)
    T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    T[2, 3] = CAMERA_HEIGHT
    return T


def image(i):
    stamp = 1_700_000_000_000_000_000 + i * 100_000_000
    header = F.make("std_msgs/msg/Header", stamp=F.make("builtin_interfaces/msg/Time", sec=stamp // 10**9,
                                                        nanosec=stamp % 10**9), frame_id="camera_optical_frame")
    return F.make("sensor_msgs/msg/Image", header=header, height=4, width=4, encoding="rgb8", is_bigendian=0,
                  step=12, data=np.zeros(48, np.uint8))


def run_core(tmp_path, **overrides):
    params = NodeParams(allow_synthetic_weights=True, window_size=3, overlap_size=0, grid_resolution=0.1,
                        output_dir=str(tmp_path), **overrides)
    core = MappingCore(params, F, reconstructor=WallStream(), lookup=mount_lookup, logger=_Quiet())
    pubs = []
    for i in range(6):
        core.on_image(image(i))
        pubs += core.process_all()
        pubs += core.periodic(i * 10**9 * 10)
    return core, pubs


class _Quiet:
    def __getattr__(self, name):
        return lambda text: None


def test_the_core_publishes_the_grid_in_the_map_frame_and_saves_map_server_files(tmp_path):
    core, pubs = run_core(tmp_path)
    grids = [p for p in pubs if p.channel == "grid"]
    assert grids and grids[-1].msg.header.frame_id == "map"
    decoded = occupancy_grid_to_array(grids[-1].msg)
    snap = GridSnapshot(decoded.data, decoded.resolution, tuple(decoded.T_frame_origin[:2, 3]))
    # base_link starts at the map origin; the camera moved 0.5 m along x; the wall was 3 m ahead of it.
    assert snap.value_at(1.0, 0.0) == FREE and snap.value_at(3.55, 0.0) == OCCUPIED
    assert snap.value_at(4.5, 0.0) == UNKNOWN
    assert decoded.T_frame_origin[2, 3] == pytest.approx(core.params.grid_ground_z)
    saved = core.save_map()
    assert saved.grid_yaml == tmp_path / "map.yaml" and saved.grid_pgm == tmp_path / "map.pgm"
    cells, meta = map_server_trinary(saved.grid_yaml)
    np.testing.assert_array_equal(cells, core.grid.snapshot().data)
    assert core.grid.window_stats.rays > 0 and core.grid.frames == 6
    # A reset that clears the map clears the grid too.
    core.params.reset_clears_map = True
    core.request_reset()
    core.on_image(image(7))
    cleared = [p for p in core.process_all() if p.channel == "grid"]
    assert cleared and cleared[-1].msg.info.width == 0


def test_grid_disabled_publishes_and_writes_no_grid(tmp_path):
    core, pubs = run_core(tmp_path, grid_enabled=False)
    assert core.grid is None and not [p for p in pubs if p.channel == "grid"]
    saved = core.save_map()
    assert saved.grid_yaml is None and not (tmp_path / "map.yaml").exists()


def test_grid_parameters_are_the_grid_config_fields():
    params = NodeParams()
    for f in dataclasses.fields(GridConfig):
        assert getattr(params, f"grid_{f.name}") == f.default, f.name
    assert params.grid_config() == GridConfig()
    custom = NodeParams(grid_resolution=0.2, grid_max_height=2.0, grid_rays_per_frame=10)
    assert custom.grid_config() == GridConfig(resolution=0.2, max_height=2.0, rays_per_frame=10)
    with pytest.raises(ParamsError, match="grid_max_height 0.05 must be > grid_min_height 0.1"):
        NodeParams(grid_max_height=0.05)


# ------------------------------------------------------------------ no TF: the floor frame
def room_points(rng, tilt_deg=20.0):
    """A floor (z = 0), two walls and a ceiling in a z-up world, seen from cameras 1.2 m up that look
    along +x pitched down by tilt_deg. Returns points (N, 3) and T_world_cam (M, 4, 4)."""
    n = 3000
    floor = np.c_[rng.uniform(0, 5, n), rng.uniform(-2, 2, n), np.zeros(n)]
    wall = np.c_[np.full(n, 5.0), rng.uniform(-2, 2, n), rng.uniform(0, 2.5, n)]
    side = np.c_[rng.uniform(0, 5, n), np.full(n, 2.0), rng.uniform(0, 2.5, n)]
    ceiling = np.c_[rng.uniform(0, 5, n), rng.uniform(-2, 2, n), np.full(n, 2.5)]
    look = Rotation.from_euler("y", tilt_deg, degrees=True).as_matrix() @ np.array(
        [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)  # optical axes: z forward (+x), y down, pitched down
    poses = np.tile(np.eye(4), (10, 1, 1))
    poses[:, :3, :3] = look
    poses[:, 0, 3] = np.linspace(0, 2, 10)
    poses[:, 2, 3] = 1.2
    return np.concatenate([floor, wall, side, ceiling]), poses


def test_the_floor_is_found_under_tilted_cameras_not_the_ceiling():
    rng = np.random.default_rng(1)
    points, poses = room_points(rng)
    # Express everything in the first camera's frame (a reconstruction's world), where "up" is unknown.
    T_cam0_world = np.linalg.inv(poses[0])
    pts = points @ T_cam0_world[:3, :3].T + T_cam0_world[:3, 3]
    cams = np.einsum("ij,njk->nik", T_cam0_world, poses)
    T = estimate_ground_frame(pts, cams[:, :3, 3], -cams[:, :3, 1])
    assert T is not None
    up_true = T_cam0_world[:3, :3] @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(np.clip(T[:3, 2] @ up_true, -1, 1))) < 1.0
    # The first camera stands 1.2 m above the floor frame's origin.
    np.testing.assert_allclose(np.linalg.inv(T)[:3, :3] @ cams[0, :3, 3] + np.linalg.inv(T)[:3, 3],
                               [0.0, 0.0, 1.2], atol=0.02)
    # Without the floor (walls and ceiling only) there is no floor: None, not a wall or the ceiling.
    assert estimate_ground_frame(pts[points[:, 2] > 0.05], cams[:, :3, 3], -cams[:, :3, 1]) is None


def test_floor_grid_builder_maps_the_room_in_the_floor_frame():
    rng = np.random.default_rng(2)
    points, poses = room_points(rng)
    T_cam0_world = np.linalg.inv(poses[0])
    builder = FloorGridBuilder(GridConfig(resolution=0.1), min_frames=4)
    for T in poses:
        builder.add(points @ T_cam0_world[:3, :3].T + T_cam0_world[:3, 3], T_cam0_world @ T)
    assert builder.finish() and builder.ready
    snap = builder.grid.snapshot()
    counts = snap.counts()
    assert counts["occupied"] > 30 and counts["free"] > 500
    # The end wall is 5 m ahead of the first camera: in the floor frame it is a line of occupied cells
    # at distance 5 m from the camera's foot (the floor frame's origin).
    occupied = np.argwhere(snap.data == OCCUPIED)
    centres = (occupied[:, ::-1] + 0.5) * snap.resolution + np.asarray(snap.origin)
    dist = np.linalg.norm(centres, axis=1)
    assert np.mean(np.abs(dist - np.clip(dist, 2.0, 5.5)) < 1e-9) > 0.95  # walls, not floor noise near the camera


def test_the_mapping_thread_publishes_the_grid_periodically(tmp_path):
    params = NodeParams(allow_synthetic_weights=True, window_size=3, overlap_size=0, grid_resolution=0.1,
                        grid_publish_period_s=0.05, output_dir=str(tmp_path))
    core = MappingCore(params, F, reconstructor=WallStream(), lookup=mount_lookup, logger=_Quiet())
    published = []
    clock = iter(range(0, 10**12, 10**8))  # the node clock: 0.1 s per call
    core.start(published.append, lambda: next(clock))
    try:
        for i in range(6):
            core.on_image(image(i))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not [p for p in published if p.channel == "grid"
                                                   and p.msg.info.width > 0 and core.grid.frames == 6]:
            time.sleep(0.05)
    finally:
        assert core.stop(10)
    grids = [p for p in published if p.channel == "grid"]
    assert grids and core.grid.frames == 6
    values = core.diagnostics_values()
    assert values["grid_known_cells"] > 0 and values["grid_frames"] == 6
    assert values["grid_last_window_cells_touched"] > 0


# ------------------------------------------------------------------ frames end to end
class GroundTruthStream:
    """Replays rendered frames as a StreamingReconstructor would: poses and points in the network's
    world (the first camera's frame), windows of 4 frames, all committed."""

    def __init__(self, frames):
        self.frames, self.buffer, self.next, self.device, self.stats = frames, [], 0, "cpu", None
        self.T_c0_world = np.linalg.inv(frames[0].T_world_cam)

    @property
    def buffered_frames(self):
        return len(self.buffer)

    def result(self, i, stamp_ns):
        f = self.frames[i]
        pts = back_project(f.depth, f.K, f.T_world_cam)
        pts = (pts @ self.T_c0_world[:3, :3].T + self.T_c0_world[:3, 3]).astype(np.float32)
        n = len(pts)
        return FrameResult(
            index=i, stamp_ns=stamp_ns, T_world_cam=self.T_c0_world @ f.T_world_cam, depth=f.depth,
            confidence=np.ones_like(f.depth), valid=np.isfinite(f.depth), points=pts, colors=np.zeros((n, 3), np.uint8),
            point_confidence=np.ones(n, np.float32), K=f.K, K_model=f.K, image_size=(4, 4), model_size=(4, 4),
            scale=1.0, scale_std=0.0, scale_valid=True, window_index=i // 4, provisional=False)

    def push(self, image, stamp_ns, K=None, depth=None, odom=None, provisional=True):
        self.buffer.append(stamp_ns)
        if len(self.buffer) < 4:
            return []
        out = [self.result(self.next + k, s) for k, s in enumerate(self.buffer)]
        self.next, self.buffer = self.next + len(self.buffer), []
        return out

    def flush(self):
        return []

    def reset(self):
        self.buffer = []


def back_project(depth, K, T_world_cam):
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ok = np.isfinite(depth) & (depth > 0)
    z = depth[ok].astype(np.float64)
    cam = np.stack([(u[ok] - K[0, 2]) / K[0, 0] * z, (v[ok] - K[1, 2]) / K[1, 1] * z, z], axis=1)
    return cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]


def base_of(T_world_cam):
    """The ground robot's base: on the floor under the camera, x along the camera's heading, z up."""
    fwd = T_world_cam[:3, 2].copy()
    fwd[2] = 0.0
    fwd /= np.linalg.norm(fwd)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2] = fwd, np.cross([0.0, 0.0, 1.0], fwd), (0.0, 0.0, 1.0)
    T[:2, 3] = T_world_cam[:2, 3]
    return T


def test_the_node_grid_from_ground_truth_lands_on_the_world_geometry(tmp_path):
    """Ground-truth depth and poses through the node core with the camera mount in TF: the grid (map
    frame = base_link at the start) equals the grid built directly in the z-up world, moved by
    T_world_map. Checks the anchoring, T_base_cam and the base-frame heights together."""
    from loger_core.synthetic import SynthConfig, render_frames

    frames = render_frames(SynthConfig(scene="corridor", trajectory="ground_robot", frames=24, width=96, height=72,
                                       fps=10, seed=3), device="cpu")
    T_world_base0 = base_of(frames[0].T_world_cam)
    T_base_cam = np.linalg.inv(T_world_base0) @ frames[0].T_world_cam  # constant for a ground robot
    assert np.allclose(np.linalg.inv(base_of(frames[-1].T_world_cam)) @ frames[-1].T_world_cam, T_base_cam, atol=1e-6)

    def lookup(target, source, stamp_ns):
        return T_base_cam.copy() if (target, source) == ("base_link", "camera_optical_frame") else None

    params = NodeParams(allow_synthetic_weights=True, window_size=4, overlap_size=0, grid_resolution=0.1,
                        output_dir=str(tmp_path))
    core = MappingCore(params, F, reconstructor=GroundTruthStream(frames), lookup=lookup, logger=_Quiet())
    for i in range(len(frames)):
        core.on_image(image(i))
        core.process_all()
    assert core.grid.frames == 24 and core.mount.source == "tf"
    node = core.grid.snapshot()

    direct = OccupancyGrid2D(GridConfig(resolution=0.1))
    for f in frames:
        pts = back_project(f.depth, f.K, f.T_world_cam)
        direct.insert(pts[:, :2], pts[:, 2], f.T_world_cam[:2, 3], float(f.T_world_cam[2, 3]))
    world = direct.snapshot()

    def centres(snap, value):
        cells = np.argwhere(snap.data == value)[:, ::-1]
        return (cells + 0.5) * snap.resolution + np.asarray(snap.origin)

    for value, share in ((OCCUPIED, 0.9), (FREE, 0.97)):
        mine = centres(node, value) @ T_world_base0[:2, :2].T + T_world_base0[:2, 3]
        assert len(mine) > 20
        agree = np.array([world.value_at(x, y) == value or
                          any(world.value_at(x + dx, y + dy) == value for dx in (-0.1, 0, 0.1) for dy in (-0.1, 0, 0.1))
                          for x, y in mine])
        assert agree.mean() > share, (value, agree.mean())
    assert abs(node.counts()["occupied"] - world.counts()["occupied"]) < 0.25 * world.counts()["occupied"]


def test_a_failing_grid_update_loses_neither_the_map_nor_its_messages(tmp_path):
    class Logger(_Quiet):
        errors: list = []

        def error(self, text):
            self.errors.append(text)

    params = NodeParams(allow_synthetic_weights=True, window_size=3, overlap_size=0, output_dir=str(tmp_path))
    logger = Logger()
    core = MappingCore(params, F, reconstructor=WallStream(), lookup=mount_lookup, logger=logger)

    def broken(frames):
        raise RuntimeError("grid bug")

    core.grid.insert_window = broken
    pubs = []
    for i in range(3):
        core.on_image(image(i))
        pubs += core.process_all()
    assert {"cloud", "path"} <= {p.channel for p in pubs} and len(core.fusion) > 0
    assert any("occupancy grid" in e and "grid bug" in e for e in logger.errors)


def test_marking_cells_counts_points_off_the_box_on_every_side():
    """`_mark` bounds both sides of each axis with one unsigned comparison: points left of / below
    the box (negative indices) must be counted outside, never wrap onto its far side."""
    from loger_core.mapping.occupancy_grid import _mark

    target = np.zeros((3, 4), dtype=bool)  # rows = y cells 10..12, cols = x cells 20..23
    lo = np.array([20, 10])
    pts = np.array([[20.0, 10.0], [23.9, 12.9], [19.9, 11.0], [24.0, 11.0], [21.0, 9.9], [21.0, 13.0],
                    [-1e9, -1e9], [22.5, 11.5]])
    assert _mark(target, pts, lo, 1.0) == 5
    expected = np.zeros_like(target)
    expected[0, 0] = expected[2, 3] = expected[1, 2] = True
    np.testing.assert_array_equal(target, expected)
