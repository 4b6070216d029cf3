"""Probe points of a crystal and their periodic probe -> atom pairs, for densities evaluated at any point.

A *probe* is a point where the density is wanted: the N^3 points of a label's grid (:func:`grid_points`) or any
Cartesian points. :func:`probe_atom_pairs` lists every atom image within a cutoff of each probe, one crystal at a
time. Written here because :func:`~diffase.data.neighbors.radius_graph_pbc` pairs atoms with atoms (all pairs of a
crystal), which for the 32^3 probes of a grid would be 10^9 pairs; probes need only probe x atom pairs. The images
are enumerated as :func:`~diffase.data.neighbors.image_ranges` prescribes for wrapped coordinates (exact for any
cell, however skewed).
"""

from __future__ import annotations

import torch

from diffase.data.neighbors import image_ranges


def grid_points(cell: torch.Tensor, n: int) -> torch.Tensor:
    """Cartesian points (n^3, 3), Angstrom, at the fractional coordinates (i/n, j/n, k/n), i, j, k = 0..n-1, of a
    cell (3, 3) (rows = lattice vectors), in the C order of an (n, n, n) array: row ``(i * n + j) * n + k``.

    This is the convention of the labels' ``rho32`` (:mod:`diffase.data.electronic.density`), so
    ``rho.reshape(-1)`` lines up with these points."""
    r = torch.arange(n, dtype=cell.dtype, device=cell.device) / n
    return torch.cartesian_prod(r, r, r) @ cell


def _wrap(points: torch.Tensor, cell: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    frac = points @ inverse
    return (frac - torch.floor(frac)) @ cell


@torch.no_grad()
def probe_atom_pairs(probes: torch.Tensor, pos: torch.Tensor, cell: torch.Tensor, cutoff: float,
                     chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every (probe, atom image) pair closer than ``cutoff`` (Angstrom) in one crystal.

    ``probes`` (P, 3) and ``pos`` (n, 3): Cartesian, Angstrom, any periodic image; ``cell`` (3, 3). Returns the
    probe index (E,), the atom index (E,) and the distance (E,), Angstrom. A neighbour list: not differentiable.
    ``chunk`` probes are compared with all atom images at a time (memory ``chunk x n x images``); distances are
    computed directly, not through the matrix-product shortcut of ``cdist``, whose round-off would break the
    invariance of what is computed from them.
    """
    inverse = torch.linalg.inv(cell)
    probes = _wrap(probes, cell, inverse)
    n_img = image_ranges(cell[None], cutoff)[0]
    axes = [torch.arange(-int(k), int(k) + 1, device=cell.device, dtype=cell.dtype) for k in n_img]
    shifts = torch.cartesian_prod(*axes) @ cell  # (S, 3)
    images = (_wrap(pos, cell, inverse)[:, None, :] + shifts[None]).reshape(-1, 3)  # atom-major: (n * S, 3)
    out_p, out_a, out_d = [], [], []
    for lo in range(0, probes.shape[0], chunk):
        dist = torch.cdist(probes[lo : lo + chunk], images, compute_mode="donot_use_mm_for_euclid_dist")
        p, k = torch.nonzero(dist < cutoff, as_tuple=True)
        out_p.append(p + lo)
        out_a.append(k // shifts.shape[0])
        out_d.append(dist[p, k])
    return torch.cat(out_p), torch.cat(out_a), torch.cat(out_d)
