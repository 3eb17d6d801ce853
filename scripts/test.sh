#!/usr/bin/env bash
# The whole test suite: sets the environment up (idempotent, QGIS included), then runs the backend
# tests (pytest, one torch thread) and the QGIS plugin tests (real QGIS, headless).
# Usage: scripts/test.sh            everything
#        scripts/test.sh ARGS...    the backend tests only, with pytest ARGS
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh --qgis
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RS_GEO_EDIT_CACHE="${RS_GEO_EDIT_CACHE:-$root/.cache/test-models}"
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
status=0
.venv/bin/python -m pytest || status=$?
QT_QPA_PLATFORM=offscreen .venv-qgis/bin/python -m pytest -c tests/qgis/pytest.ini --rootdir tests/qgis \
    --confcutdir tests/qgis tests/qgis || status=$?
exit "$status"
