"""async_windows: completed windows on a worker thread give the synchronous path's committed
results; provisional passes go on meanwhile; failures, flush and reset behave (tiny model, CPU)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from loger_core.model import build_model
from loger_core.model.synthetic_weights import fill_deterministic_
from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.stream.window_worker import WindowStages, WindowWorker

H, W = 56, 84



def _clip(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=5, overlap_size=2, conf_percentile=20.0,
                provisional_budget=1.0,  # every pass runs: these tests check which frames get one
                alignment="se3")
    base.update(kw)
    return StreamConfig(**base)


def _run(rec: StreamingReconstructor, clip: np.ndarray, poll_every: int = 0) -> tuple[list, list]:
    committed, provisional = [], []

    def take(results):
        for r in results:
            (provisional if r.provisional else committed).append(r)

    for i, img in enumerate(clip):
        take(rec.push(img, 1000 + 10 * i))
        if poll_every and i % poll_every == 0:
            take(rec.poll())
    take(rec.flush())
    return committed, provisional


@pytest.mark.parametrize("provisional_every", [0, 2])
def test_async_committed_results_equal_sync(tiny, provisional_every):
    clip = _clip(17)
    sync_c, sync_p = _run(StreamingReconstructor(_config(async_windows="off", provisional_every=provisional_every), tiny), clip)
    rec = StreamingReconstructor(_config(async_windows="on", provisional_every=provisional_every), tiny)
    async_c, async_p = _run(rec, clip, poll_every=3)
    rec.close()
    assert [r.index for r in async_c] == [r.index for r in sync_c] == list(range(17))
    for a, b in zip(async_c, sync_c):
        assert a.window_index == b.window_index
        np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.colors, b.colors)
        np.testing.assert_array_equal(a.valid, b.valid)
    if provisional_every:
        # Every frame gets an early pose, in order of arrival of the passes.
        assert {r.index for r in async_p} == set(range(17))
        assert rec.stats.provisional_runs > 0
    else:
        assert not async_p
    assert rec.stats.frames_committed == 17 and rec.stats.windows_run == sync_c[-1].window_index + 1


def test_async_provisional_runs_while_a_window_is_in_flight(tiny):
    """A window blocked on the worker does not stop push: provisional poses keep coming (against the
    last committed window), and the committed results arrive once it is released."""
    gate = threading.Event()
    real = tiny.forward_window

    class Gated:
        cfg = tiny.cfg

        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            if commit and state is not None:  # hold every committed window after the first
                gate.wait(10)
            return real(images, state, options, commit=commit)

        def init_state(self):
            return tiny.init_state()

    rec = StreamingReconstructor(_config(async_windows="on", provisional_every=1), Gated())
    clip = _clip(12)
    got = []
    for i in range(8):  # window 0 = frames 0..4 commits, window 1 (frames 3..7) is held
        got += rec.push(clip[i], 1000 + 10 * i)
    deadline = time.time() + 10
    while len([r for r in got if not r.provisional]) < 3 and time.time() < deadline:
        got += rec.poll()
        time.sleep(0.01)
    assert rec.windows_in_flight
    before = len([r for r in got if not r.provisional])
    assert before == 3  # window 0 committed frames 0..2 (3, 4 are its shared tail), window 1 held
    prov = []
    for i in range(8, 10):  # window 1 is still held: these frames get provisional poses anyway
        prov += [r for r in rec.push(clip[i], 1000 + 10 * i) if r.provisional]
    assert [r.index for r in prov] == [8, 9]
    assert all(np.isfinite(r.T_world_cam).all() for r in prov)
    gate.set()
    rest = [r for r in rec.flush() if not r.provisional]
    committed = [r for r in got if not r.provisional] + rest
    assert [r.index for r in committed] == list(range(10))
    rec.close()


def test_async_failed_window_is_reported_and_the_stream_goes_on(tiny):
    real = tiny.forward_window
    calls = {"n": 0}

    class Failing:
        cfg = tiny.cfg

        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            if commit:
                calls["n"] += 1
                if calls["n"] == 2:
                    raise RuntimeError("CUDA out of memory (simulated)")
            return real(images, state, options, commit=commit)

        def init_state(self):
            return tiny.init_state()

    rec = StreamingReconstructor(_config(async_windows="on"), Failing())
    committed, _ = _run(rec, _clip(14))
    errors = rec.take_errors()
    assert len(errors) == 1 and "out of memory" in errors[0] and "new frame(s) are dropped" in errors[0]
    assert rec.stats.windows_failed_error == 1 and rec.stats.frames_dropped_error == 3
    # Window 1 (frames 3..7) failed: its new frames 5..7 are lost, like the synchronous path.
    indices = [r.index for r in committed]
    assert indices == sorted(indices) and not {5, 6, 7} & set(indices)
    assert set(indices) | {5, 6, 7} == set(range(14))
    assert rec.take_errors() == []
    rec.close()


def test_async_reset_hands_over_the_old_maps_results(tiny):
    rec = StreamingReconstructor(_config(async_windows="on"), tiny)
    clip = _clip(8)
    got = []
    for i in range(5):
        got += rec.push(clip[i], 1000 + 10 * i)
    got += rec.reset()
    assert [r.index for r in got] == [0, 1, 2]
    assert rec.buffered_frames == 0 and rec.memory_state is None
    after = _run(rec, clip[:6])[0]
    assert [r.index for r in after] == list(range(6))  # a new map numbers its frames from 0
    fresh = _run(StreamingReconstructor(_config(async_windows="off"), tiny), clip[:6])[0]
    for a, b in zip(after, fresh):  # nothing of the old map's memory or alignment is left
        np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
    rec.close()


@pytest.mark.parametrize("overlap", [True, False])
def test_worker_pipelines_the_next_enqueue_before_finishing_the_previous(overlap):
    order = []
    stages = WindowStages(
        enqueue=lambda job: order.append(("enqueue", job)) or job,
        settle=lambda job: order.append(("settle", job)) or job,
        finish=lambda job: (order.append(("finish", job)), [job])[1],
        on_error=lambda job, err: [],
    )
    worker = WindowWorker(stages, overlap=overlap)
    hold = threading.Event()
    real_settle = stages.settle
    stages.settle = lambda job: (hold.wait(5) if job == 0 else None, real_settle(job))[1]
    worker.submit(0)
    worker.submit(1)  # waits while 0 is held in settle
    hold.set()
    assert worker.wait_idle(5)
    assert worker.drain() == [0, 1]
    if overlap:  # CUDA: 1 was on the device before 0's outputs were built
        assert order.index(("enqueue", 1)) < order.index(("finish", 0))
    else:  # CPU: the forward runs inside enqueue, so 0's results are not held back by it
        assert order.index(("finish", 0)) < order.index(("enqueue", 1))
    assert order.index(("settle", 0)) < order.index(("enqueue", 1))  # after 0's memory was settled
    worker.close()


def test_auto_is_off_on_cpu():
    assert not _config(async_windows="auto").async_enabled()
    assert _config(async_windows="on").async_enabled()
    with pytest.raises(Exception, match="async_windows"):
        _config(async_windows="maybe")
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        assert _config(device="cuda", async_windows="auto").async_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU machine)")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_async_on_cuda_equals_sync_and_provisional_never_fails(dtype):
    """On CUDA the worker's stream, the outputs' stream, pinned pre-stacked inputs and (bf16) the
    compiled blocks beside eager provisional passes: committed results equal the synchronous path's,
    and no provisional pass fails while the worker compiles."""
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cuda")
    clip = _clip(23)
    cfg = dict(device="cuda", dtype=dtype, provisional_every=2)
    sync = StreamingReconstructor(_config(async_windows="off", **cfg), model)
    sync_c, _ = _run(sync, clip)
    rec = StreamingReconstructor(_config(async_windows="on", cuda_graphs=True, **cfg), model)
    async_c, async_p = _run(rec, clip, poll_every=3)
    errors = rec.take_errors()
    rec.close()
    assert errors == []
    assert [r.index for r in async_c] == [r.index for r in sync_c] == list(range(23))
    for a, b in zip(async_c, sync_c):
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_allclose(a.points, b.points, rtol=0, atol=1e-3)
    assert {r.index for r in async_p} == set(range(23))


def test_provisional_graphs_skip_passes_without_a_fixed_memory(tiny):
    """No graph before the first window (no memory yet) or when a TTT reset is due inside the pass:
    those passes run eagerly (CPU check of the rule; the replay itself needs CUDA)."""
    from loger_core.model.state import MemoryOptions
    from loger_core.stream.provisional_graphs import ProvisionalGraphs

    graphs = ProvisionalGraphs(tiny, MemoryOptions(5, 2, reset_every=3), nullcontext_factory)
    state = tiny.init_state()
    assert not graphs.usable_for(None)
    assert graphs.usable_for(state)  # window_index 0: no reset
    state.window_index = 3
    assert not graphs.usable_for(state)  # reset due at this window
    state.window_index = 4
    assert graphs.usable_for(state)
    x = torch.rand(1, 5, 3, H, W)
    _, s1 = tiny.forward_window(x, None, MemoryOptions(5, 2))
    _, s2 = tiny.forward_window(x, s1, MemoryOptions(5, 2))
    assert s1.layout() != tiny.init_state().layout()
    assert s2.layout() == s1.layout()  # fixed once the first window ran: one graph serves


def test_provisional_graphs_capture_compiled_blocks_only_for_shapes_compiled_before(tiny):
    """A live stream's pass graph holds compiled blocks only for a shape a warm-up stream
    (`compile_new`) captured compiled on the same model: a first compile would stall it for seconds."""
    import copy

    from loger_core.model.fast_paths import FastPathConfig, enable_fast_paths
    from loger_core.model.state import MemoryOptions
    from loger_core.stream.provisional_graphs import ProvisionalGraphs

    opts = MemoryOptions(5, 2)
    eager_model = ProvisionalGraphs(tiny, opts, nullcontext_factory, compile_new=True)
    assert not eager_model.uses_compiled_blocks(("key",))  # no compiled fast paths: eager blocks

    model = enable_fast_paths(copy.deepcopy(tiny), FastPathConfig(attention="reference", bf16_weights=False,
                                                                  compile=True, fused_gelu=False))
    live = ProvisionalGraphs(model, opts, nullcontext_factory)
    warm = ProvisionalGraphs(model, opts, nullcontext_factory, compile_new=True)
    key = ((4, H, W, 3), 1, "layout")
    assert not live.uses_compiled_blocks(key) and warm.uses_compiled_blocks(key)
    warm._compiled_keys.add(key)  # what a successful compiled capture records (`_capture`, CUDA only)
    later = ProvisionalGraphs(model, opts, nullcontext_factory)
    assert later.uses_compiled_blocks(key) and not later.uses_compiled_blocks(((5, H, W, 3), 1, "layout"))


def nullcontext_factory():
    from contextlib import nullcontext

    return nullcontext()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU machine)")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager_blocks", "compiled_blocks"])
def test_provisional_graph_replays_equal_eager_passes_as_memory_changes(compiled):
    from contextlib import nullcontext

    from loger_core.model.fast_paths import FastPathConfig, enable_fast_paths
    from loger_core.model.state import MemoryOptions
    from loger_core.stream.provisional_graphs import ProvisionalGraphs

    model = fill_deterministic_(build_model("tiny", device="meta")).to("cuda")
    if compiled:  # fp32: the compiled blocks equal the eager ones to rounding
        model = enable_fast_paths(model, FastPathConfig(attention="reference", bf16_weights=False, fused_gelu=False))
    opts = MemoryOptions(5, 2)
    graphs = ProvisionalGraphs(model, opts, nullcontext, compile_new=compiled)
    clip = torch.from_numpy(_clip(12, seed=3)).cuda()
    from loger_core.stream.preprocess import rgb_to_tensor

    state, layouts, keys = None, set(), set()
    with torch.no_grad():
        for w in range(3):
            _, state = model.forward_window(rgb_to_tensor(clip[3 * w: 3 * w + 5]).unsqueeze(0), state, opts)
            layouts.add(state.layout())
            rgb = clip[3 * w + 5: 3 * w + 9]
            keys.add((tuple(rgb.shape), state.layout()))
            got = graphs.run(rgb, state, capture_allowed=True)
            want, _ = model.forward_window(rgb_to_tensor(rgb).unsqueeze(0), state, opts, commit=False)
            assert got is not None
            for a, b in zip((got.camera_poses, got.points, got.conf), (want.camera_poses, want.points, want.conf)):
                torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)
    # One graph per input shape and memory layout (the last pass has 1 frame; the first window's
    # memory may be laid out differently from the later ones'); the memory is copied in per window.
    assert graphs.captures == len(keys) >= len(layouts) and graphs.replays == 3
    assert graphs.compiled_captures == (graphs.captures if compiled else 0)


def test_raw_camera_output_finishes_to_the_same_prediction(tiny):
    """The graph-friendly split of the camera head (raw output in the graph, SVD after) gives the
    normal forward's poses and points exactly (CPU, fp32)."""
    from loger_core.model.prediction import finish_raw_camera
    from loger_core.model.state import MemoryOptions

    x = torch.rand(1, 5, 3, H, W, generator=torch.Generator().manual_seed(0))
    opts = MemoryOptions(5, 2)
    _, state = tiny.forward_window(x, None, opts)
    full, _ = tiny.forward_window(x, state, opts, commit=False)
    raw, _ = tiny.forward_window(x, state, opts, commit=False, raw_camera=True)
    assert raw.points is None and raw.camera_poses.shape == (1, 5, 12)
    poses, points = finish_raw_camera(raw.local_points, raw.camera_poses)
    torch.testing.assert_close(poses, full.camera_poses, rtol=0, atol=0)
    torch.testing.assert_close(points, full.points, rtol=0, atol=0)
    torch.testing.assert_close(raw.local_points, full.local_points, rtol=0, atol=0)


