"""Random draws of the corruption processes, from one generator or from one generator per crystal.

Every process draws its noise through :func:`randn`, :func:`rand` and :func:`multinomial`. They take either

* a ``torch.Generator`` (or None for torch's global RNG): one stream for the whole batch, so a crystal's
  noise depends on which other crystals share its batch; or
* :class:`CrystalGenerators`: one seeded stream per crystal of the batch. The rows belonging to crystal
  ``g`` (its atoms for node fields, its one row for graph fields such as the cell) are drawn from stream
  ``g`` alone, so a crystal's sample depends on its own seed and nothing else: not on the batch size, the
  other crystals of the batch or how many samples a run asks for. This is what makes a seeded inpainting
  run reproducible sample by sample, and a resumed or enlarged run consistent with a fresh one.

Rows of crystal ``g`` are contiguous and in crystal order (:func:`diffase.data.batch.collate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from diffase.data import fields as F


class CrystalGenerators:
    """One ``torch.Generator`` per crystal of a batch, seeded with ``seeds[g]`` (on ``device``)."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        self.generators = []
        for seed in seeds:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(seed))
            self.generators.append(gen)

    def __len__(self) -> int:
        return len(self.generators)


Generator = torch.Generator | CrystalGenerators | None


def _rows_per_crystal(n_rows: int, batch: dict, n_crystals: int) -> list[int]:
    """How many leading-axis rows of a field belong to each crystal: its atoms (node field) or 1 (graph field)."""
    counts = batch[F.NUM_ATOMS]
    if counts.shape[0] != n_crystals:
        raise ValueError(f"{n_crystals} per-crystal generators for a batch of {counts.shape[0]} crystals")
    if n_rows == int(counts.sum()):
        return counts.tolist()
    if n_rows == n_crystals:
        return [1] * n_crystals
    raise ValueError(f"a field with {n_rows} rows is neither per atom ({int(counts.sum())}) nor per crystal "
                     f"({n_crystals}) in this batch")


def _per_crystal(draw: Callable[[tuple, torch.Generator], torch.Tensor], shape: tuple, generator: CrystalGenerators,
                 batch: dict | None) -> torch.Tensor:
    if batch is None:
        raise ValueError("per-crystal generators need the batch to know which rows belong to which crystal")
    sizes = _rows_per_crystal(shape[0], batch, len(generator))
    return torch.cat([draw((n, *shape[1:]), gen) for n, gen in zip(sizes, generator.generators)])


def _draw(torch_fn, shape, like: torch.Tensor, generator: Generator, batch: dict | None,
          dtype: torch.dtype | None) -> torch.Tensor:
    dtype = dtype or like.dtype
    shape = tuple(shape)
    if isinstance(generator, CrystalGenerators):
        return _per_crystal(lambda s, g: torch_fn(s, generator=g, dtype=dtype, device=like.device),
                            shape, generator, batch)
    return torch_fn(shape, generator=generator, dtype=dtype, device=like.device)


def randn(shape, like: torch.Tensor, generator: Generator, batch: dict | None = None, *,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal draws of ``shape`` with ``like``'s device (and dtype unless ``dtype`` is given)."""
    return _draw(torch.randn, shape, like, generator, batch, dtype)


def rand(shape, like: torch.Tensor, generator: Generator, batch: dict | None = None, *,
         dtype: torch.dtype | None = None) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` with ``like``'s device (and dtype unless ``dtype`` is given)."""
    return _draw(torch.rand, shape, like, generator, batch, dtype)


def multinomial(probs: torch.Tensor, generator: Generator, batch: dict | None = None) -> torch.Tensor:
    """One category per row of ``probs`` (rows, K) -> (rows,) long."""
    if isinstance(generator, CrystalGenerators):
        if batch is None:
            raise ValueError("per-crystal generators need the batch to know which rows belong to which crystal")
        sizes = _rows_per_crystal(probs.shape[0], batch, len(generator))
        parts = torch.split(probs, sizes)
        return torch.cat([torch.multinomial(p, 1, generator=g).squeeze(-1) for p, g in zip(parts, generator.generators)])
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
