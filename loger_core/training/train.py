"""Trains a LoGeR model (default: `tiny`) on synthetic clips and saves it with `save_checkpoint`.

    python -m loger_core.training.train --device cuda --steps 3000 --out weights/tiny_synthetic

Each step runs the clips' windows in sequence with `commit=True`, carrying the memory (TTT fast
weights and SWA cache) from window to window *with* gradients, so the fast-weight update is trained
through; the memory is dropped after each clip (truncated back-propagation). The loss covers every
window's predictions of the clip together (see `losses.clip_losses`). AdamW, linear warm-up then
cosine decay, bf16 autocast on CUDA, gradient-norm clipping; non-finite steps are skipped.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from loger_core.model import build_model
from loger_core.model.checkpoint import load_checkpoint, save_checkpoint
from loger_core.model.loger import LoGeR, WindowPrediction
from loger_core.model.state import MemoryOptions

from .data import ClipBatch, ClipDataConfig, SyntheticClipSource
from .losses import LossTerms, LossWeights, clip_losses

__all__ = ["main", "build_parser", "train_step", "forward_clip", "lr_at"]

log = logging.getLogger("loger-train")

# Steps timed before a --time-limit run fits its learning-rate schedule to the limit.
RATE_PROBE_STEPS = 30


def forward_clip(model: LoGeR, batch: ClipBatch) -> tuple[WindowPrediction, torch.Tensor]:
    """Runs the clip's windows in order with memory; returns every window's predictions
    concatenated along frames and the (T',) clip frame index of each predicted frame."""
    options = MemoryOptions(window_size=batch.window_size, overlap_size=batch.overlap_size)
    state = model.init_state()
    preds, index = [], []
    for start, end in batch.windows:
        pred, state = model.forward_window(batch.images[:, start:end], state, options, commit=True)
        preds.append(pred)
        index.append(torch.arange(start, end))
    return WindowPrediction.cat(preds), torch.cat(index).to(batch.images.device)


def clip_loss(model: LoGeR, batch: ClipBatch, weights: LossWeights, amp: bool) -> LossTerms:
    device_type = batch.images.device.type
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
        pred, idx = forward_clip(model, batch)
    return clip_losses(pred.local_points, pred.conf, pred.camera_poses,
                       batch.local_points[:, idx], batch.poses[:, idx], batch.valid[:, idx], weights)


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor * peak` at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_step(model: LoGeR, opt: torch.optim.Optimizer, batch: ClipBatch, weights: LossWeights,
               amp: bool = False, clip_grad: float = 1.0) -> tuple[LossTerms, float, bool]:
    """One optimiser step; returns (losses, gradient norm, whether the step was applied)."""
    model.train()
    opt.zero_grad(set_to_none=True)
    terms = clip_loss(model, batch, weights, amp)
    if not torch.isfinite(terms.total):
        return terms, float("nan"), False
    terms.total.backward()
    gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad))
    if not math.isfinite(gnorm):
        opt.zero_grad(set_to_none=True)
        return terms, gnorm, False
    opt.step()
    return terms, gnorm, True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loger-train", description="Train a LoGeR model on synthetic clips.")
    p.add_argument("--config", default="tiny", help="model config (default tiny)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
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
    p.add_argument("--pool-size", type=int, default=24)
    p.add_argument("--sequence-frames", type=int, default=150)
    p.add_argument("--refresh-every", type=int, default=10)
    p.add_argument("--scenes", default="room,corridor")
    p.add_argument("--trajectories", default="handheld,ground_robot")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500, help="also save every N steps (0: only at the end)")
    p.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    return p


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _data_config(args) -> ClipDataConfig:
    w, h = (int(v) for v in args.size.lower().split("x"))
    return ClipDataConfig(
        width=w, height=h, scenes=tuple(args.scenes.split(",")), trajectories=tuple(args.trajectories.split(",")),
        window_sizes=_ints(args.window_sizes), overlap_size=args.overlap, windows_per_clip=_ints(args.windows_per_clip),
        frame_strides=_ints(args.frame_strides),
        pool_size=args.pool_size, sequence_frames=args.sequence_frames, refresh_every=args.refresh_every,
        batch_size=args.batch_size, seed=args.seed,
    )


def _save(model: LoGeR, out: Path, meta: dict) -> None:
    save_checkpoint(model, out, {"training": meta})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data_cfg = _data_config(args)
    t0 = time.perf_counter()
    source = SyntheticClipSource(data_cfg, device)
    t_data = time.perf_counter() - t0
    log.info("rendered %d sequences in %.1f s on %s", data_cfg.pool_size, t_data, device)

    if args.init:
        model = load_checkpoint(args.init, config=args.config, device=device)
        log.info("initialised from %s", args.init)
    else:
        model = build_model(args.config, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token" not in n and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    weights = LossWeights()
    out = Path(args.out)
    log.info("model %s: %.2f M parameters; %d steps, batch %d, amp=%s", args.config, n_params / 1e6, args.steps, args.batch_size, amp)
    log.info("%6s %9s %8s %8s %8s %8s %8s %7s %6s", "step", "lr", "total", "points", "rot_deg", "trans", "conf", "gnorm", "s/it")

    history: list[dict] = []
    running: dict[str, float] = {}
    n_run = skipped = 0
    t_train = time.perf_counter()
    t_log = t_train
    step = 0
    planned = args.steps
    for step in range(args.steps):
        if args.time_limit > 0 and step == RATE_PROBE_STEPS:
            # Fit the cosine schedule into the time limit, so the run ends with a decayed LR.
            rate = (time.perf_counter() - t_train) / step
            planned = max(step + 1, min(args.steps, int(0.97 * args.time_limit / rate)))
            log.info("%.3f s/step: schedule set to %d steps to fit %.0f s", rate, planned, args.time_limit)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, planned, args.lr, args.warmup)
        batch = source.next_batch()
        terms, gnorm, applied = train_step(model, opt, batch, weights, amp, args.clip_grad)
        if not applied:
            skipped += 1
        else:
            for k, v in terms.as_floats().items():
                running[k] = running.get(k, 0.0) + v
            n_run += 1
        last = step + 1 >= planned
        over_time = args.time_limit > 0 and time.perf_counter() - t_train > args.time_limit
        if (step + 1) % args.log_every == 0 or last or over_time:
            now = time.perf_counter()
            avg = {k: v / max(1, n_run) for k, v in running.items()}
            avg["step"] = step + 1
            history.append(avg)
            log.info("%6d %9.2e %8.4f %8.4f %8.3f %8.4f %8.4f %7.3f %6.3f", step + 1, opt.param_groups[0]["lr"],
                     avg.get("total", float("nan")), avg.get("points", float("nan")),
                     math.degrees(avg.get("rotation", float("nan"))), avg.get("translation", float("nan")),
                     avg.get("conf", float("nan")), gnorm, (now - t_log) / args.log_every)
            sys.stdout.flush()
            running, n_run, t_log = {}, 0, now
        meta = None
        if (args.save_every and (step + 1) % args.save_every == 0) or last or over_time:
            meta = {
                "steps": step + 1, "steps_planned": planned, "init": args.init, "skipped_steps": skipped,
                "wall_time_s": round(time.perf_counter() - t0, 1), "render_pool_s": round(t_data, 1),
                "sequences_rendered": source.rendered_sequences, "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else device),
                "data": data_cfg.to_dict(), "loss_weights": asdict(weights),
                "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay, "betas": [0.9, 0.95],
                              "warmup": args.warmup, "schedule": "cosine to 0.05*lr", "clip_grad": args.clip_grad, "bf16_autocast": amp},
                "final_losses": history[-1] if history else {}, "loss_history": history,
                "command": "python -m loger_core.training.train " + " ".join(argv if argv is not None else sys.argv[1:]),
            }
            _save(model, out, meta)
        if over_time:
            log.info("time limit reached after %d steps", step + 1)
        if last or over_time:
            break
    log.info("saved %s (%d steps, %.1f s, %d skipped)", out.with_suffix(".safetensors"), step + 1, time.perf_counter() - t0, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
