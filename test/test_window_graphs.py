"""CUDA graphs of committed windows (`loger_core.model.window_graphs`): which windows may replay
one (CPU), and that replays equal the windows launched block by block (CUDA)."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from loger_core.model import MemoryOptions, build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.model.window_graphs import WindowGraphs
from loger_core.stream import StreamConfig, StreamingReconstructor

H, W = 56, 84
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU machine)")


def test_only_windows_with_a_complete_memory_and_no_reset_may_replay(tiny):
    opts = MemoryOptions(5, 2, reset_every=3)
    graphs = WindowGraphs(tiny, opts)
    assert not graphs.usable_for(None)
    assert not graphs.usable_for(tiny.init_state())  # first window: no TTT / SWA state yet
    x = torch.rand(1, 5, 3, H, W)
    with torch.no_grad():
        _, s1 = tiny.forward_window(x, None, opts)
        _, s2 = tiny.forward_window(x, s1, opts)
    assert graphs.usable_for(s1) and graphs.usable_for(s2)
    s2.window_index = 3  # a TTT reset is due at this window: the memory changes inside it
    assert not graphs.usable_for(s2)
    ablated = tiny.init_state()
    ablated.swa = list(s1.swa)  # TTT off: its entries stay None
    assert not graphs.usable_for(ablated)
    assert graphs.run(x, s1) is None  # off CUDA nothing is captured: the caller runs the window


def test_graphs_are_shared_per_model_and_key(tiny):
    made = []

    def make():
        made.append(WindowGraphs(tiny, MemoryOptions(5, 2)))
        return made[-1]

    a = WindowGraphs.shared(tiny, ("test", 1), make)
    b = WindowGraphs.shared(tiny, ("test", 1), make)
    c = WindowGraphs.shared(tiny, ("test", 2), make)
    assert a is b and a is not c and len(made) == 2


def _assert_same(got, want, atol=1e-5):
    for name in ("local_points", "conf", "camera_poses", "points", "descriptors"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name).float(), rtol=1e-5, atol=atol, msg=name)


@needs_cuda
def test_replayed_windows_equal_eager_windows_as_the_memory_changes():
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cuda")
    opts = MemoryOptions(5, 2)
    graphs = WindowGraphs(model, opts)
    clip = torch.rand(1, 5 + 3 * 5, 3, H, W, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    eager_state = replay_state = None
    replayed = 0
    with torch.no_grad():
        for w in range(6):
            x = clip[:, 3 * w: 3 * w + 5]
            want, eager_state = model.forward_window(x, eager_state, opts)
            out = graphs.run(x, replay_state)
            if out is None:  # first window (no memory), second (shape first seen): eager
                got, replay_state = model.forward_window(x, replay_state, opts)
            else:
                got, replay_state = out
                replayed += 1
            _assert_same(got, want)
            for a, b in zip(replay_state.tensors(), eager_state.tensors()):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            assert (replay_state.window_index, replay_state.frames_seen) == (eager_state.window_index, eager_state.frames_seen)
    assert graphs.captures == 1 and replayed == graphs.replays == 4


@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_stream_without_passes_replays_its_windows_and_commits_the_same_results(dtype):
    """Compiled blocks (bf16 fast paths) inside the graph too: the stream's committed results with
    window graphs equal those launched block by block."""
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cuda")
    clip = np.random.default_rng(1).integers(0, 256, size=(26, H, W, 3), dtype=np.uint8)
    base = dict(model="tiny", device="cuda", dtype=dtype, resolution=(W, H), window_size=5, overlap_size=2,
                alignment="se3", async_windows="on", provisional_every=0)

    def run(graphs):
        rec = StreamingReconstructor(StreamConfig(cuda_graphs=graphs, **base), model)
        out = [r for i, img in enumerate(clip) for r in rec.push(img, 1000 + 10 * i)] + rec.flush()
        stats, errors = rec.stats, rec.take_errors()
        rec.close()
        return sorted(out, key=lambda r: r.index), stats, errors

    off, off_stats, _ = run("off")
    on, on_stats, errors = run("on")
    assert errors == [] and off_stats.window_graph_replays == 0 and on_stats.window_graph_replays >= 4
    assert [r.index for r in on] == [r.index for r in off] == list(range(26))
    for a, b in zip(on, off):
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_allclose(a.points, b.points, rtol=0, atol=1e-3)
        np.testing.assert_allclose(a.descriptor, b.descriptor, rtol=0, atol=1e-4)  # the place descriptor rides along


@needs_cuda
def test_reconstruct_with_graphs_equals_reconstruct():
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cuda")
    clip = torch.rand(1, 23, 3, H, W, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    opts = MemoryOptions(5, 2)
    with torch.no_grad(), nullcontext():
        want = model.reconstruct(clip, opts)
        model.reconstruct(clip, opts, cuda_graphs=True)  # sees the window shape
        got = model.reconstruct(clip, opts, cuda_graphs=True)  # captures, then replays
    _assert_same(got, want, atol=1e-4)
