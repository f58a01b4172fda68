#!/usr/bin/env bash
# Create or update the project's virtual environment at .venv (idempotent; fast when nothing changed).
# torch is installed first from its pinned CPU wheel: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "ppp_dist needs Python 3.11 (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
stamp=.venv/.ppp_dist_env_stamp
want=$(cat setup.cfg setup.py scripts/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import ppp_dist' 2>/dev/null; then
    exit 0
fi
echo "setting up .venv (first time takes a few minutes) ..." >&2
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c scripts/constraints.txt -e ".[dev]"
.venv/bin/python -m pip check >&2
echo "$want" > "$stamp"
