"""Corpus of malformed / unsupported inputs: each must raise ConversionError naming the field and value.

Messages are real rosbags typestore messages (Humble and Jazzy) with one field broken,
or minimal objects with the ROS field names where a field is missing or mistyped.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from loger_ros.conversions import (
    CameraModel,
    ConversionError,
    CovarianceModel,
    RosbagsFactory,
    Undistorter,
    camera_info_to_camera,
    compressed_to_rgb,
    image_to_depth_m,
    image_to_rgb,
    make_header,
    matrix_from_pose,
    matrix_from_transform,
    ns_to_stamp_fields,
    odometry_from_poses,
    path_from_poses,
    pointcloud2_from_points,
    pointcloud2_to_arrays,
    rosbags_factory,
    stamp_to_ns,
    transform_stamped_from_matrix,
)

STAMP_NS = 1_700_000_000_000_000_000


@dataclass(frozen=True)
class Case:
    """``run(factory)`` must raise ConversionError with ``fragment`` in its message and ``field``."""

    name: str
    run: Callable[[RosbagsFactory], Any]
    fragment: str
    field: str


_DROP = object()  # marks a field to leave out of plain_image


def image(factory, **overrides):
    """A valid 2x2 rgb8 image (step 6, 12 bytes) with some fields replaced."""
    fields = dict(height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=np.arange(12, dtype=np.uint8))
    fields.update(overrides)
    return factory.make("sensor_msgs/msg/Image", header=make_header(factory, STAMP_NS, "camera"), **fields)


def plain_image(**overrides):
    """Same image as a plain object (lets a field be missing or of a foreign type)."""
    fields = dict(height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=bytes(12))
    fields.update(overrides)
    return SimpleNamespace(**{k: v for k, v in fields.items() if v is not _DROP})


def compressed(factory, fmt, data: bytes):
    return factory.make(
        "sensor_msgs/msg/CompressedImage",
        header=make_header(factory, STAMP_NS, "camera"),
        format=fmt,
        data=np.frombuffer(data, dtype=np.uint8).copy(),
    )


def _jpeg_bytes() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    return encoded.tobytes()


def _png_bytes() -> bytes:
    ok, encoded = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    return encoded.tobytes()


def camera_info(factory, **overrides):
    fields = dict(
        height=48,
        width=64,
        distortion_model="plumb_bob",
        d=np.array([-0.1, 0.01, 0.0, 0.0, 0.0]),
        k=np.array([50.0, 0, 32, 0, 50.0, 24, 0, 0, 1]),
        r=np.eye(3).reshape(9),
        p=np.zeros(12),
        binning_x=0,
        binning_y=0,
        roi=factory.make(
            "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )
    fields.update(overrides)
    return factory.make("sensor_msgs/msg/CameraInfo", header=make_header(factory, STAMP_NS, "camera"), **fields)


def cloud(factory, **overrides):
    """A valid 2-point xyz cloud with some fields replaced."""
    msg = pointcloud2_from_points(factory, make_header(factory, 0, "map"), np.zeros((2, 3), np.float32))
    for key, value in overrides.items():
        setattr(msg, key, value)
    return msg


def point_field(factory, name, offset, datatype=7):
    return factory.make("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=1)


def scaled_rotation():
    T = np.eye(4)
    T[:3, :3] *= 1.5
    return T


def with_nan():
    T = np.eye(4)
    T[0, 3] = np.nan
    return T


def zero_quaternion_transform():
    return SimpleNamespace(
        translation=SimpleNamespace(x=0.0, y=0.0, z=0.0), rotation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=0.0)
    )


CASES = [
    # ---- sensor_msgs/Image
    Case("image_unsupported_encoding", lambda f: image_to_rgb(image(f, encoding="rgb16")),
         "Image.encoding 'rgb16' is not supported (supported: rgb8", "Image.encoding"),
    Case("image_step_too_small", lambda f: image_to_rgb(image(f, step=5, data=np.zeros(10, np.uint8))),
         "Image.step 5 < width*bytes_per_pixel 6", "Image.step"),
    Case("image_data_too_short", lambda f: image_to_rgb(image(f, data=np.zeros(10, np.uint8))),
         "Image.data has 10 bytes, expected step*height = 12", "Image.data"),
    Case("image_data_too_long", lambda f: image_to_rgb(image(f, data=np.zeros(13, np.uint8))),
         "Image.data has 13 bytes, expected step*height = 12", "Image.data"),
    Case("image_zero_width", lambda f: image_to_rgb(image(f, width=0)), "Image.width 0 must be >= 1", "Image.width"),
    Case("image_negative_height", lambda f: image_to_rgb(plain_image(height=-2)),
         "Image.height -2 must be >= 1", "Image.height"),
    Case("image_float_height", lambda f: image_to_rgb(plain_image(height=2.0)),
         "Image.height 2.0 is not an integer", "Image.height"),
    Case("image_bad_endian_flag", lambda f: image_to_rgb(image(f, is_bigendian=2)),
         "Image.is_bigendian 2 must be 0 or 1", "Image.is_bigendian"),
    Case("image_missing_encoding", lambda f: image_to_rgb(plain_image(encoding=_DROP)),
         "Image.encoding is missing", "Image.encoding"),
    Case("image_encoding_not_string", lambda f: image_to_rgb(plain_image(encoding=None)),
         "Image.encoding None is not a string", "Image.encoding"),
    Case("image_data_float_array", lambda f: image_to_rgb(plain_image(data=np.zeros(12, np.float32))),
         "Image.data has dtype float32, expected uint8", "Image.data"),
    Case("image_data_list_out_of_range", lambda f: image_to_rgb(plain_image(data=[0] * 11 + [300])),
         "Image.data contains 300, outside the byte range", "Image.data"),
    Case("image_data_wrong_array_typecode", lambda f: image_to_rgb(plain_image(data=array.array("H", [0] * 6))),
         "Image.data is array.array of typecode 'H'", "Image.data"),
    Case("image_data_none", lambda f: image_to_rgb(plain_image(data=None)),
         "Image.data of type NoneType is not a byte buffer", "Image.data"),
    Case("image_yuyv_odd_width",
         lambda f: image_to_rgb(image(f, encoding="yuyv", width=3, step=6, height=2, data=np.zeros(12, np.uint8))),
         "Image.width 3 must be even", "Image.width"),
    Case("image_bayer_single_row",
         lambda f: image_to_rgb(image(f, encoding="bayer_rggb8", height=1, width=4, step=4,
                                      data=np.zeros(4, np.uint8))),
         "too small for Bayer encoding 'bayer_rggb8'", "Image.height"),
    Case("image_depth_encoding_to_rgb",
         lambda f: image_to_rgb(image(f, encoding="16UC1", step=4, data=np.zeros(8, np.uint8))),
         "Image.encoding '16UC1' is not supported", "Image.encoding"),
    Case("image_colour_encoding_to_depth", lambda f: image_to_depth_m(image(f)),
         "Image.encoding 'rgb8' is not supported (supported: 16UC1, 32FC1); it is a colour encoding", "Image.encoding"),
    Case("depth_32fc1_short_step",
         lambda f: image_to_depth_m(image(f, encoding="32FC1", step=6, data=np.zeros(12, np.uint8))),
         "Image.step 6 < width*bytes_per_pixel 8", "Image.step"),
    # ---- sensor_msgs/CompressedImage
    Case("compressed_tiff", lambda f: compressed_to_rgb(compressed(f, "tiff", b"II*\x00" + bytes(20))),
         "CompressedImage.format 'tiff' is not supported (supported: jpeg, png)", "CompressedImage.format"),
    Case("compressed_corrupt_jpeg", lambda f: compressed_to_rgb(compressed(f, "jpeg", _jpeg_bytes()[:57])),
         "CompressedImage.data could not be decoded as jpeg (corrupt, 57 bytes)", "CompressedImage.data"),
    Case("compressed_garbage_png", lambda f: compressed_to_rgb(compressed(f, "png", b"\x89PNG" + bytes(40))),
         "CompressedImage.data could not be decoded as png (corrupt, 44 bytes)", "CompressedImage.data"),
    Case("compressed_empty_data", lambda f: compressed_to_rgb(compressed(f, "jpeg", b"")),
         "CompressedImage.data is empty", "CompressedImage.data"),
    Case("compressed_depth_format",
         lambda f: compressed_to_rgb(compressed(f, "16UC1; compressedDepth png", _png_bytes())),
         "CompressedImage.format '16UC1; compressedDepth png' is not supported", "CompressedImage.format"),
    Case("compressed_empty_format_unknown_data", lambda f: compressed_to_rgb(compressed(f, "", b"GIF89a" + bytes(10))),
         "CompressedImage.format '' is empty and CompressedImage.data starts with b'GIF8'", "CompressedImage.format"),
    # ---- sensor_msgs/CameraInfo
    Case("camera_info_k_eight_values", lambda f: camera_info_to_camera(camera_info(f, k=np.ones(8))),
         "CameraInfo.k has 8 values, expected 9", "CameraInfo.k"),
    Case("camera_info_k_nan",
         lambda f: camera_info_to_camera(camera_info(f, k=np.array([np.nan, 0, 32, 0, 50.0, 24, 0, 0, 1]))),
         "CameraInfo.k [nan, 0.0, 32.0", "CameraInfo.k"),
    Case("camera_info_zero_focal",
         lambda f: camera_info_to_camera(camera_info(f, k=np.array([0.0, 0, 32, 0, 50.0, 24, 0, 0, 1]))),
         "CameraInfo.k has fx=0.0, fy=50.0; focal lengths must be > 0", "CameraInfo.k"),
    Case("camera_info_k_last_row",
         lambda f: camera_info_to_camera(camera_info(f, k=np.array([50.0, 0, 32, 0, 50.0, 24, 0, 0, 2]))),
         "CameraInfo.k last row [0.0, 0.0, 2.0] must be [0, 0, 1]", "CameraInfo.k"),
    Case("camera_info_unknown_model", lambda f: camera_info_to_camera(camera_info(f, distortion_model="foo")),
         "CameraInfo.distortion_model 'foo' is not supported (supported: plumb_bob", "CameraInfo.distortion_model"),
    Case("camera_info_d_wrong_length", lambda f: camera_info_to_camera(camera_info(f, d=np.zeros(4) + 0.1)),
         "CameraInfo.d has 4 values, expected 5 for distortion_model 'plumb_bob'", "CameraInfo.d"),
    Case("camera_info_unset_model_with_coefficients",
         lambda f: camera_info_to_camera(camera_info(f, distortion_model="")),
         "CameraInfo.distortion_model '' is unset but CameraInfo.d [-0.1", "CameraInfo.distortion_model"),
    Case("camera_info_zero_width", lambda f: camera_info_to_camera(camera_info(f, width=0)),
         "CameraInfo.width 0 must be >= 1", "CameraInfo.width"),
    Case("camera_info_p_eleven_values", lambda f: camera_info_to_camera(camera_info(f, p=np.zeros(11))),
         "CameraInfo.p has 11 values, expected 12", "CameraInfo.p"),
    Case("camera_info_binning", lambda f: camera_info_to_camera(camera_info(f, binning_x=2)),
         "CameraInfo.binning_x 2 is not supported", "CameraInfo.binning_x"),
    Case("camera_info_partial_roi",
         lambda f: camera_info_to_camera(camera_info(f, roi=f.make("sensor_msgs/msg/RegionOfInterest", x_offset=4,
                                                                    y_offset=0, height=10, width=10, do_rectify=True))),
         "CameraInfo.roi (x_offset, y_offset, width, height) (4, 0, 10, 10) is not supported", "CameraInfo.roi"),
    Case("undistort_wrong_image_size",
         lambda f: Undistorter(camera_info_to_camera(camera_info(f)))(np.zeros((24, 32, 3), np.uint8)),
         "image.shape (24, 32, 3) does not match CameraInfo height x width (48, 64)", "image.shape"),
    Case("undistort_bad_balance",
         lambda f: Undistorter(CameraModel(np.eye(3), np.zeros(5), "plumb_bob", 4, 4), balance=2.0),
         "balance 2.0 must be in [0, 1]", "balance"),
    # ---- sensor_msgs/PointCloud2 (reading)
    Case("cloud_missing_z",
         lambda f: pointcloud2_to_arrays(cloud(f, fields=[point_field(f, "x", 0), point_field(f, "y", 4)])),
         "PointCloud2.fields ['x', 'y'] lack z", "PointCloud2.fields"),
    Case("cloud_data_length", lambda f: pointcloud2_to_arrays(cloud(f, data=np.zeros(20, np.uint8))),
         "PointCloud2.data has 20 bytes, expected row_step*height = 24", "PointCloud2.data"),
    Case("cloud_row_step_small", lambda f: pointcloud2_to_arrays(cloud(f, row_step=12)),
         "PointCloud2.row_step 12 < width*point_step 24", "PointCloud2.row_step"),
    Case("cloud_field_past_point_step",
         lambda f: pointcloud2_to_arrays(cloud(f, fields=[point_field(f, "x", 0), point_field(f, "y", 4),
                                                          point_field(f, "z", 10)])),
         "PointCloud2.fields[2].offset 10 + size 4 of field 'z' exceeds PointCloud2.point_step 12",
         "PointCloud2.fields[2].offset"),
    Case("cloud_unknown_datatype",
         lambda f: pointcloud2_to_arrays(cloud(f, fields=[point_field(f, "x", 0), point_field(f, "y", 4),
                                                          point_field(f, "z", 8, datatype=9)])),
         "PointCloud2.fields[2].datatype 9 of field 'z' is not a PointField type", "PointCloud2.fields[2].datatype"),
    # ---- writers
    Case("points_wrong_shape",
         lambda f: pointcloud2_from_points(f, make_header(f, 0, "map"), np.zeros((5, 2), np.float32)),
         "points has shape (5, 2), expected ('N', 3)", "points"),
    Case("colors_wrong_count",
         lambda f: pointcloud2_from_points(f, make_header(f, 0, "map"), np.zeros((5, 3)), np.zeros((4, 3), np.uint8)),
         "colors has shape (4, 3), expected (5, 3)", "colors"),
    Case("colors_float",
         lambda f: pointcloud2_from_points(f, make_header(f, 0, "map"), np.zeros((5, 3)), np.zeros((5, 3))),
         "colors has dtype float64, expected uint8", "colors"),
    Case("confidence_wrong_shape",
         lambda f: pointcloud2_from_points(f, make_header(f, 0, "map"), np.zeros((5, 3)), None, np.zeros((5, 1))),
         "confidence has shape (5, 1), expected (5,)", "confidence"),
    Case("transform_nan", lambda f: transform_stamped_from_matrix(f, STAMP_NS, "map", "camera", with_nan()),
         "T_parent_child contains NaN or infinity", "T_parent_child"),
    Case("transform_scaled", lambda f: transform_stamped_from_matrix(f, STAMP_NS, "map", "camera", scaled_rotation()),
         "T_parent_child rotation block is not a rotation (max |R^T R - I| = 1.25", "T_parent_child"),
    Case("transform_shape", lambda f: transform_stamped_from_matrix(f, STAMP_NS, "map", "camera", np.eye(3)),
         "T_parent_child has shape (3, 3), expected (4, 4)", "T_parent_child"),
    Case("transform_same_frames", lambda f: transform_stamped_from_matrix(f, STAMP_NS, "map", "map", np.eye(4)),
         "TransformStamped.child_frame_id 'map' equals the parent frame", "child_frame_id"),
    Case("transform_zero_quaternion", lambda f: matrix_from_transform(zero_quaternion_transform()),
         "Transform.rotation quaternion (x, y, z, w) [0.0, 0.0, 0.0, 0.0] is not a rotation", "Transform.rotation"),
    Case("pose_nan_position",
         lambda f: matrix_from_pose(SimpleNamespace(position=SimpleNamespace(x=np.nan, y=0.0, z=0.0),
                                                    orientation=SimpleNamespace(x=0.0, y=0.0, z=0.0, w=1.0))),
         "Pose.position (x, y, z) [nan, 0.0, 0.0] contains NaN or infinity", "Pose.position"),
    Case("pose_missing_orientation",
         lambda f: matrix_from_pose(SimpleNamespace(position=SimpleNamespace(x=0.0, y=0.0, z=0.0))),
         "Pose.orientation is missing", "Pose.orientation"),
    Case("transform_quaternion_not_numbers",
         lambda f: matrix_from_transform(SimpleNamespace(translation=SimpleNamespace(x=0.0, y=0.0, z=0.0),
                                                         rotation=SimpleNamespace(x="a", y=0.0, z=0.0, w=1.0))),
         "Transform.rotation (x, y, z, w) ['a', 0.0, 0.0, 1.0] are not all numbers", "Transform.rotation"),
    Case("path_length_mismatch", lambda f: path_from_poses(f, STAMP_NS, "map", [1, 2], np.stack([np.eye(4)] * 3)),
         "stamps_ns has 2 entries but poses has 3", "stamps_ns"),
    Case("path_bad_pose", lambda f: path_from_poses(f, STAMP_NS, "map", [1, 2], np.stack([np.eye(4), with_nan()])),
         "poses[1] contains NaN", "poses[1]"),
    Case("negative_stamp", lambda f: make_header(f, -1, "map"), "stamp_ns -1 must be >= 0", "stamp_ns"),
    Case("float_stamp", lambda f: ns_to_stamp_fields(1.5e9), "stamp_ns 1500000000.0 is not an integer", "stamp_ns"),
    Case("time_nanosec_overflow", lambda f: stamp_to_ns(SimpleNamespace(sec=1, nanosec=1_000_000_000)),
         "Time.nanosec 1000000000 must be <= 999999999", "Time.nanosec"),
    Case("empty_frame_id", lambda f: make_header(f, 0, ""),
         "Header.frame_id '' must be a non-empty", "Header.frame_id"),
    Case("odometry_zero_dt",
         lambda f: odometry_from_poses(f, STAMP_NS, "odom", "camera", np.eye(4), np.eye(4), dt_s=0.0),
         "dt_s 0.0 must be a finite time > 0 seconds", "dt_s"),
    Case("odometry_prev_without_dt", lambda f: odometry_from_poses(f, STAMP_NS, "odom", "camera", np.eye(4), np.eye(4)),
         "T_prev and dt_s must be given together", "dt_s"),
    Case("odometry_negative_confidence",
         lambda f: odometry_from_poses(f, STAMP_NS, "odom", "camera", np.eye(4), confidence=-0.5),
         "confidence -0.5 must be >= 0", "confidence"),
    Case("odometry_empty_child", lambda f: odometry_from_poses(f, STAMP_NS, "odom", "", np.eye(4)),
         "Odometry.child_frame_id '' must be a non-empty", "Odometry.child_frame_id"),
    Case("covariance_model_bad_sigma", lambda f: CovarianceModel(position_sigma_m=0.0),
         "CovarianceModel.position_sigma_m 0.0 must be a finite number > 0", "position_sigma_m"),
    # ---- factories
    Case("factory_unknown_type", lambda f: f.make("sensor_msgs/msg/NoSuchImage"),
         "message type 'sensor_msgs/msg/NoSuchImage' is not in the rosbags typestore", "type_name"),
    Case("factory_bad_type_name", lambda f: f.make("Image"),
         "message type name 'Image' is not of the form 'pkg/msg/Name'", "type_name"),
    Case("factory_unknown_store", lambda f: rosbags_factory("ros2_nosuch"),
         "rosbags store 'ros2_nosuch' is unknown", "store"),
]  # fmt: skip


def test_corpus_is_large_and_unique():
    assert len(CASES) >= 20
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.fixture(scope="module", params=[Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY], ids=lambda s: s.value)
def factory(request):
    return RosbagsFactory(get_typestore(request.param))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_malformed_input_raises_conversion_error(factory, case):
    with pytest.raises(ConversionError) as caught:
        case.run(factory)
    assert case.fragment in str(caught.value)
    assert caught.value.field == case.field
    assert isinstance(caught.value, ValueError)
