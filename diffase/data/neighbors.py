"""Periodic radius neighbour list in torch, for many crystals at once.

Written here rather than taken from a library because it must run inside every score-network call on the
same device as the model (CPU or CUDA), over a flat batch of crystals, with no host round trip; pymatgen's
``get_neighbor_list`` (used in the tests as the reference) is numpy-only and per structure.

It is exact for any cell: small and skewed cells, where an atom neighbours its own periodic images, are
handled by enumerating, per crystal, every lattice translation that can bring an image within the cutoff.
"""

from __future__ import annotations

import torch

from diffase.data import fields as F


def image_ranges(cell: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Number of cell images needed along each lattice vector, (B, 3) int64.

    For wrapped fractional coordinates the fractional difference lies in (-1, 1), and a translation
    ``n`` along vector ``a_k`` brings an image within ``cutoff`` only if ``|n| <= ceil(cutoff * |b_k|)``,
    with ``b_k`` the reciprocal vectors (no 2 pi): ``1 / |b_k|`` is the spacing of the lattice planes.
    """
    recip = torch.linalg.inv(cell).transpose(1, 2)  # rows b_k, 1/Angstrom
    return torch.ceil(cutoff * recip.norm(dim=-1) - 1e-9).clamp(min=0).long()


def all_pairs(num_atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered atom pairs ``(i, j)`` within each crystal of a flat batch, self-pairs included.

    ``num_atoms`` (B,) int64; returns two (sum n^2,) int64 atom indices, grouped by crystal, row-major.
    """
    device = num_atoms.device
    atom_start = torch.cumsum(num_atoms, 0) - num_atoms
    n_pair = num_atoms * num_atoms
    graph = torch.repeat_interleave(torch.arange(len(num_atoms), device=device), n_pair)
    local = torch.arange(int(n_pair.sum()), device=device) - torch.repeat_interleave(
        torch.cumsum(n_pair, 0) - n_pair, n_pair
    )
    n = num_atoms[graph]
    return atom_start[graph] + local // n, atom_start[graph] + local % n


def radius_graph_pbc(batch: dict[str, torch.Tensor], cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All directed pairs ``(i, j, shift)`` with ``|pos_j + shift @ cell - pos_i| < cutoff`` (Angstrom).

    Reads ``pos`` (n, 3), ``cell`` (B, 3, 3), ``batch`` (n,), ``num_atoms`` (B,). Positions need not be
    wrapped. Returns ``edge_index`` (2, E) int64 (row 0 = source ``i``, row 1 = neighbour ``j``) and
    ``edge_cell_shift`` (E, 3) float, the integer image offset of ``j``. Self-pairs with zero shift are
    excluded; an atom's own images are included.
    """
    pos, cell, graph, counts = batch[F.POSITIONS], batch[F.CELL], batch[F.BATCH], batch[F.NUM_ATOMS]
    device = pos.device
    with torch.no_grad():
        inv = torch.linalg.inv(cell)
        frac = torch.einsum("ni,nij->nj", pos, inv[graph])
        wrap_shift = torch.floor(frac)  # pos = wrapped + wrap_shift @ cell
        wrapped = torch.einsum("ni,nij->nj", frac - wrap_shift, cell[graph])

        # translations per crystal: the box [-n, n]^3 of the largest range, filtered per crystal
        n_img = image_ranges(cell, cutoff)  # (B, 3)
        n_max = int(n_img.max()) if n_img.numel() else 0
        r = torch.arange(-n_max, n_max + 1, device=device)
        box = torch.cartesian_prod(r, r, r)  # (K, 3)
        keep = (box.abs().unsqueeze(0) <= n_img.unsqueeze(1)).all(-1)  # (B, K)
        _, shift_id = keep.nonzero(as_tuple=True)
        shifts = box[shift_id]  # (S, 3), grouped by crystal
        n_shift = keep.sum(1)  # (B,)
        shift_start = torch.cumsum(n_shift, 0) - n_shift

        src, dst = all_pairs(counts)
        pair_graph = graph[src]

        # every (pair, translation) of the same crystal
        reps = n_shift[pair_graph]
        tri_pair = torch.repeat_interleave(torch.arange(len(src), device=device), reps)
        tri_local = torch.arange(int(reps.sum()), device=device) - torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)
        tri_shift = shifts[shift_start[pair_graph[tri_pair]] + tri_local].to(pos.dtype)
        i, j = src[tri_pair], dst[tri_pair]
        vec = wrapped[j] - wrapped[i] + torch.einsum("ei,eij->ej", tri_shift, cell[graph[i]])
        dist2 = (vec * vec).sum(-1)
        is_self = (i == j) & (tri_shift == 0).all(-1)
        hit = (dist2 < cutoff * cutoff) & ~is_self
        i, j, tri_shift = i[hit], j[hit], tri_shift[hit]
        # express the shift for the unwrapped positions: pos_j - pos_i + s' @ cell equals the vector above
        cell_shift = tri_shift + wrap_shift[i] - wrap_shift[j]
    return torch.stack([i, j]), cell_shift


def edge_vectors(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Edge vectors ``pos_j + shift @ cell - pos_i`` (E, 3), Angstrom, differentiable in ``pos`` and ``cell``."""
    i, j = batch[F.EDGE_INDEX]
    shift = batch[F.EDGE_CELL_SHIFT]
    cell = batch[F.CELL][batch[F.BATCH][i]]
    return batch[F.POSITIONS][j] - batch[F.POSITIONS][i] + torch.einsum("ei,eij->ej", shift, cell)
