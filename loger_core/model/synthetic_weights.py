"""Deterministic, name-seeded weights for the full-size networks (no downloadable checkpoints).

Rule (version 1), for a tensor called `name` of shape `shape`:
  g = torch.Generator seeded with the first 8 bytes (little endian, top bit cleared) of sha256(name)
  n = torch.randn(shape, generator=g, dtype=float32)
  image_mean / image_std          -> the ImageNet constants
  '*.gamma' (layer scale)         -> 0.05 + 0.01 n
  '*gate_projs.*.bias'            -> 0.5 + 0.1 n      (gates open: silu(~0.5) ~ 0.31, so TTT and SWA matter)
  '*norm*.weight' (1-D)           -> 1.0 + 0.1 n
  other 1-D '*.bias' / norm bias  -> 0.02 n
  'ttt_layers.*.w0|w1|w2'         -> n * sqrt(2 / shape[1])
  'ttt_layers.*.lr_fc.weight', '*gate_projs.*.weight', '*_head.proj.weight'
                                  -> 0.1 n / sqrt(fan_in)   (bounded gates; moderate depth logits)
  tokens, pos_embed               -> 0.1 n
  any other weight                -> n / sqrt(fan_in), fan_in = prod(shape[1:])
The scales keep activations finite through the 60 transformer blocks and the exp() of the depth head.
Used by the golden-output test (the same rule filled the authors' model) and by benchmarks.
"""
from __future__ import annotations

import hashlib
import math

import torch
from torch import Tensor, nn

RULE_VERSION = 1
_IMAGENET = {"image_mean": (0.485, 0.456, 0.406), "image_std": (0.229, 0.224, 0.225)}


def name_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def deterministic_tensor(name: str, shape: tuple[int, ...]) -> Tensor:
    """The rule-1 value of parameter/buffer `name` with `shape` (float32, CPU)."""
    if name in _IMAGENET:
        return torch.tensor(_IMAGENET[name], dtype=torch.float32).view(shape)
    g = torch.Generator().manual_seed(name_seed(name))
    n = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gamma":
        return 0.05 + 0.01 * n
    if "gate_projs." in name and leaf == "bias":
        return 0.5 + 0.1 * n
    if len(shape) == 1 and leaf == "weight" and "norm" in name:
        return 1.0 + 0.1 * n
    if len(shape) == 1:
        return 0.02 * n
    if name.startswith("ttt_layers.") and leaf in ("w0", "w1", "w2"):
        return n * math.sqrt(2.0 / shape[1])
    fan_in = math.prod(shape[1:])
    if (name.startswith("ttt_layers.") and name.endswith("lr_fc.weight")) or "gate_projs." in name or name.endswith("_head.proj.weight"):
        return 0.1 * n / math.sqrt(fan_in)
    if "token" in name or name.endswith("pos_embed"):
        return 0.1 * n
    return n / math.sqrt(fan_in)


def deterministic_state_dict(model: nn.Module) -> dict[str, Tensor]:
    return {k: deterministic_tensor(k, tuple(v.shape)) for k, v in model.state_dict().items()}


def fill_deterministic_(model: nn.Module) -> nn.Module:
    """Replaces every parameter and buffer of `model` (which may live on `meta`) by the rule's value."""
    model.load_state_dict(deterministic_state_dict(model), strict=True, assign=True)
    return model
