#!/usr/bin/env bash
# GPU check of training (AMP) and prediction with the FlyLight-sized network; < 5 minutes on one GPU.
# Without CUDA it prints "no CUDA device" and exits 0. Extra arguments go to scripts/gpu_check.py
# (--iterations 50 --size 256 --workers 4 --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" scripts/gpu_check.py "$@"
