"""loger_ros.conversions against real rosbags messages (ROS 2 Humble and Jazzy typestores).

Golden values are written by hand or computed here from the published formulas
(BT.601 YUV, Brown-Conrady / equidistant distortion, RViz's packed RGB layout), never
taken from the code under test. Messages are round-tripped through CDR.
"""
from __future__ import annotations

import array
import math
import struct
import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from loger_ros.conversions import (
    CameraModel,
    ConversionError,
    CovarianceModel,
    MessageFactory,
    RclpyFactory,
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
    pose_stamped_from_matrix,
    rosbags_factory,
    stamp_to_ns,
    transform_stamped_from_matrix,
    twist_from_poses,
)

STORES = [Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY]
STAMP_NS = 1_700_000_000_123_456_789


@pytest.fixture(scope="module", params=STORES, ids=lambda s: s.value)
def typestore(request):
    return get_typestore(request.param)


@pytest.fixture()
def factory(typestore):
    return RosbagsFactory(typestore)


def roundtrip(typestore, msg):
    """Serialise to CDR and back, so every message under test is wire-valid."""
    return typestore.deserialize_cdr(typestore.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def image_msg(factory, encoding, height, width, step, data, *, big_endian=0):
    return factory.make(
        "sensor_msgs/msg/Image",
        header=make_header(factory, STAMP_NS, "camera"),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=big_endian,
        step=step,
        data=np.frombuffer(bytes(data), dtype=np.uint8).copy(),
    )


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rot_x(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rigid(rotation, translation):
    T = np.eye(4)
    T[:3, :3] = rotation
    T[:3, 3] = translation
    return T


# --------------------------------------------------------------------------- import


def test_module_imports_without_rosbags_or_rclpy():
    code = (
        "import sys, loger_ros.conversions, loger_ros.errors\n"
        "bad = [m for m in ('rosbags', 'rclpy', 'cv_bridge', 'sensor_msgs') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------- stamps


def test_stamp_roundtrip(typestore, factory):
    header = roundtrip(typestore, make_header(factory, STAMP_NS, "map"))
    assert (header.stamp.sec, header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert header.frame_id == "map"
    assert stamp_to_ns(header.stamp) == STAMP_NS
    assert ns_to_stamp_fields(999_999_999) == (0, 999_999_999)
    assert ns_to_stamp_fields(np.int64(2_000_000_001)) == (2, 1)


# --------------------------------------------------------------------------- colour images

# 2x2 image, pixel (row, col) has RGB = GOLDEN_RGB[row, col].
GOLDEN_RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)


def _bytes_bgr():
    return bytes([0, 0, 255, 0, 255, 0, 255, 0, 0, 30, 20, 10])


@pytest.mark.parametrize("encoding", ["bgr8", "8UC3"])
def test_bgr8_golden(typestore, factory, encoding):
    msg = roundtrip(typestore, image_msg(factory, encoding, 2, 2, 6, _bytes_bgr()))
    rgb = image_to_rgb(msg)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb, GOLDEN_RGB)


def test_rgb8_with_step_padding(typestore, factory):
    rows = [bytes([255, 0, 0, 0, 255, 0]) + b"\xaa\xbb\xcc", bytes([0, 0, 255, 10, 20, 30]) + b"\xdd\xee\xff"]
    msg = roundtrip(typestore, image_msg(factory, "rgb8", 2, 2, 9, b"".join(rows)))
    rgb = image_to_rgb(msg)
    np.testing.assert_array_equal(rgb, GOLDEN_RGB)
    rgb[0, 0] = 1  # result is a writable copy, not a view of the message
    assert msg.data[0] == 255


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("rgba8", bytes([255, 0, 0, 9, 0, 255, 0, 9, 0, 0, 255, 9, 10, 20, 30, 9])),
        ("bgra8", bytes([0, 0, 255, 9, 0, 255, 0, 9, 255, 0, 0, 9, 30, 20, 10, 9])),
        ("8UC4", bytes([0, 0, 255, 9, 0, 255, 0, 9, 255, 0, 0, 9, 30, 20, 10, 9])),
    ],
)
def test_four_channel_encodings_drop_alpha(typestore, factory, encoding, data):
    msg = roundtrip(typestore, image_msg(factory, encoding, 2, 2, 8, data))
    np.testing.assert_array_equal(image_to_rgb(msg), GOLDEN_RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_replicated(typestore, factory, encoding):
    msg = roundtrip(typestore, image_msg(factory, encoding, 2, 3, 4, bytes([0, 7, 255, 99, 1, 2, 3, 99])))
    rgb = image_to_rgb(msg)
    expected = np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], expected)


