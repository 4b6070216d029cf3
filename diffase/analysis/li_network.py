"""The network a mobile ion's sites form in a crystal, and the anion coordination of each site.

* :func:`ion_network`: the periodic graph of the ``species`` sites alone, an edge between two sites (or a site and
  its own periodic image) closer than ``cutoff`` (Angstrom): pymatgen's ``CutOffDictNN`` on the ion-only structure;
* :func:`network_dimensionality`: 0 (isolated sites or clusters), 1 (chains), 2 (sheets) or 3: the largest of
  pymatgen's Larsen dimensionality (``get_dimensionality_larsen``, Larsen et al., Phys. Rev. Materials 2019) over
  the graph's components;
* :func:`anion_coordination`: how many ``anion`` atoms lie within ``cutoff`` of each ``species`` site;
* :func:`plot_ion_network`: a PNG of the network projected along a, b and c.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.analysis.dimensionality import get_dimensionality_larsen
from pymatgen.analysis.graphs import StructureGraph
from pymatgen.analysis.local_env import CutOffDictNN
from pymatgen.core import Structure

#: Li-Li distance (Angstrom) below which two Li sites are linked (ChargeDIFF's network analysis).
LI_LI_CUTOFF = 4.0


def species_indices(structure: Structure, species: str) -> list[int]:
    """Indices of the sites of ``species`` (element symbol; oxidation states ignored)."""
    return [i for i, site in enumerate(structure) if site.specie.symbol == species]


def ion_network(structure: Structure, species: str = "Li", cutoff: float = LI_LI_CUTOFF) -> StructureGraph:
    """Periodic graph of the ``species`` sites of ``structure`` (the other atoms dropped), edges between sites
    closer than ``cutoff`` Angstrom, periodic images included."""
    if cutoff <= 0:
        raise ValueError(f"the network cutoff is a distance in Angstrom > 0, got {cutoff}")
    keep = species_indices(structure, species)
    if not keep:
        raise ValueError(f"{structure.composition.reduced_formula} has no {species} site")
    ions = Structure(structure.lattice, [species] * len(keep), structure.frac_coords[keep])
    return CutOffDictNN({(species, species): cutoff}).get_bonded_structure(ions)


def network_dimensionality(structure: Structure, species: str = "Li", cutoff: float = LI_LI_CUTOFF) -> int:
    """Dimensionality 0-3 of the ``species`` network (:func:`ion_network`): the largest over its components."""
    return int(get_dimensionality_larsen(ion_network(structure, species, cutoff)))


def anion_coordination(structure: Structure, species: str = "Li", anion: str = "O",
                       cutoff: float = 2.5) -> dict[int, int]:
    """``{site index: number of anion atoms within cutoff Angstrom}`` for every ``species`` site, periodic images
    counted one by one (a small cell can put several images of one anion within the cutoff)."""
    if cutoff <= 0:
        raise ValueError(f"the coordination cutoff is a distance in Angstrom > 0, got {cutoff}")
    return {i: sum(n.specie.symbol == anion for n in structure.get_neighbors(structure[i], cutoff))
            for i in species_indices(structure, species)}


def plot_ion_network(structure: Structure, path: str | Path, *, species: str = "Li",
                     cutoff: float = LI_LI_CUTOFF, title: str | None = None) -> Path:
    """PNG of the ``species`` network projected along a, b and c (fractional axes): its sites (red), its edges
    (lines to the linked site or periodic image, Angstrom ``cutoff``) and the other atoms (grey)."""
    # a Figure, not pyplot: the caller's backend and open figures stay as they are
    from matplotlib.figure import Figure

    graph = ion_network(structure, species, cutoff)
    ions = graph.structure
    frac = ions.frac_coords % 1.0
    others = structure.frac_coords[[i for i in range(len(structure)) if structure[i].specie.symbol != species]] % 1.0
    edges = [(frac[u], frac[u] + (ions.frac_coords[v] - ions.frac_coords[u]) + np.asarray(d["to_jimage"]))
             for u, v, d in graph.graph.edges(data=True)]
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 3)
    names = "abc"
    for axis, ax in enumerate(axes):
        u, v = [k for k in range(3) if k != axis]
        for start, end in edges:
            ax.plot([start[u], end[u]], [start[v], end[v]], "-", color="C3", lw=1, alpha=0.6)
        if len(others):
            ax.scatter(others[:, u], others[:, v], s=14, c="0.6", label="host atoms")
        ax.scatter(frac[:, u], frac[:, v], s=30, c="C3", label=species)
        ax.plot([0, 1, 1, 0, 0], [0, 0, 1, 1, 0], "k-", lw=0.6)
        ax.set_xlim(-0.25, 1.25)
        ax.set_ylim(-0.25, 1.25)
        ax.set_aspect("equal")
        ax.set_xlabel(f"fractional {names[u]}")
        ax.set_ylabel(f"fractional {names[v]}")
        ax.set_title(f"projected along {names[axis]}")
    axes[0].legend(fontsize=7, loc="upper right")
    dim = int(get_dimensionality_larsen(graph))
    fig.suptitle(title or f"{structure.composition.reduced_formula}: {species} network ({species}-{species} "
                          f"< {cutoff:g} A), dimensionality {dim}")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
