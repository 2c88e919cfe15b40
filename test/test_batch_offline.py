"""loger-batch without Ray: input discovery and naming, job keys, the manifest, the message when Ray
is missing, and that nothing but the batch runner imports Ray."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loger_ros.batch import BatchInputError, Manifest, collect_inputs, input_fingerprint, job_key
from loger_ros.batch import cli

REPO = Path(__file__).resolve().parents[1]


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_collect_inputs_kinds_names_and_globs(tmp_path):
    _touch(tmp_path / "site_a" / "run" / "metadata.yaml")
    _touch(tmp_path / "site_a" / "run" / "run_0.mcap")
    _touch(tmp_path / "site_b" / "run.bag")
    _touch(tmp_path / "site_b" / "office" / "rgb" / "000000.png")
    _touch(tmp_path / "site_b" / "office" / "depth" / "000000.png")
    _touch(tmp_path / "site_b" / "drive.mp4")
    _touch(tmp_path / "site_b" / "notes.txt")
    found = collect_inputs([str(tmp_path)])
    kinds = {(i.path.relative_to(tmp_path).as_posix(), i.kind) for i in found}
    assert kinds == {("site_a/run", "bag"), ("site_b/run.bag", "bag"), ("site_b/office", "images"),
                     ("site_b/drive.mp4", "video")}
    names = [i.name for i in found]
    assert len(set(names)) == len(names) and "office" in names and "drive" in names
    # The two recordings called 'run' get distinct names that do not depend on the other inputs.
    runs = sorted(n for n in names if n.startswith("run-"))
    assert len(runs) == 2
    # A storage file inside its recording is that recording; a glob and a repeat add nothing.
    again = collect_inputs([str(tmp_path / "site_a" / "run" / "run_0.mcap"), str(tmp_path / "site_a" / "*"),
                            str(tmp_path / "site_a")])
    assert [(i.path, i.kind, i.name) for i in again] == [((tmp_path / "site_a" / "run").resolve(), "bag", "run")]


@pytest.mark.parametrize("bad, message", [("missing", "does not exist"), ("*.nothing", "matches nothing"),
                                          ("notes.txt", "is not a bag"), ("empty", "no bag, image folder or video")])
def test_collect_inputs_refuses_what_it_cannot_map(tmp_path, bad, message):
    _touch(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BatchInputError, match=message):
        collect_inputs([str(tmp_path / bad)])


def test_job_key_follows_content_parameters_and_model(tmp_path):
    bag = _touch(tmp_path / "run" / "run_0.mcap", b"abc")
    fp = input_fingerprint(bag.parent)
    base = job_key(bag.parent, fp, "loger-replay", {"window": 8}, "tiny:synthetic")
    assert base == job_key(bag.parent, input_fingerprint(bag.parent), "loger-replay", {"window": 8}, "tiny:synthetic")
    assert base != job_key(bag.parent, fp, "loger-replay", {"window": 16}, "tiny:synthetic")
    assert base != job_key(bag.parent, fp, "loger-replay", {"window": 8}, "tiny:0123")
    os.utime(bag, ns=(1, 1))  # re-recorded in place: same size, other mtime
    assert job_key(bag.parent, input_fingerprint(bag.parent), "loger-replay", {"window": 8}, "tiny:synthetic") != base
    bag.write_bytes(b"abcd")
    assert input_fingerprint(bag.parent)["size"] == 4


def test_manifest_done_needs_ok_current_key_and_output(tmp_path):
    m = Manifest.load(tmp_path)
    m.record("a", {"key": "k1", "status": "ok"})
    m.record("b", {"key": "k2", "status": "failed"})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    m = Manifest.load(tmp_path)
    assert m.is_done("a", "k1") and not m.is_done("a", "k9") and not m.is_done("b", "k2") and not m.is_done("c", "k1")
    (tmp_path / "a").rmdir()  # outputs deleted by hand: mapped again
    assert not m.is_done("a", "k1")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        Manifest.load(tmp_path)


def test_without_ray_loger_batch_says_how_to_install(monkeypatch, capsys, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert cli.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 3
    err = capsys.readouterr().err
    assert "pip install '.[batch]'" in err and not (tmp_path / "out").exists()


def test_nothing_but_the_batch_runner_imports_ray():
    code = ("import sys, loger_core, loger_core.cli.reconstruct, loger_core.stream, loger_ros.replay, "
            "loger_ros.params, loger_ros.mapping_core, loger_core.pipeline.core, loger_ros.batch, loger_ros.batch.cli, loger_ros.batch.runner; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_run_job_in_one_process_loads_the_model_once_and_leaves_no_threads(tmp_path):
    """What a Ray worker does for each of its inputs, here without Ray: the model comes from the
    process cache, and no per-input thread (window worker, preprocessing pool) outlives its job."""
    import threading

    from loger_core.stream.model_loading import clear_model_cache, model_cache_loads
    from loger_core.synthetic import SynthConfig, render_frames
    from loger_core.synthetic.rosbag_writer import write_rosbag
    from loger_ros.batch import JobSpec, run_job
    from loger_ros.batch.jobs import PARTIAL_DIR

    frames = render_frames(SynthConfig(frames=6, width=64, height=48, fps=10.0, seed=4), device="cpu")
    write_rosbag(tmp_path / "in" / "one", frames, storage="mcap")
    write_rosbag(tmp_path / "in" / "two", frames, storage="sqlite3")
    argv = ("--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=28", "-p",
            "input_height:=28", "-p", "window_size:=4", "-p", "overlap_size:=1", "-p", "async_windows:='on'",
            "-p", "preprocess_threads:=1", "--no-bag")
    clear_model_cache()
    loads = model_cache_loads()
    before = set(threading.enumerate())  # other tests' leftovers are not this job's
    results = [run_job(JobSpec(item, str(tmp_path / "out"), argv, "key")) for item in collect_inputs([str(tmp_path / "in")])]
    assert [(r.name, r.status, r.frames) for r in results] == [("one", "ok", 6), ("two", "ok", 6)]
    assert [r.model_loaded for r in results] == [True, False] and model_cache_loads() == loads + 1
    assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith("loger-")]  # windows, preprocessing
    for r in results:
        assert {p.name for p in Path(r.output).iterdir()} >= {"trajectory.tum", "map.ply", "summary.json"}
    assert not (tmp_path / "out" / PARTIAL_DIR).exists() or not any((tmp_path / "out" / PARTIAL_DIR).iterdir())
    # A bad option is a failed job with the reason, not an exception.
    bad = run_job(JobSpec(collect_inputs([str(tmp_path / "in" / "one")])[0], str(tmp_path / "bad"), ("--no-such",), "k"))
    assert bad.status == "failed" and "--no-such" in bad.error and not (tmp_path / "bad" / "one").exists()


def test_setup_declares_the_batch_extra_and_console_script():
    import ast
    import re

    setup = ast.parse((REPO / "setup.py").read_text())
    keywords = {k.arg: k.value for c in ast.walk(setup) if isinstance(c, ast.Call)
                and getattr(c.func, "id", None) == "setup" for k in c.keywords}
    extras = ast.literal_eval(keywords["extras_require"])
    assert [r for r in extras["batch"] if r.startswith("ray")]
    assert not [r for r in ast.literal_eval(keywords["install_requires"]) if r.startswith("ray")]  # optional
    scripts = ast.literal_eval(keywords["entry_points"])["console_scripts"]
    assert "loger-batch = loger_ros.batch.cli:main" in scripts
    assert re.search(r"^ray==[\d.]+$", (REPO / "requirements-test.txt").read_text(), re.M)