@pytest.mark.parametrize("big_endian", [0, 1])
def test_mono16_high_byte_both_endians(typestore, factory, big_endian):
    values = [0x1234, 0xFF00, 0x00FF, 0xFFFF]
    data = struct.pack((">" if big_endian else "<") + "4H", *values) + b"\x00\x00"  # 2 bytes step padding
    msg = roundtrip(typestore, image_msg(factory, "mono16", 1, 4, 10, data, big_endian=big_endian))
    rgb = image_to_rgb(msg)
    np.testing.assert_array_equal(rgb[0, :, 0], [0x12, 0xFF, 0x00, 0xFF])
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])


def bt601_video_range(y, u, v):
    """ITU-R BT.601 YCbCr (video range) -> RGB, the conversion OpenCV documents for YUV 4:2:2."""
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    rgb = np.array([c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d])
    return np.clip(np.round(rgb), 0, 255)


@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuyv", "YUYV"), ("yuv422_yuy2", "YUYV"), ("uyvy", "UYVY"), ("yuv422", "UYVY")],
)
def test_yuv422_bt601_golden(typestore, factory, encoding, order):
    y0, u, y1, v = 100, 90, 180, 200
    y2, u2, y3, v2 = 60, 160, 235, 128
    macro = {"YUYV": lambda a, b, c, d: [a, b, c, d], "UYVY": lambda a, b, c, d: [b, a, d, c]}[order]
    data = bytes(macro(y0, u, y1, v) + macro(y2, u2, y3, v2))
    msg = roundtrip(typestore, image_msg(factory, encoding, 1, 4, 8, data))
    rgb = image_to_rgb(msg).astype(int)
    expected = [bt601_video_range(y0, u, v), bt601_video_range(y1, u, v),
                bt601_video_range(y2, u2, v2), bt601_video_range(y3, u2, v2)]  # fmt: skip
    np.testing.assert_allclose(rgb[0], np.array(expected), atol=2)


def bayer_mosaic(pattern, colour, height=8, width=8):
    """Raw sensor image of a flat colour: each pixel keeps the channel its filter passes."""
    channel_of = {"r": 0, "g": 1, "b": 2}
    raw = np.zeros((height, width), dtype=np.uint8)
    for dy in range(2):
        for dx in range(2):
            raw[dy::2, dx::2] = colour[channel_of[pattern[2 * dy + dx]]]
    return raw


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_flat_colour(typestore, factory, pattern):
    colour = (200, 100, 50)
    raw = bayer_mosaic(pattern, colour)
    msg = roundtrip(typestore, image_msg(factory, f"bayer_{pattern}8", 8, 8, 8, raw.tobytes()))
    rgb = image_to_rgb(msg)
    assert rgb.shape == (8, 8, 3)
    np.testing.assert_array_equal(rgb[2:-2, 2:-2].reshape(-1, 3), np.tile(colour, (16, 1)))


@pytest.mark.parametrize(
    "wrap",
    [bytes, lambda b: array.array("B", b), lambda b: list(b), lambda b: np.frombuffer(b, np.uint8), bytearray],
    ids=["bytes", "array", "list", "numpy", "bytearray"],
)
def test_any_object_with_fields_is_accepted(wrap):
    msg = SimpleNamespace(height=2, width=2, encoding="bgr8", is_bigendian=False, step=6, data=wrap(_bytes_bgr()))
    np.testing.assert_array_equal(image_to_rgb(msg), GOLDEN_RGB)


# --------------------------------------------------------------------------- depth


