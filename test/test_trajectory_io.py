"""TUM / KITTI trajectory reading and writing."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from loger_core.io.trajectory import (
    Trajectory,
    TrajectoryFormatError,
    read_kitti,
    read_tum,
    write_kitti,
    write_tum,
)


def _random_poses(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.random(n, random_state=seed).as_matrix()
    poses[:, :3, 3] = rng.normal(scale=5.0, size=(n, 3))
    return poses


def test_trajectory_properties_and_dtypes():
    poses = _random_poses(4)
    traj = Trajectory(np.array([3, 1, 2, 0], dtype=np.int32), poses.astype(np.float32))
    assert len(traj) == 4
    assert traj.stamps_ns.dtype == np.int64
    assert traj.poses.dtype == np.float64
    np.testing.assert_allclose(traj.positions, poses[:, :3, 3], rtol=1e-6)
    ordered = traj.sorted_by_time()
    assert ordered.stamps_ns.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(ordered.poses[0], traj.poses[3])


@pytest.mark.parametrize(
    "stamps, poses, match",
    [
        (np.zeros((2, 1), dtype=np.int64), np.tile(np.eye(4), (2, 1, 1)), "stamps_ns"),
        (np.array([0.5, 1.5]), np.tile(np.eye(4), (2, 1, 1)), "integer"),
        (np.array([0, 1]), np.tile(np.eye(3), (2, 1, 1)), r"\(N, 4, 4\)"),
        (np.array([0, 1, 2]), np.tile(np.eye(4), (2, 1, 1)), "3 entries"),
        (np.array([0, 1]), np.stack([np.eye(4), np.full((4, 4), np.nan)]), r"poses\[1\]"),
    ],
)
def test_trajectory_rejects_bad_arrays(stamps, poses, match):
    with pytest.raises(TrajectoryFormatError, match=match):
        Trajectory(stamps, poses)


def test_tum_round_trip_keeps_nanoseconds_and_poses(tmp_path):
    poses = _random_poses(20, seed=1)
    # Wall-clock stamps need 19 significant digits: more than a float64 holds.
    stamps = 1_700_000_000_123_456_789 + np.arange(20, dtype=np.int64) * 33_333_337
    path = tmp_path / "traj.txt"
    write_tum(path, Trajectory(stamps, poses))
    back = read_tum(path)
    np.testing.assert_array_equal(back.stamps_ns, stamps)
    np.testing.assert_allclose(back.poses, poses, atol=1e-12)


def test_tum_negative_and_small_stamps_round_trip(tmp_path):
    stamps = np.array([-1_500_000_001, -1, 0, 7], dtype=np.int64)
    path = tmp_path / "traj.txt"
    write_tum(path, Trajectory(stamps, _random_poses(4)))
    np.testing.assert_array_equal(read_tum(path).stamps_ns, stamps)


def test_read_tum_known_content(tmp_path):
    path = tmp_path / "traj.txt"
    # 90 degrees about z: q = (0, 0, sin45, cos45); comments and blank lines skipped.
    path.write_text(
        "# comment\n\n"
        "1305031102.175304 1.0 2.0 3.0 0 0 0.7071067811865476 0.7071067811865476\n"
        "1.5e0 0 0 0 0 0 0 1\n"
    )
    traj = read_tum(path)
    assert traj.stamps_ns.tolist() == [1_305_031_102_175_304_000, 1_500_000_000]
    np.testing.assert_allclose(traj.positions[0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(traj.poses[0, :3, :3], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(traj.poses[1], np.eye(4))


def test_write_tum_canonical_quaternion_sign(tmp_path):
    poses = _random_poses(30, seed=2)
    path = tmp_path / "traj.txt"
    write_tum(path, Trajectory(np.arange(30), poses))
    qw = [float(line.split()[7]) for line in path.read_text().splitlines() if not line.startswith("#")]
    assert min(qw) >= 0.0


@pytest.mark.parametrize(
    "content, match",
    [
        ("0 0 0 0 0 0 0 1\n1 0 0 0 0 0 1\n", r":2: expected 8 numbers.*'1 0 0 0 0 0 1'"),
        ("0 0 0 0 0 0 0 1\n# c\nabc 0 0 0 0 0 0 1\n", r":3: bad timestamp 'abc'"),
        ("0 0 x 0 0 0 0 1\n", r":1: non-numeric value in line '0 0 x 0 0 0 0 1'"),
        ("0 0 nan 0 0 0 0 1\n", r":1: non-finite value"),
        ("0 0 0 0 0 0 0 2\n", r":1: quaternion norm 2 is not 1"),
        ("0 0 0 0 0 0 0 0\n", r":1: quaternion norm 0 is not 1"),
        ("# only a comment\n", "no pose lines"),
    ],
)
def test_read_tum_malformed(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(TrajectoryFormatError, match=match):
        read_tum(path)


def test_write_rejects_non_rigid_bottom_row(tmp_path):
    poses = _random_poses(3)
    poses[2, 3, 0] = 0.5
    with pytest.raises(TrajectoryFormatError, match=r"traj.poses\[2\] bottom row"):
        write_tum(tmp_path / "t.txt", Trajectory(np.arange(3), poses))
    with pytest.raises(TrajectoryFormatError, match=r"poses\[2\] bottom row"):
        write_kitti(tmp_path / "k.txt", poses)


def test_kitti_round_trip_and_layout(tmp_path):
    poses = _random_poses(10, seed=3)
    path = tmp_path / "poses.txt"
    write_kitti(path, poses)
    first = [float(v) for v in path.read_text().splitlines()[0].split()]
    assert len(first) == 12
    # Row-major 3x4: the 4th, 8th and 12th numbers are the translation.
    np.testing.assert_allclose(first[3::4], poses[0, :3, 3])
    back = read_kitti(path)
    assert back.shape == (10, 4, 4)
    np.testing.assert_array_equal(back, poses)


@pytest.mark.parametrize(
    "content, match",
    [
        ("1 0 0 0 0 1 0 0 0 0 1\n", r":1: expected 12 numbers"),
        ("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1 q\n", r":2: non-numeric value in line '1 0 0 0 0 1 0 0 0 0 1 q'"),
        ("1 0 0 inf 0 1 0 0 0 0 1 0\n", r":1: non-finite"),
        ("\n\n", "no pose lines"),
    ],
)
def test_read_kitti_malformed(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(TrajectoryFormatError, match=match):
        read_kitti(path)


def test_write_kitti_rejects_wrong_shape(tmp_path):
    with pytest.raises(TrajectoryFormatError, match=r"\(N, 4, 4\)"):
        write_kitti(tmp_path / "k.txt", np.zeros((3, 3, 4)))
