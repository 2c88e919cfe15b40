#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in stages that each fit a 10-minute command: the CUDA tests, then
# the benches whose numbers the issues ask for. JSON lands in $OUT (default bench_results/gpu).
#
#   bash bench/gpu_suite.sh                      # every stage
#   bash bench/gpu_suite.sh tests map synth      # some of: tests map synth profile vs node stream batch
#
# PYTHON picks the interpreter (default python3); it needs this package's requirements and torch with CUDA.
# AUTHORS is the path of a checkout of the authors' code for the `vs` stage (an ignored folder; skipped without).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_results/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests map synth profile vs node stream batch)
status=0
for stage in "${stages[@]}"; do
  echo "=== $stage"
  case "$stage" in
    tests)  $PY -m pytest -q -p no:cacheprovider test -k "cuda or graph or warm or compiled" ;;
    map)    $PY bench/map_fusion.py --points 141120 --windows 3 --out "$OUT/map_fusion.json" ;;
    synth)  $PY bench/synth_speed.py --device cuda --size 224x168 --frames 64 --out "$OUT/synth_speed.json" ;;
    profile) $PY bench/pass_cost.py --model loger --frames-per-pass 2 4 6 --compiled-graph --profile-window --out "$OUT/pass_cost.json" ;;
    vs)     if [ -z "${AUTHORS:-}" ]; then echo "vs: set AUTHORS to a checkout of the authors' code; skipped"; continue; fi
            $PY bench/vs_authors.py --authors "$AUTHORS" --frames 128 --repeats 3 --variant nogelu:fused_gelu=0 \
              --out "$OUT/vs_authors.json" ;;
    node)   $PY bench/node_latency.py --model loger --device cuda --fps 30 --camera-size 640x480 \
              --provisional-every 3 --provisional-anchors 1 --frames 300 --out "$OUT/node_latency.json" ;;
    stream) $PY bench/stream_scaling.py --model loger --device cuda --frames 1000 10000 --input-size 640x480 \
              --out "$OUT/stream_scaling.json" ;;
    batch)  $PY bench/batch_scaling.py --gpus 1 --model loger --bags 4 --frames 300 --size 640x480 \
              --image-encoding jpeg --out "$OUT/batch_scaling.json" ;;
    *) echo "unknown stage $stage (tests map synth profile vs node stream batch)" >&2; status=2; continue ;;
  esac
  rc=$?; [ $rc -ne 0 ] && { echo "stage $stage failed ($rc)" >&2; status=1; }
done
exit $status
