#!/usr/bin/env bash
# The demo: sets the environment up (idempotent), then edits the bundled aerial scene.
# Outputs land in ./out/. Usage: scripts/demo.sh [extra rs-geo-edit demo options]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
# out/aerial_demo* are this script's own outputs: a rerun replaces them.
exec .venv/bin/rs-geo-edit demo --out-dir out --overwrite "$@"
