"""Interruptions: a stream interrupted in the middle of a window, saved and resumed, gives the
uninterrupted run; Ctrl-C / SIGTERM to the CLIs writes the session and the outputs, exits 130,
and ``--resume`` continues to the uninterrupted result (tiny model, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.io.session import Session, load_session, model_identity, save_session
from loger_core.stream import StreamConfig, StreamingReconstructor

H, W = 56, 84
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=5, overlap_size=2, alignment="se3",
                async_windows="off")
    base.update(kw)
    return StreamConfig(**base)


class _InterruptOnce:
    """The model, raising KeyboardInterrupt (what Ctrl-C does to a thread in Python code) in the
    middle of the n-th committed window."""

    def __init__(self, model, at_window: int) -> None:
        self._model, self._left = model, at_window

    def __getattr__(self, name):
        return getattr(self._model, name)

    def forward_window(self, *args, commit=True, **kw):
        if commit:
            self._left -= 1
            if self._left == 0:
                raise KeyboardInterrupt
        return self._model.forward_window(*args, commit=commit, **kw)


def _committed(results):
    return [r for r in results if not r.provisional]


@pytest.mark.parametrize("at_window,resume_async", [(1, "off"), (2, "off"), (2, "on")])
def test_a_window_interrupted_by_ctrl_c_is_saved_and_resumes_to_the_uninterrupted_run(tiny, tmp_path, at_window,
                                                                                     resume_async):
    clip = np.random.default_rng(4).integers(0, 256, size=(14, H, W, 3), dtype=np.uint8)
    stamps = [1000 + 10 * i for i in range(len(clip))]
    whole_rec = StreamingReconstructor(_config(), tiny)
    whole = []
    for img, t in zip(clip, stamps):
        whole += _committed(whole_rec.push(img, t))
    whole += whole_rec.flush()

    rec = StreamingReconstructor(_config(), _InterruptOnce(tiny, at_window))
    first, consumed = [], 0
    for img, t in zip(clip, stamps):
        try:
            first += _committed(rec.push(img, t))
        except KeyboardInterrupt:
            consumed += 1  # the frame is in the stream: its window did not run
            break
        consumed += 1
    assert consumed < len(clip)
    session = Session(model_identity(tiny), rec.session_settings(), {"stream": rec.session_component()})
    path = save_session(tmp_path / "s.safetensors", session)

    resumed = StreamingReconstructor(_config(async_windows=resume_async), tiny)
    resumed.restore_session(load_session(path, model_identity(tiny), None).components["stream"], str(path))
    second = []
    for img, t in zip(clip[consumed:], stamps[consumed:]):
        second += _committed(resumed.push(img, t))
    second += _committed(resumed.drain()) + resumed.flush()
    resumed.close()
    got = first + second
    assert resumed.stats.frames_dropped_error == 0
    assert [r.stamp_ns for r in got] == [r.stamp_ns for r in whole] == stamps
    for a, b in zip(got, whole):
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=TOL, rtol=0)
        np.testing.assert_allclose(a.points, b.points, atol=TOL, rtol=0)


def test_node_interrupted_inside_a_window_saves_on_shutdown_and_resumes_to_one_run(tiny, tmp_path):
    from test_session import _assert_same_map, _feed, _image_msgs, _node, _node_params

    msgs = _image_msgs(13)
    whole = _node(_node_params(tmp_path / "a"), tiny)
    _feed(whole, msgs)
    whole.flush()

    session = tmp_path / "robot" / "session.loger.safetensors"
    params = _node_params(tmp_path / "b", autosave_period_s=3600.0, session_path=str(session))
    first = _node(params, tiny)
    first.reconstructor.model = _InterruptOnce(tiny, at_window=2)  # Ctrl-C lands in the 2nd window's pass
    fed = 0
    with pytest.raises(KeyboardInterrupt):
        for m in msgs:
            fed += 1
            first.on_image(m)
            first.process_all()
    first.stop_intake()
    first.stop(5.0)
    first.finish("finish")  # the node's shutdown: the session is saved before the last window pass
    first.reconstructor.close()

    second = _node(_node_params(tmp_path / "c", resume_session=str(session)), tiny)
    assert second.sessions.resumed_from == session
    _feed(second, msgs[fed:])
    second.flush()
    assert second.reconstructor.stats.frames_dropped_error == 0
    _assert_same_map(whole, second)
    assert len(second.trajectory()) == len(msgs)


# ------------------------------------------------------------------ the CLIs, with a real SIGINT
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_FRAMES = 40
RECON_ARGS = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "--resolution", "56x42", "--window", "5",
              "--overlap", "2", "--quiet"]
REPLAY_ARGS = ["--model", "tiny", "--synthetic-weights", "--device", "cpu", "-p", "input_width:=56",
               "-p", "input_height:=42", "-p", "window_size:=5", "-p", "overlap_size:=2", "-p", "voxel_size:=0.02",
               "--no-progress", "--no-bag"]
MODULES = {"reconstruct": "loger_core.cli.entry", "replay": "loger_ros.entry"}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    from loger_core.io.image_folder_writer import write_image_folder
    from loger_core.synthetic import SynthConfig, render_frames
    from loger_core.synthetic.rosbag_writer import write_rosbag

    root = tmp_path_factory.mktemp("rec")
    frames = render_frames(SynthConfig(frames=N_FRAMES, width=112, height=84, fps=10.0, seed=7), device="cpu")
    return {"reconstruct": write_image_folder(root / "seq", frames, fps=10.0),
            "replay": write_rosbag(root / "bag", frames, storage="mcap")}


def _argv(tool: str, src: Path, out: Path) -> list[str]:
    if tool == "reconstruct":
        return [str(src), "--out", str(out), *RECON_ARGS]
    return [str(src), "-o", str(out), *REPLAY_ARGS]


@pytest.fixture(scope="module")
def uninterrupted(recordings, tmp_path_factory):
    from loger_core.cli.reconstruct import main as recon_main
    from loger_ros.replay import main as replay_main

    root = tmp_path_factory.mktemp("whole")
    assert recon_main(_argv("reconstruct", recordings["reconstruct"], root / "reconstruct")) == 0
    assert replay_main(_argv("replay", recordings["replay"], root / "replay")) == 0
    return root


def _start(tool: str, argv: list[str], progress: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOGER_PROGRESS_FILE": str(progress), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", MODULES[tool], *argv], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(progress: Path, line: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if progress.exists() and line in progress.read_text().splitlines():
            return
        assert proc.poll() is None, f"the tool ended before {line!r}: {proc.communicate()}"
        time.sleep(0.002)
    raise AssertionError(f"no {line!r} in {progress} after {timeout} s")


def _resume(tool: str, src: Path, out: Path, session: Path) -> int:
    from loger_core.cli.reconstruct import main as recon_main
    from loger_ros.replay import main as replay_main

    main = recon_main if tool == "reconstruct" else replay_main
    return main([*_argv(tool, src, out), "--resume", str(session)])


def _assert_equals_uninterrupted(out: Path, whole: Path) -> float:
    from loger_core.io.trajectory import read_tum

    got, want = read_tum(out / "trajectory.tum"), read_tum(whole / "trajectory.tum")
    assert len(got) == len(want) == N_FRAMES
    np.testing.assert_array_equal(got.stamps_ns, want.stamps_ns)
    diff = float(np.abs(got.poses[:, :3, 3] - want.poses[:, :3, 3]).max())
    assert diff <= TOL
    return diff


# Window 5, overlap 2: windows complete at frames 5, 8, 11, ...; the tool stops at the first frame
# boundary after the signal, wherever the signal lands (in a window pass or between frames).
@pytest.mark.parametrize("tool,after", [("reconstruct", 6), ("reconstruct", 11), ("replay", 7), ("replay", 14)])
def test_sigint_writes_session_and_outputs_and_resume_equals_the_uninterrupted_run(
        tool, after, recordings, uninterrupted, tmp_path):
    out, progress = tmp_path / "out", tmp_path / "progress"
    proc = _start(tool, _argv(tool, recordings[tool], out), progress)
    _wait_for(progress, f"frames {after}", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "continue with:" in stderr
    report = json.loads((out / ("run.json" if tool == "reconstruct" else "summary.json")).read_text())
    assert report["interrupted"] is True
    read = report["frames_read"]
    assert after <= read < N_FRAMES
    from loger_core.io.trajectory import read_tum

    assert len(read_tum(out / "trajectory.tum")) == read  # the frames read are all mapped
    assert (out / "map.ply").stat().st_size > 0
    session = out / "session.loger.safetensors"
    assert session.is_file() and not list(out.glob(".*tmp*"))
    assert _resume(tool, recordings[tool], out, session) == 0
    _assert_equals_uninterrupted(out, uninterrupted / tool)


def test_a_second_sigint_during_the_session_write_quits_at_once_leaving_whole_files(
        recordings, uninterrupted, tmp_path):
    from loger_core.io.session import load_session

    out, progress = tmp_path / "out", tmp_path / "progress"
    proc = _start("reconstruct", _argv("reconstruct", recordings["reconstruct"], out), progress)
    _wait_for(progress, "frames 9", proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(progress, "session", proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "again: quitting now" in stderr and "Traceback" not in stderr
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"
    session = out / "session.loger.safetensors"
    if session.exists():  # the write was done when the second signal came: whole, and it resumes
        load_session(session)
        assert _resume("reconstruct", recordings["reconstruct"], out, session) == 0
        _assert_equals_uninterrupted(out, uninterrupted / "reconstruct")
    else:  # cut short: nothing half-written took its place
        assert not (out / "trajectory.tum").exists() and not (out / "run.json").exists()
