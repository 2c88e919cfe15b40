"""Mapping sessions: a sequence split in two (run, save, fresh objects, resume, run) gives the
uninterrupted run's trajectory and map; bad session files are refused with a specific error;
kill -9 during saving never leaves a file that loads wrong (tiny model, CPU)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from loger_core.map import MapConfig, VoxelMap
from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.session import (
    SESSION_VERSION, Session, SessionComponent, SessionConfigMismatchError, SessionCorruptError, SessionError,
    SessionModelMismatchError, SessionNotFoundError, SessionStateError, SessionVersionError, load_session,
    model_identity, read_session, restore_voxel_map, save_session, voxel_map_component,
)
from loger_core.stream import StreamConfig, StreamingReconstructor

H, W = 56, 84
TOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    return fill_deterministic_(build_model("tiny", device="meta"))


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


@pytest.mark.parametrize("split,async_a,async_b", [(7, "off", "off"), (11, "off", "off"), (3, "off", "off"),
                                                    (9, "on", "off"), (8, "off", "on")])
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
from loger_ros.conversions import rosbags_factory  # noqa: E402
from loger_ros.core import MappingCore  # noqa: E402
from loger_ros.params import NodeParams  # noqa: E402

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
    base = dict(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28, input_height=28,
                window_size=4, overlap_size=1, provisional_every=0, queue_size=64, output_dir=str(tmp_path),
                voxel_size=0.02, async_windows="off")
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
