#!/usr/bin/env bash
# The ROS 2 integration tests (test/ros) against the ROS 2 sourced in this shell: builds this
# package with colcon in a scratch workspace outside the repository (LOGER_ROS_WS, default
# ${TMPDIR:-/tmp}/loger_ros_ws, src/loger_ros -> this checkout), sources it and runs pytest on
# test/ros with the ROS Python. Extra args go to pytest.
#
# Needs: a sourced ROS 2 (rclpy, launch_ros, tf2_ros, cv_bridge, sensor_msgs_py, ros2bag) and our
# runtime dependencies importable by the ROS Python WITHOUT changing its numpy, e.g.
#   $ROS_PYTHON -m pip install --target /opt/loger_rosdeps -c <(echo numpy==1.26.4) \
#       $(grep -v -e '^#' -e '^numpy' -e '^pytest' requirements-np126.txt) && rm -rf /opt/loger_rosdeps/numpy*
#   export PYTHONPATH=/opt/loger_rosdeps:$PYTHONPATH
# Run it in an isolated network (what the project does; ROS discovery stays on loopback):
#   unshare -n bash -c 'ip link set lo up; source /opt/ros_jazzy/env.sh; \
#       export PYTHONPATH=/opt/loger_rosdeps:$PYTHONPATH; bash scripts/test_ros.sh -v'
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(command -v python3)"
if ! "$PY" -c "import rclpy" 2>/dev/null; then
  echo "test_ros.sh: rclpy is not importable with $PY: source a ROS 2 setup first" >&2
  exit 2
fi
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
WS="${LOGER_ROS_WS:-${TMPDIR:-/tmp}/loger_ros_ws}"
mkdir -p "$WS/src"
ln -sfn "$ROOT" "$WS/src/loger_ros"
# setuptools copies a source file only when it is newer than its copy in build/: a checkout that moves
# files back in time (git stash, switching branches) would leave stale modules installed.
rm -rf "$WS/build/loger_ros" "$WS/install/loger_ros"
(cd "$WS" && colcon build --packages-select loger_ros --event-handlers console_direct- >"$WS/build.log" 2>&1) \
  || { tail -40 "$WS/build.log" >&2; exit 1; }
# shellcheck disable=SC1091
set +u; source "$WS/install/setup.bash"; set -u
"$PY" -c 'import sys, numpy, torch; print(f"ROS Python {sys.version.split()[0]}, numpy {numpy.__version__}, torch {torch.__version__}")'
cd "$ROOT"
# -p no:launch_testing / no:launch_ros: ROS's launch_testing and launch_testing_ros register pytest
# plugins that these tests do not use and whose hooks recent pytest refuses (launch_testing's
# `path` argument, launch_testing_ros's hook that needs launch_testing), stopping pytest before it
# collects anything.
exec "$PY" -m pytest -p no:cacheprovider -p no:launch_testing -p no:launch_ros test/ros "$@"
