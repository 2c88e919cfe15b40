"""KITTI odometry layout: calibration, stamps, grayscale, ground truth, detection, errors, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from loger_core.cli.reconstruct import main
from loger_core.io.groundtruth import SequenceFormatError
from loger_core.io.image_folder import ImageFolderError, ImageFolderSequence
from loger_core.io.video import VideoSequence
from loger_core.io.kitti import KittiSequence, read_kitti_calib
from loger_core.io.sequences import detect_layout, open_sequence
from loger_core.io.trajectory import Trajectory, write_kitti, write_tum

SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared/data/kitti_clip2"
P0 = [718.856, 0, 607.1928, 0, 0, 718.856, 185.2157, 0, 0, 0, 1, 0]
P2 = [700.0, 0, 320.5, 46.9, 0, 701.0, 240.25, 0.1, 0, 0, 1, 0.004]
W, H = 64, 48


def _poses(n: int) -> np.ndarray:
    """Car-like motion: forward along z with a slow yaw, ``(n, 4, 4)`` T_cam0_camk."""
    out = np.tile(np.eye(4), (n, 1, 1))
    for k in range(n):
        a = 0.05 * k
        out[k, :3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
        out[k, :3, 3] = [0.1 * k * k * 0.05, 0.0, 1.0 * k]
    return out


def _textured(k: int, colour: bool) -> np.ndarray:
    rng = np.random.default_rng(k)
    base = cv2.resize(rng.integers(0, 255, (6, 8), dtype=np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
    img = np.roll(base, 2 * k, axis=1)
    if colour:
        return np.stack([img, 255 - img, img // 2], axis=2)  # BGR on disk
    return img


def make_kitti(root: Path, n: int = 6, cameras=(0,), times: bool = True, poses: bool = True,
               times_values=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for cam in cameras:
        d = root / f"image_{cam}"
        d.mkdir()
        for k in range(n):
            cv2.imwrite(str(d / f"{k:06d}.png"), _textured(k, colour=cam >= 2))
    lines = [f"P{c}: " + " ".join(f"{v:.12e}" for v in (P2 if c >= 2 else P0)) for c in range(4)]
    (root / "calib.txt").write_text("\n".join(lines) + "\n")
    if times:
        vals = times_values if times_values is not None else [0.1036 * k for k in range(n)]
        (root / "times.txt").write_text("".join(f"{v:.6e}\n" for v in vals))
    if poses:
        write_kitti(root / "poses.txt", _poses(n))
    return root


def test_sequence_folder_gray_K_stamps_and_groundtruth(tmp_path):
    root = make_kitti(tmp_path / "00", n=6, cameras=(0, 2))
    seq = open_sequence(root)
    assert isinstance(seq, KittiSequence) and len(seq) == 6 and seq.camera == 0
    np.testing.assert_allclose(seq.K, np.array(P0).reshape(3, 4)[:, :3])
    # times.txt is parsed exactly: 1.036000e-01 s -> 103600000 ns, not a float-rounded value.
    np.testing.assert_array_equal(seq.stamps_ns, [103_600_000 * k for k in range(6)])
    assert seq.grayscale and seq.image_size == (W, H)

    frames = list(seq)
    f = frames[3]
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 and f.depth is None
    gray = cv2.imread(str(root / "image_0/000003.png"), cv2.IMREAD_UNCHANGED)
    for c in range(3):
        np.testing.assert_array_equal(f.rgb[..., c], gray)
    np.testing.assert_array_equal(seq.gray(3), gray)
    np.testing.assert_allclose(f.K, seq.K)

    gt = seq.groundtruth()
    assert isinstance(gt, Trajectory) and seq.has_groundtruth
    np.testing.assert_array_equal(gt.stamps_ns, seq.stamps_ns)
    np.testing.assert_allclose(gt.poses, _poses(6), atol=1e-12)
    np.testing.assert_allclose(f.T_world_cam, _poses(6)[3], atol=1e-12)


def test_colour_camera_pointing_at_image_folder_and_default_choice(tmp_path):
    root = make_kitti(tmp_path / "05", n=4, cameras=(2,))
    seq = open_sequence(root)  # no image_0: the colour camera
    assert seq.camera == 2 and not seq.grayscale
    np.testing.assert_allclose(seq.K, [[700.0, 0, 320.5], [0, 701.0, 240.25], [0, 0, 1]])
    bgr = cv2.imread(str(root / "image_2/000001.png"))
    np.testing.assert_array_equal(seq[1].rgb, bgr[..., ::-1])
    np.testing.assert_array_equal(seq.gray(1), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    assert seq.has_groundtruth  # cam0's ground truth, used as is

    both = make_kitti(tmp_path / "06", n=4, cameras=(0, 2))
    assert open_sequence(both / "image_2").camera == 2
    assert open_sequence(both / "image_0").camera == 0 and open_sequence(both).camera == 0
    assert KittiSequence(both, camera=2).camera == 2
    assert detect_layout(both) == detect_layout(both / "image_0") == "kitti"


def test_no_times_uses_fps_and_official_poses_location(tmp_path):
    seq_dir = make_kitti(tmp_path / "dataset/sequences/07", n=5, times=False, poses=False)
    (tmp_path / "dataset/poses").mkdir(parents=True)
    write_kitti(tmp_path / "dataset/poses/07.txt", _poses(5))
    seq = open_sequence(seq_dir)
    np.testing.assert_array_equal(seq.stamps_ns, [100_000_000 * k for k in range(5)])  # 10 Hz
    assert seq.has_groundtruth and seq.groundtruth_source.endswith("poses/07.txt")
    np.testing.assert_array_equal(open_sequence(seq_dir, fps=20).stamps_ns, [50_000_000 * k for k in range(5)])

    # The folder of sequences itself: say which sequences it holds.
    with pytest.raises(ImageFolderError, match="pick one: 07"):
        open_sequence(tmp_path / "dataset/sequences")


def test_groundtruth_override_kitti_and_tum(tmp_path):
    root = make_kitti(tmp_path / "00", n=5, poses=False)
    assert not open_sequence(root).has_groundtruth
    other = _poses(5)
    other[:, 0, 3] += 3.0
    write_kitti(tmp_path / "gt.txt", other)
    seq = open_sequence(root, groundtruth=tmp_path / "gt.txt")
    np.testing.assert_allclose(seq.groundtruth().poses, other)
    # TUM: stamped, sampled at the frame stamps (here two of them are between poses: interpolated).
    stamps = np.array([0, 103_600_000, 207_200_000, 310_800_000, 414_400_000], dtype=np.int64)
    write_tum(tmp_path / "gt.tum", Trajectory(stamps[[0, 2, 4]], other[[0, 2, 4]]))
    gt = open_sequence(root, groundtruth=tmp_path / "gt.tum").groundtruth()
    np.testing.assert_array_equal(gt.stamps_ns, stamps)
    np.testing.assert_allclose(gt.positions[1], (other[0, :3, 3] + other[2, :3, 3]) / 2, atol=1e-9)

    write_kitti(tmp_path / "short.txt", other[:3])
    with pytest.raises(SequenceFormatError, match=r"short\.txt: 3 poses .* 5 frames"):
        open_sequence(root, groundtruth=tmp_path / "short.txt")
    (tmp_path / "bad.txt").write_text("1 2 3 4 5\n")
    with pytest.raises(SequenceFormatError, match=r"bad\.txt: unknown ground-truth format"):
        open_sequence(root, groundtruth=tmp_path / "bad.txt")
    with pytest.raises(SequenceFormatError, match="does not exist"):
        open_sequence(root, groundtruth=tmp_path / "nope.txt")


def test_override_on_image_folder_and_video(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for k in range(4):
        cv2.imwrite(str(plain / f"f{k}.png"), _textured(k, colour=True))
    write_kitti(tmp_path / "gt.txt", _poses(4))
    seq = open_sequence(plain, fps=10, groundtruth=tmp_path / "gt.txt")
    assert isinstance(seq, ImageFolderSequence)
    np.testing.assert_allclose(seq.groundtruth().poses, _poses(4))
    np.testing.assert_array_equal(seq.groundtruth().stamps_ns, seq.stamps_ns)

    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    for k in range(4):
        vw.write(_textured(k, colour=True))
    vw.release()
    vseq = open_sequence(video, groundtruth=tmp_path / "gt.txt")
    assert isinstance(vseq, VideoSequence) and vseq.has_groundtruth
    frames = list(vseq)
    np.testing.assert_allclose(frames[2].T_world_cam, _poses(4)[2])
    np.testing.assert_array_equal(vseq.groundtruth().stamps_ns, [f.stamp_ns for f in frames])


def test_broken_layouts_name_the_file(tmp_path):
    root = make_kitti(tmp_path / "a", n=3)
    (root / "calib.txt").unlink()
    with pytest.raises(SequenceFormatError, match=r"calib\.txt: missing"):
        open_sequence(root)

    root = make_kitti(tmp_path / "b", n=3)
    (root / "calib.txt").write_text("P0: 1 2 3\n")
    with pytest.raises(SequenceFormatError, match=r"calib\.txt:1: expected 'NAME: 12 numbers'"):
        open_sequence(root)
    (root / "calib.txt").write_text("P0: " + " ".join(["x"] * 12) + "\n")
    with pytest.raises(SequenceFormatError, match=r"calib\.txt:1: non-numeric"):
        open_sequence(root)
    (root / "calib.txt").write_text("P1: " + " ".join(map(str, P0)) + "\n")
    with pytest.raises(SequenceFormatError, match=r"calib\.txt: no 'P0:' line"):
        open_sequence(root)

    root = make_kitti(tmp_path / "c", n=3)
    write_kitti(root / "poses.txt", _poses(5))
    with pytest.raises(SequenceFormatError, match=r"poses\.txt: 5 poses but image_0/ has 3 images"):
        open_sequence(root)

    root = make_kitti(tmp_path / "d", n=3, times_values=[0.0, 0.1])
    with pytest.raises(SequenceFormatError, match=r"times\.txt: 2 times but image_0/ has 3 images"):
        open_sequence(root)
    root = make_kitti(tmp_path / "e", n=3, times_values=[0.0, 0.2, 0.1])
    with pytest.raises(SequenceFormatError, match=r"times\.txt: frame stamps must increase"):
        open_sequence(root)

    root = make_kitti(tmp_path / "f", n=3, cameras=(1,))
    with pytest.raises(SequenceFormatError, match="no image_0/ or image_2/ folder"):
        open_sequence(root)
    assert open_sequence(root / "image_1").camera == 1  # explicitly chosen: fine

    assert read_kitti_calib(make_kitti(tmp_path / "g", n=1) / "calib.txt")["P2"].shape == (3, 4)


def test_bag_and_missing_input_errors(tmp_path, capsys):
    bag = tmp_path / "recording.mcap"
    bag.write_bytes(b"\x89MCAP0\r\n")
    assert main([str(bag), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "ROS bag" in err and "loger-replay" in err
    rosbag2 = tmp_path / "rosbag2_dir"
    rosbag2.mkdir()
    (rosbag2 / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    (rosbag2 / "rosbag2_dir_0.db3").write_bytes(b"")
    assert detect_layout(rosbag2) == "bag"
    with pytest.raises(ImageFolderError, match="neither a folder nor a file"):
        open_sequence(tmp_path / "missing")


def test_reconstruct_cli_on_kitti_layout_writes_metrics(tmp_path):
    root = make_kitti(tmp_path / "seq", n=10, cameras=(0,))
    out = tmp_path / "out"
    argv = [str(root), "--out", str(out), "--synthetic-weights", "--max-frames", "8", "--model", "tiny",
            "--resolution", "84x56", "--window", "4", "--overlap", "1", "--device", "cpu", "--quiet", "--no-grid"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_matched"] == 8 and metrics["ate"]["rmse"] >= 0
    run = json.loads((out / "run.json").read_text())
    np.testing.assert_allclose(run["last_K"], np.array(P0).reshape(3, 4)[:, :3])

    # --groundtruth replaces the sequence's poses.txt.
    shifted = _poses(10)
    shifted[:, :3, 3] *= 2.0
    write_kitti(tmp_path / "gt2.txt", shifted)
    out2 = tmp_path / "out2"
    assert main([*argv[:2], str(out2), *argv[3:], "--groundtruth", str(tmp_path / "gt2.txt")]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["n_matched"] == 8
    # Same estimate against a gt twice as large: the Sim(3) ATE doubles.
    assert m2["ate"]["rmse"] == pytest.approx(2 * metrics["ate"]["rmse"], rel=1e-6)


def test_shared_kitti_clip():
    if not SHARED_CLIP.is_dir():
        pytest.skip(f"real KITTI clip not available at {SHARED_CLIP} (shared data is outside the repository)")
    seq = open_sequence(SHARED_CLIP)
    assert isinstance(seq, KittiSequence) and len(seq) == 51 and seq.grayscale
    assert seq.K[0, 0] == pytest.approx(718.856) and seq.K[1, 1] == pytest.approx(718.856)
    gt = seq.groundtruth()
    assert len(gt) == 51
    path_m = float(np.linalg.norm(np.diff(gt.positions, axis=0), axis=1).sum())
    assert path_m == pytest.approx(51.8, abs=0.2)
    frame = seq[0]
    assert frame.rgb.shape == (376, 1241, 3) and np.array_equal(frame.rgb[..., 0], frame.rgb[..., 2])
