#!/usr/bin/env bash
# Set up a virtual environment (CPU torch first, so nothing pulls a CUDA build) and run the default tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[test]"
export OMP_NUM_THREADS=1 DIFFASE_NUM_THREADS=1
python -m pytest -q "$@"
