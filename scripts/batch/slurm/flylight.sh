#!/usr/bin/env bash
# FlyLight / FISBe neurons (3D, 3 channels, overlapping instances): configs/flylight.toml as a SLURM job.
# Submits one driver job (partition, time, CPUs, memory, GPUs from scripts/batch/site.env) that runs
# scripts/batch/local/flylight.sh: train, validate and predict on the job's GPU, label on the dask cluster
# of PPP_CLUSTER_KIND (local = inside the job; slurm = dask-jobqueue worker jobs + PostgreSQL).
# Memory: 3D: plan estimates ~14 GiB per 92^3 vote block; give workers that much or use --set 'vote.block_shape=[64, 64, 64]'.
#   bash scripts/batch/slurm/flylight.sh --dry-run     # print the job script and ppp-dist plan; submits nothing
#   bash scripts/batch/slurm/flylight.sh               # sbatch; resubmitting resumes
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main slurm flylight "$@"
