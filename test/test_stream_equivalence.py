"""Streaming frame by frame gives the whole-sequence result of `LoGeR.reconstruct` (tiny model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.model import MemoryOptions
from loger_core.stream import StreamConfig, StreamingReconstructor, prepare_image, reconstruct_sequence

H, W = 56, 84
TOL = 1e-5



def _clip(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def _config(**kw) -> StreamConfig:
    base = dict(model="tiny", device="cpu", resolution=(W, H), window_size=4, overlap_size=1, conf_percentile=0.0,
                provisional_budget=1.0)  # every due pass runs: these tests count them
    base.update(kw)
    return StreamConfig(**base)


def _whole(model, clip: np.ndarray, cfg: StreamConfig, alignment: str):
    x = torch.stack([prepare_image(img, cfg.resolution).tensor for img in clip]).unsqueeze(0)
    opts = MemoryOptions(cfg.window_size, cfg.overlap_size, cfg.reset_every)
    return model.reconstruct(x, opts, alignment=alignment, sim3_scale_mode=cfg.sim3_scale_mode)


def _assert_same(results, whole, n):
    assert [r.index for r in results] == list(range(n))
    poses = whole.camera_poses[0].double().numpy()
    points = whole.points[0].numpy()
    depth = whole.local_points[0, ..., 2].numpy()
    conf = torch.sigmoid(whole.conf[0, ..., 0]).numpy()
    for i, r in enumerate(results):
        np.testing.assert_allclose(r.T_world_cam, poses[i], atol=TOL)
        assert r.T_world_cam.dtype == np.float64
        assert r.valid.all()  # no confidence filter in this config, all points finite
        np.testing.assert_allclose(r.points, points[i].reshape(-1, 3), atol=TOL)
        np.testing.assert_allclose(r.depth, depth[i], atol=TOL)
        np.testing.assert_allclose(r.confidence, conf[i], atol=TOL)


@pytest.mark.parametrize("alignment,reset_every", [("none", 0), ("se3", 2), ("sim3", 0), ("none", 2)])
def test_stream_equals_whole_sequence(tiny, alignment, reset_every):
    n = 11  # windows [0,4) [3,7) [6,10) [9,11): the last one partial, finished by flush()
    clip = _clip(n)
    cfg = _config(alignment=alignment, reset_every=reset_every)
    results = reconstruct_sequence([(img, 1000 + 10 * i) for i, img in enumerate(clip)], cfg, model=tiny)
    _assert_same(results, _whole(tiny, clip, cfg, alignment), n)
    assert [r.stamp_ns for r in results] == [1000 + 10 * i for i in range(n)]


@pytest.mark.parametrize("n,window,overlap", [(3, 4, 1), (4, 4, 1), (7, 4, 1), (9, 3, 0), (10, 5, 2)])
def test_window_boundaries_match_the_authors_schedule(tiny, n, window, overlap):
    clip = _clip(n, seed=n)
    cfg = _config(window_size=window, overlap_size=overlap, alignment="sim3")
    _assert_same(reconstruct_sequence(list(clip), cfg, model=tiny), _whole(tiny, clip, cfg, "sim3"), n)


def test_results_come_out_as_windows_complete(tiny):
    rec = StreamingReconstructor(_config(alignment="se3"), model=tiny)
    emitted = []
    for i, img in enumerate(_clip(8)):
        emitted.append([r.index for r in rec.push(img, i)])
    # Window [0, 4) completes at frame 3 and emits 0..2 (3 is re-predicted by the next window).
    assert emitted == [[], [], [], [0, 1, 2], [], [], [3, 4, 5], []]
    assert [r.index for r in rec.flush()] == [6, 7]
    assert rec.flush() == []


def test_provisional_passes_do_not_change_committed_results(tiny):
    n = 9
    clip = _clip(n, seed=5)
    cfg = _config(alignment="sim3", reset_every=2, provisional_every=2, provisional_budget=1.0,
                  provisional_outputs="full")
    rec = StreamingReconstructor(cfg, model=tiny)
    committed, provisional = [], []
    for i, img in enumerate(clip):
        for r in rec.push(img, i):
            (provisional if r.provisional else committed).append(r)
    final = rec.flush()
    committed += final
    _assert_same(committed, _whole(tiny, clip, cfg, "sim3"), n)
    # Each provisional pass gives its `provisional_every` newest frames, plus the shared tail of each
    # committed window. 9 frames, window 4 / overlap 1: windows 0-3, 3-6 and 6-8; the first two
    # each leave 1 tail frame.
    assert rec.stats.provisional_runs > 0
    assert len(provisional) - 2 * rec.stats.provisional_runs == 2 * cfg.overlap_size
    # Frames 6..8 form the final partial window; the provisional pass at frame 8 saw exactly those
    # frames (shared frame 6 + the 2 newest) with the same memory, so it equals flush()'s result.
    last = provisional[-1]
    assert last.index == 8 and last.provisional and not final[-1].provisional
    np.testing.assert_allclose(last.T_world_cam, final[-1].T_world_cam, atol=TOL)
    np.testing.assert_allclose(last.points, final[-1].points, atol=TOL)


def test_state_is_carried_between_windows(tiny):
    """The memory matters: a stream whose memory is cut (reset between windows) differs."""
    clip = _clip(8, seed=9)
    cfg = _config(alignment="none")
    full = reconstruct_sequence(list(clip), cfg, model=tiny)
    rec = StreamingReconstructor(cfg, model=tiny)
    for i, img in enumerate(clip[:4]):
        rec.push(img, i)
    assert rec.state_nbytes() > 0 and rec.memory_state.window_index == 1
    assert rec.stats.state_bytes == rec.state_nbytes()
    # The second window's predictions for its frames depend on the first window's memory.
    cut = reconstruct_sequence(list(clip[3:]), cfg, model=tiny)
    assert not np.allclose(full[4].depth, cut[1].depth, atol=1e-4)


def test_low_latency_mode_gives_every_pushed_frame_a_pose_at_once(tiny):
    """With provisional_every=1 each push returns a pose for the frame just pushed, including the
    frame that completes a window (it is in the shared tail, committed only by the next window)."""
    clip = _clip(12, seed=3)
    rec = StreamingReconstructor(_config(alignment="se3", provisional_every=1), model=tiny)
    for i, img in enumerate(clip):
        out = rec.push(img, i)
        newest = [r for r in out if r.index == i]
        assert newest, f"push {i} returned no pose for frame {i}"
        assert all(np.isfinite(r.T_world_cam).all() for r in newest)


def test_provisional_pass_sees_the_shared_frames_and_the_newest_only(tiny):
    """The low-latency pass is bounded: the frames shared with the last committed window (they
    anchor the alignment; in the first window, its first frame) plus the `provisional_every`
    newest, however full the window is."""
    seen = []

    class Recording:
        cfg = tiny.cfg

        def init_state(self):
            return tiny.init_state()

        def forward_window(self, images, state, options, commit=True, anchor_frames=None):
            seen.append((images.shape[1], commit))
            return tiny.forward_window(images, state, options, commit=commit)

    cfg = _config(alignment="se3", provisional_every=2, window_size=8, overlap_size=2)
    rec = StreamingReconstructor(cfg, model=Recording())
    got = [[(r.index, r.provisional) for r in rec.push(img, i)] for i, img in enumerate(_clip(12, seed=4))]
    # First window: frame 0 + the 2 newest; committed at frame 7; later passes see the 2 shared
    # + the 2 newest frames.
    assert seen == [(2, False), (3, False), (3, False), (8, True), (4, False), (4, False)]
    assert got[1] == [(0, True), (1, True)] and got[3] == [(2, True), (3, True)]
    assert got[9] == [(8, True), (9, True)]
    assert got[11] == [(10, True), (11, True)]


@pytest.mark.parametrize("async_windows", ["off", "on"])
def test_pose_only_provisional_results_carry_the_full_results_poses(tiny, async_windows):
    """The default pose-only provisional results have the same poses, stamps and scale as 'full'
    ones, no per-pixel payload, and the last committed frame's K_model (NaN before any window)."""
    clip = _clip(11, seed=8)

    def run(outputs):
        rec = StreamingReconstructor(_config(provisional_every=1, provisional_outputs=outputs,
                                             async_windows=async_windows), model=tiny)
        seq = []
        for i, img in enumerate(clip):
            seq += rec.push(img, 100 + i)
            if async_windows == "on":
                seq += rec.drain()  # deterministic order: each window is in before the next pass
        rec.close()
        return seq

    pose_seq = run("pose")
    pose_prov, pose_committed = [r for r in pose_seq if r.provisional], [r for r in pose_seq if not r.provisional]
    full_seq = run("full")
    full_prov, full_committed = [r for r in full_seq if r.provisional], [r for r in full_seq if not r.provisional]
    assert len(pose_prov) == len(full_prov) > 5
    for a, b in zip(pose_prov, full_prov):
        assert (a.index, a.stamp_ns, a.window_index) == (b.index, b.stamp_ns, b.window_index)
        np.testing.assert_allclose(a.T_world_cam, b.T_world_cam, atol=1e-6)
        assert a.points.shape == (0, 3) and a.colors.shape == (0, 3) and a.depth.size == 0 and a.valid.size == 0
        assert b.points.shape[0] > 0 and b.depth.shape == (H, W)
    first_window = [r for r in pose_prov if r.index < 3 and r.window_index == 0]
    assert first_window and np.isnan(first_window[0].K_model).all()
    last_K = None
    for r in pose_seq:  # K_model: the last committed frame's before the pass
        if not r.provisional:
            last_K = r.K_model
        elif last_K is not None:
            np.testing.assert_array_equal(r.K_model, last_K)
    # Committed results do not depend on what provisional ones carry.
    for a, b in zip(pose_committed, full_committed):
        np.testing.assert_array_equal(a.points, b.points)


