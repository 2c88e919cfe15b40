"""LoGeR network (Pi3/DINOv2 backbone with TTT + SWA hybrid memory), its checkpoints and which
weights a run uses (``selection``). May import: nothing of loger_core outside ``model``.

    from loger_core.model import build_model, load_checkpoint
    model = load_checkpoint("ckpts/LoGeR_star/latest.pt", config="loger_star", device="cuda", dtype=torch.bfloat16)
    pred, state = model.forward_window(images, state, MemoryOptions(window_size=32, overlap_size=3))
"""
from .checkpoint import (
    CheckpointError,
    CheckpointMismatchError,
    build_model,
    check_state_dict,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from .config import CONFIGS, ModelConfig, config_from_original_yaml, get_config
from .loger import LoGeR
from .prediction import WindowPrediction
from .state import MemoryOptions, MemoryState
from .windowing import SequenceMerger, WindowAligner, window_schedule

__all__ = [
    "CONFIGS", "CheckpointError", "CheckpointMismatchError", "LoGeR", "MemoryOptions", "MemoryState",
    "ModelConfig", "SequenceMerger", "WindowAligner", "WindowPrediction", "build_model", "check_state_dict",
    "config_from_original_yaml", "get_config", "load_checkpoint", "read_state_dict", "save_checkpoint",
    "window_schedule",
]
