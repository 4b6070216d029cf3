"""ChargeDIFF's 17 element groups: the chemical-system condition as a multi-hot vector over groups of elements.

A crystal's ``chemsys_groups`` vector has a 1 for every group holding at least one of its elements (ChargeDIFF,
Park, Choi & Jung 2025, Methods: hydrogen, alkali and alkaline-earth metals, metalloids, reactive non-metals,
transition metals by row, post-transition metals, lanthanides, actinides, noble gases, and the anions O, S, F, P
each as its own group). Groups, not elements, so a user can ask for "a 3d transition-metal oxide" without naming
the metal. Elements outside every group (e.g. Fr, Ra) set no entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pymatgen.core import Element

#: Group name -> element symbols, in the order of the condition vector (17 entries).
ELEMENT_GROUPS: dict[str, tuple[str, ...]] = {
    "hydrogen": ("H",),
    "alkali": ("Li", "Na", "K", "Rb", "Cs", "Fr"),
    "alkaline_earth": ("Be", "Mg", "Ca", "Sr", "Ba", "Ra"),
    "metalloid": ("B", "Si", "Ge", "As", "Sb", "Te"),
    "reactive_nonmetal": ("C", "N", "Cl", "Se", "Br", "I"),
    "tm3d": ("Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"),
    "tm4d": ("Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd"),
    "tm5d": ("Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg"),
    "tm6d": ("Rf", "Db", "Sg", "Bh", "Hs"),
    "post_transition": ("Al", "Ga", "In", "Sn", "Tl", "Pb", "Bi", "Po", "At"),
    "lanthanide": ("La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu"),
    "actinide": ("Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm", "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr"),
    "noble_gas": ("He", "Ne", "Ar", "Kr", "Xe", "Rn"),
    "oxide": ("O",),
    "sulfide": ("S",),
    "fluoride": ("F",),
    "phosphorus": ("P",),
}
GROUP_NAMES: tuple[str, ...] = tuple(ELEMENT_GROUPS)


def element_groups(atomic_numbers: Iterable[int]) -> np.ndarray:
    """Multi-hot (17,) float vector of the groups holding at least one of ``atomic_numbers``."""
    symbols = {Element.from_Z(int(z)).symbol for z in atomic_numbers}
    return np.array([float(bool(symbols & set(members))) for members in ELEMENT_GROUPS.values()])


def groups_vector(groups: str | Sequence[str]) -> np.ndarray:
    """Multi-hot (17,) vector of group names (``["tm3d", "oxide"]`` or ``"tm3d-oxide"``); an unknown name is
    an error listing the known ones."""
    names = groups.split("-") if isinstance(groups, str) else list(groups)
    unknown = [g for g in names if g not in ELEMENT_GROUPS]
    if unknown or not names:
        raise ValueError(f"unknown element group(s) {unknown or names}: the groups are {', '.join(GROUP_NAMES)}")
    return np.array([float(g in names) for g in GROUP_NAMES])


def group_members(groups: Sequence[str]) -> set[int]:
    """Atomic numbers of the elements in ``groups`` (names as in :data:`ELEMENT_GROUPS`)."""
    groups_vector(groups)  # names checked
    return {Element(s).Z for g in groups for s in ELEMENT_GROUPS[g]}
