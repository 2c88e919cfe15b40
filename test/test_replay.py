"""Offline replay end to end: synthetic bags (sqlite3, mcap, ROS 1), real images, real bags, Ctrl-C, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from loger_core.io.trajectory import read_tum
from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import StreamingReconstructor
from loger_core.synthetic import SynthConfig, render_frames
from loger_core.synthetic.rosbag_writer import BagTopics, write_rosbag
from loger_core.model.selection import BUNDLED_CHECKPOINT
from loger_ros.params import NodeParams
from loger_ros.replay import (
    ReplayError,
    ReplayOptions,
    camera_mount_matrix,
    discover_bags,
    main,
    output_topic_names,
    resolve_bag_path,
    run_replay,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
STORE = get_typestore(Stores.ROS2_HUMBLE)
TOPICS = output_topic_names()
N_FRAMES = 8
T0 = 1_700_000_000_000_000_000


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture(scope="module")
def tiny_model():
    return fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()


@pytest.fixture(scope="module")
def frames():
    return render_frames(SynthConfig(frames=N_FRAMES, width=64, height=48, fps=10.0, seed=3), device="cpu")


def tiny_params(**overrides) -> NodeParams:
    # One window for a whole test bag keeps the CPU cost at one or two network passes per replay.
    values = dict(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28, input_height=28,
                  window_size=8, overlap_size=1, provisional_every=0, voxel_size=0.02,
                  provisional_budget=1.0)  # as the replay CLI sets it: no live camera
    values.update(overrides)
    return NodeParams(**values)


def replay(bag: Path, out: Path, model, **options):
    params = options.pop("params", tiny_params())
    stream = StreamingReconstructor(params.stream_config(), model=model)
    on_frame = options.pop("on_frame", None)
    opts = ReplayOptions(bag=bag, out_dir=out, params=params, progress=False, **options)
    return run_replay(opts, reconstructor=stream, on_frame=on_frame)


def read_bag(path: Path) -> dict[str, list]:
    """topic -> deserialised messages (every message must deserialise)."""
    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for conn, _, raw in reader.messages():
            out.setdefault(conn.topic, []).append(reader.deserialize(raw, conn.msgtype))
    return out


def check_outputs(out: Path, summary, n_frames: int, image_topic: str, with_gt: bool) -> dict[str, list]:
    import open3d as o3d

    assert summary.frames_read == n_frames and summary.poses == n_frames
    traj = read_tum(out / "trajectory.tum")
    assert len(traj) == n_frames and np.all(np.diff(traj.stamps_ns) > 0)
    cloud = o3d.io.read_point_cloud(str(out / "map.ply"))
    assert len(cloud.points) == summary.map_points > 0
    assert (out / "trajectory.png").stat().st_size > 1000
    saved = json.loads((out / "summary.json").read_text())
    assert saved["poses"] == n_frames and saved["counters"]["committed"] == n_frames
    messages = read_bag(out / "rosbag")
    assert len(messages[image_topic]) == n_frames
    for channel in ("odom", "path", "cloud", "map", "grid", "tf"):
        assert messages[TOPICS[channel]], f"no {channel} in the output bag"
    # The occupancy grid: in the bag (latched, map frame), as nav2_map_server files and as a picture.
    grid = messages[TOPICS["grid"]][-1]
    assert grid.header.frame_id == "map" and grid.info.width * grid.info.height == len(grid.data) > 0
    assert set(np.unique(grid.data).tolist()) <= {-1, 0, 100}
    with AnyReader([out / "rosbag"]) as reader:
        qos = [c.ext.offered_qos_profiles for c in reader.connections if c.topic == TOPICS["grid"]]
    assert qos[0][0].durability == QosDurability.TRANSIENT_LOCAL
    assert (out / "map.pgm").stat().st_size > 15 and (out / "map.yaml").is_file()
    assert (out / "grid.png").stat().st_size > 1000
    assert {"grid_yaml", "grid_pgm", "grid_png"} <= set(json.loads((out / "summary.json").read_text())["outputs"])
    assert len(messages[TOPICS["path"]][-1].poses) == n_frames
    assert {(t.header.frame_id, t.child_frame_id) for m in messages["/tf"] for t in m.transforms} == {
        ("odom", "base_link"), ("map", "odom")}
    assert (out / "metrics.json").exists() == with_gt
    if with_gt:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["n_matched"] == n_frames and np.isfinite(metrics["ate"]["rmse"])
    return messages


# ------------------------------------------------------------------ synthetic bags
@pytest.mark.parametrize(
    "storage, encoding, depth, provisional_every",
    [("sqlite3", "rgb8", "16UC1", 0), ("mcap", "jpeg", None, 0), ("ros1", "bgr8", "32FC1", 3)],
)
def test_replay_synthetic_bags(tmp_path, frames, tiny_model, storage, encoding, depth, provisional_every):
    bag = tmp_path / ("in.bag" if storage == "ros1" else "in")
    write_rosbag(bag, frames, storage=storage, image_encoding=encoding, with_depth=depth is not None,
                 depth_encoding=depth or "16UC1")
    out = tmp_path / "out"
    summary = replay(bag, out, tiny_model, depth_topic="auto" if depth else "none",
                     params=tiny_params(provisional_every=provisional_every))
    if provisional_every:
        # Frames 0-2 and 3-5 from the provisional passes at frames 2 and 5 (each gives its 3 newest
        # frames); frame 7 completes the window and gets its pose from the committing pass at once
        # (committed for good by the next window).
        assert summary.counters["provisional_published"] == 7
    image_topic = BagTopics().compressed_topic if encoding == "jpeg" else BagTopics().image
    assert summary.topics["image"] == image_topic and summary.topics["camera_info"] == BagTopics().camera_info
    assert summary.topics["ground_truth"] == BagTopics().gt_pose
    assert summary.topics["depth"] == (BagTopics().depth if depth else None)
    messages = check_outputs(out, summary, N_FRAMES, image_topic, with_gt=True)
    assert len(messages[BagTopics().camera_info]) == N_FRAMES
    first = messages[image_topic][0]
    if encoding == "jpeg":
        decoded = cv2.cvtColor(cv2.imdecode(np.asarray(first.data), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(decoded.astype(int) - frames[0].rgb).mean() < 12
    else:
        pixels = np.asarray(first.data).reshape(48, 64, 3)
        assert np.array_equal(pixels if encoding == "rgb8" else pixels[..., ::-1], frames[0].rgb)
    if depth:
        assert summary.counters["invalid_depth"] == 0
        assert summary.bag_message_counts[BagTopics().depth] == N_FRAMES


def _write_bag(path: Path, messages: list[tuple[str, str, int, object]], storage=StoragePlugin.MCAP) -> Path:
    writer = Writer(path, version=8, storage_plugin=storage)
    writer.open()
    conns = {}
    for topic, msgtype, time_ns, msg in messages:
        if topic not in conns:
            conns[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
        writer.write(conns[topic], time_ns, bytes(STORE.serialize_cdr(msg, msgtype)))
    writer.close()
    return path


def _header(stamp_ns: int, frame: str = "camera"):
    time_msg = STORE.types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return STORE.types["std_msgs/msg/Header"](stamp=time_msg, frame_id=frame)


def _compressed(stamp_ns: int, rgb: np.ndarray | None, raw: bytes | None = None):
    if raw is None:
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        raw = buf.tobytes()
    return STORE.types["sensor_msgs/msg/CompressedImage"](header=_header(stamp_ns), format="jpeg",
                                                          data=np.frombuffer(raw, np.uint8).copy())


def _image(stamp_ns: int, rgb: np.ndarray, encoding: str = "rgb8"):
    h, w = rgb.shape[:2]
    return STORE.types["sensor_msgs/msg/Image"](header=_header(stamp_ns), height=h, width=w, encoding=encoding,
                                                is_bigendian=0, step=w * 3, data=rgb.reshape(-1).copy())


def _camera_info(stamp_ns: int, w: int, h: int, f: float):
    roi = STORE.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    K = np.array([f, 0, (w - 1) / 2, 0, f, (h - 1) / 2, 0, 0, 1], float)
    return STORE.types["sensor_msgs/msg/CameraInfo"](
        header=_header(stamp_ns), height=h, width=w, distortion_model="plumb_bob", d=np.zeros(5), k=K,
        r=np.eye(3).reshape(-1), p=np.concatenate([K.reshape(3, 3), np.zeros((3, 1))], 1).reshape(-1),
        binning_x=0, binning_y=0, roi=roi)


# ------------------------------------------------------------------ real images and real bags
def test_replay_real_office_images(tmp_path, shared_data, tiny_model):
    pngs = sorted((shared_data / "office_7scenes_frames").glob("*.color.png"))[:6]
    if not pngs:
        pytest.skip(f"no office_7scenes_frames PNGs in {shared_data}")
    messages = []
    for i, png in enumerate(pngs):
        rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(png)), (80, 60), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        stamp = T0 + i * 66_000_000
        messages.append(("/camera/camera_info", "sensor_msgs/msg/CameraInfo", stamp, _camera_info(stamp, 80, 60, 73.1)))
        messages.append(("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage", stamp, _compressed(stamp, rgb)))
    bag = _write_bag(tmp_path / "office", messages)
    out = tmp_path / "out"
    summary = replay(bag, out, tiny_model)
    assert summary.topics["image"] == "/camera/image_raw/compressed" and summary.topics["compressed"]
    check_outputs(out, summary, len(pngs), "/camera/image_raw/compressed", with_gt=False)


_REAL_BAGS = discover_bags(SHARED_DATA)


@pytest.mark.parametrize("bag", _REAL_BAGS or [None], ids=[p.name for p in _REAL_BAGS] or ["no-bags"])
def test_replay_every_real_bag_in_shared_data(tmp_path, tiny_model, bag):
    if bag is None:
        contents = sorted(p.name for p in SHARED_DATA.iterdir()) if SHARED_DATA.is_dir() else []
        pytest.skip(f"no rosbags (*.bag, rosbag2 directories, *.mcap, *.db3) under {SHARED_DATA} "
                    f"(it holds {contents or 'nothing'}); the real-image bag test builds one from PNG frames")
    summary = replay(bag, tmp_path / "out", tiny_model, max_frames=12)
    assert summary.frames_read > 0 and summary.read_error is None
    assert summary.poses == summary.frames_processed == summary.frames_read - sum(summary.counters["dropped"].values())
    assert len(read_tum(tmp_path / "out" / "trajectory.tum")) == summary.poses
    read_bag(tmp_path / "out" / "rosbag")


# ------------------------------------------------------------------ interruption and CLI
def test_ctrl_c_leaves_valid_closed_outputs(tmp_path, frames, tiny_model):
    bag = write_rosbag(tmp_path / "in", frames, storage="mcap")

    def interrupt(n):
        if n == 5:
            raise KeyboardInterrupt

    out = tmp_path / "out"
    summary = replay(bag, out, tiny_model, on_frame=interrupt)
    assert summary.interrupted and summary.frames_read == 5
    # The window was flushed: every frame read has a committed pose; the bag is closed and readable.
    assert summary.poses == 5 and len(read_tum(out / "trajectory.tum")) == 5
    assert (out / "rosbag" / "metadata.yaml").is_file()
    messages = read_bag(out / "rosbag")
    assert len(messages[BagTopics().image]) == 5 and len(messages[TOPICS["path"]][-1].poses) == 5
    assert not list(out.glob(".*tmp*"))  # no temporary files left behind


def test_cli_runs_and_reports_errors(tmp_path, frames, capsys):
    bag = write_rosbag(tmp_path / "in", frames[:4], storage="sqlite3")
    common = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=28",
              "-p", "input_height:=28", "-p", "window_size:=3", "-p", "overlap_size:=1", "--no-progress"]
    assert main([str(bag), "-o", str(tmp_path / "out"), *common]) == 0
    assert "4 frames, 4 poses" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["camera_mount"] == "identity_fallback"
    # A bag without the camera mount in /tf_static: --camera-mount gives it (base_link poses, grid heights).
    assert main([str(bag), "-o", str(tmp_path / "mounted"), *common, "--camera-mount", "0.1,0,1.2,0,0.3,0"]) == 0
    assert json.loads((tmp_path / "mounted" / "summary.json").read_text())["camera_mount"] == "tf"
    np.testing.assert_allclose(camera_mount_matrix(0, 0, 1.2, 0, 0, 0)[:3, :3] @ [0, 0, 1], [1, 0, 0], atol=1e-12)
    assert main([str(bag), "-o", str(tmp_path / "bad"), *common, "--camera-mount", "1,2,3"]) == 2
    assert "--camera-mount '1,2,3' must be six numbers" in capsys.readouterr().err
    assert main([str(bag), "-o", str(tmp_path / "out"), *common]) == 2  # the output bag exists
    assert "pass --overwrite" in capsys.readouterr().err
    assert main([str(bag), "-o", str(tmp_path / "out2"), "--topic", "/nope", *common]) == 2
    assert "--topic '/nope' is not in the bag (image topics: ['/camera/image_raw'])" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), *common]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(bag), "-o", str(tmp_path / "out3"), *common, "-p", "overlap_size:=3"]) == 2
    assert "overlap_size 3 must be < window_size 3" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input
def test_bad_frames_inside_a_bag_are_dropped_and_the_rest_mapped(tmp_path, frames, tiny_model):
    messages = []
    stamps = [T0 + i * 100_000_000 for i in range(N_FRAMES)]
    for i, frame in enumerate(frames):
        stamp = stamps[i]
        if i == 2:
            msg = _compressed(stamp, None, raw=b"\xff\xd8\xff\xe0" + bytes(40))  # corrupt JPEG
        elif i == 4:
            msg = _compressed(stamps[1], frame.rgb)  # stamp goes backwards
        else:
            msg = _compressed(stamp, frame.rgb)
        messages.append(("/cam/image/compressed", "sensor_msgs/msg/CompressedImage", stamp, msg))
    bag = _write_bag(tmp_path / "bad", messages, storage=StoragePlugin.SQLITE3)
    summary = replay(bag, tmp_path / "out", tiny_model)
    assert summary.counters["dropped"]["decode"] == 1 and summary.counters["dropped"]["out_of_order"] == 1
    assert summary.frames_read == N_FRAMES and summary.poses == N_FRAMES - 2
    traj = read_tum(tmp_path / "out" / "trajectory.tum")
    assert list(traj.stamps_ns) == [s for i, s in enumerate(stamps) if i not in (2, 4)]


def test_wrong_image_encoding_is_dropped(tmp_path, frames, tiny_model):
    messages = [("/cam/image", "sensor_msgs/msg/Image", T0 + i * 10**8,
                 _image(T0 + i * 10**8, f.rgb, encoding="rgb8" if i != 1 else "32FC1")) for i, f in enumerate(frames[:5])]
    summary = replay(_write_bag(tmp_path / "enc", messages), tmp_path / "out", tiny_model)
    assert summary.counters["dropped"]["decode"] == 1 and summary.poses == 4


def test_bags_without_a_usable_image_topic_are_refused(tmp_path, frames):
    info_only = _write_bag(tmp_path / "info", [("/cam/camera_info", "sensor_msgs/msg/CameraInfo", T0,
                                                _camera_info(T0, 64, 48, 50.0))])
    with pytest.raises(ReplayError, match="no camera image topic"):
        replay(info_only, tmp_path / "o1", None)
    two = _write_bag(tmp_path / "two", [
        ("/left/image", "sensor_msgs/msg/Image", T0, _image(T0, frames[0].rgb)),
        ("/right/image", "sensor_msgs/msg/Image", T0, _image(T0, frames[0].rgb))])
    with pytest.raises(ReplayError, match=r"several camera image topics \['/left/image', '/right/image'\]"):
        replay(two, tmp_path / "o2", None)
    with pytest.raises(ReplayError, match="--gt-topic '/left/image' has type sensor_msgs/msg/Image"):
        replay(two, tmp_path / "o3", None, topic="/left/image", gt_topic="/left/image")


def test_broken_and_incomplete_bags_give_clear_errors(tmp_path, frames):
    bag = write_rosbag(tmp_path / "in", frames[:3], storage="mcap")
    storage_file = next(bag.glob("*.mcap"))
    orphan = tmp_path / "orphan.mcap"
    shutil.copy(storage_file, orphan)
    with pytest.raises(ReplayError, match="has no metadata.yaml beside it"):
        resolve_bag_path(orphan)
    assert resolve_bag_path(storage_file) == bag
    storage_file.write_bytes(storage_file.read_bytes()[: storage_file.stat().st_size // 2])
    with pytest.raises(ReplayError, match=f"cannot open bag '{bag}'"):
        replay(bag, tmp_path / "out", None)
    with pytest.raises(ReplayError, match="is not a bag"):
        resolve_bag_path(Path(__file__))
    assert set(discover_bags(tmp_path)) == {bag, orphan}


def test_offline_defaults_commit_every_frame_and_size_the_model(tmp_path):
    from loger_ros.replay import build_arg_parser, options_from_args

    bag = tmp_path / "b.bag"
    opts = options_from_args(build_arg_parser().parse_args([str(bag)]))
    assert opts.params.provisional_every == 0
    cfg = opts.params.stream_config()  # no flags: the bundled small weights, CPU-sized input and window
    assert (cfg.model, cfg.resolution, cfg.pixel_limit, cfg.window_size) == ("small", None, 10_000, 16)
    assert cfg.checkpoint == str(BUNDLED_CHECKPOINT)
    opts = options_from_args(build_arg_parser().parse_args(
        [str(bag), "--model", "small", "-p", "provisional_every:=2", "-p", "input_width:=56", "-p", "input_height:=42"]))
    assert opts.params.provisional_every == 2 and opts.params.stream_config().resolution == (56, 42)
    opts = options_from_args(build_arg_parser().parse_args([str(bag), "--model", "loger", "--checkpoint", "/w.pt"]))
    cfg = opts.params.stream_config()
    assert (cfg.model, cfg.resolution, cfg.window_size) == ("loger", (504, 280), 32)


def test_loger_replay_bag_works_without_flags(tmp_path, frames, monkeypatch, caplog, capsys):
    bag = write_rosbag(tmp_path / "in", frames[:6], storage="mcap")
    monkeypatch.chdir(tmp_path)
    assert main([str(bag), "--no-progress"]) == 0
    assert "6 frames, 6 poses" in capsys.readouterr().out
    assert "BUNDLED DEMO MODEL" in caplog.text
    summary = json.loads((tmp_path / "in_loger" / "summary.json").read_text())
    assert summary["poses"] == 6 and summary["map_points"] > 0
    # A full model has no bundled weights: refused with what to pass.
    assert main([str(bag), "-o", str(tmp_path / "o2"), "--model", "loger_star", "--no-progress"]) == 2
    assert "needs a checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("storage", ["sqlite3", "mcap", "ros1"])
def test_loger_synth_bag_carries_the_camera_mount(tmp_path, storage, caplog):
    """loger-synth --bag writes base_link -> camera on /tf_static; replay reads that mount and no grid warning."""
    from loger_core.synthetic.cli import main as synth_main
    from loger_core.synthetic.config import TrajectoryConfig
    from loger_core.synthetic.trajectories import camera_mount

    assert synth_main(["--trajectory", "ground_robot", "--frames", "4", "--size", "64x48", "--out", str(tmp_path / "s"),
                       "--no-folder", "--bag", storage, "--quiet", "--device", "cpu"]) == 0
    bag = tmp_path / "s" / ("sequence.bag" if storage == "ros1" else f"bag_{storage}")
    with AnyReader([bag]) as reader:
        static = [c for c in reader.connections if c.topic == "/tf_static"]
        if storage != "ros1":
            assert static[0].ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
        else:
            assert static[0].ext.latching == 1
    common = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=28",
              "-p", "input_height:=28", "-p", "window_size:=3", "-p", "overlap_size:=1", "--no-progress"]
    caplog.set_level("WARNING")
    assert main([str(bag), "-o", str(tmp_path / "out"), *common]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["camera_mount"] == "tf"
    written = camera_mount("ground_robot", TrajectoryConfig())
    np.testing.assert_allclose(summary["camera_mount_T_base_cam"], written, atol=1e-9)
    assert "not meaningful" not in caplog.text and "no TF transform" not in caplog.text
    # The ground truth is the camera (the mount was only TF), and /tf gives base_link on the floor, z up.
    messages = read_bag(bag)
    tf = messages["/tf"][0].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == ("map", "base_link")
    assert abs(tf.transform.translation.z) < 1e-9