def test_deferred_provisional_pass_runs_with_the_next_allowed_frame(tiny):
    """push(provisional=False) holds a due pass back (counted); the next frame pushed with True
    runs it, over the newest frames, so a caller that catches up gets a pose at once."""
    clip = _clip(8, seed=9)
    cfg = _config(window_size=8, provisional_every=2)
    rec = StreamingReconstructor(cfg, model=tiny)
    out = []
    for i in range(5):  # frame 1 and 3 would be due: both deferred
        out += rec.push(clip[i], i, provisional=False)
    assert out == [] and rec.stats.provisional_runs == 0 and rec.stats.provisional_deferred == 2
    got = rec.push(clip[5], 5)  # due anyway (6 frames), runs
    assert rec.stats.provisional_runs == 1 and [r.index for r in got if r.provisional][-1] == 5
    got = rec.push(clip[6], 6, provisional=True)  # not due, nothing owed
    assert got == [] and rec.stats.provisional_runs == 1
    rec2 = StreamingReconstructor(cfg, model=tiny)
    for i in range(2):
        rec2.push(clip[i], i, provisional=False)  # frame 1 due, deferred
    got = rec2.push(clip[2], 2)  # not on the schedule, but owed: runs now
    assert rec2.stats.provisional_runs == 1 and got[-1].index == 2 and got[-1].provisional
