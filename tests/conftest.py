"""Shared fixtures. Tests read shared data through ``shared_data`` (../shared/data beside the checkout)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # thread oversubscription makes e3nn/CHGNet calls up to 30x slower on 2 cores
warnings.filterwarnings("ignore", message=".*fractional coordinates rounded.*")

SHARED_DATA = Path(os.environ.get("DIFFASE_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the shared data folder; tests that need it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set DIFFASE_SHARED_DATA)")
    return SHARED_DATA
