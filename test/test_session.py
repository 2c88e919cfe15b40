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
