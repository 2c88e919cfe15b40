#!/usr/bin/env bash
# The main job on the embedded default, CPU only: render a short synthetic room sequence with exact
# ground truth, reconstruct it with the default model, write trajectory / map / plot / metrics.
# Outputs land in ./out/demo/ (override with OUT=...). Extra args go to loger-reconstruct.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/ensure_venv.sh"
OUT="${OUT:-$ROOT/out/demo}"
BIN="$ROOT/.venv/bin"
mkdir -p "$OUT"
if [ ! -f "$OUT/sequence/groundtruth.txt" ]; then
  "$BIN/loger-synth" --scene room --trajectory handheld --frames 96 --size 224x168 --seed 7 --out "$OUT/sequence"
fi
# The embedded default (no --model / --checkpoint): `small` with the weights trained by us on synthetic
# data only (loger_core/weights/README.md), CPU-sized input (112x84 here) and window 16.
"$BIN/loger-reconstruct" "$OUT/sequence" --out "$OUT/result" "$@"
echo
echo "demo outputs in $OUT/result:"
ls -1 "$OUT/result"
