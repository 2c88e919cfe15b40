"""The live back end yields the cores: with ``cpu_share`` below 1 its thread rests in proportion to the
work it just did, and frames arriving meanwhile are recorded untracked (every frame still gets a pose).
Offline (``max_queue`` 0) every frame is tracked whatever the share."""
from __future__ import annotations

import numpy as np
import pytest

from loger_core.backend import BackendConfig, BackendConsumer, GeometricBackend
from loger_core.backend.config import CPU_NETWORK_SHARE, BackendConfigError, resolved_cpu_share
from loger_core.synthetic import SynthConfig, render_frames
from test_backend_pipeline import _inputs


@pytest.fixture(scope="module")
def inputs():
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=24, width=160, height=120,
                                       fps=15, seed=5013), device="cpu")
    return _inputs(frames, np.stack([f.T_world_cam for f in frames]))


def _feed_after_first(inputs, cfg: BackendConfig, share: float) -> GeometricBackend:
    """The first frame alone (the worker works, then rests), then the rest at once."""
    be = GeometricBackend(cfg, cpu_share=share)
    try:
        be.submit(inputs[0])
        assert be.finish(30.0)
        for fi in inputs[1:]:
            be.submit(fi)
        assert be.finish(60.0)
    finally:
        be.close()
    return be


def test_a_resting_worker_records_frames_untracked_and_still_poses_them(inputs):
    cfg = BackendConfig(threaded=True, max_queue=1000, loop_closure=False)
    # Share 0.001: after a frame that took t the worker rests 999 t (seconds, for any t of a few ms),
    # far longer than handing 23 frames over takes: all of them arrive while it rests.
    lazy = _feed_after_first(inputs, cfg, share=0.001)
    stats = lazy.stats()
    assert stats["frames"] == len(inputs)
    assert stats["frames_skipped"] == len(inputs) - 1
    stamps, poses = lazy.poses()
    assert list(stamps) == [fi.stamp_ns for fi in inputs]  # untracked frames still have poses
    assert np.isfinite(poses).all()
    # No limit: every frame is tracked.
    greedy = _feed_after_first(inputs, cfg, share=1.0).stats()
    assert greedy["frames_skipped"] == 0
    assert greedy["keyframes"] > stats["keyframes"]


def test_offline_tracks_every_frame_whatever_the_share(inputs):
    be = _feed_after_first(inputs, BackendConfig(threaded=True, max_queue=0, loop_closure=False), share=0.001)
    assert be.stats()["frames_skipped"] == 0


def test_auto_share_yields_to_a_network_on_the_cpu_only():
    auto = BackendConfig()
    assert auto.cpu_share == 0.0
    assert resolved_cpu_share(auto, network_on_cpu=True) == CPU_NETWORK_SHARE < 1.0
    assert resolved_cpu_share(auto, network_on_cpu=False) == 1.0
    assert resolved_cpu_share(BackendConfig(cpu_share=0.5), network_on_cpu=False) == 0.5
    consumer = BackendConsumer(BackendConfig(threaded=False), network_on_cpu=True)
    try:
        assert consumer.backend.cpu_share == CPU_NETWORK_SHARE
    finally:
        consumer.close()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(BackendConfigError, match="cpu_share"):
            BackendConfig(cpu_share=bad)
