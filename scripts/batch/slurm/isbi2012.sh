#!/usr/bin/env bash
# ISBI 2012 EM membranes (2D slices): configs/isbi2012.toml as a SLURM job.
# Submits one driver job (partition, time, CPUs, memory, GPUs from scripts/batch/site.env) that runs
# scripts/batch/local/isbi2012.sh: train, validate and predict on the job's GPU, label on the dask cluster
# of PPP_CLUSTER_KIND (local = inside the job; slurm = dask-jobqueue worker jobs + PostgreSQL).
# Memory: 2D: ~1.3 GiB per 512^2 vote block.
#   bash scripts/batch/slurm/isbi2012.sh --dry-run     # print the job script and ppp-dist plan; submits nothing
#   bash scripts/batch/slurm/isbi2012.sh               # sbatch; resubmitting resumes
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main slurm isbi2012 "$@"
