"""Insert a working ion (Li) at the charge-density minima of a host, as ChargeDIFF's cathode design does.

The candidate sites are pymatgen-analysis-defects' ``ChargeInterstitialGenerator`` (Shen et al., npj Comput. Mater.
2020): local minima of the density, clustered (``clustering_tol``), grouped by symmetry, kept when farther than
``min_host_distance`` from every host atom and when the density averaged in a sphere of ``avg_radius`` around them
is at most ``max_avg_density``; groups come lowest average density first. The density enters as a pymatgen
``Chgcar`` in physical units (``data = rho x volume``, :func:`~diffase.data.electronic.density.density_to_chgcar`).

What is written here is only the filling: every symmetry-equivalent position of each group in turn, lowest average
density first, skipping a position closer than ``min_ion_distance`` to an ion already placed (minima of one
pocket a fraction of an Angstrom apart would otherwise all be filled), up to ``max_ions`` ions per cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pymatgen.core import Structure

from diffase.data.electronic.density import density_to_chgcar


@dataclass
class InsertionSite:
    """One inserted ion: fractional coordinates (3,), the density averaged around it (e/Angstrom^3) and the index
    of its symmetry group among the generator's candidates (0: the lowest average density)."""

    frac_coords: np.ndarray
    avg_density: float
    group: int


@dataclass
class IonInsertion:
    """A host and the ions inserted into it. ``structure``: the host's sites first, then one ``species`` site per
    entry of ``sites`` in the same order; ``n_groups``: symmetry-distinct candidate groups the generator found."""

    host: Structure
    species: str
    structure: Structure
    sites: list[InsertionSite] = field(default_factory=list)
    n_groups: int = 0

    @property
    def ion_indices(self) -> list[int]:
        """Indices of the inserted ions in ``structure``."""
        return list(range(len(self.host), len(self.structure)))

    def keep(self, positions: list[int]) -> IonInsertion:
        """The same host with only the inserted ions at ``positions`` (indices into ``sites``), in that order."""
        return _filled(self.host, self.species, [self.sites[k] for k in positions], self.n_groups)


def _filled(host: Structure, species: str, sites: list[InsertionSite], n_groups: int) -> IonInsertion:
    structure = host.copy()
    for p in sites:
        structure.append(species, p.frac_coords)
    return IonInsertion(host, species, structure, sites, n_groups)


def insert_at_density_minima(structure: Structure, rho: np.ndarray, species: str = "Li", *,
                             max_avg_density: float = 0.9, avg_radius: float = 0.4, min_host_distance: float = 1.6,
                             min_ion_distance: float = 2.3, max_ions: int | None = None,
                             clustering_tol: float = 0.6) -> IonInsertion:
    """Insert ``species`` at the density minima of ``structure`` (module docstring).

    rho: (n1, n2, n3) e/Angstrom^3 on the fractional points of the structure's cell. Distances in Angstrom,
    densities in e/Angstrom^3. A host without an acceptable minimum gets no ion (``sites`` empty), not an error.
    """
    from importlib.util import find_spec

    from pymatgen.analysis.defects.generators import ChargeInterstitialGenerator
    from pymatgen.analysis.defects.utils import get_avg_chg

    if find_spec("skimage") is None:  # pymatgen-analysis-defects finds the minima with it, and fails late without
        raise ImportError("Li insertion at density minima needs scikit-image: pip install 'diffase[cathode]'")
    if max_ions is not None and max_ions < 1:
        raise ValueError(f"max_ions must be >= 1 (or None for no limit), got {max_ions}")
    if min_ion_distance < 0 or min_host_distance < 0 or avg_radius <= 0:
        raise ValueError("distances must be >= 0 Angstrom and avg_radius > 0")
    chgcar = density_to_chgcar(structure, rho)
    generator = ChargeInterstitialGenerator(clustering_tol=clustering_tol, min_dist=min_host_distance,
                                            avg_radius=avg_radius, max_avg_charge=max_avg_density)
    try:
        defects = list(generator.generate(chgcar, [species]))
    except ValueError as err:  # the generator unpacks an empty candidate list when no minimum qualifies
        if "not enough values to unpack" not in str(err):
            raise
        defects = []
    groups = [(float(get_avg_chg(chgcar, np.mod(d.site.frac_coords, 1.0), avg_radius)), d) for d in defects]
    groups.sort(key=lambda g: g[0])  # the generator's order already; sorted here so the filling does not rely on it
    placed: list[InsertionSite] = []
    lattice = structure.lattice
    for k, (avg, defect) in enumerate(groups):
        for site in defect.equivalent_sites:
            if max_ions is not None and len(placed) >= max_ions:
                break
            frac = np.mod(site.frac_coords, 1.0)
            if placed and lattice.get_all_distances(frac, [p.frac_coords for p in placed]).min() < min_ion_distance:
                continue
            placed.append(InsertionSite(frac, avg, k))
    return _filled(structure, species, placed, len(groups))
