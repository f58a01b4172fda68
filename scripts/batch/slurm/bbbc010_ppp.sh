#!/usr/bin/env bash
# BBBC010 worms, ppp (2D, 2 channels, overlapping instances): configs/bbbc010_ppp.toml as a SLURM job.
# Submits one driver job (partition, time, CPUs, memory, GPUs from scripts/batch/site.env) that runs
# scripts/batch/local/bbbc010_ppp.sh: train, validate and predict on the job's GPU, label on the dask cluster
# of PPP_CLUSTER_KIND (local = inside the job; slurm = dask-jobqueue worker jobs + PostgreSQL).
# Memory: 2D: ~5 GiB per 256^2 vote block (41 x 41 patches, halo 220).
#   bash scripts/batch/slurm/bbbc010_ppp.sh --dry-run     # print the job script and ppp-dist plan; submits nothing
#   bash scripts/batch/slurm/bbbc010_ppp.sh               # sbatch; resubmitting resumes
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main slurm bbbc010_ppp "$@"
