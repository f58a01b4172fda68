#!/usr/bin/env bash
# ISBI 2012 EM membranes (2D slices): configs/isbi2012.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/isbi2012/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 2D: ~1.3 GiB per 512^2 vote block.
#   bash scripts/batch/local/isbi2012.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/isbi2012.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local isbi2012 "$@"
