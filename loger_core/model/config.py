"""Model configurations as typed dataclasses.

`loger` and `loger_star` reproduce the authors' released `original_config.yaml` files on top of the
Pi3 constructor defaults; `tiny` runs every component of the same code path (encoder, alternating
frame/global decoder, TTT and SWA layers, all heads) at a size that is fast on a CPU.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EncoderConfig:
    """DINOv2-style ViT with register tokens (the authors use ViT-L/14 with 4 registers)."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    patch_size: int = 14
    num_register_tokens: int = 4
    # The learned position table covers a pos_grid x pos_grid patch grid (518 / 14 = 37) and is
    # resampled bicubically (with antialiasing) to the input's patch grid.
    pos_grid: int = 37
    layerscale_init: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    """Every size and switch of the LoGeR network. Field names follow the authors' config keys."""

    name: str = "loger"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    dec_embed_dim: int = 1024
    dec_depth: int = 36
    dec_num_heads: int = 16
    dec_mlp_ratio: float = 4.0
    num_register_tokens: int = 5
    num_pe_tokens: int = 3
    rope_freq: float = 100.0
    # Point / confidence / camera decoders ("heads").
    head_embed_dim: int = 1024
    head_depth: int = 5
    head_num_heads: int = 16
    camera_dim: int = 512
    # Test-time-training fast-weight layers (LaCT-style SwiGLU).
    ttt_insert_after: tuple[int, ...] = tuple(range(0, 36, 2))
    ttt_head_dim: int = 512
    ttt_inter_multi: int = 4
    ttt_pre_norm: bool = True
    ttt_base_lr: float = 0.01
    num_muon_update_steps: int = 5
    ttt_update_steps: int = 1
    # Sliding-window attention over the previous window's cached keys/values.
    attn_insert_after: tuple[int, ...] = (10, 18, 26, 34)
    # Inter-window alignment the checkpoint was trained for ("se3" for LoGeR_star).
    se3: bool = False

    @property
    def patch_size(self) -> int:
        return self.encoder.patch_size

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in the decoder's per-frame token list."""
        return self.num_register_tokens + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ttt_insert_after"] = list(self.ttt_insert_after)
        d["attn_insert_after"] = list(self.attn_insert_after)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kw = dict(d)
        if "encoder" in kw and isinstance(kw["encoder"], dict):
            kw["encoder"] = EncoderConfig(**kw["encoder"])
        for key in ("ttt_insert_after", "attn_insert_after"):
            if key in kw:
                kw[key] = _positions(kw[key])
        return cls(**kw)


def _positions(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, (int, float)):
        return (int(value),)
    return tuple(int(v) for v in value)


LOGER = ModelConfig(name="loger", ttt_pre_norm=True, se3=False)
LOGER_STAR = ModelConfig(name="loger_star", ttt_pre_norm=False, se3=True)
TINY = ModelConfig(
    name="tiny",
    encoder=EncoderConfig(embed_dim=64, depth=2, num_heads=2, patch_size=14, num_register_tokens=4, pos_grid=8),
    dec_embed_dim=64,
    dec_depth=4,
    dec_num_heads=2,
    head_embed_dim=64,
    head_depth=1,
    head_num_heads=2,
    camera_dim=32,
    ttt_insert_after=(0, 2),
    ttt_head_dim=32,
    ttt_inter_multi=2,
    attn_insert_after=(2,),
    ttt_pre_norm=True,
)

# `small`: the shipped default. Sized by measurement (bench/model_size.py): the largest of the
# candidates that still runs the node above 15 frames/s on a 2-core CPU at 112x84 with window 16.
# Twice tiny's width and depth; TTT after every frame block and SWA in the middle, as the authors place them.
SMALL = ModelConfig(
    name="small",
    encoder=EncoderConfig(embed_dim=128, depth=4, num_heads=4, patch_size=14, num_register_tokens=4, pos_grid=8),
    dec_embed_dim=128,
    dec_depth=8,
    dec_num_heads=4,
    head_embed_dim=96,
    head_depth=1,
    head_num_heads=4,
    camera_dim=64,
    ttt_insert_after=(0, 2, 4, 6),
    ttt_head_dim=64,
    ttt_inter_multi=2,
    attn_insert_after=(4,),
    ttt_pre_norm=True,
)

# `small_deep`: `small` with a frame / global block pair inserted between each of its decoder pairs
# (7 global-attention blocks instead of 4, where frames are compared); grown from trained `small`
# weights by `training.grow.grow_decoder` without changing what the network computes.
SMALL_DEEP = ModelConfig.from_dict({**SMALL.to_dict(), "name": "small_deep", "dec_depth": 14,
                                    "ttt_insert_after": [0, 4, 8, 12], "attn_insert_after": [8]})

CONFIGS: dict[str, ModelConfig] = {"loger": LOGER, "loger_star": LOGER_STAR, "tiny": TINY, "small": SMALL,
                                   "small_deep": SMALL_DEEP}


def get_config(name: str) -> ModelConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown model config {name!r}; choose one of {sorted(CONFIGS)}") from None


def config_from_original_yaml(path: str | Path, name: str = "custom") -> ModelConfig:
    """Builds a config from the authors' `ckpts/<name>/original_config.yaml` (key `model`).

    Keys absent from the file take the Pi3 constructor defaults (which differ from ours only in
    `ttt_inter_multi`=2 and `ttt_pre_norm`=False), exactly as the authors' loader does.
    """
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    model = data.get("model", data)
    base = ModelConfig(name=name, ttt_inter_multi=2, ttt_pre_norm=False, se3=False)
    overrides: dict[str, Any] = {}
    mapping = {
        "ttt_insert_after": "ttt_insert_after",
        "attn_insert_after": "attn_insert_after",
        "ttt_head_dim": "ttt_head_dim",
        "ttt_inter_multi": "ttt_inter_multi",
        "ttt_pre_norm": "ttt_pre_norm",
        "num_muon_update_steps": "num_muon_update_steps",
        "ttt_update_steps": "ttt_update_steps",
        "se3": "se3",
    }
    for key, value in model.items():
        if key in mapping:
            overrides[mapping[key]] = value
        elif key in ("use_momentum", "pi3x", "conf") and bool(value) != (key == "conf"):
            raise ValueError(f"{path}: model.{key}={value!r} is not supported by this implementation")
    d = base.to_dict()
    d.update(overrides)
    cfg = ModelConfig.from_dict(d)
    if not cfg.attn_insert_after:
        # The authors fall back to the TTT positions when no SWA positions are given.
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "attn_insert_after": list(cfg.ttt_insert_after)})
    return cfg
