"""ROS bag output (rosbag2 mcap/sqlite3, ROS 1), read back with rosbags."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Reader as Reader1
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from loger_core.synthetic import BagTopics, SceneConfig, SynthConfig, SynthError, render_frames, write_rosbag
from loger_core.synthetic.rosbag_writer import RosbagWriter


@pytest.fixture(scope="module")
def frames():
    # Outdoor, so some pixels are sky (depth inf) and the depth encodings must cope.
    cfg = SynthConfig(scene="street", trajectory="car", frames=4, width=40, height=30, seed=2,
                      scene_config=SceneConfig(texture_size=16, textures=10))
    out = render_frames(cfg)
    assert np.isinf(out[0].depth).any() and np.isfinite(out[0].depth).any()
    return out


def _read(path: Path, storage: str):
    store = None if storage == "ros1" else get_typestore(Stores.ROS2_HUMBLE)
    msgs = {}
    with AnyReader([path], default_typestore=store) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            msgs.setdefault(conn.topic, []).append((stamp, reader.deserialize(raw, conn.msgtype)))
    return types, msgs


def _stamp(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _rotation(q) -> np.ndarray:
    return Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()


CASES = [
    ("mcap", "rgb8", True, "16UC1"),
    ("sqlite3", "bgr8", True, "32FC1"),
    ("ros1", "jpeg", True, "32FC1"),
    ("ros1", "rgb8", True, "16UC1"),
    ("mcap", "jpeg", False, "16UC1"),
]


@pytest.mark.parametrize("storage, encoding, with_depth, depth_encoding", CASES)
def test_bag_round_trip(tmp_path, frames, storage, encoding, with_depth, depth_encoding):
    topics = BagTopics(world_frame="odom", camera_frame="cam_opt")
    path = tmp_path / ("seq.bag" if storage == "ros1" else "seq")
    write_rosbag(path, frames, storage=storage, image_encoding=encoding, with_depth=with_depth,
                 depth_encoding=depth_encoding, topics=topics)
    types, msgs = _read(path, storage)
    image_topic = "/camera/image_raw/compressed" if encoding == "jpeg" else "/camera/image_raw"
    expected = {
        "/tf": "tf2_msgs/msg/TFMessage",
        "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        image_topic: "sensor_msgs/msg/CompressedImage" if encoding == "jpeg" else "sensor_msgs/msg/Image",
        "/ground_truth/pose": "geometry_msgs/msg/PoseStamped",
        "/ground_truth/path": "nav_msgs/msg/Path",
    }
    if with_depth:
        expected["/camera/depth/image_raw"] = "sensor_msgs/msg/Image"
    assert types == expected
    n = len(frames)
    for topic in expected:
        assert len(msgs[topic]) == (1 if topic == "/ground_truth/path" else n), topic

    for k, f in enumerate(frames):
        # Images: header, stamps, pixels.
        t, img = msgs[image_topic][k]
        assert t == f.stamp_ns and _stamp(img.header) == f.stamp_ns
        assert img.header.frame_id == "cam_opt"
        if encoding == "jpeg":
            assert "jpeg" in img.format
            bgr = cv2.imdecode(np.asarray(img.data, dtype=np.uint8), cv2.IMREAD_COLOR)
            assert np.abs(bgr[..., ::-1].astype(int) - f.rgb.astype(int)).mean() < 8
        else:
            assert img.encoding == encoding and img.height == 30 and img.width == 40 and img.step == 120
            got = np.asarray(img.data, dtype=np.uint8).reshape(30, 40, 3)
            assert np.array_equal(got if encoding == "rgb8" else got[..., ::-1], f.rgb)
        # Camera info.
        t, info = msgs["/camera/camera_info"][k]
        assert t == f.stamp_ns and info.header.frame_id == "cam_opt"
        K = info.K if storage == "ros1" else info.k
        P = info.P if storage == "ros1" else info.p
        assert np.array_equal(np.asarray(K).reshape(3, 3), f.K)
        assert np.array_equal(np.asarray(P).reshape(3, 4)[:, :3], f.K)
        assert info.width == 40 and info.height == 30 and info.distortion_model == "plumb_bob"
        # TF: odom -> cam_opt equals T_world_cam.
        t, tf = msgs["/tf"][k]
        (tr,) = tf.transforms
        assert tr.header.frame_id == "odom" and tr.child_frame_id == "cam_opt" and _stamp(tr.header) == f.stamp_ns
        v = tr.transform.translation
        assert np.array_equal([v.x, v.y, v.z], f.T_world_cam[:3, 3])
        np.testing.assert_allclose(_rotation(tr.transform.rotation), f.T_world_cam[:3, :3], atol=1e-12)
        # Pose topic.
        t, ps = msgs["/ground_truth/pose"][k]
        assert ps.header.frame_id == "odom" and _stamp(ps.header) == f.stamp_ns
        p = ps.pose.position
        assert np.array_equal([p.x, p.y, p.z], f.T_world_cam[:3, 3])
        np.testing.assert_allclose(_rotation(ps.pose.orientation), f.T_world_cam[:3, :3], atol=1e-12)
        # Depth.
        if with_depth:
            t, dm = msgs["/camera/depth/image_raw"][k]
            assert dm.encoding == depth_encoding and dm.header.frame_id == "cam_opt" and dm.is_bigendian == 0
            raw = np.asarray(dm.data, dtype=np.uint8)
            if depth_encoding == "16UC1":
                assert dm.step == 80
                mm = raw.view("<u2").reshape(30, 40)
                finite = np.isfinite(f.depth) & (f.depth < 65.5)
                assert np.all(mm[~finite] == 0)
                assert np.abs(mm[finite] / 1000.0 - f.depth[finite]).max() <= 0.0005 + 1e-6
            else:
                assert dm.step == 160
                assert np.array_equal(raw.view("<f4").reshape(30, 40), f.depth)  # inf survives

    t, path_msg = msgs["/ground_truth/path"][0]
    assert t == frames[-1].stamp_ns and path_msg.header.frame_id == "odom"
    assert [_stamp(p.header) for p in path_msg.poses] == [f.stamp_ns for f in frames]
    pos = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path_msg.poses])
    assert np.array_equal(pos, np.stack([f.T_world_cam[:3, 3] for f in frames]))


def test_ros1_bag_uses_upstream_message_definitions(tmp_path, frames):
    path = tmp_path / "s.bag"
    write_rosbag(path, frames[:1], storage="ros1")
    with Reader1(path) as reader:
        md5 = {c.topic: c.digest for c in reader.connections}
    # Upstream ROS 1 md5sums: a mismatch would make rosbag play / rostopic refuse them.
    assert md5["/tf"] == "94810edda583a504dfda3829e70d7eec"
    assert md5["/camera/image_raw"] == "060021388200f6f0f447d0fcd9c64743"
    assert md5["/camera/camera_info"] == "c9a58c1b0b154e0e6da7578cb991d214"


def test_writer_rejects_bad_input(tmp_path, frames):
    with pytest.raises(SynthError, match="storage"):
        RosbagWriter(tmp_path / "a", storage="zip")
    with pytest.raises(SynthError, match="image_encoding"):
        RosbagWriter(tmp_path / "a", image_encoding="mono8")
    with pytest.raises(SynthError, match="depth_encoding"):
        RosbagWriter(tmp_path / "a", depth_encoding="16UC3")
    with pytest.raises(SynthError, match="BagTopics.image"):
        RosbagWriter(tmp_path / "a", topics=BagTopics(image="camera"))
    with pytest.raises(SynthError, match="camera_frame"):
        RosbagWriter(tmp_path / "a", topics=BagTopics(camera_frame="map"))
    (tmp_path / "exists").mkdir()
    with pytest.raises(SynthError, match="already exists"):
        RosbagWriter(tmp_path / "exists")
    with RosbagWriter(tmp_path / "b", storage="sqlite3", with_depth=True) as w:
        w.add(frames[1])
        with pytest.raises(SynthError, match="not after"):
            w.add(frames[0])
        nodepth = type("F", (), dict(rgb=frames[2].rgb, K=frames[2].K, T_world_cam=frames[2].T_world_cam,
                                     stamp_ns=frames[2].stamp_ns, depth=None))()
        with pytest.raises(SynthError, match="no depth"):
            w.add(nodepth)
