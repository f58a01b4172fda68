#!/usr/bin/env bash
# FlyLight / FISBe neurons (3D, 3 channels, overlapping instances): configs/flylight.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/flylight/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 3D: plan estimates ~14 GiB per 92^3 vote block; give workers that much or use --set 'vote.block_shape=[64, 64, 64]'.
#   bash scripts/batch/local/flylight.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/flylight.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local flylight "$@"
