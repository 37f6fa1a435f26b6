#!/usr/bin/env bash
# Sets up .venv (first run only) and runs the whole default test suite.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
