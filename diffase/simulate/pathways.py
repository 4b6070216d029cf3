"""Where a mobile species goes during MD: its visited-site density on a grid, the dimensionality of the
network it percolates through, and a PNG of the pathway (density projected along each lattice axis).

The density is pymatgen-analysis-diffusion's ``ProbabilityDensityAnalysis`` (Zhu et al., Chem. Mater. 2015).
The dimensionality is written here because no maintained library computes it for a periodic grid
(pymatgen's dimensionality algorithms work on bonded structures): visited voxels are labelled with
``scipy.ndimage.label``, labels touching across the periodic boundary are merged with a union-find that tracks
cell offsets, and a component's dimensionality is the rank of the offsets by which it reaches its own images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from scipy import ndimage

from diffase.simulate.md import MDResult


@dataclass
class SiteDensity:
    """Time-averaged density of ``species`` on a grid of the MD cell.

    density: (na, nb, nc) probability density per ion (1/Angstrom^3; its mean over the cell is 1/volume).
    visits: (na, nb, nc) int, how many (frame, ion) samples fell nearest each grid point.
    interval: grid spacing (Angstrom).
    """

    structure: Structure
    species: str
    interval: float
    density: np.ndarray
    visits: np.ndarray

    def dimensionality(self, min_visits: int = 1) -> int:
        """0-3: dimensionality of the most connected network of grid points visited at least ``min_visits``
        times (0: isolated pockets, 1: channels, 2: layers, 3: a 3D network)."""
        return percolation_dimension(self.visits >= min_visits)


def site_density(md: MDResult, species: str = "Li", *, interval: float = 0.5) -> SiteDensity:
    """Visited-site density of ``species`` over every frame of ``md`` on a grid of spacing ``interval``
    (Angstrom)."""
    from pymatgen.analysis.diffusion.aimd.pathway import ProbabilityDensityAnalysis

    if species not in {el.symbol for el in md.structure.composition.elements}:
        raise ValueError(f"the MD cell {md.structure.composition.reduced_formula} contains no {species}")
    structure = md.structure.copy()
    structure.remove_oxidation_states()
    pda = ProbabilityDensityAnalysis(structure, md.frac_positions, interval=interval, species=[species])
    n_ions = sum(site.specie.symbol == species for site in structure)
    visits = np.rint(pda.Pr * len(md.frac_positions) * n_ions * structure.volume / pda.Pr.size).astype(int)
    return SiteDensity(structure, species, interval, np.asarray(pda.Pr), visits)


def percolation_dimension(mask: np.ndarray, connectivity: int = 26) -> int:
    """Largest dimensionality (0-3) of the connected components of a periodic boolean grid ``mask``
    (0 if the mask is empty or no component reaches its own periodic image).

    connectivity: 26 (voxels sharing a face, edge or corner are connected: paths running diagonally through
    the grid, as on any non-orthogonal cell, stay connected) or 6 (faces only).
    """
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, got {connectivity}")
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(3, 1 if connectivity == 6 else 3)
    labels, n = ndimage.label(mask, structure=structure)
    parent = np.arange(n + 1)
    offset = np.zeros((n + 1, 3), dtype=int)  # cell of a label's copy relative to its parent's copy

    def find(a: int) -> tuple[int, np.ndarray]:
        total = np.zeros(3, dtype=int)
        while parent[a] != a:
            total += offset[a]
            a = parent[a]
        return a, total

    # every neighbour pair once: the offsets d with d > 0 in lexicographic order, then the pairs that cross
    # the cell boundary (pairs inside the cell already share a label)
    steps = [np.array(d) for d in np.argwhere(structure) - 1 if tuple(d) > (0, 0, 0)]
    index = np.indices(mask.shape).reshape(3, -1).T
    shape = np.array(mask.shape)
    cycles: dict[int, list[np.ndarray]] = {}
    for d in steps:
        target = index + d
        shift = np.floor_divide(target, shape)
        crossing = shift.any(axis=1)
        a = labels.reshape(-1)[crossing]
        b = labels[tuple((target[crossing] % shape).T)]
        both = (a > 0) & (b > 0)
        for x, y, sh in {(int(x), int(y), tuple(sh)) for x, y, sh in zip(a[both], b[both], shift[crossing][both])}:
            ra, oa = find(x)
            rb, ob = find(y)  # y's copy in cell ``sh`` touches x's copy in cell 0
            if ra == rb:
                cycles.setdefault(ra, []).append(oa + np.array(sh) - ob)
            else:
                parent[rb], offset[rb] = ra, oa + np.array(sh) - ob
                cycles.setdefault(ra, []).extend(cycles.pop(rb, []))
    return max((int(np.linalg.matrix_rank(np.array(c))) for c in cycles.values()), default=0)


def plot_site_density(density: SiteDensity, path: str | Path, *, min_visits: int = 1) -> Path:
    """PNG of the pathway: the density summed along a, b and c in turn (fractional axes), with the starting
    positions of the species (white) and of the other atoms (grey) projected on top."""
    # a Figure, not pyplot: the caller's backend and open figures stay as they are
    from matplotlib.figure import Figure

    frac = density.structure.frac_coords % 1.0
    is_species = np.array([site.specie.symbol == density.species for site in density.structure])
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    for axis, ax in enumerate(axes):
        u, v = [k for k in range(3) if k != axis]
        image = density.density.sum(axis=axis)
        ax.imshow(image.T, origin="lower", extent=(0, 1, 0, 1), cmap="viridis", aspect="auto")
        ax.scatter(frac[~is_species, u], frac[~is_species, v], s=6, c="0.7", label="other atoms")
        ax.scatter(frac[is_species, u], frac[is_species, v], s=12, facecolors="none", edgecolors="w",
                   label=f"{density.species} at start")
        names = "abc"
        ax.set_xlabel(f"fractional {names[u]}")
        ax.set_ylabel(f"fractional {names[v]}")
        ax.set_title(f"{density.species} density summed along {names[axis]}")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{density.structure.composition.reduced_formula}: {density.species} pathway, "
                 f"dimensionality {density.dimensionality(min_visits)} (voxels visited >= {min_visits}x)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
