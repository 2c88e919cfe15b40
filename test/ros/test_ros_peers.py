"""Our ROS-free conversions against the ROS peers, as oracles: cv_bridge for images,
sensor_msgs_py.point_cloud2 for clouds (both ways), tf2 for composing transforms."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable: the ROS 2 integration tests need a sourced "
                            "ROS 2 with this package built (bash scripts/test_ros.sh)")
cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not built in the sourced ROS 2")

from geometry_msgs.msg import TransformStamped  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from sensor_msgs_py import point_cloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from tf2_ros import Buffer  # noqa: E402
from rclpy.time import Time  # noqa: E402

from loger_ros.conversions import (  # noqa: E402
    RclpyFactory,
    image_to_depth_m,
    image_to_rgb,
    make_header,
    matrix_from_transform,
    pointcloud2_from_points,
    pointcloud2_to_arrays,
    transform_stamped_from_matrix,
)

BRIDGE = cv_bridge.CvBridge()
RNG = np.random.default_rng(5)


def _rgb(h=7, w=9) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_colour_images_equal_cv_bridge(encoding):
    rgb = _rgb()
    cv_image = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
                "bgra8": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
                "mono8": rgb[:, :, 0]}[encoding]
    msg = BRIDGE.cv2_to_imgmsg(np.ascontiguousarray(cv_image), encoding=encoding)
    ours = image_to_rgb(msg)
    # cv_bridge's own conversion to rgb8 is the oracle (mono8 -> grey replicated).
    theirs = BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("bigendian", [False, True])
def test_16uc1_depth_equals_cv_bridge(bigendian):
    mm = RNG.integers(0, 5000, (6, 8), dtype=np.uint16)
    mm[0, 0] = 0
    msg = BRIDGE.cv2_to_imgmsg(mm, encoding="16UC1")
    if bigendian:
        msg.data = mm.astype(">u2").tobytes()
        msg.is_bigendian = 1
    theirs = BRIDGE.imgmsg_to_cv2(msg).astype(np.float32) * np.float32(0.001)
    theirs[theirs == 0] = np.nan
    np.testing.assert_array_equal(image_to_depth_m(msg), theirs)


def test_32fc1_depth_equals_cv_bridge():
    m = RNG.uniform(0.2, 9.0, (6, 8)).astype(np.float32)
    m[1, 1] = np.nan
    msg = BRIDGE.cv2_to_imgmsg(m, encoding="32FC1")
    np.testing.assert_array_equal(image_to_depth_m(msg), BRIDGE.imgmsg_to_cv2(msg))


def test_point_clouds_both_ways_with_sensor_msgs_py():
    factory = RclpyFactory()
    points = RNG.normal(size=(50, 3)).astype(np.float32)
    colors = RNG.integers(0, 256, (50, 3), dtype=np.uint8)
    conf = RNG.uniform(size=50).astype(np.float32)
    ours = pointcloud2_from_points(factory, make_header(factory, 10**9, "map"), points, colors, conf)
    read = point_cloud2.read_points_numpy(ours, field_names=("x", "y", "z"))
    np.testing.assert_array_equal(read, points)
    names = [f.name for f in ours.fields]
    assert {"x", "y", "z", "confidence"} <= set(names)
    np.testing.assert_array_equal(point_cloud2.read_points_numpy(ours, field_names=("confidence",))[:, 0], conf)
    # The other way: a cloud built by sensor_msgs_py (with an extra padding field) read by us.
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate(("x", "y", "z", "confidence"))]
    theirs = point_cloud2.create_cloud(Header(frame_id="map"), fields, np.column_stack([points, conf]).tolist())
    arrays = pointcloud2_to_arrays(theirs)
    np.testing.assert_array_equal(arrays.points, points)
    np.testing.assert_array_equal(arrays.confidence, conf)
    assert arrays.colors is None
    xyz = point_cloud2.create_cloud_xyz32(Header(frame_id="map"), points.tolist())
    np.testing.assert_array_equal(pointcloud2_to_arrays(xyz).points, points)


def _pose(rng) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rng.normal(size=3)).as_matrix()
    T[:3, 3] = rng.normal(size=3)
    return T


def test_tf2_lookups_equal_our_composition():
    factory = RclpyFactory()
    rng = np.random.default_rng(1)
    T_map_odom, T_odom_base, T_base_cam = _pose(rng), _pose(rng), _pose(rng)
    buffer = Buffer()
    stamp = 5 * 10**9
    for parent, child, T in (("map", "odom", T_map_odom), ("odom", "base_link", T_odom_base),
                             ("base_link", "camera", T_base_cam)):
        msg: TransformStamped = transform_stamped_from_matrix(factory, stamp, parent, child, T)
        buffer.set_transform(msg, "test")
    when = Time(seconds=5)
    np.testing.assert_allclose(
        matrix_from_transform(buffer.lookup_transform("map", "camera", when).transform),
        T_map_odom @ T_odom_base @ T_base_cam, atol=1e-9)
    np.testing.assert_allclose(
        matrix_from_transform(buffer.lookup_transform("camera", "odom", when).transform),
        np.linalg.inv(T_odom_base @ T_base_cam), atol=1e-9)
