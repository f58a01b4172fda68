#!/usr/bin/env bash
# 3D nuclei (StarDist-3D split): configs/nuclei3d.toml on this machine.
# train -> validate -> infer (predict, label on a dask cluster of PPP_CLUSTER_KIND, default local; evaluate).
# Data: $PPP_DATA_ROOT/nuclei3d/train, val, test (zarr samples, docs/datasets.md). Settings: scripts/batch/site.env.
# Memory: 3D: ~6 GiB per 64^3 vote block (9^3 patches, halo 44).
#   bash scripts/batch/local/nuclei3d.sh --dry-run     # check inputs, show the config and ppp-dist plan
#   bash scripts/batch/local/nuclei3d.sh               # the run; the same command again resumes it
set -euo pipefail
# shellcheck disable=SC1091  # common.sh is found at run time
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
ppp_batch_main local nuclei3d "$@"
