#!/usr/bin/env bash
# The test suite. PostgreSQL tests run when PPP_DIST_TEST_POSTGRES_DSN points at a server
# (.ci/run starts one and sets PPP_DIST_REQUIRE_POSTGRES=1, which turns a missing server into a failure).
# The SLURM tests (tests/slurm/) run when SLURM answers (scripts/start_slurm.sh; .ci/run sets
# PPP_DIST_REQUIRE_SLURM=1 likewise).
# Extra arguments go to pytest (e.g. -k config, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
