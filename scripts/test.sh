#!/usr/bin/env bash
# Runs the CPU test suite in ./.venv (created on first use). Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/ensure_venv.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest test "$@"
