"""LoGeR network (Pi3/DINOv2 backbone with TTT + SWA hybrid memory), its checkpoints and which
weights a run uses (``selection``). May import: nothing of loger_core outside ``model``.

    from loger_core.model import build_model, load_checkpoint
    model = load_checkpoint("ckpts/LoGeR_star/latest.pt", config="loger_star", device="cuda", dtype=torch.bfloat16)
    pred, state = model.forward_window(images, state, MemoryOptions(window_size=32, overlap_size=3))
"""
import importlib
from typing import Any

# Names resolved on first use (PEP 562): ``loger_core.model.selection`` and ``config`` are light
# and serve CLIs' --help, which must not wait for torch.
_LAZY = {
    "CheckpointError": "checkpoint", "CheckpointMismatchError": "checkpoint", "build_model": "checkpoint",
    "check_state_dict": "checkpoint", "load_checkpoint": "checkpoint", "read_state_dict": "checkpoint",
    "save_checkpoint": "checkpoint", "CONFIGS": "config", "ModelConfig": "config",
    "config_from_original_yaml": "config", "get_config": "config", "LoGeR": "loger",
    "WindowPrediction": "prediction", "MemoryOptions": "state", "MemoryState": "state",
    "SequenceMerger": "windowing", "WindowAligner": "windowing", "window_schedule": "windowing",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONFIGS", "CheckpointError", "CheckpointMismatchError", "LoGeR", "MemoryOptions", "MemoryState",
    "ModelConfig", "SequenceMerger", "WindowAligner", "WindowPrediction", "build_model", "check_state_dict",
    "config_from_original_yaml", "get_config", "load_checkpoint", "read_state_dict", "save_checkpoint",
    "window_schedule",
]
