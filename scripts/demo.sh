#!/usr/bin/env bash
# The main job end to end on the bundled FlyLight sample (local dask cluster, dashboard link printed).
# Extra arguments go to `ppp-dist demo` (e.g. --root DIR, --workers 2, --set section.key=value).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/ppp-dist demo "$@"
