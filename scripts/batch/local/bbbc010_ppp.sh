#!/usr/bin/env bash
# BBBC010 worms, ppp (2D, 2 channels, overlapping instances): configs/bbbc010_ppp.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/bbbc010_ppp/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 2D: ~5 GiB per 256^2 vote block (41 x 41 patches, halo 220).
#   bash scripts/batch/local/bbbc010_ppp.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/bbbc010_ppp.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local bbbc010_ppp "$@"
