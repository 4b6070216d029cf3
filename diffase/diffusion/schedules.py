"""Noise-level grids and time-index schedules shared by every sampler.

A schedule is a list of integer *levels*: level ``N-1`` is the noisiest (where sampling starts), level 0
the cleanest, and level ``-1`` the clean data. Consecutive entries differ by one: a step down denoises,
a step up re-noises (RePaint's "jump back"). Unconditional sampling is the monotone schedule.
"""

from __future__ import annotations

import torch


def geometric_sigmas(sigma_min: float, sigma_max: float, num_levels: int) -> torch.Tensor:
    """``sigma_i = sigma_min (sigma_max / sigma_min)^(i / (N-1))``, i = 0..N-1, increasing (float64)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if num_levels < 2:
        raise ValueError(f"need at least 2 noise levels, got {num_levels}")
    return torch.exp(torch.linspace(torch.log(torch.tensor(sigma_min, dtype=torch.float64)),
                                    torch.log(torch.tensor(sigma_max, dtype=torch.float64)), num_levels))


def level_timestep(level: int, num_levels: int, num_steps: int) -> int:
    """Training step ``t`` in 0..T of a sampling level, for processes trained on T discrete steps.

    Level ``N-1`` is step T (the prior), level -1 is step 0 (the clean data); with N < T levels the sampler
    visits every (T/N)-th step (respacing, Nichol & Dhariwal 2021), exact when N divides T.
    """
    if not -1 <= level < num_levels:
        raise ValueError(f"level {level} outside [-1, {num_levels - 1}]")
    if not 1 <= num_levels <= num_steps:
        raise ValueError(f"need 1 <= num_levels <= num_steps, got {num_levels}, {num_steps}")
    return round((level + 1) * num_steps / num_levels)


def monotone_schedule(num_levels: int) -> list[int]:
    """``[N-1, N-2, ..., 0, -1]``: plain reverse diffusion."""
    return list(range(num_levels - 1, -2, -1))


def repaint_schedule(num_levels: int, jump_length: int = 10, n_resample: int = 3) -> list[int]:
    """RePaint resampling schedule (Lugmayr et al. 2022; Listing 1 of the inpainting paper).

    Going down from level ``N-1``, every ``jump_length``-th level ``j`` below ``N - jump_length`` is
    revisited: the sampler goes back up ``jump_length`` levels (re-noising) and down again,
    ``n_resample - 1`` times. ``n_resample = 1`` gives :func:`monotone_schedule`.
    """
    if jump_length < 1 or n_resample < 1:
        raise ValueError(f"jump_length and n_resample must be >= 1, got {jump_length}, {n_resample}")
    jumps = {j: n_resample - 1 for j in range(0, num_levels - jump_length, jump_length)}
    t = num_levels
    levels = []
    while t >= 1:
        t -= 1
        levels.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                levels.append(t)
    levels.append(-1)
    return levels
