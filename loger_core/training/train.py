"""Trains a LoGeR model (default: `small`, the shipped one) on synthetic clips and saves it with `save_checkpoint`.

    python -m loger_core.training.train --device cuda --config small --steps 3000 --out weights/small_synthetic

Resumable: every save also writes `<out>.state.pt` (optimiser, step, training seconds, loss
history); `--resume <out>.state.pt` continues from it (the model from the state, the data source
re-seeded at `seed + step` so that no clip repeats the first run's stream). `--schedule-seconds T`
makes the learning-rate schedule a function of the cumulative training time instead of the step,
so a run split over several device commands of unknown speed still ends with a decayed rate.

Each step runs the clips' windows in sequence with `commit=True`, carrying the memory (TTT fast
weights and SWA cache) from window to window *with* gradients, so the fast-weight update is trained
through; the memory is dropped after each clip (truncated back-propagation). The loss covers every
window's predictions of the clip together (see `losses.clip_losses`). AdamW, linear warm-up then
cosine decay, bf16 autocast on CUDA, gradient-norm clipping; non-finite steps are skipped.
"""
from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch._dynamo

from loger_core.training.train_args import build_parser
from loger_core.model import build_model
from loger_core.model.checkpoint import load_checkpoint, save_checkpoint
from loger_core.model.config import get_config
from loger_core.model.loger import LoGeR
from loger_core.model.prediction import WindowPrediction
from loger_core.model.state import MemoryOptions

from .correspondence import correspondence_loss, token_correspondences, window_pairs
from .data import ClipBatch, ClipDataConfig, SyntheticClipSource
from .grow import grow_decoder
from .losses import LossTerms, LossWeights, clip_losses

__all__ = ["main", "build_parser", "train_step", "forward_clip", "lr_at"]

log = logging.getLogger("loger-train")

# Steps timed before a --time-limit run fits its learning-rate schedule to the limit.
RATE_PROBE_STEPS = 30


def forward_clip(model: LoGeR, batch: ClipBatch, tokens: list | None = None) -> tuple[WindowPrediction, torch.Tensor]:
    """Runs the clip's windows in order with memory; returns every window's predictions
    concatenated along frames and the (T',) clip frame index of each predicted frame.
    tokens: if a list, gets each window's patch tokens as the heads read them, (B, n, P, D)."""
    options = MemoryOptions(window_size=batch.window_size, overlap_size=batch.overlap_size)
    state = model.init_state()
    preds, index = [], []
    handle = None
    if tokens is not None:
        s = model.cfg.patch_start_idx
        handle = model.point_decoder.register_forward_pre_hook(lambda _m, args: tokens.append(args[0][:, s:]))
    try:
        for start, end in batch.windows:
            pred, state = model.forward_window(batch.images[:, start:end], state, options, commit=True)
            preds.append(pred)
            index.append(torch.arange(start, end))
    finally:
        if handle is not None:
            handle.remove()
    if tokens is not None:
        B = batch.images.shape[0]
        tokens[:] = [t.reshape(B, -1, *t.shape[1:]) for t in tokens]
    return WindowPrediction.cat(preds), torch.cat(index).to(batch.images.device)


def clip_loss(model: LoGeR, batch: ClipBatch, weights: LossWeights, amp: bool) -> LossTerms:
    device_type = batch.images.device.type
    tokens: list | None = [] if weights.correspondence > 0 else None
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
        pred, idx = forward_clip(model, batch, tokens)
    gt_local, gt_poses, valid = batch.local_points[:, idx], batch.poses[:, idx], batch.valid[:, idx]
    terms = clip_losses(pred.local_points, pred.conf, pred.camera_poses, gt_local, gt_poses, valid, weights)
    if tokens is None:
        return terms
    pairs = window_pairs([end - start for start, end in batch.windows])
    target = token_correspondences(gt_local, gt_poses, valid, model.cfg.patch_size, pairs)
    corr = correspondence_loss(torch.cat(tokens, dim=1), target, pairs, weights.correspondence_temperature)
    return replace(terms, total=terms.total + weights.correspondence * corr, correspondence=corr)


