#!/usr/bin/env bash
# Create .venv and install diffase with the given extras. torch==2.13.0 goes first: it is a local CPU wheel
# on this kind of machine, and installing it first keeps pip from pulling a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-mlip}"
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[${extras}]"
