#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the default test suite (slow tests excluded; run them with -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
export OMP_NUM_THREADS=1 DIFFASE_NUM_THREADS=1
python -m pytest -q "$@"
