"""Image-folder and video sequences: writer/reader round trips, plain folders, errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from loger_core.io.frames import Frame, natural_key, read_intrinsics_yaml
from loger_core.io.image_folder import ImageFolderError, ImageFolderSequence
from loger_core.io.image_folder_writer import ImageFolderWriter, write_image_folder
from loger_core.io.video import VideoSequence
from loger_core.io.trajectory import Trajectory, read_kitti, read_tum, write_tum
from loger_core.synthetic import SceneConfig, SynthConfig, render_frames


@pytest.fixture(scope="module")
def street_frames():
    cfg = SynthConfig(scene="street", trajectory="car", frames=3, width=32, height=24, seed=1,
                      scene_config=SceneConfig(texture_size=16, textures=10))
    return render_frames(cfg)


def _frame(rgb, stamp, **kw):
    return Frame(rgb=rgb, stamp_ns=stamp, **kw)


@pytest.mark.parametrize("depth_format", ["png", "npy"])
def test_dataset_round_trip(tmp_path, street_frames, depth_format):
    out = write_image_folder(tmp_path / "seq", street_frames, depth_format=depth_format, fps=30.0)
    names = sorted(p.name for p in (out / "rgb").iterdir())
    assert names == ["000000.png", "000001.png", "000002.png"]
    assert sorted(p.name for p in (out / "depth").iterdir()) == [f"00000{i}.{depth_format}" for i in range(3)]
    seq = ImageFolderSequence(out)
    assert seq.layout == "dataset" and len(seq) == 3
    assert np.array_equal(seq.K, street_frames[0].K)
    assert seq.metadata["width"] == 32 and seq.metadata["fps"] == 30.0
    assert seq.has_groundtruth and seq.has_depth
    for f, g in zip(street_frames, seq):
        assert np.array_equal(g.rgb, f.rgb)
        assert g.stamp_ns == f.stamp_ns
        np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-12)
        assert g.depth.dtype == np.float32
        sky = ~np.isfinite(f.depth)
        assert sky.any() and np.all(np.isinf(g.depth[sky]))
        if depth_format == "npy":
            assert np.array_equal(g.depth, f.depth)
        else:
            ok = ~sky & (f.depth < 65.5)
            assert np.abs(g.depth[ok] - f.depth[ok]).max() <= 0.0005 + 1e-6
            assert np.all(np.isinf(g.depth[~ok]))  # out of 16-bit range: no depth
    gt = seq.groundtruth()
    assert gt.stamps_ns.tolist() == [f.stamp_ns for f in street_frames]
    # The two pose files agree with the frames.
    np.testing.assert_allclose(read_tum(out / "groundtruth.txt").poses, gt.poses, atol=1e-12)
    np.testing.assert_allclose(read_kitti(out / "poses_kitti.txt"), np.stack([f.T_world_cam for f in street_frames]),
                               atol=1e-12)


def test_writer_output_is_byte_deterministic(tmp_path, street_frames):
    a = write_image_folder(tmp_path / "a", street_frames)
    b = write_image_folder(tmp_path / "b", street_frames)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 + 3 + 5  # rgb, depth, rgb.txt depth.txt groundtruth poses_kitti intrinsics
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_stamps_come_from_groundtruth_when_there_is_no_list(tmp_path):
    root = tmp_path / "seq"
    (root / "rgb").mkdir(parents=True)
    img = np.zeros((4, 6, 3), np.uint8)
    for i in range(3):
        cv2.imwrite(str(root / "rgb" / f"{i}.png"), img)
    stamps = np.array([10, 2_000_000_010, 4_000_000_010], dtype=np.int64)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 1.0, 2.0]
    write_tum(root / "groundtruth.txt", Trajectory(stamps, poses))
    seq = ImageFolderSequence(root)
    assert seq.stamps_ns.tolist() == stamps.tolist()
    assert [f.T_world_cam[0, 3] for f in seq] == [0.0, 1.0, 2.0]
    assert seq.K is None and not seq.has_depth


def test_groundtruth_is_associated_by_nearest_stamp(tmp_path):
    root = tmp_path / "tum"
    (root / "rgb").mkdir(parents=True)
    img = np.zeros((4, 6, 3), np.uint8)
    lines = []
    for i, s in enumerate([1.000, 1.033, 1.066, 2.000]):
        cv2.imwrite(str(root / "rgb" / f"{s:.3f}.png"), img)
        lines.append(f"{s:.6f} rgb/{s:.3f}.png")
    (root / "rgb.txt").write_text("# comment\n" + "\n".join(lines) + "\n")
    gt_stamps = np.arange(0, 100) * 10_000_000 + 995_000_000  # 100 Hz from 0.995 s to 1.985 s
    poses = np.tile(np.eye(4), (100, 1, 1))
    poses[:, 0, 3] = np.arange(100)
    write_tum(root / "groundtruth.txt", Trajectory(gt_stamps, poses))
    seq = ImageFolderSequence(root)
    got = [None if f.T_world_cam is None else f.T_world_cam[0, 3] for f in seq]
    # 1.000 -> 0.995 / 1.005 tie resolved to the earlier one, 1.033 -> 1.035, 1.066 -> 1.065; 2.000 is 15 ms
    # past the last pose (1.985), still within the 20 ms window.
    assert got == [0.0, 4.0, 7.0, 99.0]
    assert len(seq.groundtruth()) == 4


def test_plain_folder_natural_order_and_7scenes_pose_files(tmp_path):
    rng = np.random.default_rng(0)
    for i in (10, 2, 1):
        cv2.imwrite(str(tmp_path / f"frame-{i}.color.png"), rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
        cv2.imwrite(str(tmp_path / f"frame-{i}.depth.png"), np.zeros((6, 8), np.uint16))
        pose = np.eye(4)
        pose[1, 3] = i
        np.savetxt(tmp_path / f"frame-{i}.pose.txt", pose)
    seq = ImageFolderSequence(tmp_path, fps=10.0)
    assert seq.layout == "plain" and len(seq) == 3
    assert [Path(f.path).name for f in seq] == ["frame-1.color.png", "frame-2.color.png", "frame-10.color.png"]
    assert seq.stamps_ns.tolist() == [0, 100_000_000, 200_000_000]
    assert [f.T_world_cam[1, 3] for f in seq] == [1.0, 2.0, 10.0]
    assert seq[0].depth is None and seq[0].K is None
    assert natural_key("a10b") > natural_key("a9b")


def test_reads_the_shared_7scenes_frames(shared_data):
    folder = shared_data / "office_7scenes_frames"
    K = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]])
    seq = ImageFolderSequence(folder, K=K)
    assert len(seq) == 50
    assert not seq.has_groundtruth
    assert seq.stamps_ns[:3].tolist() == [0, 33_333_333, 66_666_667]
    first, last = seq[0], seq[-1]
    assert first.rgb.shape == (480, 640, 3) and first.rgb.dtype == np.uint8
    assert Path(first.path).name == "frame-000000.color.png"
    assert Path(last.path).name == "frame-000098.color.png"
    assert np.array_equal(first.K, K)
    with pytest.raises(ImageFolderError, match="no ground truth"):
        seq.groundtruth()


def test_video_sequence(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    if not writer.isOpened():
        pytest.skip("OpenCV build cannot write MJPG video")
    imgs = []
    for i in range(5):
        img = np.zeros((24, 32, 3), np.uint8)
        img[:, :, 0] = 40 * i  # red ramp over time
        img[4:12, 4 + i : 12 + i] = 255
        imgs.append(img)
        writer.write(np.ascontiguousarray(img[..., ::-1]))
    writer.release()
    seq = VideoSequence(path)
    assert seq.fps == pytest.approx(10.0)
    frames = list(seq)
    assert len(frames) == 5 and len(seq) == 5
    assert [f.stamp_ns for f in frames] == [0, 100_000_000, 200_000_000, 300_000_000, 400_000_000]
    for f, img in zip(frames, imgs):
        assert f.rgb.shape == (24, 32, 3) and f.rgb.dtype == np.uint8
        assert np.abs(f.rgb.astype(int) - img.astype(int)).mean() < 12
        assert f.depth is None and f.T_world_cam is None
    assert frames[4].rgb[..., 0].mean() > frames[0].rgb[..., 0].mean() + 100  # RGB order, not BGR
    assert [f.stamp_ns for f in VideoSequence(path, fps=25.0)][1] == 40_000_000
    with pytest.raises(ImageFolderError, match="does not exist"):
        VideoSequence(tmp_path / "missing.mp4")


def test_reader_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="not a directory"):
        ImageFolderSequence(tmp_path / "nope")
    with pytest.raises(ImageFolderError, match="no images"):
        ImageFolderSequence(tmp_path)
    with pytest.raises(ImageFolderError, match="fps"):
        ImageFolderSequence(tmp_path, fps=0)
    (tmp_path / "rgb").mkdir()
    cv2.imwrite(str(tmp_path / "rgb" / "0.png"), np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "intrinsics.yaml").write_text("fx: 100\nfy: 100\ncx: 2\n")
    with pytest.raises(ImageFolderError, match="cy"):
        ImageFolderSequence(tmp_path)
    (tmp_path / "intrinsics.yaml").write_text("fx: -1\nfy: 100\ncx: 2\ncy: 2\n")
    with pytest.raises(ImageFolderError, match="positive"):
        read_intrinsics_yaml(tmp_path / "intrinsics.yaml")
    (tmp_path / "intrinsics.yaml").unlink()
    (tmp_path / "rgb.txt").write_text("0.0 rgb/0.png\n0.1 rgb/1.png\n")
    with pytest.raises(ImageFolderError, match="missing"):
        ImageFolderSequence(tmp_path)
    (tmp_path / "rgb.txt").write_text("zero rgb/0.png\n")
    with pytest.raises(ImageFolderError, match="timestamp"):
        ImageFolderSequence(tmp_path)
    (tmp_path / "rgb.txt").unlink()
    (tmp_path / "groundtruth.txt").write_text("0.0 1 2 3\n")
    with pytest.raises(ImageFolderError, match="bad ground truth.*groundtruth.txt:1"):
        ImageFolderSequence(tmp_path)
    (tmp_path / "groundtruth.txt").unlink()
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "depth" / "0.png"), np.zeros((5, 4), np.uint16))
    seq = ImageFolderSequence(tmp_path)
    with pytest.raises(ImageFolderError, match="depth shape"):
        seq[0]
    with pytest.raises(IndexError):
        seq[3]
    (tmp_path / "rgb" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ImageFolderError, match="cannot decode"):
        ImageFolderSequence(tmp_path, load_depth=False)[1]


def test_writer_errors(tmp_path):
    img = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(ImageFolderError, match="depth_format"):
        ImageFolderWriter(tmp_path / "a", depth_format="exr")
    with ImageFolderWriter(tmp_path / "a") as w:
        w.add(_frame(img, 5))
        with pytest.raises(ImageFolderError, match="not after"):
            w.add(_frame(img, 5))
        with pytest.raises(ImageFolderError, match="differs"):
            w.add(_frame(np.zeros((5, 6, 3), np.uint8), 6))
        with pytest.raises(ImageFolderError, match="uint8"):
            w.add(_frame(img.astype(np.float32), 7))
    # No poses, no K: only the image list is written.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["rgb", "rgb.txt"]
    with pytest.raises(ImageFolderError, match="already holds"):
        ImageFolderWriter(tmp_path / "a")
