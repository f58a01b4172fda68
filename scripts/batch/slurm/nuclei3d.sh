#!/usr/bin/env bash
# 3D nuclei (StarDist-3D split): configs/nuclei3d.toml as a SLURM job.
# Submits one driver job (partition, time, CPUs, memory, GPUs from scripts/batch/site.env) that runs
# scripts/batch/local/nuclei3d.sh: train, validate and predict on the job's GPU, label on the dask cluster
# of PPP_CLUSTER_KIND (local = inside the job; slurm = dask-jobqueue worker jobs + PostgreSQL).
# Memory: 3D: ~6 GiB per 64^3 vote block (9^3 patches, halo 44).
#   bash scripts/batch/slurm/nuclei3d.sh --dry-run     # print the job script and ppp-dist plan; submits nothing
#   bash scripts/batch/slurm/nuclei3d.sh               # sbatch; resubmitting resumes
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main slurm nuclei3d "$@"
