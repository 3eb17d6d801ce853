#!/usr/bin/env bash
# The whole test suite: sets the environment up (idempotent), then runs pytest on one torch thread.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RS_GEO_EDIT_CACHE="${RS_GEO_EDIT_CACHE:-$root/.cache/test-models}"
exec .venv/bin/python -m pytest "$@"
