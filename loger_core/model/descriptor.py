"""A global place descriptor of each frame from the encoder's own patch tokens (no extra forward
pass): the mean of the last encoder layer's patch tokens, L2-normalised.

Why these tokens: the encoder sees one frame at a time (the memory enters only in the decoder), so
the same place gives the same descriptor whatever the stream saw before, which is what retrieval
needs. Why the mean: over the shipped `small` model it ranked true revisits as well as GeM and max
pooling and kept the most recall at full precision; the class and register tokens kept less (`small`
is trained from scratch, and only its patch tokens reach the decoder): an exploratory comparison
in docs/architecture.md; bench/place_recognition.py measures this one against VLAD. With random
(untrained) weights the descriptor is no more than a random projection of the small input image.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["encoder_descriptors", "pool_patch_tokens"]


def pool_patch_tokens(tokens: Tensor) -> Tensor:
    """(B, P, C) patch tokens -> (B, C) float32 unit vectors (mean pooling, then L2 norm; a zero
    mean stays zero). Computed in float32 whatever the autocast dtype."""
    with torch.autocast(device_type=tokens.device.type, enabled=False):
        mean = tokens.float().mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def encoder_descriptors(model: torch.nn.Module, rgb: Tensor, batch: int = 32) -> Tensor:
    """(N, C) the descriptors `LoGeR.forward_window` gives frames `rgb` (N, h, w, 3) uint8 at model
    resolution, from the encoder alone: the encoder sees one frame at a time, so this equals the
    stream's ``FrameResult.descriptor`` of the same prepared image (tests and benches use it to get
    descriptors without a stream)."""
    out = []
    for start in range(0, len(rgb), batch):
        x = rgb[start:start + batch].to(model.image_mean.device).movedim(-1, -3).float().div_(255.0)
        x = (x - model.image_mean) / model.image_std
        out.append(pool_patch_tokens(model.encoder(x.to(model.image_mean.dtype))))
    return torch.cat(out) if out else torch.zeros(0, model.cfg.encoder.embed_dim)
