"""Place recognition by the network's own encoder tokens: the stream's per-frame descriptor (shape,
norm, equal to the encoder alone, absent from pose-only provisional results), the token index and
the rank fusion with VLAD, the setting's old name, and the descriptor through the back end's
session state."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loger_core.backend import BackendConfig, GeometricBackend
from loger_core.backend.config import BackendConfigError
from loger_core.backend.features import extract_features
from loger_core.backend.keyframes import FrameInput
from loger_core.backend.place import PlaceIndex, place_mode
from loger_core.backend.place_tokens import TokenIndex, fuse_rankings
from loger_core.model.descriptor import encoder_descriptors, pool_patch_tokens
from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.synthetic import SynthConfig, render_frames


@pytest.fixture(scope="module")
def small():
    """The shipped `small` model (what the token descriptor is meant for; random weights mean nothing)."""
    from loger_core.model import load_checkpoint
    from loger_core.model.selection import BUNDLED_CHECKPOINT

    return load_checkpoint(str(BUNDLED_CHECKPOINT), config="small", device="cpu").eval()


def small_descriptors(model, frames, size=(112, 84)) -> np.ndarray:
    """(N, 128) the shipped model's descriptors of rendered frames (at the stream's input size)."""
    from loger_core.stream.preprocess import prepare_image

    rgb = torch.from_numpy(np.stack([prepare_image(f.rgb, size).rgb for f in frames]))
    return encoder_descriptors(model, rgb).numpy()


def test_pooling_gives_unit_float32_vectors_also_under_autocast():
    tokens = torch.randn(3, 48, 16, dtype=torch.bfloat16)
    d = pool_patch_tokens(tokens)
    assert d.shape == (3, 16) and d.dtype == torch.float32
    np.testing.assert_allclose(d.norm(dim=1).numpy(), 1.0, atol=1e-6)
    assert not pool_patch_tokens(torch.zeros(1, 4, 8)).any()  # no NaN from a zero mean


def test_each_committed_frame_carries_the_encoder_descriptor(tiny):
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (9, 56, 84, 3), dtype=np.uint8)
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(84, 56), window_size=4, overlap_size=1,
                       async_windows="off", provisional_every=1)
    rec = StreamingReconstructor(cfg, tiny)
    committed, provisional = [], []
    for i, img in enumerate(clip):
        for r in rec.push(img, 1000 + i):
            (provisional if r.provisional else committed).append(r)
    committed += rec.flush()
    assert [r.index for r in committed] == list(range(9))
    D = np.stack([r.descriptor for r in committed])
    assert D.shape == (9, tiny.cfg.encoder.embed_dim) and D.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), 1.0, atol=1e-5)
    # No extra pass: the descriptor is the encoder's own tokens pooled, whatever the window or memory.
    alone = encoder_descriptors(tiny, torch.from_numpy(clip)).numpy()
    np.testing.assert_allclose(D, alone, atol=1e-5)
    assert provisional and all(r.descriptor is None for r in provisional)  # pose-only results stay small


def test_token_index_ranks_and_filters():
    idx = TokenIndex()
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(6, 32)).astype(np.float32)
    for k, v in enumerate(vecs):
        idx.add(10 * k, 3.0 * v)  # not unit: normalised on the way in
    q = vecs[4] + 0.1 * rng.normal(size=32)
    got = idx.query(q, top=3)
    assert got[0][0] == 40 and got[0][1] == pytest.approx(float(np.dot(q, vecs[4]) / np.linalg.norm(q) / np.linalg.norm(vecs[4])), abs=1e-5)
    assert [s for _, s in got] == sorted([s for _, s in got], reverse=True)
    assert {k for k, _ in idx.query(q, keys_allowed={0, 10}, top=5)} == {0, 10}
    assert TokenIndex().query(q) == []


def test_fusion_ranks_by_the_mean_of_both_rankings():
    keys = np.array([1, 2, 3, 4])
    a = (keys, np.array([0.9, 0.8, 0.1, 0.0]))  # 1, 2, 3, 4
    b = (keys, np.array([0.95, 0.99, 0.97, 0.90]))  # 2, 3, 1, 4
    k, s = fuse_rankings(a, b, None)
    order = k[np.argsort(-s, kind="stable")].tolist()
    assert order == [2, 1, 3, 4]  # rank sums 1 (1 + 0), 2 (0 + 2), 3 (2 + 1), 6 (3 + 3)
    k, s = fuse_rankings(a, b, {3, 4})
    assert sorted(k.tolist()) == [3, 4] and k[np.argmax(s)] == 3


def test_old_setting_name_still_loads_and_unknown_names_fail():
    assert BackendConfig(place_descriptor="votes").place_descriptor == "votes"
    assert place_mode("votes") == "vlad" and PlaceIndex(mode="votes").mode == "vlad"
    for name in ("vlad", "tokens", "fusion", "none"):
        BackendConfig(place_descriptor=name)
    with pytest.raises(BackendConfigError, match="place_descriptor"):
        BackendConfig(place_descriptor="dbow")


@pytest.fixture(scope="module")
def room_views(small):
    """A hand-held room: 40 frames (distinct views of one room: hard negatives) and their descriptors."""
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=40, width=160, height=120, fps=5,
                                       seed=5021), device="cpu")
    return frames, small_descriptors(small, frames)


@pytest.mark.parametrize("mode", ["vlad", "tokens", "fusion"])
def test_every_index_ranks_a_revisit_above_other_views_of_the_same_room(small, room_views, mode):
    frames, desc = room_views
    idx = PlaceIndex(k=16, vocab_keyframes=8, seed=0, mode=mode)
    keys = list(range(0, 40, 4))
    for k in keys:
        idx.add(k, extract_features(frames[k].rgb, "sift", 300).desc, desc[k])
    for target in (8, 24, 36):
        # The revisit: the same view under other light and sensor noise (a later pass, not the same pixels).
        rng = np.random.default_rng(target)
        img = np.clip(frames[target].rgb.astype(np.float32) * 0.8 + 20 + rng.normal(0, 4, frames[target].rgb.shape), 0, 255)
        img = img.astype(np.uint8)
        tok = small_descriptors(small, [type("F", (), {"rgb": img})()])[0]
        got = idx.query(extract_features(img, "sift", 300).desc, top=3, token=tok)
        assert got[0][0] == target, (mode, target, got)


def test_tokens_fall_back_to_vlad_where_the_network_gives_no_descriptor(room_views):
    frames, desc = room_views
    feats = {k: extract_features(frames[k].rgb, "sift", 300).desc for k in range(0, 40, 4)}
    plain, tokens = PlaceIndex(k=16, vocab_keyframes=8, mode="vlad"), PlaceIndex(k=16, vocab_keyframes=8, mode="tokens")
    for k, d in feats.items():
        plain.add(k, d)
        tokens.add(k, d)  # no network descriptor (a model or input without one)
    assert len(tokens.tokens) == 0
    assert tokens.query(feats[20], top=3) == plain.query(feats[20], top=3) and plain.query(feats[20], top=1)[0][0] == 20
    tokens.add(40, feats[0], desc[0])  # once keyframes have one, a query with one ranks by them
    plain.add(40, feats[0])
    assert tokens.query(feats[0], top=1, token=desc[0]) == [(40, pytest.approx(1.0, abs=1e-5))]
    assert tokens.query(feats[20], top=3) == plain.query(feats[20], top=3)  # a query without one: VLAD


def test_culled_keyframes_leave_every_index(room_views):
    frames, desc = room_views
    idx = PlaceIndex(k=16, vocab_keyframes=8, mode="fusion")
    for k in range(0, 40, 4):
        idx.add(k, extract_features(frames[k].rgb, "sift", 300).desc, desc[k])
    idx.remove({8, 12})
    assert len(idx) == len(idx.tokens) == 8
    q = extract_features(frames[8].rgb, "sift", 300).desc
    assert {k for k, _ in idx.query(q, top=20, token=desc[8])} == set(range(0, 40, 4)) - {8, 12}


def _inputs(frames, desc):
    out = []
    for i, f in enumerate(frames):
        H, W = f.depth.shape
        out.append(FrameInput(stamp_ns=int(f.stamp_ns), index=i, T_world_cam=f.T_world_cam, depth=f.depth[::2, ::2].copy(),
                              confidence=np.ones((H // 2, W // 2), np.float32), K=np.asarray(f.K, np.float64), image=f.rgb,
                              crop=(0, 0, W, H), points=np.zeros((0, 3), np.float32), colors=np.zeros((0, 3), np.uint8),
                              point_confidence=np.zeros(0, np.float32), descriptor=desc[i]))
    return out


def test_descriptors_survive_the_back_end_session_round_trip(room_views):
    from loger_core.backend.session_state import capture_backend, restore_backend

    frames, desc = room_views
    cfg = BackendConfig(threaded=False, place_descriptor="tokens", loop_min_age=10)
    inputs = _inputs(frames, desc)
    whole = GeometricBackend(cfg)
    half = GeometricBackend(cfg)
    for fi in inputs[:23]:
        half.submit(fi)
    tensors, meta = capture_backend(half.core)
    json.dumps(meta)
    resumed = GeometricBackend(cfg, core=restore_backend(cfg, tensors, meta))
    for k, kf in half.core.keyframes.items():
        np.testing.assert_array_equal(resumed.core.keyframes[k].descriptor, kf.descriptor)
        assert kf.descriptor.shape == (128,)
    assert len(resumed.core.place.tokens) == len(half.core.place.tokens) > 0
    for fi in inputs:
        whole.submit(fi)
    for fi in inputs[23:]:
        resumed.submit(fi)
    q = desc[-1]
    assert resumed.core.place.tokens.query(q, top=5) == whole.core.place.tokens.query(q, top=5)
    np.testing.assert_allclose(resumed.poses()[1], whole.poses()[1], atol=1e-6)
    # A session written before descriptors existed still restores (its keyframes have none).
    old = {k: v for k, v in tensors.items() if not k.startswith("kf.descriptor") and k != "last.descriptor"}
    restored = restore_backend(cfg, old, meta)
    assert all(kf.descriptor is None for kf in restored.keyframes.values()) and len(restored.place.tokens) == 0
