#!/usr/bin/env bash
# Runs the CPU test suite in ./.venv (created on first use). Extra args go to pytest.
# About 8 minutes and 7.6 GiB peak memory on a 2-core machine (README, Tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/ensure_venv.sh"
cd "$ROOT"
# -rs: every skipped test prints its reason (no CUDA, no ROS 2, no ../shared/data).
exec "$ROOT/.venv/bin/python" -m pytest test -rs "$@"
