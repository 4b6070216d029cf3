"""Stack crystal records into one flat graph (a batch dict) and split it back.

A batch is a ``dict[str, Tensor]`` keyed by :mod:`diffase.data.fields`. Node fields of all crystals are
concatenated, ``batch`` maps each atom to its crystal, graph fields are stacked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffase.data import fields as F

Batch = dict[str, torch.Tensor]


def batch_slices(sizes: Sequence[int], max_crystals: int, max_atoms: int | None = None) -> list[slice]:
    """Cut crystals of ``sizes`` atoms, in order, into consecutive batches of at most ``max_crystals``
    crystals and, if given, ``max_atoms`` atoms (a crystal larger than ``max_atoms`` gets a batch of its own).

    Consecutive batches keep each caller's order, so results can be streamed out batch by batch and a host's
    samples finish together.
    """
    if max_crystals < 1 or (max_atoms is not None and max_atoms < 1):
        raise ValueError(f"batch limits must be >= 1, got {max_crystals} crystals, {max_atoms} atoms")
    slices, start, atoms = [], 0, 0
    for i, n in enumerate(sizes):
        full = i - start >= max_crystals or (max_atoms is not None and atoms + n > max_atoms)
        if full and i > start:
            slices.append(slice(start, i))
            start, atoms = i, 0
        atoms += n
    if start < len(sizes):
        slices.append(slice(start, len(sizes)))
    return slices


def collate(records: Sequence[dict[str, Any]], *, dtype: torch.dtype = torch.float32) -> Batch:
    """Stack crystal records into one batch on the CPU.

    Records need ``atomic_numbers`` (n,), ``pos`` (n, 3) Angstrom and ``cell`` (3, 3) Angstrom. Any other
    registered field that every record holds is batched by its kind (:func:`diffase.data.fields.field_kind`):
    node fields (e.g. ``known_mask``, ``bader_charge``) are concatenated over atoms, graph fields (one array
    per crystal) and grid fields (one (G, G, G) grid per crystal, e.g. ``charge_density``) are stacked into
    (n_crystals, ...); a graph or grid field whose shape differs between crystals is refused.
    """
    if not records:
        raise ValueError("cannot collate an empty list of crystals")
    counts = [len(r[F.ATOMIC_NUMBERS]) for r in records]
    batch: Batch = {
        F.ATOMIC_NUMBERS: torch.as_tensor(np.concatenate([r[F.ATOMIC_NUMBERS] for r in records]), dtype=torch.long),
        F.POSITIONS: torch.as_tensor(np.concatenate([r[F.POSITIONS] for r in records]), dtype=dtype),
        F.CELL: torch.as_tensor(np.stack([r[F.CELL] for r in records]), dtype=dtype),
        F.NUM_ATOMS: torch.as_tensor(counts, dtype=torch.long),
        F.BATCH: torch.repeat_interleave(torch.arange(len(records)), torch.as_tensor(counts)),
    }
    for key in sorted((F.NODE_FIELDS | F.GRAPH_FIELDS | F.GRID_FIELDS) - batch.keys()):
        if not all(key in r for r in records):
            continue
        arrays = [np.asarray(r[key]) for r in records]
        if F.field_kind(key) == "node":
            batch[key] = torch.as_tensor(np.concatenate(arrays))
            continue
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"cannot batch {key!r}: its shape differs between crystals ({sorted(shapes)}); "
                             "bring every crystal's array to one shape (grids: regrid to one G) first")
        batch[key] = torch.as_tensor(np.stack(arrays))
    return batch


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor of a batch to ``device``."""
    return {k: v.to(device) for k, v in batch.items()}


def select_crystals(batch: Batch, crystals: slice) -> tuple[Batch, slice]:
    """The consecutive crystals ``crystals`` (a slice of crystal indices, step 1) of a batch as a batch of
    their own, on the same device, and the slice of the original atom rows they occupy.

    Node fields are cut to those atoms, graph fields (and conditions) to those crystals, ``batch`` renumbered
    from 0. Edge fields are refused: build the neighbour list of the selection instead.
    """
    lo, hi, step = crystals.indices(batch[F.NUM_ATOMS].shape[0])
    if step != 1 or hi <= lo:
        raise ValueError(f"select_crystals needs a non-empty slice of consecutive crystals, got {crystals}")
    bounds = torch.cumsum(batch[F.NUM_ATOMS], 0).tolist()
    atoms = slice(bounds[lo - 1] if lo else 0, bounds[hi - 1])
    out: Batch = {}
    for key, value in batch.items():
        kind = F.field_kind(key)
        if kind == "edge":
            raise ValueError(f"select_crystals cannot cut the edge field {key!r}")
        out[key] = value[atoms] if kind == "node" else value[lo:hi]
    out[F.BATCH] = out[F.BATCH] - lo
    return out, atoms


def split(batch: Batch) -> list[dict[str, np.ndarray]]:
    """Split a batch back into per-crystal records of numpy arrays (node, graph and grid fields)."""
    counts = batch[F.NUM_ATOMS].tolist()
    bounds = np.cumsum([0] + counts)
    node_keys = [k for k in batch if k in F.NODE_FIELDS and k != F.BATCH]
    graph_keys = [k for k in batch if k in F.GRAPH_FIELDS | F.GRID_FIELDS and k != F.NUM_ATOMS]
    node = {k: batch[k].detach().cpu().numpy() for k in node_keys}
    graph = {k: batch[k].detach().cpu().numpy() for k in graph_keys}
    out = []
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        rec = {k: v[lo:hi] for k, v in node.items()}
        rec.update({k: v[g] for k, v in graph.items()})
        out.append(rec)
    return out


def wrap_positions(pos: torch.Tensor, cell: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
    """Wrap Cartesian positions (n, 3) Angstrom into their cells (rows of ``cell`` (B, 3, 3))."""
    inv = torch.linalg.inv(cell)[batch_index]
    frac = torch.einsum("ni,nij->nj", pos, inv)
    frac = frac - torch.floor(frac)
    return torch.einsum("ni,nij->nj", frac, cell[batch_index])
