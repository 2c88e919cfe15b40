#!/usr/bin/env bash
# Creates ./.venv (once) and installs the pinned dependencies and this package into it.
# Re-installs only when a requirements file changed. Sourced by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
# open3d's wheel links against the system libusb; install it where we can (root + apt), else say how.
if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1; }) \
      || echo "warning: could not install libusb-1.0-0; open3d (PLY export) will not import" >&2
  else
    echo "warning: libusb-1.0 is missing; open3d needs it: sudo apt-get install libusb-1.0-0" >&2
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "[ensure_venv] creating $VENV with $("$PY" --version 2>&1)" >&2
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.loger_requirements.sha"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  # pip's own lines (Collecting / Downloading / Installing) are the progress: a silent install of
  # this size looks like a hang.
  echo "[ensure_venv] installing the pinned dependencies into $VENV (first run, or a requirements file or" \
       "setup.py changed): torch (CPU wheel), open3d, ray, matplotlib, rosbags, pytest, ... Usually about" \
       "95 s on a 2-core machine with a fast network; later runs skip this step." >&2
  start=$SECONDS
  echo "[ensure_venv] step 1/2: pip install -r requirements-test.txt" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$ROOT/requirements-test.txt"
  echo "[ensure_venv] step 2/2: pip install -e . (this package, no dependencies)" >&2
  "$VENV/bin/python" -m pip install --disable-pip-version-check --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
  echo "[ensure_venv] done in $((SECONDS - start)) s" >&2
fi
