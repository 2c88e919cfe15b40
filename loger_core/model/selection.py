"""Which network and weights a run uses, and the input size and window each model is made for.

One rule for every entry point (``loger_node``, ``loger-replay``, ``loger-reconstruct``):

- an explicit checkpoint is used as given (model: the one asked for; 'auto' = the model named by
  the JSON beside a ``.safetensors`` file, else ``loger_star``);
- without a checkpoint, the trained ``small`` weights shipped in this package
  (``loger_core/weights/``) are used, with a loud warning: they were trained on synthetic scenes
  only and their poses are not fit for navigation (numbers in ``loger_core/weights/README.md``);
- deterministic untrained ("synthetic") weights only when asked for explicitly (tests, benchmarks).

A full model (``loger``/``loger_star``) without a checkpoint is an error: there are no bundled
weights for it.

:data:`MODEL_DEFAULTS` gives each model's input size and window: ``tiny`` and ``small`` are sized for a CPU
(about 10k input pixels, e.g. 112x84 for a 4:3 camera, window 16), the full models for a GPU (the
authors' 504x280, window 32). Callers use them where their own setting is left at 0 / None.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

__all__ = [
    "BUNDLED_CHECKPOINT",
    "BUNDLED_MODEL",
    "BUNDLED_WEIGHTS_WARNING",
    "MODEL_CHOICES",
    "MODEL_DEFAULTS",
    "ModelDefaults",
    "ModelSelection",
    "ModelSelectionError",
    "select_model",
]

BUNDLED_MODEL = "small"
BUNDLED_CHECKPOINT = Path(__file__).resolve().parents[1] / "weights" / "small_synthetic.safetensors"
# 'auto' plus the names of loger_core.model.CONFIGS (a test keeps them equal; importing the model here
# would pull torch into every parameter check).
MODEL_CHOICES = ("auto", "loger", "loger_star", "small", "small_deep", "tiny")
# The model 'auto' means for a checkpoint without a JSON sidecar (the authors' recommended release).
DEFAULT_CHECKPOINT_MODEL = "loger_star"

BUNDLED_WEIGHTS_WARNING = (
    "NO CHECKPOINT GIVEN: running the BUNDLED DEMO MODEL ('small', trained on synthetic scenes only, {path}). "
    "Its depth is plausible but its poses drift: NOT fit for navigation. Pass the authors' weights "
    "(checkpoint) for real results."
)


class ModelSelectionError(ValueError):
    """An impossible model / checkpoint combination (the message says what to pass)."""


@dataclass(frozen=True)
class ModelDefaults:
    """Input size and window a model is made for.

    resolution: network input (W, H), or None = from the first frame's aspect ratio with at most
    ``pixel_limit`` pixels (the authors' pixel-budget rule).
    """

    resolution: Optional[tuple[int, int]]
    pixel_limit: int
    window_size: int
    overlap_size: int


MODEL_DEFAULTS: dict[str, ModelDefaults] = {
    # CPU: ~10k pixels keep a 16-frame window near 0.8k tokens (112x84 for 4:3, the training size).
    "tiny": ModelDefaults(resolution=None, pixel_limit=10_000, window_size=16, overlap_size=3),
    # The shipped default: trained at 112x84 with windows of 8 and 16 frames.
    "small": ModelDefaults(resolution=None, pixel_limit=10_000, window_size=16, overlap_size=3),
    # small with more decoder blocks (grown from trained small weights): small's input and windows.
    "small_deep": ModelDefaults(resolution=None, pixel_limit=10_000, window_size=16, overlap_size=3),
    # GPU: the authors' demo setting.
    "loger": ModelDefaults(resolution=(504, 280), pixel_limit=255_000, window_size=32, overlap_size=3),
    "loger_star": ModelDefaults(resolution=(504, 280), pixel_limit=255_000, window_size=32, overlap_size=3),
}


@dataclass(frozen=True)
class ModelSelection:
    """The outcome of :func:`select_model`.

    weights: 'checkpoint' (given explicitly), 'bundled' (the shipped small demo weights) or
    'synthetic' (deterministic untrained weights); ``checkpoint`` is None only for 'synthetic'.
    """

    model: str
    checkpoint: Optional[str]
    weights: str

    @property
    def bundled(self) -> bool:
        return self.weights == "bundled"

    @property
    def synthetic(self) -> bool:
        return self.weights == "synthetic"

    @property
    def defaults(self) -> ModelDefaults:
        return MODEL_DEFAULTS[self.model]

    def warning(self) -> Optional[str]:
        """The loud start-up warning for demo or untrained weights (None for a real checkpoint)."""
        if self.bundled:
            return BUNDLED_WEIGHTS_WARNING.format(path=self.checkpoint)
        if self.synthetic:
            return (f"NO CHECKPOINT GIVEN: model {self.model!r} runs with deterministic SYNTHETIC (untrained) "
                    "weights; poses, depth and points are NOT meaningful geometry (tests and benchmarks only).")
        return None

    def describe(self) -> str:
        if self.bundled:
            return f"{self.model} (bundled demo weights {self.checkpoint})"
        if self.synthetic:
            return f"{self.model} (SYNTHETIC untrained weights)"
        return f"{self.model} ({self.checkpoint})"


def _sidecar_model(checkpoint: Path) -> Optional[str]:
    for cand in (checkpoint.with_suffix(".json"), checkpoint.parent / "config.json"):
        if checkpoint.suffix == ".safetensors" and cand.is_file():
            try:
                name = json.loads(cand.read_text())["model"]["name"]
            except (OSError, ValueError, KeyError, TypeError):
                return None
            return name if name in MODEL_DEFAULTS else None
    return None


def select_model(model: Optional[str] = "auto", checkpoint: Optional[str] = None, *,
                 synthetic: bool = False) -> ModelSelection:
    """The model and weights to run (see the module docstring).

    Args:
        model: 'auto' (or None), 'small', 'small_deep', 'tiny', 'loger' or 'loger_star'.
        checkpoint: a weights file ('' or None = none; '~' is expanded).
        synthetic: without a checkpoint, use deterministic untrained weights instead of the bundled ones.
    """
    model = model or "auto"
    if model not in MODEL_CHOICES:
        raise ModelSelectionError(f"model {model!r} must be one of {list(MODEL_CHOICES)}")
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if model == "auto":
            model = _sidecar_model(path) or DEFAULT_CHECKPOINT_MODEL
        return ModelSelection(model, str(path), "checkpoint")
    if model == "auto":
        model = BUNDLED_MODEL
    if synthetic:
        return ModelSelection(model, None, "synthetic")
    if model != BUNDLED_MODEL:
        raise ModelSelectionError(
            f"model {model!r} needs a checkpoint (the authors' latest.pt or a .safetensors file): only "
            f"{BUNDLED_MODEL!r} has bundled weights. Pass a checkpoint, or model {BUNDLED_MODEL!r} / 'auto' "
            "for the bundled demo model.")
    return ModelSelection(model, str(BUNDLED_CHECKPOINT), "bundled")
