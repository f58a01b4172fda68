#!/usr/bin/env bash
# DSB2018 nuclei, ppp (2D): configs/dsb2018_ppp.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/dsb2018_ppp/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 2D, small images: one vote block per image, well under 1 GiB.
#   bash scripts/batch/local/dsb2018_ppp.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/dsb2018_ppp.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local dsb2018_ppp "$@"
