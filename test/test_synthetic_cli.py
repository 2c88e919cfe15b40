"""``loger-synth`` command line: smoke runs and error handling."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from rosbags.highlevel import AnyReader

from loger_core.io.image_folder import ImageFolderSequence
from loger_core.synthetic import SynthConfig, render_frames
from loger_core.synthetic.cli import main


def test_cli_writes_folder_and_ros1_bag(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["--scene", "corridor", "--trajectory", "ground_robot", "--frames", "4", "--size", "40x30",
               "--seed", "3", "--out", str(out), "--bag", "ros1", "--bag-depth", "16UC1", "--fps", "15"])
    assert rc == 0
    assert "wrote 4 frames" in capsys.readouterr().err
    seq = ImageFolderSequence(out)
    assert len(seq) == 4 and seq.has_groundtruth and seq.has_depth
    assert seq.metadata["fps"] == 15.0
    cfg = json.loads((out / "synth_config.json").read_text())
    assert cfg["scene"] == "corridor" and cfg["width"] == 40 and cfg["seed"] == 3
    # Same pixels as the library renders for the same configuration.
    ref = render_frames(SynthConfig(scene="corridor", trajectory="ground_robot", frames=4, width=40, height=30,
                                    seed=3, fps=15.0))
    for a, b in zip(seq, ref):
        assert np.array_equal(a.rgb, b.rgb)
        assert a.stamp_ns == b.stamp_ns
    with AnyReader([out / "sequence.bag"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/camera/image_raw"] == 4 and counts["/camera/depth/image_raw"] == 4 and counts["/tf"] == 4


def test_cli_bag_only_with_custom_frames(tmp_path):
    bag = tmp_path / "b"
    rc = main(["--frames", "2", "--size", "24x16", "--out", str(tmp_path / "o"), "--no-folder", "--bag", "sqlite3",
               "--bag-out", str(bag), "--image-encoding", "jpeg", "--camera-frame", "cam", "--base-frame", "body",
               "--quiet"])
    assert rc == 0
    assert not (tmp_path / "o" / "rgb").exists()
    with AnyReader([bag]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        msgs = {}
        for c, _, raw in reader.messages():
            msgs.setdefault(c.topic, []).append(reader.deserialize(raw, c.msgtype))
    assert topics["/camera/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    tf, static = msgs["/tf"][0].transforms[0], msgs["/tf_static"][0].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("map", "body")
    assert (static.header.frame_id, static.child_frame_id) == ("body", "cam") and len(msgs["/tf_static"]) == 1
    # map -> body -> cam composes to the ground-truth camera pose (one parent per frame, consistent).
    def matrix(t):
        T = np.eye(4)
        q = t.rotation
        T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        T[:3, 3] = [t.translation.x, t.translation.y, t.translation.z]
        return T
    gt = msgs["/ground_truth/pose"][0].pose
    T_gt = np.eye(4)
    T_gt[:3, :3] = Rotation.from_quat([gt.orientation.x, gt.orientation.y, gt.orientation.z, gt.orientation.w]).as_matrix()
    T_gt[:3, 3] = [gt.position.x, gt.position.y, gt.position.z]
    np.testing.assert_allclose(matrix(tf.transform) @ matrix(static.transform), T_gt, atol=1e-9)
    # base z stays within the handheld motion's tilt and shake of up.
    assert matrix(tf.transform)[2, 2] > np.cos(np.radians(15))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "40by30"], "WIDTHxHEIGHT"),
        (["--frames", "0"], "frames"),
        (["--fov", "200"], "fov_deg"),
        (["--no-folder"], "write nothing"),
        (["--threads", "0"], "threads"),
        (["--device", "tpu"], "device"),
    ],
)
def test_cli_reports_bad_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x"), "--frames", "1", "--size", "16x12", "--quiet"] + args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--frames", "1", "--size", "16x12", "--quiet"]
    assert main(args) == 0
    with pytest.raises(SystemExit):
        main(args)
    assert "already holds" in capsys.readouterr().err
