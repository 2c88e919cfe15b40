"""Growing a trained model deeper without changing what it computes (Net2Net-style, for depth).

The decoder alternates frame-wise and global blocks in pairs. A deeper config of the same widths
gets the source's pairs spread over its own (first to first, last to last, the rest evenly in
between); the new pairs start with LayerScale 0, so each is an identity and the grown model's
outputs equal the source's exactly until training moves them. The TTT / SWA layers stay attached to
the same source blocks, so the target config must place them where the mapping puts those blocks.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from loger_core.model.config import ModelConfig
from loger_core.model.loger import LoGeR

__all__ = ["GrowError", "pair_mapping", "grow_decoder"]


class GrowError(ValueError):
    """The target config cannot hold the source model (widths, pair count or memory placement)."""


def pair_mapping(src_pairs: int, dst_pairs: int) -> list[int]:
    """Target pair index of each source decoder pair (first -> first, last -> last, even spread)."""
    if src_pairs < 2 or dst_pairs < src_pairs:
        raise GrowError(f"cannot spread {src_pairs} decoder pairs over {dst_pairs}")
    return [round(p * (dst_pairs - 1) / (src_pairs - 1)) for p in range(src_pairs)]


def _check(src: ModelConfig, dst: ModelConfig) -> list[int]:
    """The target decoder block of each source block; raises `GrowError` if `dst` cannot hold `src`.
    The last pair maps to the last pair (`pair_mapping`), as the heads read the last two blocks."""
    same = replace(dst, name=src.name, dec_depth=src.dec_depth, ttt_insert_after=src.ttt_insert_after,
                   attn_insert_after=src.attn_insert_after)
    if same != src:
        raise GrowError(f"{dst.name!r} differs from {src.name!r} in more than decoder depth and memory placement")
    if src.dec_depth % 2 or dst.dec_depth % 2:
        raise GrowError("decoder depths must be even (frame / global pairs)")
    pairs = pair_mapping(src.dec_depth // 2, dst.dec_depth // 2)
    block = [2 * pairs[i // 2] + i % 2 for i in range(src.dec_depth)]
    for key in ("ttt_insert_after", "attn_insert_after"):
        want = tuple(block[i] for i in getattr(src, key))
        if getattr(dst, key) != want:
            raise GrowError(f"{dst.name!r}.{key} must be {want} to keep {src.name!r}'s memory layers on the same blocks")
    return block


@torch.no_grad()
def grow_decoder(source: LoGeR, target_cfg: ModelConfig) -> LoGeR:
    """A `target_cfg` model holding `source`'s weights, with identity (LayerScale 0) new blocks.

    Every parameter and buffer outside `decoder.*` is copied by name; decoder block `i` of the source
    becomes block `_check(...)[i]` of the target. Raises `GrowError` on an incompatible config.
    """
    block = _check(source.cfg, target_cfg)
    param = next(source.parameters())
    target = LoGeR(target_cfg).to(device=param.device, dtype=param.dtype)
    src_state = source.state_dict()
    dst_state = target.state_dict()
    for name, value in src_state.items():
        if name.startswith("decoder."):
            _, idx, rest = name.split(".", 2)
            name = f"decoder.{block[int(idx)]}.{rest}"
        dst_state[name] = value.clone()
    kept = set(block)
    for i in range(len(target.decoder)):
        if i not in kept:
            dst_state[f"decoder.{i}.ls1.gamma"].zero_()
            dst_state[f"decoder.{i}.ls2.gamma"].zero_()
    target.load_state_dict(dst_state, strict=True)
    return target
