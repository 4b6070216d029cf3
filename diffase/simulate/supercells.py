"""Supercells for defect simulations: every lattice length past a minimum, optionally one vacancy."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure

from diffase.data.structures import StructureLike, to_structure


def supercell_repeats(structure: StructureLike, min_length: float = 10.0) -> tuple[int, int, int]:
    """Smallest repeats along a, b, c making every lattice length >= ``min_length`` (Angstrom)."""
    abc = to_structure(structure).lattice.abc
    return tuple(int(max(1, np.ceil(min_length / x - 1e-9))) for x in abc)


def vacancy_supercell(structure: StructureLike, species: str = "Li", *, min_length: float = 10.0,
                      index: int = 0) -> Structure:
    """Supercell with every lattice length >= ``min_length`` (Angstrom) and the ``index``-th ``species``
    atom removed (oxidation states dropped)."""
    s = to_structure(structure).copy()
    s.remove_oxidation_states()
    s.make_supercell(supercell_repeats(s, min_length))
    sites = [i for i, site in enumerate(s) if site.specie.symbol == species]
    if not sites:
        raise ValueError(f"{s.composition.reduced_formula} contains no {species} to remove")
    s.remove_sites([sites[index]])
    return s
