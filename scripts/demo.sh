#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the shipped model: inpaint 2 Zn into alpha-MnO2
# (4 diffusion samples, paper sampler settings), relax them with CHGNet and rank them. ~10 min on 1 CPU core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh mlip
. .venv/bin/activate
export OMP_NUM_THREADS=1
diffase inpaint tutorials/data/alpha-MnO2_mp-19395.cif --guest Zn --count 2 --samples 4 \
    --out results/demo-Zn-alpha-MnO2 "$@"