def lr_at(step: int, total: int, peak: float, warmup: int, floor: float = 0.05, progress: float | None = None) -> float:
    """Linear warm-up to `peak`, then cosine decay to `floor * peak` at `total` (or at
    `progress` = 1 when a progress fraction in [0, 1] is given, e.g. elapsed / planned time)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if progress is None:
        progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, max(0.0, progress))
    return peak * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


MEMORY_GATES = ("ttt_gate_projs.", "swa_gate_projs.")


def param_groups(model: LoGeR, weight_decay: float, gate_lr_mult: float = 1.0,
                 gate_weight_decay: float | None = None) -> list[dict]:
    """AdamW groups: matrices decay, vectors / tokens / position embeddings do not. The memory
    gates start at zero (a fresh model runs as its memory-free base) and grow only as fast as their
    gradient lets them: with `gate_lr_mult` != 1 or their own `gate_weight_decay` they get a group of
    their own (`lr_mult` scales the scheduled rate), so a model trained from scratch can open them sooner."""
    gate_decay = weight_decay if gate_weight_decay is None else gate_weight_decay
    own_gates = gate_lr_mult != 1.0 or gate_decay != weight_decay
    decay, no_decay, gates = [], [], []
    for name, param in model.named_parameters():
        if own_gates and name.startswith(MEMORY_GATES):
            gates.append(param)
        elif param.ndim >= 2 and "token" not in name and "pos_embed" not in name:
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if gates:
        groups.append({"params": gates, "weight_decay": gate_decay, "lr_mult": gate_lr_mult})
    return groups


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


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _data_config(args) -> ClipDataConfig:
    w, h = (int(v) for v in args.size.lower().split("x"))
    return ClipDataConfig(
        width=w, height=h, scenes=tuple(args.scenes.split(",")), trajectories=tuple(args.trajectories.split(",")),
        window_sizes=_ints(args.window_sizes), overlap_size=args.overlap, windows_per_clip=_ints(args.windows_per_clip),
        frame_strides=_ints(args.frame_strides),
        pool_size=args.pool_size, sequence_frames=args.sequence_frames, refresh_every=args.refresh_every,
        batch_size=args.batch_size, seed=args.seed, randomize=args.randomize,
        fov_deg=tuple(float(v) for v in args.fov.split(",")),
    )


def file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _save(model: LoGeR, out: Path, meta: dict) -> None:
    """Weights plus their JSON record, which carries the weights file's SHA-256 (a test checks the
    shipped file against it, so weights and record cannot drift apart)."""
    weights = save_checkpoint(model, out, {"training": meta})
    record = out.with_suffix(".json")
    data = json.loads(record.read_text())
    data["sha256"] = file_sha256(weights)
    record.write_text(json.dumps(data, indent=2))


def state_path(out: Path) -> Path:
    """Where a run's resumable state goes: `<out>.state.pt` beside the weights `<out>.safetensors`."""
    return out.with_suffix(".state.pt") if out.suffix == ".safetensors" else out.with_name(out.name + ".state.pt")


def weights_for_state(state: Path) -> Path:
    """The weights `<out>.safetensors` a `<out>.state.pt` belongs to."""
    return state.with_name(state.name[: -len(".state.pt")] + ".safetensors")


def _save_state(path: Path, model: LoGeR, opt: torch.optim.Optimizer, step: int, train_s: float, history: list,
                skipped: int, rendered: int, render_s: float) -> None:
    """Optimiser moments are stored in bf16 and the weights live in the `.safetensors` beside it:
    the state of the `small` model then stays under 16 MB (what one device command can return)."""
    sd = opt.state_dict()
    sd = {"param_groups": sd["param_groups"],
          "state": {k: {n: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() and v.ndim > 0 else v)
                        for n, v in st.items()} for k, st in sd["state"].items()}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": model.cfg.to_dict(), "optimizer": sd, "step": step, "train_seconds": train_s, "history": history,
                "skipped": skipped, "sequences_rendered": rendered, "render_seconds": render_s}, tmp)
    tmp.replace(path)  # a run killed mid-save leaves the previous state intact


