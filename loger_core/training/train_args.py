"""``loger-train``'s command line, from light imports only: the console script
(:mod:`loger_core.cli.train`) parses with it before training (:mod:`loger_core.training.train`:
torch, the renderer) is imported, so ``--help`` and argument errors answer at once.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["LOSS_DEFAULTS", "build_parser"]

# loger_core.training.losses.LossWeights' defaults (importing it would import torch; a test keeps them equal).
LOSS_DEFAULTS = {"translation": 1.0, "correspondence": 0.0, "translation_norm": "depth"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loger-train", description="Train a LoGeR model on synthetic clips.")
    p.add_argument("--config", default="small", help="model config (default small, the shipped one)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--time-limit", type=float, default=0.0, help="stop after this many seconds of training (0: none)")
    p.add_argument("--out", required=True, help="output path (.safetensors and .json are written)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", default="112x84", help="training resolution WxH (multiples of 14)")
    p.add_argument("--window-sizes", default="8,16")
    p.add_argument("--overlap", type=int, default=3)
    p.add_argument("--windows-per-clip", default="2,3")
    p.add_argument("--frame-strides", default="1,2,3")
    p.add_argument("--init", default=None, help="start from this checkpoint (.safetensors) instead of a fresh model")
    p.add_argument("--grow-from", default=None,
                   help="start from this checkpoint of a shallower config (e.g. small -> small_deep): its blocks "
                        "spread over --config's decoder, new blocks start as identities (training.grow)")
    p.add_argument("--resume", default=None, help="continue a run from its <out>.state.pt (model, optimiser, step, history)")
    p.add_argument("--schedule-seconds", type=float, default=0.0,
                   help="cosine schedule over this many cumulative training seconds (0: over --steps)")
    p.add_argument("--w-translation", type=float, default=LOSS_DEFAULTS["translation"],
                   help="weight of the relative-translation loss (scale consistency across windows)")
    p.add_argument("--w-correspondence", type=float, default=LOSS_DEFAULTS["correspondence"],
                   help="weight of the training-only token-matching loss (training.correspondence; 0: off)")
    p.add_argument("--translation-norm", choices=("depth", "motion"), default=LOSS_DEFAULTS["translation_norm"],
                   help="what a clip's translation error is relative to: its mean depth or its own mean motion")
    p.add_argument("--randomize", action="store_true", help="randomise speed, height, wobble, room size, textures per sequence")
    p.add_argument("--fov", default="60,80", help="min,max horizontal field of view (deg)")
    p.add_argument("--pool-size", type=int, default=24)
    p.add_argument("--sequence-frames", type=int, default=150)
    p.add_argument("--refresh-every", type=int, default=10)
    p.add_argument("--scenes", default="room,corridor")
    p.add_argument("--trajectories", default="handheld,ground_robot")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500, help="also save every N steps (0: only at the end)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    p.add_argument("--gate-lr-mult", type=float, default=1.0,
                   help="learning-rate factor of the memory gates (TTT / SWA gate projections; 1: like every weight)")
    p.add_argument("--gate-weight-decay", type=float, default=None,
                   help="weight decay of the memory gates' weights (default: --weight-decay)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile every transformer block and TTT layer (CUDA; the small model is launch-bound)")
    return p
