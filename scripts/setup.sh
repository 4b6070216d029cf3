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
case ",${extras}," in *,test,*|*,dev,*|*,mattersim,*)
  # MatterSim without its declared deps (torchvision/torchaudio would replace the CPU torch); the
  # runtime deps come with the 'mattersim' extra. Weights are never downloaded: pass a local checkpoint.
  pip install -q --no-deps mattersim==1.2.3 ;;
esac
