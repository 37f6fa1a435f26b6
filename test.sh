#!/usr/bin/env bash
# Sets up .venv (first run only), checks the tree with ruff and runs the whole default test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
.venv/bin/ruff check --quiet .
exec .venv/bin/python -m pytest -q "$@"
