"""provisional_anchors: a provisional pass carries the first N frames shared with the last committed
window (not all of them), labelled as overlap frames, its newest frames as interior ones (tiny model,
CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from loger_core.model import MemoryOptions
from loger_core.model.loger import pe_token_counts
from loger_core.stream import StreamConfig, StreamingReconstructor

H, W = 56, 84


def test_anchor_frames_set_the_frame_roles(tiny):
    x = torch.rand(1, 4, 3, H, W, generator=torch.Generator().manual_seed(1))
    opts = MemoryOptions(8, 2)
    _, state = tiny.forward_window(torch.rand(1, 8, 3, H, W, generator=torch.Generator().manual_seed(2)), None, opts)
    default, _ = tiny.forward_window(x, state, opts, commit=False)
    assert pe_token_counts(4, 8, 2) == (2, 2, 0)
    same, _ = tiny.forward_window(x, state, opts, commit=False, anchor_frames=2)
    assert torch.equal(same.camera_poses, default.camera_poses) and torch.equal(same.local_points, default.local_points)
    one, _ = tiny.forward_window(x, state, opts, commit=False, anchor_frames=1)
    assert not torch.equal(one.camera_poses, default.camera_poses)  # frame 1 now carries the interior role
    for bad in (-1, 5):
        with pytest.raises(ValueError, match="anchor_frames"):
            tiny.forward_window(x, state, opts, commit=False, anchor_frames=bad)


class _Recording:
    """Records (frames, anchor_frames, commit) of every call of the wrapped model."""

    def __init__(self, model):
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward_window(self, images, state, options, commit=True, anchor_frames=None):
        self.calls.append((images.shape[1], anchor_frames, commit))
        return self.model.forward_window(images, state, options, commit=commit, anchor_frames=anchor_frames)

    def init_state(self):
        return self.model.init_state()


@pytest.mark.parametrize("async_windows", ["off", "on"])
@pytest.mark.parametrize("anchors,expected", [(0, 3), (1, 1), (2, 2), (7, 3)])
def test_passes_carry_the_configured_anchor_frames(tiny, async_windows, anchors, expected):
    model = _Recording(tiny)
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(W, H), window_size=8, overlap_size=3, provisional_every=2,
                       provisional_budget=1.0, provisional_anchors=anchors, alignment="se3", async_windows=async_windows)
    rec = StreamingReconstructor(cfg, model)
    clip = np.random.default_rng(0).integers(0, 256, size=(20, H, W, 3), dtype=np.uint8)
    results = []
    for i, img in enumerate(clip):
        results += rec.push(img, 1000 + i)
        if async_windows == "on":
            rec._worker.wait_idle()  # each pass then sees the newest committed window
    results += rec.flush()
    rec.close()
    first_commit = next(i for i, (_, _, commit) in enumerate(model.calls) if commit)
    before = {(n, a) for n, a, commit in model.calls[:first_commit] if not commit}
    later = {(n, a) for n, a, commit in model.calls[first_commit:] if not commit}
    # In the first window a pass is anchored on the map's first frame (the world origin) ...
    assert before <= {(2, None), (3, 1)}
    # ... afterwards on `expected` frames shared with the committed window, plus the 2 newest.
    assert later == {(expected + 2, expected)}
    provisional = {r.index for r in results if r.provisional}
    assert provisional >= set(range(9, 20, 2)) - {19}
    committed = [r.index for r in results if not r.provisional]
    assert committed == list(range(20))


def test_provisional_anchors_must_be_a_count():
    with pytest.raises(Exception, match="provisional_anchors"):
        StreamConfig(model="tiny", device="cpu", provisional_anchors=-1)
