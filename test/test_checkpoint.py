"""Checkpoint loading: the authors' layout loads strictly; anything else is refused clearly."""
import argparse
import json

import pytest
import torch

from loger_core.model import (
    CheckpointError,
    CheckpointMismatchError,
    MemoryOptions,
    build_model,
    check_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from loger_core.model.synthetic_weights import fill_deterministic_


@pytest.fixture(scope="module")
def random_loger_ckpt(tmp_path_factory):
    """A full-size `loger` checkpoint in the authors' layout: {'model_state_dict': {'module.<name>': fp32}}.

    Most tensors are left uninitialised (writing 5 GB is the cost that matters); a few probe tensors
    get random values so the test can check that values, not only names, arrive."""
    model = build_model("loger", device="meta")
    sd = {f"module.{k}": torch.empty(v.shape) for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    probe = {}
    for k in ("encoder.pos_embed", "ttt_layers.5.w1", "camera_head.fc_rot.bias"):
        sd[f"module.{k}"].uniform_(-1, 1, generator=g)
        probe[k] = sd[f"module.{k}"].clone()
    path = tmp_path_factory.mktemp("ckpt") / "latest.pt"
    torch.save({"model_state_dict": sd, "epoch": 3}, path)
    del sd
    return path, probe


def test_authors_layout_loads_strictly(random_loger_ckpt):
    path, probe = random_loger_ckpt
    model = load_checkpoint(path, config="loger")
    sd = model.state_dict()
    for k, v in probe.items():
        assert torch.equal(sd[k], v), k
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())


def test_loading_into_the_other_model_is_refused(random_loger_ckpt):
    path, _ = random_loger_ckpt
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(path, config="loger_star")
    msg = str(e.value)
    assert "18 unexpected" in msg and "ttt_layers.0.pre_norm.weight" in msg and "hint" in msg


def test_corrupted_file_is_refused(random_loger_ckpt, tmp_path):
    path, _ = random_loger_ckpt
    bad = tmp_path / "truncated.pt"
    with open(path, "rb") as f:
        bad.write_bytes(f.read(1 << 20))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(bad, config="loger")


def test_mismatch_lists_missing_unexpected_and_wrong_shapes():
    model = build_model("loger", device="meta")
    sd = {k: torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
    del sd["decoder.3.attn.qkv.weight"]
    sd["decoder.99.extra"] = torch.empty(3, device="meta")
    sd["point_head.proj.weight"] = torch.empty(1, 2, device="meta")
    with pytest.raises(CheckpointMismatchError) as e:
        check_state_dict(model, sd, source="x.pt")
    msg = str(e.value)
    assert "1 missing: decoder.3.attn.qkv.weight" in msg
    assert "1 unexpected: decoder.99.extra" in msg
    assert "point_head.proj.weight (1, 2) != expected (588, 1024)" in msg


def test_mismatch_list_is_capped_at_20():
    model = build_model("loger", device="meta")
    with pytest.raises(CheckpointMismatchError) as e:
        check_state_dict(model, {}, source="empty")
    msg = str(e.value)
    line = msg.splitlines()[1]
    assert line.startswith("  1509 missing: ") and line.endswith(" ...")
    assert len(line[len("  1509 missing: "):-len(" ...")].split(", ")) == 20
    assert "hint" not in msg


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt", config="tiny")
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_checkpoint(p, config="tiny")


def test_pickled_objects_need_explicit_trust(tmp_path):
    model = fill_deterministic_(build_model("tiny", device="meta"))
    p = tmp_path / "with_object.pt"
    # Training scripts often store their argparse Namespace beside the weights.
    torch.save({"model_state_dict": model.state_dict(), "args": argparse.Namespace(lr=1e-4)}, p)
    with pytest.raises(CheckpointError, match="allow_pickle"):
        load_checkpoint(p, config="tiny")
    assert load_checkpoint(p, config="tiny", allow_pickle=True) is not None


def test_safetensors_round_trip_with_config(tmp_path):
    model = fill_deterministic_(build_model("tiny", device="meta"))
    path = save_checkpoint(model, tmp_path / "mine", extra={"trained_steps": 10})
    assert path.suffix == ".safetensors"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["model"]["name"] == "tiny" and meta["trained_steps"] == 10
    loaded = load_checkpoint(path)  # config comes from the JSON beside it
    x = torch.rand(1, 3, 3, 28, 42)
    a, _ = model.forward_window(x, None, MemoryOptions(4, 1))
    b, _ = loaded.forward_window(x, None, MemoryOptions(4, 1))
    assert torch.equal(a.points, b.points)


def test_corrupt_safetensors_is_refused(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(p, config="tiny")


def test_dtype_cast_keeps_normalisation_fp32(tmp_path):
    model = fill_deterministic_(build_model("tiny", device="meta"))
    path = save_checkpoint(model, tmp_path / "m")
    m16 = load_checkpoint(path, dtype=torch.bfloat16)
    assert m16.decoder[0].attn.qkv.weight.dtype == torch.bfloat16
    assert m16.image_mean.dtype == torch.float32
