#!/usr/bin/env bash
# DSB2018 nuclei, ppp+dec (2D): configs/dsb2018_pppdec.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/dsb2018_pppdec/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 2D, small images; predict writes codes, decode turns them into patches.
#   bash scripts/batch/local/dsb2018_pppdec.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/dsb2018_pppdec.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local dsb2018_pppdec "$@"
