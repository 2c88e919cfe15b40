"""Training of LoGeR models on synthetic ground truth (ROS-free). May import: ``model``,
``synthetic``, ``eval``, ``io``, ``stream``, ``mapping``.

`data`: batches of short synthetic clips rendered on the training device; `losses`: scale-invariant
point, relative-camera and confidence losses over whole clips; `train`: the training entry point.
"""
import importlib
from typing import Any

# Resolved on first use (PEP 562): ``train_args`` serves loger-train's --help without torch.
_LAZY = {"ClipBatch": "data", "ClipDataConfig": "data", "SyntheticClipSource": "data", "TrainingDataError": "data",
         "LossTerms": "losses", "LossWeights": "losses", "clip_losses": "losses", "fit_clip_scale": "losses"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ClipBatch", "ClipDataConfig", "SyntheticClipSource", "TrainingDataError",
    "LossTerms", "LossWeights", "clip_losses", "fit_clip_scale",
]
