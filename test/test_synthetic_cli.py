"""``loger-synth`` command line: smoke runs and error handling."""

import json

import numpy as np
import pytest
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
               "--bag-out", str(bag), "--image-encoding", "jpeg", "--camera-frame", "cam", "--quiet"])
    assert rc == 0
    assert not (tmp_path / "o" / "rgb").exists()
    with AnyReader([bag]) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        tf = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/tf"]
    assert topics["/camera/image_raw/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert tf[0].transforms[0].child_frame_id == "cam" and tf[0].transforms[0].header.frame_id == "map"


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
