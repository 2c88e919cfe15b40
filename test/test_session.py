"""Mapping sessions: a sequence split in two (run, save, fresh objects, resume, run) gives the
uninterrupted run's trajectory and map; bad session files are refused with a specific error;
kill -9 during saving never leaves a file that loads wrong (tiny model, CPU)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from loger_core.mapping.voxel_map import MapConfig, VoxelMap
from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.io.session import (
    SESSION_VERSION, Session, SessionComponent, SessionConfigMismatchError, SessionCorruptError, SessionError,
    SessionModelMismatchError, SessionNotFoundError, SessionStateError, SessionVersionError, load_session,
    model_identity, read_session, restore_voxel_map, save_session, voxel_map_component,
)
from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_ros.conversions import rosbags_factory
from loger_ros.mapping_core import MappingCore
from loger_ros.params import NodeParams

H, W = 56, 84
TOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two intra-op threads on the 2-core CI machine shared with other jobs cost seconds per window.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



def _clip(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=5, overlap_size=2, conf_percentile=20.0,
                alignment="se3", async_windows="off")
    base.update(kw)
    return StreamConfig(**base)


def _stamp(i: int) -> int:
    return 1000 + 10 * i


def _push_all(rec, clip, start, stop, out):
    for i in range(start, stop):
        out += [r for r in rec.push(clip[i], _stamp(i)) if not r.provisional]
        out += [r for r in rec.poll() if not r.provisional]


def _stream_session(rec) -> Session:
    out = rec.drain()
    assert not [r for r in out if not r.provisional]
    return Session(model_identity(rec.model), rec.session_settings(), {"stream": rec.session_component()})


def _assert_same_results(a, b):
    assert [r.index for r in a] == [r.index for r in b]
    assert [r.stamp_ns for r in a] == [r.stamp_ns for r in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.T_world_cam, y.T_world_cam, atol=TOL, rtol=0)
        assert x.points.shape == y.points.shape
        np.testing.assert_allclose(x.points, y.points, atol=TOL, rtol=0)
        np.testing.assert_array_equal(x.colors, y.colors)
        assert x.window_index == y.window_index
        assert x.descriptor is not None  # the place descriptor too: pending frames carry it through the session
        np.testing.assert_allclose(x.descriptor, y.descriptor, atol=TOL, rtol=0)


@pytest.mark.parametrize("split,async_a,async_b", [(7, "off", "off"), (11, "off", "off"), (3, "off", "off"),
                                                    (17, "off", "off"), (9, "on", "off"), (8, "off", "on")])
def test_stream_split_equals_uninterrupted(tiny, tmp_path, split, async_a, async_b):
    clip = _clip(17)
    whole: list = []
    rec = StreamingReconstructor(_config(), tiny)
    _push_all(rec, clip, 0, len(clip), whole)
    whole += rec.flush()

    first: list = []
    rec1 = StreamingReconstructor(_config(async_windows=async_a), tiny)
    _push_all(rec1, clip, 0, split, first)
    first += [r for r in rec1.drain() if not r.provisional]
    path = save_session(tmp_path / "s.safetensors", _stream_session(rec1))
    rec1.close()
    del rec1

    session = load_session(path, model_identity(tiny), None)
    rec2 = StreamingReconstructor(_config(async_windows=async_b), tiny)
    rec2.restore_session(session.components["stream"], str(path))
    second: list = []
    _push_all(rec2, clip, split, len(clip), second)
    second += rec2.flush()
    rec2.close()
    _assert_same_results(first + second, whole)


# ------------------------------------------------------------------ node core
F = rosbags_factory("ros2_humble")
T0 = 1_700_000_000_000_000_000


class ListLogger:
    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {k: [] for k in ("debug", "info", "warning", "error")}

    def __getattr__(self, level):
        if level in ("debug", "info", "warning", "error"):
            return self.lines[level].append
        raise AttributeError(level)


def _image_msgs(n: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        stamp_ns = T0 + i * 100_000_000
        hdr = F.make("std_msgs/msg/Header", stamp=F.make("builtin_interfaces/msg/Time", sec=stamp_ns // 10**9,
                                                        nanosec=stamp_ns % 10**9), frame_id="cam")
        rgb = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        out.append(F.make("sensor_msgs/msg/Image", header=hdr, height=24, width=32, encoding="rgb8", is_bigendian=0,
                          step=96, data=rgb.reshape(-1)))
    return out


def _node_params(tmp_path, **kw) -> NodeParams:
    # backend_cpu_share 1: a live back end that rests on a CPU network (auto share) tracks frames by
    # the clock, so two runs differ by scheduling; these tests compare sessions, not schedulers.
    base = dict(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28, input_height=28,
                window_size=4, overlap_size=1, provisional_every=0, queue_size=64, output_dir=str(tmp_path),
                voxel_size=0.02, async_windows="off", backend_cpu_share=1.0)
    base.update(kw)
    return NodeParams(**base)


def _node(params, model, log=None, clock=None) -> MappingCore:
    stream = StreamingReconstructor(params.stream_config(), model=model)
    kw = {"monotonic_ns": clock} if clock is not None else {}
    return MappingCore(params, F, reconstructor=stream, logger=log if log is not None else ListLogger(), **kw)


def _feed(core, msgs):
    for m in msgs:
        core.on_image(m)
        core.process_all()


def _assert_same_map(a: MappingCore, b: MappingCore):
    ta, tb = a.trajectory("camera"), b.trajectory("camera")
    np.testing.assert_array_equal(ta.stamps_ns, tb.stamps_ns)
    np.testing.assert_allclose(ta.poses, tb.poses, atol=TOL, rtol=0)
    pa, ca, fa = a.map_snapshot()
    pb, cb, fb = b.map_snapshot()
    assert len(pa) == len(pb) > 0
    np.testing.assert_allclose(pa, pb, atol=TOL, rtol=0)
    np.testing.assert_array_equal(ca, cb)
    np.testing.assert_allclose(fa, fb, atol=TOL, rtol=0)
    # The Nav2 grid resumes too: the same evidence as one run (its session part).
    ga, gb = a.grid.grid.state(), b.grid.grid.state()
    assert ga["updates"] == gb["updates"] > 0 and ga["origin_cell"] == gb["origin_cell"]
    np.testing.assert_array_equal(ga["seen"], gb["seen"])
    np.testing.assert_allclose(ga["log_odds"], gb["log_odds"], atol=TOL, rtol=0)


@pytest.mark.parametrize("split,provisional_every,async_windows", [(6, 0, "off"), (9, 2, "off"), (7, 0, "on")])
def test_node_restart_with_resume_equals_one_run(tiny, tmp_path, split, provisional_every, async_windows):
    msgs = _image_msgs(15)
    kw = dict(provisional_every=provisional_every, async_windows=async_windows)
    whole = _node(_node_params(tmp_path / "a", **kw), tiny)
    _feed(whole, msgs)
    whole.flush()

    session = tmp_path / "robot" / "session.loger.safetensors"
    first = _node(_node_params(tmp_path / "b", autosave_period_s=3600.0, session_path=str(session), **kw), tiny)
    _feed(first, msgs[:split])
    first.stop_intake()
    first.stop(5.0)
    first.finish("finish")  # shutdown: the session is saved before the last window pass
    first.reconstructor.close()
    assert session.is_file()

    log = ListLogger()
    second = _node(_node_params(tmp_path / "c", autosave_period_s=3600.0, session_path=str(session),
                                resume_session=str(session), **kw), tiny, log)
    assert second.sessions.resumed_from == session and any("resumed" in line for line in log.lines["info"])
    assert second.sessions.target == session  # it continues the session it resumed
    _feed(second, msgs)  # the whole bag again: frames the session already has are dropped as old
    second.flush()
    second.reconstructor.close()
    whole.reconstructor.close()
    assert second.counters.dropped["out_of_order"] == split
    _assert_same_map(whole, second)
    assert len(second.trajectory()) == len(msgs)


def test_node_autosaves_every_period_and_the_file_resumes(tiny, tmp_path):
    now = [0]
    clock = lambda: now[0]  # noqa: E731
    session = tmp_path / "s.loger.safetensors"
    params = _node_params(tmp_path, autosave_period_s=1.0, session_path=str(session), async_windows="on")
    core = _node(params, tiny, clock=clock)
    msgs = _image_msgs(12)
    saved_counts = []
    for m in msgs:
        now[0] += 400_000_000  # 0.4 s per frame: an autosave every third frame
        _feed(core, [m])
        core.sessions.wait()
        if core.sessions.last_saved is not None:
            saved_counts.append(core.sessions.last_saved.frames)
    assert session.is_file() and len(set(saved_counts)) >= 3
    loaded = read_session(session)
    # The autosave holds what was committed when it was taken (windows in flight drained first).
    stamps = loaded.components["trajectory"].tensors["stamps_ns"].numpy()
    assert len(stamps) == saved_counts[-1] and len(stamps) > 0
    np.testing.assert_array_equal(stamps, core.trajectory().stamps_ns[: len(stamps)])
    core.reconstructor.close()


def _good_session_file(tiny, tmp_path) -> Path:
    path = tmp_path / "robot.loger.safetensors"
    core = _node(_node_params(tmp_path / "first"), tiny)
    _feed(core, _image_msgs(6))
    _, saved = core.save_session(str(path))
    assert saved is not None and saved.path == path and saved.frames > 0
    return path


def _other_tiny():
    from dataclasses import replace

    from loger_core.model.config import get_config

    return fill_deterministic_(build_model(replace(get_config("tiny"), ttt_base_lr=0.02), device="meta"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_model", "other_window"])
def test_node_refuses_a_bad_session_starts_fresh_and_keeps_the_file(tiny, tmp_path, damage):
    path = _good_session_file(tiny, tmp_path)
    model, kw = tiny, {}
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "other_model":
        model = _other_tiny()
    else:
        kw = {"window_size": 5}
    before = path.read_bytes()
    log = ListLogger()
    params = _node_params(tmp_path / "second", autosave_period_s=60.0, session_path=str(path), resume_session=str(path),
                          **kw)
    core = _node(params, model, log)
    reason = {"garbage": "truncated or garbage", "truncated": "truncated or garbage",
              "other_model": "ttt_base_lr", "other_window": "stream.window_size"}[damage]
    errors = [line for line in log.lines["error"] if "not resuming" in line]
    assert len(errors) == 1 and str(path) in errors[0] and reason in errors[0], log.lines["error"]
    assert core.sessions.resumed_from is None and len(core.trajectory()) == 0 and len(core.fusion) == 0
    # A fresh map: its autosaves go next to the refused file, which stays as it was.
    assert core.sessions.target.name.startswith(path.name + ".new-")
    _feed(core, _image_msgs(6, seed=9))
    core.stop_intake()
    core.finish("finish")
    assert path.read_bytes() == before
    assert read_session(core.sessions.target).components["trajectory"].meta["count"] > 0


# ------------------------------------------------------------------ refusals of the file reader
def _small_session(version: int = SESSION_VERSION, identity=None, fill: float = 1.0, n: int = 1000) -> Session:
    comp = SessionComponent({"x": torch.full((n,), fill), "k": torch.arange(5)}, {"fill": fill})
    identity = identity if identity is not None else model_identity(torch.nn.Linear(2, 2))
    return Session(identity, {"stream.window_size": 5}, {"part": comp}, version=version)


def test_reader_refuses_missing_garbage_truncated_damaged_version_model_and_settings(tmp_path, tiny):
    good = save_session(tmp_path / "good.safetensors", _small_session())
    assert read_session(good).components["part"].meta == {"fill": 1.0}
    data = good.read_bytes()

    def refused(path, cls, text, **kw):
        with pytest.raises(cls) as info:
            load_session(path, **kw)
        assert isinstance(info.value, SessionError) and str(path) in str(info.value) and text in str(info.value)

    refused(tmp_path / "absent.safetensors", SessionNotFoundError, "does not exist")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    refused(garbage, SessionCorruptError, "truncated or garbage")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    refused(empty, SessionCorruptError, "truncated or garbage")
    for cut in (len(data) - 1, len(data) // 2, 20, 3):
        cut_path = tmp_path / f"cut{cut}.safetensors"
        cut_path.write_bytes(data[:cut])
        refused(cut_path, SessionCorruptError, "truncated or garbage")
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    refused(flipped, SessionCorruptError, "checksum")
    from safetensors.torch import save_file

    checkpoint = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3)}, str(checkpoint))
    refused(checkpoint, SessionCorruptError, "not a LoGeR session")
    future = save_session(tmp_path / "v2.safetensors", _small_session(version=SESSION_VERSION + 1))
    refused(future, SessionVersionError, f"format version {SESSION_VERSION + 1}")
    made_by_tiny = save_session(tmp_path / "tiny.safetensors", _small_session(identity=model_identity(tiny)))
    refused(made_by_tiny, SessionModelMismatchError, "ttt_base_lr", identity=model_identity(_other_tiny()))
    other_weights = fill_deterministic_(build_model("tiny", device="meta"), rule=2)
    refused(made_by_tiny, SessionModelMismatchError, "different weights", identity=model_identity(other_weights))
    refused(made_by_tiny, SessionConfigMismatchError, "stream.window_size", settings={"stream.window_size": 16})
    load_session(made_by_tiny, identity=model_identity(tiny), settings={"stream.window_size": 5, "other": 1})


def test_capture_refuses_a_finished_stream(tiny):
    rec = StreamingReconstructor(_config(), tiny)
    for i, img in enumerate(_clip(3)):
        rec.push(img, _stamp(i))
    rec.flush()
    with pytest.raises(SessionStateError, match="flush"):
        rec.session_component()


def test_voxel_map_round_trip_merges_later_frames_identically():
    rng = np.random.default_rng(1)
    frames = [(rng.normal(size=(3000, 3)).astype(np.float32), rng.integers(0, 255, (3000, 3), dtype=np.uint8),
               rng.random(3000).astype(np.float32)) for _ in range(6)]
    cfg = MapConfig(voxel_size=0.05, max_points=20_000)
    a, b = VoxelMap(cfg), VoxelMap(cfg)
    for f in frames[:3]:
        a.insert(*f)
    restore_voxel_map(b, voxel_map_component(a))
    for f in frames[3:]:
        a.insert(*f)
        b.insert(*f)
    for x, y in zip(a.snapshot(), b.snapshot()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.hit_counts(), b.hit_counts())
    assert a.stats() == b.stats()
    with pytest.raises(SessionConfigMismatchError, match="voxel size"):
        restore_voxel_map(VoxelMap(MapConfig(voxel_size=0.1)), voxel_map_component(a))


# ------------------------------------------------------------------ kill -9 while saving
def _writer(path: str, sessions: list) -> None:
    k = 0
    while True:
        save_session(path, sessions[k % len(sessions)])
        k += 1


def test_kill_9_while_saving_never_leaves_a_session_that_loads_wrong(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the child shares the parent's imports: no torch import per kill
    sessions = [_small_session(fill=float(g), n=2_000_000) for g in (1, 2, 3)]  # 8 MB of tensors each
    path = tmp_path / "session.loger.safetensors"
    save_session(path, sessions[0])
    rng = np.random.default_rng(0)
    leftovers = 0
    for _ in range(30):
        proc = ctx.Process(target=_writer, args=(str(path), sessions), daemon=True)
        proc.start()
        time.sleep(float(rng.uniform(0.0, 0.15)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        assert proc.exitcode == -signal.SIGKILL
        # The session is always there and always one of the complete versions.
        loaded = read_session(path)
        fill = loaded.components["part"].meta["fill"]
        assert fill in (1.0, 2.0, 3.0)
        assert torch.equal(loaded.components["part"].tensors["x"], torch.full((2_000_000,), fill))
        # What a killed writer left behind (its temporary file) is refused cleanly, never half-loaded.
        for other in tmp_path.rglob("*"):
            if other == path or other.is_dir():
                continue
            leftovers += 1
            try:
                got = read_session(other)
            except SessionError:
                continue
            assert torch.equal(got.components["part"].tensors["x"], torch.full((2_000_000,), got.components["part"].meta["fill"]))
    assert leftovers > 0, "no kill landed during a write: the test did not test anything"
    # The next save clears the dead writers' temporary files.
    save_session(path, sessions[1])
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# ------------------------------------------------------------------ replay and reconstruct CLIs
def _assert_same_outputs(a: Path, b: Path) -> None:
    """Two output folders hold the same trajectory.tum and map.ply (to TOL; colours exactly)."""
    from loger_core.io.trajectory import read_tum
    from loger_core.mapping.voxel_map import load_ply

    ta, tb = read_tum(a / "trajectory.tum"), read_tum(b / "trajectory.tum")
    np.testing.assert_array_equal(ta.stamps_ns, tb.stamps_ns)
    np.testing.assert_allclose(ta.poses, tb.poses, atol=TOL, rtol=0)
    (pa, ca, _), (pb, cb, _) = load_ply(a / "map.ply"), load_ply(b / "map.ply")
    assert len(pa) == len(pb) > 0
    np.testing.assert_allclose(pa, pb, atol=TOL, rtol=0)
    np.testing.assert_array_equal(ca, cb)


def test_replay_of_a_bag_split_in_two_equals_one_replay(tiny, tmp_path):
    from loger_core.synthetic import SynthConfig, render_frames
    from loger_core.synthetic.rosbag_writer import write_rosbag
    from loger_ros.replay import ReplayError, ReplayOptions, run_replay

    frames = render_frames(SynthConfig(frames=13, width=64, height=48, fps=10.0, seed=5), device="cpu")
    bag = write_rosbag(tmp_path / "in", frames, storage="mcap")
    params = _node_params(tmp_path, window_size=4, overlap_size=1)

    def replay(out, **kw):
        stream = StreamingReconstructor(params.stream_config(), model=tiny)
        return run_replay(ReplayOptions(bag=bag, out_dir=out, params=params, progress=False, write_bag=False, **kw),
                          reconstructor=stream)

    replay(tmp_path / "whole")
    session = tmp_path / "part1.loger.safetensors"
    first = replay(tmp_path / "part1", max_frames=6, session_out=session)
    assert first.outputs["session"] == str(session)
    second = replay(tmp_path / "part2", resume=session)  # the same bag: its first 6 frames are skipped
    assert second.frames_in_session == 6 and second.frames_read == 7
    _assert_same_outputs(tmp_path / "whole", tmp_path / "part2")
    garbage = tmp_path / "garbage.loger.safetensors"
    garbage.write_bytes(b"nonsense")
    with pytest.raises(ReplayError, match="truncated or garbage"):
        replay(tmp_path / "bad", resume=garbage)


def test_reconstruct_cli_split_in_two_equals_one_run(tmp_path, capsys):
    from loger_core.cli.reconstruct import main
    from loger_core.io.image_folder_writer import write_image_folder
    from loger_core.synthetic import SynthConfig, render_frames

    frames = render_frames(SynthConfig(scene="room", frames=13, width=112, height=84, fps=10, seed=2), device="cpu")
    seq = write_image_folder(tmp_path / "seq", frames, fps=10)
    fast = [str(seq), "--resolution", "84x56", "--window", "4", "--overlap", "1", "--device", "cpu", "--quiet",
            "--synthetic-weights"]
    assert main([*fast, "--out", str(tmp_path / "whole")]) == 0
    session = tmp_path / "half.loger.safetensors"
    assert main([*fast, "--out", str(tmp_path / "half"), "--max-frames", "6", "--session-out", str(session)]) == 0
    assert main([*fast, "--out", str(tmp_path / "rest"), "--resume", str(session)]) == 0
    run = json.loads((tmp_path / "rest" / "run.json").read_text())
    assert run["frames_in_resumed_session"] == 6 and run["frames_read"] == 7
    _assert_same_outputs(tmp_path / "whole", tmp_path / "rest")
    capsys.readouterr()
    fast[fast.index("--window") + 1] = "5"
    assert main([*fast, "--out", str(tmp_path / "bad"), "--resume", str(session)]) == 2
    err = capsys.readouterr().err
    assert str(session) in err and "stream.window_size" in err


class _CounterPart:
    """A stand-in for another stateful part of the node (e.g. a 2D grid)."""

    def __init__(self, value: int = 0) -> None:
        self.value, self.resets = value, 0

    def capture(self) -> SessionComponent:
        return SessionComponent({"value": torch.tensor([self.value])}, {"kind": "counter"})

    def restore(self, component: SessionComponent, path) -> None:
        self.value = int(component.tensors["value"][0])

    def reset(self) -> None:
        self.value, self.resets = 0, self.resets + 1


def test_a_registered_part_is_saved_and_restored_and_an_older_session_without_it_still_resumes(tiny, tmp_path):
    session = tmp_path / "s.loger.safetensors"
    core = _node(_node_params(tmp_path / "a"), tiny)
    core.session_parts["grid"] = _CounterPart(41)
    _feed(core, _image_msgs(6))
    assert core.save_session(str(session))[1] is not None
    assert read_session(session).components["grid"].meta == {"kind": "counter"}

    resumed = _node(_node_params(tmp_path / "b"), tiny)
    resumed.session_parts["grid"] = _CounterPart()
    assert resumed.resume_session(str(session))
    assert resumed.sessions.resumed_from == session and resumed.session_parts["grid"].value == 41
    assert len(resumed.trajectory()) == len(core.trajectory())
    # A session written before the part existed: the rest resumes, the part starts empty (logged).
    older = tmp_path / "older.loger.safetensors"
    del core.session_parts["grid"]
    core.save_session(str(older))
    log = ListLogger()
    resumed = _node(_node_params(tmp_path / "c"), tiny, log)
    resumed.session_parts["grid"] = _CounterPart()
    assert resumed.resume_session(str(older)) and resumed.session_parts["grid"].value == 0
    assert any("no 'grid' component" in line for line in log.lines["warning"])
    # A part that refuses the session resets every part (here: the grid's) and the core starts fresh.
    refusing = _node(_node_params(tmp_path / "d"), tiny, ListLogger())
    grid = _CounterPart()
    refusing.session_parts["grid"] = grid

    def refuse(component, path):
        grid.value = 7  # a part that changed something before refusing
        raise SessionConfigMismatchError(path, "grid resolution differs")

    grid.restore = refuse
    assert not refusing.resume_session(str(session))
    assert "grid resolution differs" in str(refusing.sessions.resume_error)
    assert grid.value == 0 and grid.resets == 1 and len(refusing.trajectory()) == 0 and len(refusing.fusion) == 0
    assert refusing.counters.committed == 0 and refusing.reconstructor.memory_state is None
    _feed(refusing, _image_msgs(5))  # the fresh map works
    assert len(refusing.trajectory()) > 0
