#!/usr/bin/env bash
# BBBC010 worms, ppp+dec (2D, brightfield, overlapping instances): configs/bbbc010_pppdec.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/bbbc010_pppdec/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 2D: ~5 GiB per 256^2 vote block; predict writes codes, decode turns them into patches.
#   bash scripts/batch/local/bbbc010_pppdec.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/bbbc010_pppdec.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local bbbc010_pppdec "$@"
