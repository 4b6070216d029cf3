"""Validity of generated crystals: charge balance (SMACT) and structure sanity (distances, volume).

* Composition validity: :func:`smact.screening.smact_validity` with the ``smact14`` oxidation-state set,
  the Pauling electronegativity test and alloys (all-metal compositions) accepted, as in CDVAE/DiffCSP.
  SMACT enumerates every combination of oxidation states, exponential in the number of elements: a
  composition with more than ``max_combinations`` (10^5) combinations is counted invalid without the
  enumeration (MP-20 crystals have at most 7 elements and need a few thousand; poorly trained models emit
  10+ element mixtures that would take hours).
* Structural validity: every interatomic distance (periodic images included) >= 0.5 Angstrom and the cell
  volume >= 0.1 Angstrom^3 (CDVAE's criterion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pymatgen.core import Composition, Structure

from diffase.data.structures import MIN_DISTANCE


def composition_valid(composition: Composition | str, max_combinations: int = 10**5) -> bool:
    """SMACT charge-balance and electronegativity validity with the ``smact14`` oxidation states."""
    import smact
    from smact.screening import smact_validity

    comp = Composition(composition)
    symbols = [el.symbol for el in comp.elements]
    if len(symbols) == 1 or all(sym in smact.metals for sym in symbols):
        return True  # elements and alloys, as smact_validity(include_alloys=True)
    if math.prod(len(smact.Element(sym).oxidation_states_smact14) for sym in symbols) > max_combinations:
        return False
    return bool(smact_validity(comp, use_pauling_test=True, include_alloys=True, oxidation_states_set="smact14"))


def structure_valid(structure: Structure, min_distance: float = MIN_DISTANCE, min_volume: float = 0.1) -> bool:
    """True if no two atoms (or an atom and its own image) are closer than ``min_distance`` Angstrom and the
    cell volume is at least ``min_volume`` Angstrom^3."""
    if structure.volume < min_volume:
        return False
    dist = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
    if len(structure) and dist.min() < min_distance:
        return False
    # an atom's own periodic image: the shortest lattice vector is in the Niggli-reduced basis
    return min(structure.lattice.get_niggli_reduced_lattice().abc) >= min_distance


def validity(structures: Sequence[Structure | None]) -> dict[str, np.ndarray]:
    """Per-sample boolean arrays ``composition``, ``structure`` and ``valid`` (both); None = invalid sample."""
    comp = np.array([s is not None and composition_valid(s.composition) for s in structures], dtype=bool)
    struct = np.array([s is not None and structure_valid(s) for s in structures], dtype=bool)
    return {"composition": comp, "structure": struct, "valid": comp & struct}