def _load_optimizer(opt: torch.optim.Optimizer, sd: dict) -> None:
    opt.load_state_dict(sd)  # casts the moments back to the parameters' dtype


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data_cfg = _data_config(args)
    t0 = time.perf_counter()

    if sum(bool(v) for v in (args.init, args.grow_from, args.resume)) > 1:
        raise SystemExit("--init, --grow-from and --resume are alternatives: give one")
    resume = None
    if args.resume:
        resume = torch.load(args.resume, map_location=device, weights_only=True)
        if resume["config"]["name"] != args.config:
            raise SystemExit(f"--resume {args.resume} holds a {resume['config']['name']!r} model, not --config {args.config!r}")
    if resume is not None:
        model = load_checkpoint(weights_for_state(Path(args.resume)), config=args.config, device=device)
        log.info("resumed from %s at step %d (%.0f s trained)", args.resume, resume["step"], resume["train_seconds"])
    elif args.init:
        model = load_checkpoint(args.init, config=args.config, device=device)
        log.info("initialised from %s", args.init)
    elif args.grow_from:
        model = grow_decoder(load_checkpoint(args.grow_from, device=device), get_config(args.config))
        log.info("grown from %s", args.grow_from)
    else:
        model = build_model(args.config, device=device)
    if args.compile:
        from loger_core.model.fast_paths import compile_regions_

        # Two window sizes give two static specialisations; a dynamic-shape recompile would be slower.
        torch._dynamo.config.automatic_dynamic_shapes = False
        log.info("compiled %d blocks / TTT layers (each new window shape compiles on first use)", compile_regions_(model))
    first_step = int(resume["step"]) if resume is not None else 0
    if first_step:
        data_cfg = ClipDataConfig(**{**data_cfg.to_dict(), "seed": data_cfg.seed + first_step})
    t_r = time.perf_counter()
    source = SyntheticClipSource(data_cfg, device)
    t_data = time.perf_counter() - t_r
    frames_pool = data_cfg.pool_size * data_cfg.sequence_frames
    log.info("rendered %d sequences (%d frames at %dx%d, supersample %d) in %.1f s on %s: %.0f frames/s",
             data_cfg.pool_size, frames_pool, data_cfg.width, data_cfg.height, data_cfg.supersample, t_data, device,
             frames_pool / max(t_data, 1e-9))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay, args.gate_lr_mult, args.gate_weight_decay),
                            lr=args.lr, betas=(0.9, 0.95))
    if resume is not None:
        _load_optimizer(opt, resume["optimizer"])
    weights = LossWeights(translation=args.w_translation, translation_norm=args.translation_norm,
                          correspondence=args.w_correspondence)
    out = Path(args.out)
    log.info("model %s: %.2f M parameters; %d steps, batch %d, amp=%s", args.config, n_params / 1e6, args.steps, args.batch_size, amp)
    log.info("%6s %9s %8s %8s %8s %8s %8s %7s %6s", "step", "lr", "total", "points", "rot_deg", "trans", "conf", "gnorm", "s/it")

    history: list[dict] = list(resume["history"]) if resume is not None else []
    running: dict[str, float] = {}
    n_run = 0
    skipped = int(resume["skipped"]) if resume is not None else 0
    trained_before = float(resume["train_seconds"]) if resume is not None else 0.0
    rendered_before = int(resume["sequences_rendered"]) if resume is not None else 0
    render_s_before = float(resume["render_seconds"]) if resume is not None else 0.0
    t_train = time.perf_counter()
    t_log = t_train
    step = first_step
    planned = args.steps
    # Rendering time of the refreshes inside the loop (the pool's initial render is t_data).
    render_s = t_data
    frames_trained = 0
    state_file = state_path(Path(args.out))
    for step in range(first_step, args.steps):
        if args.time_limit > 0 and not args.schedule_seconds and step - first_step == RATE_PROBE_STEPS and not first_step:
            # Fit the cosine schedule into the time limit, so the run ends with a decayed LR.
            rate = (time.perf_counter() - t_train) / (step - first_step)
            planned = max(step + 1, min(args.steps, int(0.97 * args.time_limit / rate)))
            log.info("%.3f s/step: schedule set to %d steps to fit %.0f s", rate, planned, args.time_limit)
        elapsed = trained_before + time.perf_counter() - t_train
        progress = None
        if args.schedule_seconds > 0:
            progress = elapsed / args.schedule_seconds
        for g in opt.param_groups:
            g["lr"] = g.get("lr_mult", 1.0) * lr_at(step, planned, args.lr, args.warmup, progress=progress)
        n_before = source.rendered_sequences
        t_b = time.perf_counter()
        batch = source.next_batch()
        if source.rendered_sequences != n_before:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            render_s += time.perf_counter() - t_b
        frames_trained += batch.images.shape[0] * batch.images.shape[1]
        terms, gnorm, applied = train_step(model, opt, batch, weights, amp, args.clip_grad)
        if not applied:
            skipped += 1
        else:
            for k, v in terms.as_floats().items():
                running[k] = running.get(k, 0.0) + v
            n_run += 1
        last = step + 1 >= planned or (args.schedule_seconds > 0 and
                                       trained_before + time.perf_counter() - t_train >= args.schedule_seconds)
        over_time = args.time_limit > 0 and time.perf_counter() - t_train > args.time_limit
        if (step + 1) % args.log_every == 0 or last or over_time:
            now = time.perf_counter()
            avg = {k: v / max(1, n_run) for k, v in running.items()}
            avg["step"] = step + 1
            avg["train_s"] = round(trained_before + now - t_train, 1)
            avg["lr"] = opt.param_groups[0]["lr"]
            history.append(avg)
            log.info("%6d %9.2e %8.4f %8.4f %8.3f %8.4f %8.4f %7.3f %6.3f", step + 1, opt.param_groups[0]["lr"],
                     avg.get("total", float("nan")), avg.get("points", float("nan")),
                     math.degrees(avg.get("rotation", float("nan"))), avg.get("translation", float("nan")),
                     avg.get("conf", float("nan")), gnorm, (now - t_log) / args.log_every)
            if "correspondence" in avg:
                log.info("%6d correspondence %.4f", step + 1, avg["correspondence"])
            sys.stdout.flush()
            running, n_run, t_log = {}, 0, now
        meta = None
        if (args.save_every and (step + 1) % args.save_every == 0) or last or over_time:
            loop_s = time.perf_counter() - t_train
            rendered = rendered_before + source.rendered_sequences
            meta = {
                "config": args.config, "steps": step + 1, "steps_planned": planned, "init": args.init, "grown_from": args.grow_from, "resumed_from": args.resume,
                "skipped_steps": skipped, "wall_time_s": round(time.perf_counter() - t0, 1),
                "train_seconds_total": round(trained_before + loop_s, 1), "render_pool_s": round(t_data, 1),
                "sequences_rendered": rendered, "render_seconds_total": round(render_s_before + render_s, 1),
                "this_run": {"steps": step + 1 - first_step, "seconds": round(loop_s, 1),
                             "steps_per_s": round((step + 1 - first_step) / max(loop_s, 1e-9), 3),
                             "clip_frames_trained_per_s": round(frames_trained / max(loop_s, 1e-9), 1),
                             "frames_rendered": source.rendered_sequences * data_cfg.sequence_frames,
                             "render_s": round(render_s, 1),
                             "frames_rendered_per_s": round(source.rendered_sequences * data_cfg.sequence_frames / max(render_s, 1e-9), 1),
                             "compiled": bool(args.compile),
                             "cuda_peak_gib": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                                               if device.type == "cuda" else None)},
                "seed": args.seed, "device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else device),
                "data": data_cfg.to_dict(), "loss_weights": asdict(weights),
                "optimizer": {"name": "AdamW", "lr": args.lr, "weight_decay": args.weight_decay, "betas": [0.9, 0.95],
                              "gate_lr_mult": args.gate_lr_mult, "gate_weight_decay": args.gate_weight_decay,
                              "warmup": args.warmup, "schedule": "cosine to 0.05*lr", "clip_grad": args.clip_grad, "bf16_autocast": amp},
                "final_losses": history[-1] if history else {}, "loss_history": history,
                "command": "python -m loger_core.training.train " + " ".join(argv if argv is not None else sys.argv[1:]),
            }
            _save(model, out, meta)
            _save_state(state_file, model, opt, step + 1, trained_before + loop_s, history, skipped, rendered,
                        render_s_before + render_s)
        if over_time:
            log.info("time limit reached after %d steps", step + 1)
        if last or over_time:
            break
    log.info("saved %s (%d steps, %.1f s, %d skipped)", out.with_suffix(".safetensors"), step + 1, time.perf_counter() - t0, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
