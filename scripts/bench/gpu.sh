#!/usr/bin/env bash
# GPU check in one command: the paper preset and text mode on the demo ROI (mixed precision),
# the tiled sampler and the instruct engine's float16 path, each with its seconds, peak GPU
# memory and realism figures (scripts/bench/gpu.py says what each case runs).
# Usage: scripts/bench/gpu.sh [--steps 3000] [--cases paper-text tiled instruct] [--json out.json]
# Without a CUDA device it stops at once: one line, exit 1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu.sh: no CUDA device visible to $python (torch.cuda.is_available() is False): run it on a GPU machine" >&2
    exit 1
fi
export PYTHONPATH="$root/backend${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" "$root/scripts/bench/gpu.py" "$@"
