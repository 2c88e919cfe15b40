"""Loading and saving weights.

Accepted inputs:
- the authors' `latest.pt` (a dict with `model_state_dict`, or the state dict itself; keys may carry
  a `module.` prefix from DDP), loaded with `torch.load(..., mmap=True, weights_only=True)`;
- `.safetensors` files (ours or converted ones), with an optional `<stem>.json`/`config.json` beside.

Loading is strict: any missing, unexpected or wrongly shaped tensor is refused with a
`CheckpointMismatchError` that lists them. Tensors are memory-mapped and assigned into a model
built on the `meta` device, so a 5 GB checkpoint is never held twice in memory.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from .config import ModelConfig, get_config
from .loger import LoGeR

LIST_LIMIT = 20


class CheckpointError(RuntimeError):
    """The checkpoint file cannot be read."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model's parameters by name and shape."""


def build_model(name: str | ModelConfig = "loger", device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> LoGeR:
    """Builds the network for `name` ('loger', 'loger_star', 'tiny') or a `ModelConfig`.

    With `device='meta'` no parameter memory is allocated (use `load_checkpoint` to fill it).
    """
    cfg = get_config(name) if isinstance(name, str) else name
    # Construct directly on the target device: initialising 1.25 B parameters on the CPU and then
    # copying them would cost tens of seconds.
    with torch.device(device if device is not None else "cpu"):
        model = LoGeR(cfg)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def _strip_prefix(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def read_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, Tensor]:
    """Reads a state dict from `.pt`/`.pth` (authors' layout) or `.safetensors`, without copying."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: holds Python objects besides tensors, refused by weights_only loading ({e}). "
            "If you trust this file, pass allow_pickle=True (CLI: --allow-pickle)."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        obj = obj["model_state_dict"]
    elif isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor) or a dict with 'model_state_dict'")
    return _strip_prefix(obj)


def check_state_dict(model: torch.nn.Module, sd: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Raises CheckpointMismatchError unless `sd` matches the model's state dict by name and shape."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if not (missing or unexpected or wrong):
        return
    lines = [f"{source} does not match model '{getattr(getattr(model, 'cfg', None), 'name', '?')}':"]
    if missing:
        lines.append(f"  {len(missing)} missing: " + ", ".join(missing[:LIST_LIMIT]) + (" ..." if len(missing) > LIST_LIMIT else ""))
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected: " + ", ".join(unexpected[:LIST_LIMIT]) + (" ..." if len(unexpected) > LIST_LIMIT else ""))
    if wrong:
        lines.append(
            f"  {len(wrong)} wrong shape: "
            + ", ".join(f"{k} {got[k]} != expected {expected[k]}" for k in wrong[:LIST_LIMIT])
            + (" ..." if len(wrong) > LIST_LIMIT else "")
        )
    if (missing or unexpected) and all(".pre_norm." in k for k in missing + unexpected):
        lines.append("  hint: 'pre_norm' tensors differ: LoGeR has TTT pre-norms, LoGeR_star does not (config loger vs loger_star)")
    raise CheckpointMismatchError("\n".join(lines))


def _sidecar_config(path: Path) -> ModelConfig | None:
    for cand in (path.with_suffix(".json"), path.parent / "config.json"):
        if cand.is_file():
            return ModelConfig.from_dict(json.loads(cand.read_text())["model"])
    return None


def load_checkpoint(
    path: str | Path,
    config: str | ModelConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
) -> LoGeR:
    """Builds the model and loads `path` strictly.

    config: model name or ModelConfig; default: the JSON config saved beside a safetensors file,
    else 'loger'. dtype: cast floating tensors (e.g. torch.bfloat16 on GPU); None keeps the file's.
    """
    path = Path(path)
    if config is None:
        config = _sidecar_config(path) or "loger"
    model = build_model(config, device="meta")
    sd = read_state_dict(path, allow_pickle=allow_pickle)
    check_state_dict(model, sd, source=str(path))
    model.load_state_dict(sd, strict=True, assign=True)
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
        # ImageNet statistics stay float32 for exact normalisation.
        model.image_mean.data = model.image_mean.data.float()
        model.image_std.data = model.image_std.data.float()
    return model.eval()


def save_checkpoint(model: LoGeR, path: str | Path, extra: dict | None = None) -> Path:
    """Writes `<path>.safetensors` and `<path>.json` ({"model": config, **extra})."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(path))
    meta = {"model": model.cfg.to_dict(), **(extra or {})}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path
