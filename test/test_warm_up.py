"""Warm-up before the first camera frame (loger_core.stream.warm_up and MappingCore.warm_up)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import (StreamConfig, StreamingReconstructor, StreamInputError, warm_up, warm_up_frames,
                               warm_up_wanted)


def _model():
    return fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()


def _config(**kw):
    base = dict(model="tiny", device="cpu", resolution=(28, 28), window_size=4, overlap_size=1, provisional_every=1,
                provisional_budget=1.0)
    base.update(kw)
    return StreamConfig(**base)


def _frames(n, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(n)]


def _committed_poses(stream, frames):
    out = []
    for i, rgb in enumerate(frames):
        out += stream.push(rgb, (i + 1) * 10**8)
    out += stream.flush()
    stream.close()
    return {r.index: r.T_world_cam for r in out if not r.provisional}


def test_frames_fill_four_whole_windows_and_the_mode_rule():
    assert warm_up_frames(32, 3) == 32 + 3 * 29 and warm_up_frames(4, 1) == 13
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not warm_up_wanted("auto", cpu) and warm_up_wanted("auto", cuda)
    assert warm_up_wanted("on", cpu) and not warm_up_wanted("off", cuda)
    with pytest.raises(StreamInputError, match="'auto', 'on' or 'off'"):
        warm_up_wanted("yes", cpu)


def test_warm_up_runs_the_windows_and_leaves_no_state_behind():
    frames = _frames(11)
    reference = _committed_poses(StreamingReconstructor(_config(), model=_model()), frames)

    model = _model()
    report = warm_up(_config(), model)
    assert report.frames == 13 and report.windows == 4 and report.provisional_passes > 0 and report.seconds > 0
    after = _committed_poses(StreamingReconstructor(_config(), model=model), frames)
    assert sorted(after) == sorted(reference) == list(range(11))
    for i in reference:  # same model, same frames: a warm-up must not change what the live stream computes
        np.testing.assert_array_equal(after[i], reference[i])


def test_warm_up_needs_a_size_when_the_resolution_comes_from_the_camera():
    with pytest.raises(StreamInputError, match="image_size"):
        warm_up(_config(resolution=None), _model())
    report = warm_up(_config(resolution=None, provisional_every=0), _model(), image_size=(56, 42))
    assert report.windows == 4 and report.provisional_passes == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: graph capture needs a GPU")
def test_after_a_warm_up_the_live_stream_replays_its_windows_from_graphs():
    model = _model().to("cuda")
    cfg = _config(device="cuda", dtype="bfloat16", provisional_every=0, async_windows="on", cuda_graphs="on")
    report = warm_up(cfg, model)
    assert report.window_graph_replays >= 1  # captured during the warm-up
    stream = StreamingReconstructor(cfg, model=model)
    for i, rgb in enumerate(_frames(7)):  # first window + one steady window
        stream.push(rgb, (i + 1) * 10**8)
    stream.drain(60.0)
    stream.close()
    assert stream.stats.window_graph_replays == 1  # the live stream's first steady window is a replay


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA only: graph capture needs a GPU")
def test_after_a_warm_up_the_live_passes_replay_graphs_of_compiled_blocks():
    from loger_core.model.fast_paths import FastPathConfig, enable_fast_paths

    model = enable_fast_paths(_model().to("cuda"), FastPathConfig())
    cfg = _config(device="cuda", dtype="bfloat16", provisional_every=2, async_windows="on", cuda_graphs="on")
    report = warm_up(cfg, model)
    assert report.compiled_pass_graphs >= 1  # the warm-up compiled the pass shape
    stream = StreamingReconstructor(cfg, model=model)
    provisional = []
    for i, rgb in enumerate(_frames(13)):
        provisional += [r for r in stream.push(rgb, (i + 1) * 10**8) if r.provisional]
        stream.drain(60.0)  # the worker idles: every due pass may capture
    stream.close()
    graphs = stream.provisional_graphs
    assert provisional and graphs.compiled_captures >= 1 and graphs.replays >= 1
    assert all(np.isfinite(r.T_world_cam).all() for r in provisional)


# ---------------------------------------------------------------- the node core
def _core(warm, stream=None, logger=None, **overrides):
    from loger_ros.mapping_core import MappingCore
    from loger_ros.params import NodeParams

    from test_node_core import F, ListLogger

    kw = dict(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=28, input_height=28,
              window_size=4, overlap_size=1, provisional_every=1, provisional_budget=1.0, warm_up=warm)
    params = NodeParams(**{**kw, **overrides})
    stream = stream or StreamingReconstructor(params.stream_config(), model=_model())
    log = logger or ListLogger()
    return MappingCore(params, F, reconstructor=stream, logger=log), log


def test_core_warms_up_when_asked_and_reports_it():
    core, log = _core("on")
    report = core.warm_up()
    assert report is not None and report.windows == 4
    assert core.diagnostics_values()["warm_up_s"] == round(report.seconds, 2)
    assert any("warm-up done" in line for line in log.lines["info"])
    assert core.reconstructor.stats.frames_pushed == 0  # the live stream saw none of the throwaway frames

    core, _ = _core("auto")  # on the CPU 'auto' is off: nothing is compiled there
    assert core.warm_up() is None and np.isnan(core.diagnostics_values()["warm_up_s"])


def test_core_warm_up_assumes_the_configured_camera_size_when_the_camera_sets_the_input():
    # tiny / small have no fixed input size: the first frame's aspect ratio picks it.
    core, log = _core("on", input_width=0, input_height=0, warm_up_image_width=320, warm_up_image_height=240)
    assert core.reconstructor.config.resolution is None
    report = core.warm_up()
    assert report is not None and report.windows == 4, log.lines["warning"]


def test_a_failed_warm_up_is_logged_and_the_core_still_maps(monkeypatch):
    import loger_core.pipeline.warm_up as mc

    from test_node_core import channels, feed, header, stamp, F

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(mc, "warm_up", boom)
    core, log = _core("on")
    assert core.warm_up() is None
    assert any("warm-up failed" in line and "out of memory" in line for line in log.lines["warning"])
    rgb = np.zeros((24, 32, 3), np.uint8)
    msg = F.make("sensor_msgs/msg/Image", header=header(stamp(0)), height=24, width=32, encoding="rgb8",
                 is_bigendian=0, step=96, data=rgb.reshape(-1))
    assert "odom" in channels(feed(core, [msg]))
