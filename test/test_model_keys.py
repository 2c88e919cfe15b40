"""Our network's state_dict equals the authors' released checkpoints by name and shape."""
import json

import pytest
import torch

from loger_core.model import build_model, config_from_original_yaml, get_config


@pytest.mark.parametrize("name,key", [("loger", "LoGeR"), ("loger_star", "LoGeR_star")])
def test_state_dict_names_and_shapes_match_release(fixtures_dir, name, key):
    expected = json.loads((fixtures_dir / "loger_state_dict_keys.json").read_text())[key]
    model = build_model(name, device="meta")
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    # Parameter count stated in the spec: 1,254.6 M.
    assert round(sum(v.numel() for v in model.state_dict().values()) / 1e6, 1) == 1254.6


def test_meta_construction_allocates_nothing():
    model = build_model("loger", device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_original_yaml_configs_reproduce_named_configs(tmp_path):
    # The authors' released config files, verbatim in content.
    even = "\n".join(f"  - {i}" for i in range(0, 36, 2))
    swa = "\n".join(f"  - {i}" for i in (10, 18, 26, 34))
    (tmp_path / "loger.yaml").write_text(
        f"model:\n  attn_insert_after:\n{swa}\n  ttt_head_dim: 512\n  ttt_insert_after:\n{even}\n  ttt_inter_multi: 4\n  ttt_pre_norm: true\n"
    )
    (tmp_path / "star.yaml").write_text(
        f"model:\n  attn_insert_after:\n{swa}\n  se3: true\n  ttt_head_dim: 512\n  ttt_insert_after:\n{even}\n  ttt_inter_multi: 4\n"
    )
    a = config_from_original_yaml(tmp_path / "loger.yaml", name="loger")
    b = config_from_original_yaml(tmp_path / "star.yaml", name="loger_star")
    assert a == get_config("loger")
    assert b == get_config("loger_star")


def test_unknown_config_name_is_refused():
    with pytest.raises(ValueError, match="unknown model config 'huge'"):
        build_model("huge", device="meta")


def test_tiny_has_every_component():
    m = build_model("tiny", device="meta")
    assert len(m.ttt_layers) >= 2 and len(m.swa_layers) >= 1
    assert m.ttt_layers[0].pre_norm is not None
    names = {n.split(".")[0] for n, _ in m.named_parameters()}
    assert {"encoder", "decoder", "point_decoder", "conf_decoder", "camera_decoder", "ttt_layers", "swa_layers",
            "ttt_gate_projs", "swa_gate_projs", "point_head", "conf_head", "camera_head"} <= names
