"""pass_priority: committed windows stop at block boundaries while a provisional pass runs, resume
after it, never wait longer than max_hold_s, and compute the same results (tiny model, CPU; the
queue bound on CUDA)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from loger_core.model import MemoryOptions
from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.stream.gpu_share import GpuShare, install_yield_points, yield_point

H, W = 56, 84


def _bulk_loop(share: GpuShare, steps: int, passed: list, started: threading.Event) -> None:
    with share.bulk():
        started.set()
        for _ in range(steps):
            yield_point()
            passed.append(time.perf_counter())


def _start_bulk(share: GpuShare, steps: int) -> tuple[threading.Thread, list, threading.Event]:
    """A bulk thread passing `steps` yield points; returns it, the times it passed them, its start."""
    passed: list = []
    started = threading.Event()
    worker = threading.Thread(target=_bulk_loop, args=(share, steps, passed, started))
    worker.start()
    return worker, passed, started


def test_bulk_thread_stops_at_its_next_yield_point_while_urgent_work_runs():
    share = GpuShare(torch.device("cpu"), max_hold_s=5.0)
    with share.urgent():
        worker, passed, started = _start_bulk(share, 50)
        assert started.wait(5)
        time.sleep(0.2)
        assert passed == []  # stopped at its first yield point
        assert share.urgent_pending
    worker.join(5)
    assert len(passed) == 50  # went on once the urgent work was done
    assert share.stats.holds == 1 and share.stats.hold_timeouts == 0
    assert share.stats.held_s >= 0.15
    assert share.stats.yield_points == 50


def test_urgent_side_can_wait_until_the_bulk_thread_has_stopped():
    share = GpuShare(torch.device("cpu"), max_hold_s=5.0)
    with share.urgent():
        assert not share.wait_bulk_paused(0.05)  # no bulk thread at a yield point
        worker, passed, _ = _start_bulk(share, 2)
        assert share.wait_bulk_paused(5.0) and passed == []
    worker.join(5)
    assert len(passed) == 2 and not share.wait_bulk_paused(0.01)


def test_a_stop_lasts_at_most_max_hold_s():
    share = GpuShare(torch.device("cpu"), max_hold_s=0.05)
    with share.urgent():
        worker, passed, _ = _start_bulk(share, 3)
        worker.join(5)
        # Urgent work that never ends holds the bulk thread back by max_hold_s per yield point only.
        assert len(passed) == 3
    assert share.stats.hold_timeouts == 3


def test_yield_points_are_no_ops_outside_bulk_threads(tiny):
    share = GpuShare(torch.device("cpu"))
    install_yield_points(tiny)
    with share.urgent():  # would block a bulk thread forever-ish; this thread is not one
        t0 = time.perf_counter()
        tiny.forward_window(torch.rand(1, 3, 3, H, W), None, MemoryOptions(5, 2))
        assert time.perf_counter() - t0 < 5.0
    assert share.stats.yield_points == 0


def test_a_window_pauses_for_a_pass_and_computes_the_same_prediction(tiny):
    images = torch.rand(1, 4, 3, H, W, generator=torch.Generator().manual_seed(0))
    opts = MemoryOptions(5, 2)
    with torch.no_grad():
        reference, _ = tiny.forward_window(images, None, opts)
    blocks = install_yield_points(tiny)
    assert blocks == install_yield_points(tiny) > 10  # every block and TTT layer, once
    share = GpuShare(torch.device("cpu"), max_hold_s=10.0)
    out: dict = {}

    def window():
        with share.bulk(), torch.no_grad():
            out["pred"], _ = tiny.forward_window(images, None, opts)

    with share.urgent():
        worker = threading.Thread(target=window)
        worker.start()
        time.sleep(0.3)
        # The window stopped before its first block: no yield point beyond the first passed.
        assert share.stats.yield_points == 1 and "pred" not in out
    worker.join(30)
    unhindered = GpuShare(torch.device("cpu"))
    with unhindered.bulk(), torch.no_grad():
        tiny.forward_window(images, None, opts)
    assert share.stats.yield_points == unhindered.stats.yield_points > 10
    for name in ("local_points", "conf", "camera_poses", "points"):
        assert torch.equal(getattr(out["pred"], name), getattr(reference, name)), name


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=5, overlap_size=2, provisional_every=1,
                provisional_budget=1.0, alignment="se3", async_windows="on")
    base.update(kw)
    return StreamConfig(**base)


def test_pass_priority_keeps_committed_results_and_counts_its_stops(tiny):
    clip = np.random.default_rng(3).integers(0, 256, size=(19, H, W, 3), dtype=np.uint8)

    def run(priority):
        rec = StreamingReconstructor(_config(pass_priority=priority), tiny)
        committed, provisional = [], []
        for r in [r for i, img in enumerate(clip) for r in rec.push(img, 1000 + 10 * i)] + rec.flush():
            (provisional if r.provisional else committed).append(r)
        stats = rec.gpu_share_stats
        rec.close()
        return committed, provisional, stats

    on_c, on_p, stats = run("on")
    off_c, off_p, off_stats = run("off")
    assert off_stats is None and stats is not None
    assert stats.yield_points > 0
    assert [r.index for r in on_c] == [r.index for r in off_c] == list(range(19))
    for a, b in zip(on_c, off_c):
        np.testing.assert_array_equal(a.T_world_cam, b.T_world_cam)
        np.testing.assert_array_equal(a.points, b.points)
    assert {r.index for r in on_p} == set(range(19))


def test_pass_priority_modes():
    assert not _config(pass_priority="auto").pass_priority_enabled()  # CPU: windows and passes share cores, not a GPU
    assert _config(pass_priority="on").pass_priority_enabled()
    assert not _config(pass_priority="on", async_windows="off").pass_priority_enabled()
    assert _config(pass_priority=True).pass_priority == "on"
    with pytest.raises(Exception, match="pass_priority"):
        _config(pass_priority="sometimes")
    if torch.cuda.is_available():  # pragma: no cover - GPU machines
        assert _config(device="cuda", pass_priority="auto").pass_priority_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the lent GPU machine)")
def test_bulk_thread_queues_at_most_lookahead_blocks_on_cuda():
    share = GpuShare(torch.device("cuda"), lookahead=2)
    a = torch.rand(2048, 2048, device="cuda")
    with share.bulk():
        for _ in range(20):
            a = a @ a / 2048
            yield_point()
            assert len(share._queued) <= 2
    torch.cuda.synchronize()


def test_node_diagnostics_report_what_the_passes_priority_costs_the_windows(tiny):
    from loger_ros.conversions import rosbags_factory
    from loger_ros.mapping_core import MappingCore
    from loger_ros.params import NodeParams

    class Log:
        def debug(self, text):
            pass

        info = warning = error = debug

    def core_with(priority):
        params = NodeParams(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=W,
                            input_height=H, window_size=5, overlap_size=2, async_windows="on", pass_priority=priority)
        stream = StreamingReconstructor(params.stream_config(), tiny)
        return MappingCore(params, rosbags_factory("ros2_humble"), reconstructor=stream, logger=Log()), stream

    core, stream = core_with("on")
    values = core.diagnostics_values()
    assert values["stream_window_holds"] == 0 and values["stream_window_held_s"] == 0.0
    stream.close()
    core, stream = core_with("off")
    assert "stream_window_holds" not in core.diagnostics_values()
    stream.close()


def test_the_share_is_idle_while_there_are_no_passes_and_wakes_when_they_are_switched_on(tiny):
    """With no provisional pass to make room for, a window's yield points neither count nor stop
    it (so it launches freely and, on CUDA, may replay its graph); `set_provisional` switches the
    share on and off while frames flow."""
    clip = np.random.default_rng(5).integers(0, 256, size=(9, H, W, 3), dtype=np.uint8)
    rec = StreamingReconstructor(_config(pass_priority="on", provisional_every=0), tiny)
    share = rec._share
    assert share is not None and not share.active
    for i, img in enumerate(clip[:6]):
        rec.push(img, 1000 + 10 * i)
    rec.drain()
    assert rec.stats.windows_run >= 1 and share.stats.yield_points == 0
    rec.set_provisional(every=1)
    assert share.active
    for i, img in enumerate(clip[6:], start=6):
        rec.push(img, 1000 + 10 * i)
    rec.flush()
    rec.close()
    assert share.stats.yield_points > 0
    rec.set_provisional(every=0)
    assert not share.active


def test_an_inactive_share_never_stops_the_bulk_thread():
    share = GpuShare(torch.device("cpu"))
    share.active = False
    with share.urgent():
        thread, passed, started = _start_bulk(share, 5)
        thread.join(2.0)
    assert not thread.is_alive() and len(passed) == 5
    assert share.stats.holds == 0 and share.stats.yield_points == 0
