#!/usr/bin/env bash
# Sets up .venv (first run only) and runs the whole pipeline on synthetic EEG (python demo.py --help).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
exec .venv/bin/python demo.py "$@"
