"""loger-batch on a local Ray (2 CPUs): same outputs as loger-replay, retries and failure reports,
resumable reruns, a worker killed mid-task. One Ray instance serves the whole module (start-up is
the slow part)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loger_core.synthetic import SynthConfig, render_frames
from loger_core.synthetic.rosbag_writer import write_rosbag
from loger_ros.batch import collect_inputs
from loger_ros.batch.cli import main as batch_main
from loger_ros.batch.jobs import FAULT_DIR_ENV, PARTIAL_DIR
from loger_ros.batch.runner import BatchOptions, run_batch
from loger_ros.replay import main as replay_main

ray = pytest.importorskip("ray", reason="Ray is the optional extra 'batch' (pip install .[batch]); "
                          "requirements-test.txt installs it, the numpy-1.26 venv does not")

# The tool options of a tiny, fast replay: one window per 8-frame bag, untrained deterministic weights.
TOOL_ARGS = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=28",
             "-p", "input_height:=28", "-p", "window_size:=8", "-p", "overlap_size:=1", "-p", "voxel_size:=0.02"]
BATCH_ARGS = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=28",
              "-p", "input_height:=28", "-p", "window_size:=8", "-p", "overlap_size:=1", "-p", "voxel_size:=0.02",
              "--no-progress"]
GOOD = {"alpha": "mcap", "bravo": "sqlite3", "charlie": "ros1"}
# Outputs that depend only on the data (summary.json holds timings, trajectory.png is a render of these).
SAME_BYTES = ("trajectory.tum", "map.ply", "metrics.json")


@pytest.fixture(scope="module")
def ray_local():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _bag_path(root: Path, name: str, storage: str) -> Path:
    return root / (f"{name}.bag" if storage == "ros1" else name)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """Three small synthetic bags (mcap, sqlite3, ROS 1) and a corrupt one (its mcap cut in half)."""
    root = tmp_path_factory.mktemp("bags")
    for i, (name, storage) in enumerate(GOOD.items()):
        frames = render_frames(SynthConfig(frames=8, width=64, height=48, fps=10.0, seed=11 + i), device="cpu")
        write_rosbag(_bag_path(root, name, storage), frames, storage=storage)
    frames = render_frames(SynthConfig(frames=8, width=64, height=48, fps=10.0, seed=20), device="cpu")
    broken = write_rosbag(root / "broken", frames, storage="mcap")
    mcap = next(broken.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    return root


@pytest.fixture(scope="module")
def reference(bags, tmp_path_factory):
    """loger-replay run one by one (in this process) on the good bags."""
    ref = tmp_path_factory.mktemp("reference")
    for name, storage in GOOD.items():
        assert replay_main([str(_bag_path(bags, name, storage)), "--out", str(ref / name), "--no-progress",
                            *TOOL_ARGS]) == 0
    return ref


def _assert_same_outputs(out: Path, ref: Path) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    for name in SAME_BYTES:
        assert (out / name).read_bytes() == (ref / name).read_bytes(), f"{out.name}/{name} differs from loger-replay's"
    got, want = (json.loads((d / "summary.json").read_text()) for d in (out, ref))
    for field in ("frames_read", "frames_processed", "poses", "map_points", "bag_message_counts", "topics", "metrics"):
        assert got[field] == want[field], field


def test_batch_equals_replay_reports_corrupt_and_reruns_nothing(tmp_path, bags, reference, ray_local, capsys):
    out = tmp_path / "maps"
    code = batch_main([str(bags), "--out", str(out), "--max-retries", "1", *BATCH_ARGS])
    printed = capsys.readouterr().out
    assert code == 1  # one input failed
    summary = json.loads((out / "summary.json").read_text())
    by_name = {r["name"]: r for r in summary["results"]}
    assert sorted(by_name) == ["alpha", "bravo", "broken", "charlie"]
    for name in GOOD:
        r = by_name[name]
        assert r["status"] == "ok" and r["attempts"] == 1 and r["frames"] == 8 and r["error"] is None
        assert r["ate_rmse"] is not None and r["frames_per_s"] > 0
        _assert_same_outputs(out / name, reference / name)
    broken = by_name["broken"]
    # A malformed bag fails the same way every time: reported at once, not retried.
    assert broken["status"] == "failed" and broken["attempts"] == 1 and not broken["retryable"]
    assert "cannot open bag" in broken["error"] and "broken" in broken["error"] and not (out / "broken").exists()
    assert not (out / PARTIAL_DIR).exists(), "a temporary output was left behind"
    # The model is loaded once per worker process, however many inputs the worker maps.
    ok = [by_name[n] for n in GOOD]
    assert sum(r["model_loaded"] for r in ok) == len({r["pid"] for r in ok}) <= 2  # 2 CPUs: 2 workers
    with open(out / "summary.csv") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"] and rows["alpha"]["frames"] == "8"
    assert "broken" in printed and "failed" in printed and "ATE rmse" in printed

    # A rerun skips every complete input (nothing is rewritten) and retries only the failed one.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*")}
    ran = []
    report = run_batch(collect_inputs([str(bags)]), BatchOptions(
        out_dir=out, max_retries=0, progress=False, replay_argv=tuple(TOOL_ARGS)), on_result=ran.append)
    assert [r.name for r in ran] == ["broken"]
    assert {r.name: r.status for r in report.results} == {"alpha": "skipped", "bravo": "skipped",
                                                          "charlie": "skipped", "broken": "failed"}
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*")} == stamps
    # Without the corrupt bag the rerun does nothing at all: no task is submitted.
    good = [i for i in collect_inputs([str(bags)]) if i.name != "broken"]
    ran.clear()
    report = run_batch(good, BatchOptions(out_dir=out, progress=False, replay_argv=tuple(TOOL_ARGS)),
                       on_result=ran.append)
    assert ran == [] and not report.failed and all(r.status == "skipped" for r in report.results)
    # Other parameters make a new key: the input is mapped again (and --force redoes an unchanged one).
    ran.clear()
    run_batch(good[:1], BatchOptions(out_dir=out, progress=False, replay_argv=(*TOOL_ARGS, "-p", "voxel_size:=0.05")),
              on_result=ran.append)
    assert [r.status for r in ran] == ["ok"]


def test_killed_worker_is_retried_and_outputs_complete(tmp_path, bags, reference, ray_local, monkeypatch):
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "bravo.kill").touch()  # the job kills its own worker at frame 2, once
    monkeypatch.setenv(FAULT_DIR_ENV, str(faults))
    out = tmp_path / "maps"
    inputs = [i for i in collect_inputs([str(bags)]) if i.name == "bravo"]
    report = run_batch(inputs, BatchOptions(out_dir=out, max_retries=2, progress=False, replay_argv=tuple(TOOL_ARGS)))
    assert (faults / "bravo.killed").exists() and not (faults / "bravo.kill").exists(), "the fault was not injected"
    (result,) = report.results
    assert result.status == "ok" and result.attempts == 2
    _assert_same_outputs(out / "bravo", reference / "bravo")
    assert not (out / PARTIAL_DIR).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["bravo"]["status"] == "ok" and manifest["inputs"]["bravo"]["attempts"] == 2


def test_image_folder_runs_loger_reconstruct(tmp_path, ray_local):
    from loger_core.cli.reconstruct import main as reconstruct_main
    from loger_core.io.image_folder_writer import write_image_folder

    frames = render_frames(SynthConfig(frames=8, width=64, height=48, fps=10.0, seed=5), device="cpu")
    seq = write_image_folder(tmp_path / "inputs" / "room", frames, fps=10)
    recon = ["--resolution", "28x28", "--window", "8", "--overlap", "1", "--voxel-size", "0.02"]
    common = ["--model", "tiny", "--synthetic-weights", "--device", "cpu"]
    assert reconstruct_main([str(seq), "--out", str(tmp_path / "ref"), "--quiet", *common, *recon]) == 0
    out = tmp_path / "maps"
    code = batch_main([str(tmp_path / "inputs"), "--out", str(out), "--no-progress", *common,
                       "--reconstruct-args", " ".join(recon)])
    assert code == 0
    (result,) = json.loads((out / "summary.json").read_text())["results"]
    assert result["kind"] == "images" and result["status"] == "ok" and result["frames"] == 8
    assert result["ate_rmse"] is not None
    assert sorted(p.name for p in (out / "room").iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    for name in ("trajectory.tum", "map.ply", "metrics.json"):
        assert (out / "room" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_ctrl_c_keeps_the_running_input_as_a_session_and_the_rerun_resumes_it(tmp_path, ray_local, monkeypatch):
    """A real SIGINT to loger-batch (its own handler, in this process) while an input is being mapped:
    exit 130, the input 'interrupted' with its session; the same command again resumes it to the
    trajectory of an uninterrupted loger-replay."""
    import os
    import signal
    import threading
    import time

    import numpy as np

    from loger_core.io.trajectory import read_tum
    from loger_ros.batch.jobs import SESSION_NAME

    frames = render_frames(SynthConfig(frames=40, width=64, height=48, fps=10.0, seed=31), device="cpu")
    src = tmp_path / "inputs"
    write_rosbag(src / "delta", frames, storage="mcap")
    ref = tmp_path / "reference"
    assert replay_main([str(src / "delta"), "--out", str(ref), "--no-progress", *TOOL_ARGS]) == 0
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "delta.slow").touch()  # 50 ms a frame, frame count in delta.frames: the signal lands mid-input
    monkeypatch.setenv(FAULT_DIR_ENV, str(faults))
    sent = threading.Event()

    def ctrl_c() -> None:
        progress = faults / "delta.frames"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = progress.read_text() if progress.exists() else ""
            if text.isdigit() and int(text) >= 10:
                os.kill(os.getpid(), signal.SIGINT)
                sent.set()
                return
            time.sleep(0.01)

    threading.Thread(target=ctrl_c, daemon=True).start()
    out = tmp_path / "maps"
    assert batch_main([str(src), "--out", str(out), *BATCH_ARGS]) == 130
    assert sent.is_set(), "the input finished before it was interrupted"
    entry = json.loads((out / "manifest.json").read_text())["inputs"]["delta"]
    assert entry["status"] == "interrupted"
    (result,) = json.loads((out / "summary.json").read_text())["results"]
    assert result["status"] == "interrupted" and 10 <= result["frames"] < len(frames)
    assert (out / "delta" / SESSION_NAME).is_file()
    (faults / "delta.slow").unlink()
    assert batch_main([str(src), "--out", str(out), *BATCH_ARGS]) == 0
    assert json.loads((out / "manifest.json").read_text())["inputs"]["delta"]["status"] == "ok"
    got, want = read_tum(out / "delta" / "trajectory.tum"), read_tum(ref / "trajectory.tum")
    assert len(got) == len(want) == len(frames)
    np.testing.assert_array_equal(got.stamps_ns, want.stamps_ns)
    assert np.abs(got.poses[:, :3, 3] - want.poses[:, :3, 3]).max() <= 1e-5