def test_provisional_budget_thins_out_slow_passes_and_loses_no_frame(tiny):
    """Provisional passes that cost more than the camera period would make the caller fall behind:
    with a budget they take at most about that share of the wall time, are counted as skipped, and
    every frame still gets its committed result. (120 frames: with fewer, a fast machine can finish
    the clip within one pass's 3x hold-off and run a single pass: the test then has no pair of
    passes to check and failed about one run in three.)"""
    clip = _clip(120)
    rec = StreamingReconstructor(_config(async_windows="off", provisional_every=1, provisional_budget=0.25,
                                         window_size=8, overlap_size=2), tiny)
    real = rec._provisional_pass
    spans: list[tuple[float, float]] = []

    def slow_pass():
        t = time.perf_counter()
        time.sleep(0.03)
        out = real()
        spans.append((t, time.perf_counter()))
        return out

    rec._provisional_pass = slow_pass
    committed, provisional = _run(rec, clip)
    assert [r.index for r in committed] == list(range(120))
    assert rec.stats.provisional_skipped_budget > 0 and len(spans) == rec.stats.provisional_runs > 1
    # budget 0.25: after a pass of c seconds none starts for 3c, so passes take <= 1/4 of the time.
    for (s0, e0), (s1, _) in zip(spans, spans[1:]):
        assert s1 - e0 >= 3 * (e0 - s0)


