#!/usr/bin/env bash
# Static checks, run by CI (.ci/run) before the tests: ruff (lint and import order; rules in ruff.toml) over
# ppp_dist/, tests/ and scripts/, and mypy (standard mode; setup.cfg [mypy]) over ppp_dist/. Both are pinned
# in setup.cfg's dev extra and scripts/constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check ppp_dist tests scripts
.venv/bin/mypy ppp_dist
