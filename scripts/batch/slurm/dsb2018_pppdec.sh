#!/usr/bin/env bash
# DSB2018 nuclei, ppp+dec (2D): configs/dsb2018_pppdec.toml as a SLURM job.
# Submits one driver job (partition, time, CPUs, memory, GPUs from scripts/batch/site.env) that runs
# scripts/batch/local/dsb2018_pppdec.sh: train, validate and predict on the job's GPU, label on the dask cluster
# of PPP_CLUSTER_KIND (local = inside the job; slurm = dask-jobqueue worker jobs + PostgreSQL).
# Memory: 2D, small images; predict writes codes, decode turns them into patches.
#   bash scripts/batch/slurm/dsb2018_pppdec.sh --dry-run     # print the job script and ppp-dist plan; submits nothing
#   bash scripts/batch/slurm/dsb2018_pppdec.sh               # sbatch; resubmitting resumes
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main slurm dsb2018_pppdec "$@"