@pytest.mark.parametrize("big_endian", [0, 1])
def test_depth_16uc1_millimetres(typestore, factory, big_endian):
    order = ">" if big_endian else "<"
    row0 = struct.pack(order + "3H", 1500, 0, 65535) + b"\x01\x02"  # 2 bytes step padding per row
    row1 = struct.pack(order + "3H", 1, 250, 4000) + b"\x03\x04"
    data = row0 + row1
    msg = roundtrip(typestore, image_msg(factory, "16UC1", 2, 3, 8, data, big_endian=big_endian))
    depth = image_to_depth_m(msg)
    assert depth.dtype == np.float32 and depth.shape == (2, 3)
    expected = np.array([[1.5, np.nan, 65.535], [0.001, 0.25, 4.0]])
    np.testing.assert_allclose(depth, expected, rtol=1e-6)


def test_depth_32fc1_metres_invalid_to_nan(typestore, factory):
    values = [2.25, 0.0, -1.0, float("nan"), float("inf"), 0.5]
    msg = roundtrip(typestore, image_msg(factory, "32FC1", 2, 3, 12, struct.pack("<6f", *values)))
    np.testing.assert_array_equal(image_to_depth_m(msg), np.array([[2.25, np.nan, np.nan], [np.nan, np.nan, 0.5]]))


# --------------------------------------------------------------------------- compressed


def _pattern_rgb(height=24, width=32):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 8, yy * 10, 255 - xx * 4], axis=2).astype(np.uint8)


def compressed_msg(factory, fmt, data):
    return factory.make(
        "sensor_msgs/msg/CompressedImage",
        header=make_header(factory, STAMP_NS, "camera"),
        format=fmt,
        data=np.frombuffer(bytes(data), dtype=np.uint8).copy(),
    )


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", ""])
def test_png_lossless(typestore, factory, fmt):
    rgb = _pattern_rgb()
    ok, encoded = cv2.imencode(".png", rgb[:, :, ::-1])  # OpenCV encoders take BGR
    assert ok
    msg = roundtrip(typestore, compressed_msg(factory, fmt, encoded.tobytes()))
    np.testing.assert_array_equal(compressed_to_rgb(msg), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "JPG", ""])
def test_jpeg_close(typestore, factory, fmt):
    rgb = _pattern_rgb()
    ok, encoded = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    decoded = compressed_to_rgb(roundtrip(typestore, compressed_msg(factory, fmt, encoded.tobytes())))
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 3.0


def test_grey_png_becomes_three_channels(typestore, factory):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    ok, encoded = cv2.imencode(".png", grey)
    assert ok
    msg = compressed_msg(factory, "mono8; png compressed mono8", encoded.tobytes())
    rgb = compressed_to_rgb(roundtrip(typestore, msg))
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], grey)


def test_sixteen_bit_png_keeps_high_byte(typestore, factory):
    grey16 = np.array([[0x1234, 0xFF00, 0x00FF, 0x80FF]], dtype=np.uint16)
    ok, encoded = cv2.imencode(".png", grey16)
    assert ok
    rgb = compressed_to_rgb(roundtrip(typestore, compressed_msg(factory, "png", encoded.tobytes())))
    np.testing.assert_array_equal(rgb[0, :, 1], [0x12, 0xFF, 0x00, 0x80])


# --------------------------------------------------------------------------- camera info


