#!/usr/bin/env bash
# The GPU check to run when a GPU machine is lent: dask-cuda LocalCUDACluster, fused predict -> vote on a
# synthetic 256^3 volume with the sample model, network voxels/s with and without AMP, peak GPU memory,
# labels byte-identical to the CPU path from the stored prediction, the GPU-vs-CPU prediction difference,
# AMP training; one table, < 5 minutes (docs/learning.md, "GPU check"). Without a CUDA device it says so in
# one sentence and exits 2. Extra arguments go to scripts/gpu_check.py (--size 256 --crop 128 --batch 8
# --train-iterations 20 --out DIR; --tiny: the self-test on the CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=python3
if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
exec "$PYTHON" scripts/gpu_check.py "$@"
