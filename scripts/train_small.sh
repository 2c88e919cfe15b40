#!/usr/bin/env bash
# How the shipped `small` weights are trained (one lent H100/H200, bf16, compiled blocks), in device
# commands of at most 30 minutes (a background run the command polls): the first starts a run, each
# later one resumes it from the state the previous one returned (`<out>.state.pt` + `<out>.safetensors`).
# The learning-rate schedule runs over SCHEDULE_S cumulative training seconds, so the split into
# commands does not change it.
#
#   bash scripts/train_small.sh OUT_PREFIX TIME_LIMIT_S [RESUME_STATE]
#
# INIT=<weights> starts the first command from earlier weights (the shipped ones were: see
# loger_core/weights/README.md); BATCH=80 fits an 80 GB card (peak 62 GiB). SIZE (input WxH) and
# TNORM (translation error relative to depth or motion) are what the 2026-11-26 trials changed; their
# exact commands (lr 5e-4, batch 20 among them) are in docs/training_trials_2026-11-26/. Not shipped.
# CONFIG=small_deep GROW_FROM=<small weights> starts a deeper model from trained `small` weights
# (training/grow.py; the later trials: docs/training_trials_2026-11-26b/). W_CORR > 0 adds the
# training-only token-matching loss (training/correspondence.py; three trials: docs/training_trials_2026-11-26c/).
set -euo pipefail
OUT=${1:?output prefix}; LIMIT=${2:?seconds of training in this command}; RESUME=${3:-}
SCHEDULE_S=${SCHEDULE_S:-2400}; REFRESH=${REFRESH:-2}; W_TRANS=${W_TRANS:-1.0}; BATCH=${BATCH:-80}
SIZE=${SIZE:-112x84}; TNORM=${TNORM:-depth}; CONFIG=${CONFIG:-small}; W_CORR=${W_CORR:-0}
args=(--config "$CONFIG" --device cuda --out "$OUT" --time-limit "$LIMIT" --schedule-seconds "$SCHEDULE_S"
      --steps 100000 --size "$SIZE" --batch-size "$BATCH" --lr 1e-3 --warmup 100 --weight-decay 0.05
      --scenes room,corridor,street,loop --trajectories handheld,ground_robot,car --randomize --fov 50,90
      --window-sizes 8,16 --overlap 3 --windows-per-clip 3,4,5,6 --frame-strides 1,2 --sequence-frames 168
      --pool-size 48 --refresh-every "$REFRESH" --w-translation "$W_TRANS" --translation-norm "$TNORM" --w-correspondence "$W_CORR" --seed 30000 --log-every 25
      --save-every 100 --compile)
if [[ -n "$RESUME" ]]; then args+=(--resume "$RESUME"); elif [[ -n "${INIT:-}" ]]; then args+=(--init "$INIT");
elif [[ -n "${GROW_FROM:-}" ]]; then args+=(--grow-from "$GROW_FROM"); fi
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
exec "${PYTHON:-python}" -m loger_core.training.train "${args[@]}"