def camera_info_msg(factory, model, d, *, width=160, height=120, k=None, p=None, binning=0):
    typestore_k = np.array(k if k is not None else [100.0, 0, 80, 0, 110.0, 60, 0, 0, 1])
    return factory.make(
        "sensor_msgs/msg/CameraInfo",
        header=make_header(factory, STAMP_NS, "camera"),
        height=height,
        width=width,
        distortion_model=model,
        d=np.array(d, dtype=np.float64),
        k=typestore_k.astype(np.float64),
        r=np.eye(3).reshape(9),
        p=np.array(p if p is not None else [0.0] * 12, dtype=np.float64),
        binning_x=binning,
        binning_y=binning,
        roi=factory.make(
            "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        ),
    )


def test_camera_info_fields(typestore, factory):
    p = [90.0, 0, 81, 0, 0, 95.0, 61, 0, 0, 0, 1, 0]
    msg = roundtrip(typestore, camera_info_msg(factory, "plumb_bob", [-0.2, 0.05, 0.001, -0.002, 0.0], p=p))
    camera = camera_info_to_camera(msg)
    np.testing.assert_array_equal(camera.K, [[100, 0, 80], [0, 110, 60], [0, 0, 1]])
    np.testing.assert_array_equal(camera.D, [-0.2, 0.05, 0.001, -0.002, 0.0])
    np.testing.assert_array_equal(camera.P, np.array(p).reshape(3, 4))
    assert (camera.width, camera.height, camera.distortion_model) == (160, 120, "plumb_bob")
    assert camera.K.dtype == np.float64 and camera.has_distortion


@pytest.mark.parametrize(("model", "length"), [("plumb_bob", 5), ("rational_polynomial", 8), ("equidistant", 4)])
def test_camera_info_empty_d_means_no_distortion(typestore, factory, model, length):
    camera = camera_info_to_camera(roundtrip(typestore, camera_info_msg(factory, model, [], binning=1)))
    np.testing.assert_array_equal(camera.D, np.zeros(length))
    assert camera.P is None and not camera.has_distortion
    undistorter = Undistorter(camera)
    np.testing.assert_array_equal(undistorter.K, camera.K)
    rgb = _pattern_rgb(120, 160)
    np.testing.assert_array_equal(undistorter(rgb), rgb)


def test_unset_distortion_model(typestore, factory):
    camera = camera_info_to_camera(roundtrip(typestore, camera_info_msg(factory, "", [0.0] * 5)))
    assert camera.distortion_model == "none" and not camera.has_distortion


def distort_pinhole(x, y, d, rational):
    """Brown-Conrady (ROS plumb_bob) or rational_polynomial distortion of normalised coordinates."""
    k1, k2, p1, p2, k3 = d[:5]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    if rational:
        k4, k5, k6 = d[5:8]
        radial /= 1 + k4 * r2 + k5 * r2**2 + k6 * r2**3
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x), y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def distort_equidistant(x, y, d):
    """Kannala-Brandt equidistant model (ROS 'equidistant', OpenCV fisheye)."""
    r = math.hypot(x, y)
    theta = math.atan(r)
    theta_d = theta * (1 + d[0] * theta**2 + d[1] * theta**4 + d[2] * theta**6 + d[3] * theta**8)
    scale = theta_d / r if r > 0 else 1.0
    return x * scale, y * scale


@pytest.mark.parametrize(
    ("model", "d"),
    [
        ("plumb_bob", [-0.25, 0.08, 0.001, -0.0015, -0.01]),
        ("rational_polynomial", [-0.3, 0.1, 0.0005, 0.001, 0.0, 0.05, 0.01, 0.0]),
        ("equidistant", [0.05, -0.02, 0.01, -0.002]),
    ],
)
def test_undistortion_moves_blobs_to_pinhole_positions(typestore, factory, model, d):
    camera = camera_info_to_camera(roundtrip(typestore, camera_info_msg(factory, model, d)))
    undistorter = Undistorter(camera, balance=0.0)
    K, K_new = camera.K, undistorter.K
    assert K_new.shape == (3, 3)
    for target_px in [(40.0, 30.0), (125.0, 95.0), (80.0, 60.0)]:
        # Ray that the undistorted camera images at target_px, then where the lens puts it.
        x = (target_px[0] - K_new[0, 2]) / K_new[0, 0]
        y = (target_px[1] - K_new[1, 2]) / K_new[1, 1]
        xd, yd = distort_equidistant(x, y, d) if model == "equidistant" else distort_pinhole(
            x, y, d, model == "rational_polynomial"
        )
        ud, vd = K[0, 0] * xd + K[0, 2], K[1, 1] * yd + K[1, 2]
        yy, xx = np.mgrid[0:120, 0:160]
        blob = 255.0 * np.exp(-((xx - ud) ** 2 + (yy - vd) ** 2) / (2 * 1.5**2))
        out = undistorter(np.repeat(blob.astype(np.float32)[:, :, None], 3, axis=2))[:, :, 0].astype(np.float64)
        weights = np.where(out > 20, out, 0)
        centroid = (float((weights * xx).sum() / weights.sum()), float((weights * yy).sum() / weights.sum()))
        assert centroid == pytest.approx(target_px, abs=0.35), (model, target_px, centroid)


