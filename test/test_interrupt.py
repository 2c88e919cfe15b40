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
