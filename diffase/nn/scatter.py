"""Aggregation of rows (edges, atoms) onto groups (atoms, probes, crystals) by an index."""

from __future__ import annotations

import torch


def mean_over(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Mean (size, d) of the rows of ``values`` (rows, d) per group ``index`` (rows,) in 0..size-1; 0 for a group
    with no row."""
    total = torch.zeros(size, values.shape[-1], dtype=values.dtype, device=values.device).index_add_(0, index, values)
    count = torch.zeros(size, dtype=values.dtype, device=values.device).index_add_(
        0, index, torch.ones_like(index, dtype=values.dtype))
    return total / count.clamp_min(1).unsqueeze(-1)