def test_undistort_depth_uses_nearest_and_nan_border(typestore, factory):
    camera = camera_info_to_camera(roundtrip(typestore, camera_info_msg(factory, "plumb_bob", [-0.3, 0, 0, 0, 0])))
    depth = np.where(np.arange(160)[None, :] < 80, 1.0, 3.0).astype(np.float32) * np.ones((120, 1), np.float32)
    out = Undistorter(camera, balance=1.0).undistort_depth(depth)
    finite = out[np.isfinite(out)]
    assert set(np.unique(finite).tolist()) == {1.0, 3.0}  # no blended depths
    assert np.isnan(out).any()  # balance=1 keeps all source pixels, so the border is invalid


# --------------------------------------------------------------------------- point clouds


def test_pointcloud2_layout_and_rviz_rgb(typestore, factory):
    points = np.array([[1.0, 2.0, 3.0], [-0.5, 0.25, 10.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    colors = np.array([[255, 0, 0], [0x12, 0x34, 0x56], [0, 0, 255]], dtype=np.uint8)
    confidence = np.array([0.5, 2.0, 1.0], dtype=np.float32)
    header = make_header(factory, STAMP_NS, "map")
    msg = roundtrip(typestore, pointcloud2_from_points(factory, header, points, colors, confidence))
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("confidence", 16, 7, 1)
    ]  # fmt: skip
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 20, 60)
    assert msg.is_bigendian is False and msg.is_dense is True
    assert msg.header.frame_id == "map"
    raw = bytes(msg.data)
    # Second point: rgb bytes are B, G, R, 0 (uint32 0x00123456 little-endian) ...
    assert raw[20 + 12 : 20 + 16] == bytes([0x56, 0x34, 0x12, 0x00])
    # ... i.e. the float32 RViz reads as colour.
    (expected_float,) = struct.unpack("<f", struct.pack("<I", 0x00123456))
    (actual_float,) = struct.unpack("<f", raw[32:36])
    assert actual_float == expected_float
    assert struct.unpack("<3f", raw[20:32]) == (-0.5, 0.25, 10.0)
    assert struct.unpack("<f", raw[36:40]) == (2.0,)

    arrays = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(arrays.points, points)
    np.testing.assert_array_equal(arrays.colors, colors)
    np.testing.assert_array_equal(arrays.confidence, confidence)


def test_pointcloud2_xyz_only_and_not_dense(typestore, factory):
    points = np.array([[1, 2, 3], [np.nan, 0, 0]], dtype=np.float64)
    msg = roundtrip(typestore, pointcloud2_from_points(factory, make_header(factory, 0, "map"), points))
    assert [f.name for f in msg.fields] == ["x", "y", "z"]
    assert (msg.point_step, msg.row_step, msg.is_dense) == (12, 24, False)
    arrays = pointcloud2_to_arrays(msg)
    assert arrays.colors is None and arrays.confidence is None
    np.testing.assert_array_equal(arrays.points, points.astype(np.float32))


def test_pointcloud2_empty(typestore, factory):
    msg = roundtrip(
        typestore, pointcloud2_from_points(factory, make_header(factory, 0, "map"), np.zeros((0, 3), np.float32))
    )
    assert (msg.width, msg.row_step, len(msg.data), msg.is_dense) == (0, 0, 0, True)
    assert pointcloud2_to_arrays(msg).points.shape == (0, 3)


def test_pointcloud2_reader_handles_foreign_layout():
    """Organised, big-endian cloud with float64 xyz, uint32 rgba, an extra field and row padding."""
    point_step, width, height, row_step = 32, 2, 2, 70
    rows = []
    expected_points, expected_colors = [], []
    for row in range(height):
        buffer = b""
        for col in range(width):
            xyz = (row + 0.5, col - 1.0, 7.25 * (row + col))
            rgba = 0xFF000000 | (row * 100 << 16) | (col * 50 << 8) | 7
            buffer += struct.pack(">3dII", *xyz, rgba, 0xDEADBEEF)
            expected_points.append(xyz)
            expected_colors.append((row * 100, col * 50, 7))
        rows.append(buffer + b"\x00" * (row_step - len(buffer)))
    fields = [
        SimpleNamespace(name="x", offset=0, datatype=8, count=1),
        SimpleNamespace(name="y", offset=8, datatype=8, count=1),
        SimpleNamespace(name="z", offset=16, datatype=8, count=1),
        SimpleNamespace(name="rgba", offset=24, datatype=6, count=1),
        SimpleNamespace(name="ring", offset=28, datatype=6, count=1),
    ]
    msg = SimpleNamespace(height=height, width=width, fields=fields, is_bigendian=True, point_step=point_step,
                          row_step=row_step, data=b"".join(rows), is_dense=True)  # fmt: skip
    arrays = pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(arrays.points, np.array(expected_points, dtype=np.float32))
    np.testing.assert_array_equal(arrays.colors, np.array(expected_colors, dtype=np.uint8))
    assert arrays.confidence is None


# --------------------------------------------------------------------------- transforms, paths


def test_transform_stamped_golden(typestore, factory):
    T = rigid(rot_z(math.pi / 2), [1.0, -2.0, 0.5])
    msg = roundtrip(typestore, transform_stamped_from_matrix(factory, STAMP_NS, "map", "camera", T))
    assert (msg.header.frame_id, msg.child_frame_id) == ("map", "camera")
    assert stamp_to_ns(msg.header.stamp) == STAMP_NS
    t, q = msg.transform.translation, msg.transform.rotation
    assert (t.x, t.y, t.z) == (1.0, -2.0, 0.5)
    # 90 degrees about z: q = (0, 0, sin 45deg, cos 45deg), up to the global sign.
    quaternion = np.array([q.x, q.y, q.z, q.w]) * np.sign(q.w)
    np.testing.assert_allclose(quaternion, [0, 0, math.sqrt(0.5), math.sqrt(0.5)], atol=1e-12)
    np.testing.assert_allclose(matrix_from_transform(msg.transform), T, atol=1e-12)


def test_pose_stamped_and_path(typestore, factory):
    poses = np.stack([rigid(rot_z(0.3 * i) @ rot_x(0.1 * i), [i, 2.0 * i, -i]) for i in range(3)])
    stamps = [STAMP_NS + i * 100_000_000 for i in range(3)]
    path = roundtrip(typestore, path_from_poses(factory, stamps[-1], "map", stamps, poses))
    assert path.header.frame_id == "map" and len(path.poses) == 3
    for pose_msg, stamp, T in zip(path.poses, stamps, poses):
        assert stamp_to_ns(pose_msg.header.stamp) == stamp and pose_msg.header.frame_id == "map"
        np.testing.assert_allclose(matrix_from_pose(pose_msg.pose), T, atol=1e-12)
    single = roundtrip(typestore, pose_stamped_from_matrix(factory, STAMP_NS, "odom", poses[2]))
    np.testing.assert_allclose(matrix_from_pose(single.pose), poses[2], atol=1e-12)


def test_matrix_from_pose_normalises_quaternion():
    half = math.sqrt(0.5)
    pose = SimpleNamespace(
        position=SimpleNamespace(x=1.0, y=2.0, z=3.0),
        orientation=SimpleNamespace(x=0.0, y=0.0, z=2 * half, w=2 * half),  # norm 2
    )
    np.testing.assert_allclose(matrix_from_pose(pose), rigid(rot_z(math.pi / 2), [1, 2, 3]), atol=1e-12)


# --------------------------------------------------------------------------- odometry


def test_twist_golden():
    T_prev = np.eye(4)
    T = rigid(rot_z(math.pi / 2), [1.0, 0.0, 0.0])
    linear, angular = twist_from_poses(T_prev, T, 0.5)
    # World displacement +x (2 m/s) seen from a body yawed by +90 degrees is -y.
    np.testing.assert_allclose(linear, [0.0, -2.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(angular, [0.0, 0.0, math.pi], atol=1e-12)
    # Roll about the body's own x axis while yawed: body-frame angular velocity is along x.
    yawed = rigid(rot_z(math.pi / 2), [0, 0, 0])
    _, angular = twist_from_poses(yawed, rigid(rot_z(math.pi / 2) @ rot_x(0.1), [0, 0, 0]), 0.5)
    np.testing.assert_allclose(angular, [0.2, 0.0, 0.0], atol=1e-12)


def test_odometry_message(typestore, factory):
    T_prev = np.eye(4)
    T = rigid(rot_z(math.pi / 2), [1.0, 0.0, 0.0])
    msg = roundtrip(
        typestore, odometry_from_poses(factory, STAMP_NS, "odom", "camera", T, T_prev, dt_s=0.5, confidence=2.0)
    )
    assert (msg.header.frame_id, msg.child_frame_id) == ("odom", "camera")
    np.testing.assert_allclose(matrix_from_pose(msg.pose.pose), T, atol=1e-12)
    lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
    np.testing.assert_allclose([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z], [0, -2, 0, 0, 0, math.pi], atol=1e-12)
    pose_cov = np.asarray(msg.pose.covariance).reshape(6, 6)
    # Defaults: sigma_pos = 0.05 m / 2, sigma_rot = 0.02 rad / 2.
    np.testing.assert_allclose(np.diag(pose_cov), [0.025**2] * 3 + [0.01**2] * 3)
    assert np.count_nonzero(pose_cov - np.diag(np.diag(pose_cov))) == 0
    # Twist: sqrt(2) * sigma / dt -> variance 2 * sigma^2 / dt^2.
    twist_cov = np.asarray(msg.twist.covariance).reshape(6, 6)
    np.testing.assert_allclose(np.diag(twist_cov), [2 * 0.025**2 / 0.25] * 3 + [2 * 0.01**2 / 0.25] * 3)


def test_odometry_first_frame_and_unknown_confidence(typestore, factory):
    msg = roundtrip(typestore, odometry_from_poses(factory, STAMP_NS, "odom", "camera", np.eye(4)))
    twist = msg.twist.twist
    assert [twist.linear.x, twist.linear.y, twist.linear.z, twist.angular.z] == [0.0, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(np.diag(np.asarray(msg.pose.covariance).reshape(6, 6)), [1e6] * 6)
    np.testing.assert_array_equal(np.diag(np.asarray(msg.twist.covariance).reshape(6, 6)), [1e6] * 6)


def test_covariance_clamps_confidence():
    model = CovarianceModel(position_sigma_m=0.1, rotation_sigma_rad=0.2, min_confidence=0.5, max_confidence=4.0)
    np.testing.assert_allclose(np.diag(model.pose_covariance(0.0).reshape(6, 6)), [0.04] * 3 + [0.16] * 3)
    np.testing.assert_allclose(np.diag(model.pose_covariance(100.0).reshape(6, 6)), [0.025**2] * 3 + [0.05**2] * 3)
    np.testing.assert_allclose(np.diag(model.pose_covariance(float("nan")).reshape(6, 6)), [1e6] * 6)
    assert model.pose_covariance(1.0).shape == (36,)


# --------------------------------------------------------------------------- factories


def test_factories():
    factory = rosbags_factory("ros2_jazzy")
    assert isinstance(factory, MessageFactory) and isinstance(RclpyFactory(), MessageFactory)
    time = factory.make("builtin_interfaces/Time", sec=3, nanosec=4)  # short type name accepted
    assert stamp_to_ns(time) == 3_000_000_004
    source = np.arange(6, dtype=np.uint8).reshape(2, 3)
    as_rosbags = factory.uint8_array(source)
    assert as_rosbags.dtype == np.uint8 and as_rosbags.shape == (6,) and not np.shares_memory(as_rosbags, source)
    as_rclpy = RclpyFactory().uint8_array(source)
    assert isinstance(as_rclpy, array.array) and as_rclpy.typecode == "B" and as_rclpy.tobytes() == source.tobytes()


def test_camera_model_is_plain_dataclass():
    camera = CameraModel(K=np.eye(3), D=np.zeros(5), distortion_model="plumb_bob", width=4, height=3)
    assert camera.P is None and not camera.has_distortion
    with pytest.raises(ConversionError, match="image.shape"):
        Undistorter(camera)(np.zeros((4, 3, 3), np.uint8))
