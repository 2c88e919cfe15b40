#!/usr/bin/env bash
# CI's second step: the conversions, stream, map, node-core and batch tests under numpy 1.26, the numpy of
# the ROS 2 Python (Jazzy; cv_bridge there is compiled against numpy 1.x). Creates ./.venv-np126 on
# first use from requirements-np126.txt (torch==2.13.0 CPU; no Ray: test_batch.py skips, saying so).
# Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-np126"
PY="${PYTHON:-python3}"
bash "$ROOT/scripts/ensure_venv.sh" >/dev/null  # libusb for open3d, as for the main venv
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.loger_requirements.sha"
WANT="$(cat "$ROOT/requirements-np126.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROOT/requirements-np126.txt"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
fi
"$VENV/bin/python" -c 'import numpy, sys; v = numpy.__version__; print(f"numpy {v}, Python {sys.version.split()[0]}"); sys.exit(0 if v.startswith("1.26.") else 1)'
cd "$ROOT"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider \
  test/test_conversions.py test/test_malformed_messages.py test/test_map.py test/test_node_core.py \
  test/test_params.py test/test_stream_bounded.py test/test_stream_geometry.py test/test_stream_inputs.py \
  test/test_stream_preprocess.py test/test_stream_scale.py test/test_session.py test/test_grid.py test/test_batch_offline.py test/test_batch.py \
  test/test_backend_geometry.py test/test_backend_graph.py test/test_backend_place.py test/test_backend_pipeline.py "$@"
