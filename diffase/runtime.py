"""Device choice, CPU threads and seeds: the few process-wide settings every entry point shares."""

from __future__ import annotations

import os

import torch

_THREADS_SET = False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else CPU; anything else is passed to ``torch.device``."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for but CUDA is not available; use device='cpu' or 'auto'")
    return dev


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's CPU thread count once per process and return it.

    Order of precedence: the argument, ``DIFFASE_NUM_THREADS``, ``OMP_NUM_THREADS``, else half the logical
    cores (at least 1): on a busy 2-core machine two threads can be 30x slower than one, because e3nn's
    many small kernels stall on thread synchronisation.
    """
    global _THREADS_SET
    if num_threads is None:
        env = os.environ.get("DIFFASE_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        if env is None and _THREADS_SET:
            return torch.get_num_threads()
        num_threads = int(env) if env else max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(int(num_threads))
    _THREADS_SET = True
    return int(num_threads)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A seeded ``torch.Generator`` on ``device`` (None if ``seed`` is None: torch's global RNG is used)."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def child_seed(seed: int, *index: int) -> int:
    """Independent 63-bit seed derived from ``seed`` and an index path (one per stage, host or sample of a
    run: ``child_seed(seed, host, sample)``); it depends on these numbers alone, not on what else a run does."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), *map(int, index)]).generate_state(1, dtype=np.uint64)[0] >> 1)
