"""`loger-reconstruct`: folders (synthetic / TUM layout, plain), videos; outputs and error exits."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from loger_core.cli.reconstruct import main
from loger_core.io.image_folder import ImageFolderSequence
from loger_core.io.image_folder_writer import write_image_folder
from loger_core.io.trajectory import read_tum
from loger_core.mapping.voxel_map import load_ply
from loger_core.model.selection import BUNDLED_CHECKPOINT
from loger_core.stream import StreamConfig, reconstruct_sequence
from loger_core.synthetic import SynthConfig, render_frames

N = 10
FAST = ["--resolution", "84x56", "--window", "4", "--overlap", "1", "--device", "cpu", "--quiet", "--synthetic-weights",
        "--model", "tiny"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "seq"
    frames = render_frames(SynthConfig(scene="room", frames=N, width=112, height=84, fps=10, seed=2), device="cpu")
    return write_image_folder(root, frames, fps=10)


def test_synthetic_folder_with_ground_truth(synth_dir, tmp_path, caplog):
    out = tmp_path / "out"
    # The front end alone (the back end's own equality with it: test_backend_pipeline.py).
    assert main([str(synth_dir), "--out", str(out), *FAST, "--backend", "off"]) == 0
    assert "SYNTHETIC" in caplog.text

    seq = ImageFolderSequence(synth_dir)
    traj = read_tum(out / "trajectory.tum")
    np.testing.assert_array_equal(traj.stamps_ns, seq.stamps_ns)
    # The CLI is the library: same poses as streaming the folder's frames directly.
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(84, 56), window_size=4, overlap_size=1)
    lib = reconstruct_sequence(seq, cfg)
    np.testing.assert_allclose(traj.poses, np.stack([r.T_world_cam for r in lib]), atol=1e-6)

    pts, cols, conf = load_ply(out / "map.ply")
    assert len(pts) > 100 and conf is not None and len(cols) == len(pts)
    all_pts = np.concatenate([r.points for r in lib])
    assert np.all(pts.min(0) >= all_pts.min(0) - 1e-4) and np.all(pts.max(0) <= all_pts.max(0) + 1e-4)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_matched"] == N and metrics["align"] == "sim3"
    assert metrics["ate"]["rmse"] >= 0 and "synthetic" in metrics["warning"]

    run = json.loads((out / "run.json").read_text())
    assert run["weights"].startswith("SYNTHETIC")
    assert run["frames_out"] == N and run["stream"]["frames_committed"] == N
    # The folder's intrinsics are reported (the network itself does not take them).
    np.testing.assert_allclose(run["last_K"], seq.K)

    png = Image.open(out / "top_view.png")
    assert png.format == "PNG" and png.size[0] > 100


def test_depth_scale_source_and_subsampling(synth_dir, tmp_path):
    out = tmp_path / "out"
    assert main([str(synth_dir), "--out", str(out), *FAST, "--scale-source", "depth", "--stride", "2",
                 "--voxel-size", "0.1", "--max-frames", "4"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["frames_read"] == 4 and run["voxel_size"] == 0.1
    assert run["scale"]["source"] == "depth" and run["scale"]["valid"] and run["scale"]["samples"] == 4
    assert len(read_tum(out / "trajectory.tum")) == 4


def test_plain_folder_without_ground_truth_and_video(synth_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for i, p in enumerate(sorted((synth_dir / "rgb").iterdir())[:6]):
        shutil.copy(p, plain / f"frame-{i}.png")
    out = tmp_path / "out_plain"
    assert main([str(plain), "--out", str(out), *FAST, "--fps", "5"]) == 0
    assert not (out / "metrics.json").exists()
    traj = read_tum(out / "trajectory.tum")
    np.testing.assert_array_equal(traj.stamps_ns, np.arange(6) * 200_000_000)
    assert (out / "map.ply").is_file() and (out / "top_view.png").is_file()

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (112, 84))
    for p in sorted((synth_dir / "rgb").iterdir())[:7]:
        writer.write(cv2.imread(str(p)))
    writer.release()
    out = tmp_path / "out_video"
    assert main([str(video), "--out", str(out), *FAST, "--no-grid"]) == 0
    assert len(read_tum(out / "trajectory.tum")) == 7
    assert not (out / "metrics.json").exists()
    assert not (out / "map.yaml").exists() and json.loads((out / "run.json").read_text())["grid"] is None


@pytest.mark.parametrize("extra,message", [
    (["--resolution", "80x56"], "multiples of the patch size"),
    (["--voxel-size", "-1"], "--voxel-size"),
    (["--stride", "0"], "--stride"),
    (["--grid-min-height", "2.0"], "--grid-*: GridConfig: max_height 1.5 must be > min_height 2.0"),
    (["--checkpoint", "/nonexistent/latest.pt"], "checkpoint not found"),
    (["--window", "3", "--overlap", "3"], "overlap_size"),
])
def test_bad_options_exit_with_status_2(synth_dir, tmp_path, capsys, extra, message):
    args = [str(synth_dir), "--out", str(tmp_path / "o"), *FAST, *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_no_flags_runs_the_bundled_small_weights_sized_for_a_cpu(synth_dir, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([str(synth_dir), "--quiet", "--device", "cpu"]) == 0
    assert "BUNDLED DEMO MODEL" in caplog.text and "bundled demo model was used" in capsys.readouterr().out
    run = json.loads((tmp_path / "seq_loger" / "run.json").read_text())
    assert run["config"]["model"] == "small" and run["config"]["window_size"] == 16
    assert run["config"]["checkpoint"] == str(BUNDLED_CHECKPOINT) and "bundled demo weights" in run["weights"]
    assert run["resolution"] == [112, 84] and run["frames_out"] == N
    assert "bundled demo weights" in json.loads((tmp_path / "seq_loger" / "metrics.json").read_text())["warning"]
    # The occupancy grid for Nav2, in the floor frame found under the cameras (grid.json says where).
    out = tmp_path / "seq_loger"
    assert run["grid"]["written"], run["grid"]
    meta = yaml.safe_load((out / "map.yaml").read_text())
    assert meta["image"] == "map.pgm" and meta["mode"] == "trinary" and (out / "map.pgm").stat().st_size > 15
    assert Image.open(out / "grid.png").format == "PNG"
    T_world_ground = np.asarray(json.loads((out / "grid.json").read_text())["T_world_ground"])
    np.testing.assert_allclose(T_world_ground[:3, :3].T @ T_world_ground[:3, :3], np.eye(3), atol=1e-9)
    # The old flag name still works; a full model without a checkpoint is refused with what to pass.
    assert main([str(synth_dir), "--out", str(tmp_path / "o"), "--config", "loger", "--quiet"]) == 2
    assert "'loger' needs a checkpoint" in capsys.readouterr().err


def test_missing_input_and_malformed_arguments(tmp_path, capsys):
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "neither a folder nor a file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--out", str(tmp_path / "o"), "--resolution", "big"])
    assert exc.value.code == 2
