"""Growing a trained `small` into `small_deep` (training.grow): same outputs, then trainable."""
from dataclasses import replace

import pytest
import torch

from loger_core.model import build_model, get_config
from loger_core.model.state import MemoryOptions
from loger_core.training.grow import GrowError, grow_decoder, pair_mapping


def _perturbed_small() -> torch.nn.Module:
    """A `small` whose memory gates and layer scales are non-zero, as trained weights are (fresh
    gates are zero, which would hide a memory layer attached to the wrong block)."""
    torch.manual_seed(0)
    model = build_model("small").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gate_projs" in name or name.endswith("gamma"):
                p.copy_(0.3 * torch.randn_like(p))
    return model


def test_pair_mapping_keeps_first_and_last():
    assert pair_mapping(4, 7) == [0, 2, 4, 6]
    assert pair_mapping(4, 4) == [0, 1, 2, 3]
    with pytest.raises(GrowError):
        pair_mapping(4, 3)


def test_grown_model_computes_what_its_source_computes_over_two_windows():
    src = _perturbed_small()
    dst = grow_decoder(src, get_config("small_deep")).eval()
    assert dst.cfg.name == "small_deep" and len(dst.decoder) == 14
    assert sum(p.numel() for p in dst.parameters()) > sum(p.numel() for p in src.parameters())
    images = torch.rand(1, 9, 3, 28, 42)
    opts = MemoryOptions(window_size=6, overlap_size=3)
    s_state, d_state = src.init_state(), dst.init_state()
    with torch.no_grad():
        for start, end in ((0, 6), (3, 9)):  # the second window reads both memories
            a, s_state = src.forward_window(images[:, start:end], s_state, opts)
            b, d_state = dst.forward_window(images[:, start:end], d_state, opts)
            torch.testing.assert_close(b.local_points, a.local_points, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b.camera_poses, a.camera_poses, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(b.conf, a.conf, rtol=1e-5, atol=1e-5)


def test_new_blocks_start_as_identities_and_receive_gradients():
    torch.manual_seed(1)
    dst = grow_decoder(build_model("small"), get_config("small_deep"))
    new = [i for i in range(14) if i not in (0, 1, 4, 5, 8, 9, 12, 13)]
    assert all(float(dst.decoder[i].ls1.gamma.detach().abs().max()) == 0.0 for i in new)
    out, _ = dst.forward_window(torch.rand(1, 4, 3, 28, 42), dst.init_state(), MemoryOptions(window_size=4, overlap_size=1))
    out.local_points.square().mean().backward()
    assert all(float(dst.decoder[i].ls1.gamma.grad.abs().max()) > 0 for i in new)


def test_incompatible_targets_are_refused():
    src = build_model("tiny")
    with pytest.raises(GrowError, match="more than decoder depth"):
        grow_decoder(src, get_config("small_deep"))
    small = get_config("small")
    with pytest.raises(GrowError, match="ttt_insert_after"):
        grow_decoder(build_model("small"), replace(get_config("small_deep"), ttt_insert_after=(0, 2, 4, 6)))
    with pytest.raises(GrowError, match="attn_insert_after"):
        grow_decoder(build_model("small"), replace(get_config("small_deep"), attn_insert_after=(4,)))
    assert small.dec_depth == 8


def test_train_cli_grows_and_trains(tmp_path):
    from loger_core.model import load_checkpoint
    from loger_core.model.checkpoint import save_checkpoint
    from loger_core.training.train import main

    src = tmp_path / "src.safetensors"
    save_checkpoint(_perturbed_small(), src)
    out = tmp_path / "deep"
    assert main(["--config", "small_deep", "--device", "cpu", "--steps", "1", "--out", str(out), "--size", "42x28",
                 "--window-sizes", "3", "--overlap", "1", "--windows-per-clip", "2", "--frame-strides", "1",
                 "--pool-size", "1", "--sequence-frames", "6", "--batch-size", "1", "--log-every", "1",
                 "--warmup", "1", "--grow-from", str(src)]) == 0
    model = load_checkpoint(out.with_suffix(".safetensors"))
    assert model.cfg.name == "small_deep"
    # Trained from the grown weights: the kept encoder moved only by one step, not re-initialised.
    before = load_checkpoint(src).state_dict()["encoder.patch_embed.proj.weight"]
    after = model.state_dict()["encoder.patch_embed.proj.weight"]
    assert float((after - before).abs().max()) < 0.01


def test_train_cli_refuses_two_starting_points(tmp_path):
    from loger_core.training.train import main

    with pytest.raises(SystemExit, match="alternatives"):
        main(["--config", "small_deep", "--device", "cpu", "--steps", "1", "--out", str(tmp_path / "x"),
              "--init", "a.safetensors", "--grow-from", "b.safetensors"])