def test_provisional_budget_must_be_a_share():
    with pytest.raises(Exception, match="provisional_budget"):
        _config(provisional_budget=0.0)
    with pytest.raises(Exception, match="provisional_budget"):
        _config(provisional_budget=1.5)


def test_the_worker_queues_windows_without_waiting_for_the_camera_head(tiny):
    """The worker asks committed windows for the camera head's raw output (its SVD, a host sync on
    CUDA, happens when the window is settled, after the next window is queued); the committed
    results are those of the synchronous path, which gets finished poses."""
    calls = []
    forward = tiny.forward_window

    def recording(*args, **kwargs):
        calls.append((kwargs.get("commit", True), kwargs.get("raw_camera", False)))
        return forward(*args, **kwargs)

    clip = _clip(14, seed=4)
    sync_c, _ = _run(StreamingReconstructor(_config(async_windows="off"), tiny), clip)
    tiny.forward_window = recording
    try:
        rec = StreamingReconstructor(_config(async_windows="on"), tiny)
        async_c, _ = _run(rec, clip)
        rec.close()
    finally:
        del tiny.forward_window
    committed_calls = [raw for commit, raw in calls if commit]
    assert len(committed_calls) == 4 and all(committed_calls)
    assert [r.index for r in async_c] == [r.index for r in sync_c] == list(range(14))
    for a, b in zip(async_c, sync_c):
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, rtol=0, atol=1e-6)
        np.testing.assert_allclose(a.points, b.points, rtol=0, atol=1e-5)
