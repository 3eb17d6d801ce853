#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the backend and its test tools, and with
# --qgis also Debian's QGIS and .venv-qgis (QGIS's own Python + pytest) for the plugin tests.
# Re-running skips every step that is already done (a stamp holds the hash of its inputs).
# Usage: scripts/setup.sh [--qgis]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# GDAL comes inside rasterio's and pyogrio's wheels; Debian packages are needed only for QGIS.
with_qgis=0
[ "${1:-}" = "--qgis" ] && with_qgis=1
if [ "$with_qgis" = 1 ]; then
    if ! /usr/bin/python3 -c 'import qgis.core, ensurepip' 2>/dev/null || [ ! -x /usr/bin/qgis_process.bin ]; then
        log "installing Debian's QGIS (python3-qgis, qgis-providers, qgis, xvfb; ~1 GB, a few minutes)"
        for attempt in 1 2 3; do  # a mirror hiccup should not fail the whole run
            as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq \
                --no-install-recommends python3-qgis qgis-providers qgis xvfb python3-venv >/dev/null && break
            [ "$attempt" = 3 ] && { log "apt-get failed 3 times"; exit 1; }
            log "apt-get failed (attempt $attempt), retrying in 10 s"
            sleep 10
        done
    fi
    qvenv="$root/.venv-qgis"
    qwant=$(cat scripts/qgis-constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)
    if [ ! -f "$qvenv/.stamp" ] || [ "$(cat "$qvenv/.stamp")" != "$qwant" ]; then
        log "creating $qvenv (QGIS's Python, system site packages, pytest; never torch)"
        /usr/bin/python3 -m venv --system-site-packages "$qvenv"
        "$qvenv/bin/python" -m pip install --quiet --disable-pip-version-check \
            -c scripts/qgis-constraints.txt pytest pytest-timeout
        echo "$qwant" > "$qvenv/.stamp"
    fi
fi

if ! "$py" -c 'import venv, ensurepip' 2>/dev/null; then
    log "installing python3-venv"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
fi

stamp="$venv/.rs-geo-edit-stamp"
want=$(cat backend/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import rs_geo_edit, torch, rasterio' 2>/dev/null; then
    log "environment up to date ($venv)"
    exit 0
fi

[ -x "$venv/bin/python" ] || { log "creating $venv"; "$py" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch 2.14.1 + torchvision 0.29.1 is the pair that imports together with open_clip (a CUDA
# build that runs on the CPU too, and uses a GPU when one is present).
if ! "$venv/bin/python" -c 'import torch, torchvision' 2>/dev/null; then
    log "installing torch 2.14.1 and torchvision 0.29.1 (several GB, a few minutes)"
    "${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
log "installing the backend (editable) with its test, Ray and instruct-engine extras"
"${pip[@]}" -e "backend[dev,ray,instruct]"
echo "$want" > "$stamp"
log "done: $("$venv/bin/rs-geo-edit" --version)"
