"""Training of LoGeR models on synthetic ground truth (ROS-free). May import: ``model``,
``synthetic``, ``eval``, ``io``, ``stream``, ``mapping``.

`data`: batches of short synthetic clips rendered on the training device; `losses`: scale-invariant
point, relative-camera and confidence losses over whole clips; `train`: the training entry point.
"""
from .data import ClipBatch, ClipDataConfig, SyntheticClipSource, TrainingDataError
from .losses import LossTerms, LossWeights, clip_losses, fit_clip_scale

__all__ = [
    "ClipBatch", "ClipDataConfig", "SyntheticClipSource", "TrainingDataError",
    "LossTerms", "LossWeights", "clip_losses", "fit_clip_scale",
]
