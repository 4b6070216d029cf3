"""Random Bravais lattices at a fixed volume: the cells of CHGGen's unconditional generation.

The score model generates positions in a *given* cell, so crystal structure prediction first needs cells.
CHGGen (Zhong et al. 2025, methods; zhongpc/chggen) draws one of seven lattice types and an axis ratio r
from ``[0.5, 0.75, 1, 1.25, 1.5]``, at volume ``V = N x V0`` (N atoms, V0 per atom):

============  ====================================  =============================
type          lengths                               angles (degrees)
============  ====================================  =============================
cubic         a = b = c                             90, 90, 90
tetragonal    a = b, c = r a                        90, 90, 90
orthorhombic  a = c, b = r a                        90, 90, 90
monoclinic    a = c, b = r a                        90, 100, 90
triclinic     a = b = c                             80, 85, 100
hexagonal     a = b, c = r a                        90, 90, 120
rhombohedral  a = b = c                             60, 60, 60
============  ====================================  =============================

The paper's closed forms for ``a`` (e.g. ``(V / r / 0.984)^(1/3)`` for monoclinic, where 0.984 ~ sin 100)
hit V only to two or three digits; here the shape comes from the table and pymatgen's ``Lattice.scale`` sets
the volume exactly. Choices made here (the paper's text allows either): the type is drawn uniformly, then,
for the four types that have a ratio, r uniformly from the five values (default) or, with
``continuous_ratios=True``, uniformly from [0.5, 1.5]; angles are the fixed values above.

``estimate_volume_per_atom`` gives V0 when none is given: the composition-weighted mean of the elements'
volumes per atom in their standard states (pymatgen's ``Element.molar_volume``). It is a rough guess
(alloys such as Li-Si are ~25% denser than it says); give V0 when you know it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Composition, Lattice

#: The seven lattice types of CHGGen, in the order of the table above.
LATTICE_KINDS = ("cubic", "tetragonal", "orthorhombic", "monoclinic", "triclinic", "hexagonal", "rhombohedral")

#: Axis ratios r of the paper.
PAPER_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5)

#: Lattice types whose shape depends on the ratio r.
RATIO_KINDS = frozenset({"tetragonal", "orthorhombic", "monoclinic", "hexagonal"})

#: (alpha, beta, gamma) in degrees of each lattice type.
ANGLES = {"cubic": (90.0, 90.0, 90.0), "tetragonal": (90.0, 90.0, 90.0), "orthorhombic": (90.0, 90.0, 90.0),
          "monoclinic": (90.0, 100.0, 90.0), "triclinic": (80.0, 85.0, 100.0), "hexagonal": (90.0, 90.0, 120.0),
          "rhombohedral": (60.0, 60.0, 60.0)}

#: Avogadro's number times 1e-24 (cm^3/mol -> Angstrom^3/atom divides by it).
_CM3_PER_MOL_TO_A3 = 1e24 / 6.02214076e23


@dataclass(frozen=True)
class LatticeChoice:
    """One sampled cell: its type, axis ratio (1.0 for types without one) and the pymatgen ``Lattice``."""

    kind: str
    ratio: float
    lattice: Lattice


def bravais_lattice(kind: str, volume: float, ratio: float = 1.0) -> Lattice:
    """Lattice of type ``kind`` (one of :data:`LATTICE_KINDS`) with axis ratio ``ratio`` and exactly
    ``volume`` Angstrom^3 (lengths and angles as in the module table)."""
    if kind not in ANGLES:
        raise ValueError(f"unknown lattice type {kind!r}; choose from {', '.join(LATTICE_KINDS)}")
    if not volume > 0:
        raise ValueError(f"volume must be positive (Angstrom^3), got {volume}")
    if not ratio > 0:
        raise ValueError(f"axis ratio must be positive, got {ratio}")
    r = ratio if kind in RATIO_KINDS else 1.0
    lengths = {"tetragonal": (1.0, 1.0, r), "hexagonal": (1.0, 1.0, r), "orthorhombic": (1.0, r, 1.0),
               "monoclinic": (1.0, r, 1.0)}.get(kind, (1.0, 1.0, 1.0))
    return Lattice.from_parameters(*lengths, *ANGLES[kind]).scale(float(volume))


def sample_lattice(volume: float, rng: np.random.Generator, *, kinds: Sequence[str] = LATTICE_KINDS,
                   ratios: Sequence[float] = PAPER_RATIOS, continuous_ratios: bool = False) -> LatticeChoice:
    """Draw one cell of ``volume`` Angstrom^3: type uniform over ``kinds``, ratio uniform over ``ratios``
    (or over ``[min(ratios), max(ratios)]`` with ``continuous_ratios``) for the types that have one."""
    if not kinds:
        raise ValueError("no lattice types to sample from")
    if not ratios:
        raise ValueError("no axis ratios to sample from")
    kind = str(kinds[int(rng.integers(len(kinds)))])
    ratio = 1.0
    if kind in RATIO_KINDS:
        if continuous_ratios:
            ratio = float(rng.uniform(min(ratios), max(ratios)))
        else:
            ratio = float(ratios[int(rng.integers(len(ratios)))])
    return LatticeChoice(kind, ratio, bravais_lattice(kind, volume, ratio))


def estimate_volume_per_atom(composition: Composition | str) -> float:
    """Composition-weighted mean volume per atom of the elements in their standard states, Angstrom^3.

    Raises ``ValueError`` naming an element pymatgen has no molar volume for (give V0 yourself then).
    """
    comp = Composition(composition)
    total = 0.0
    for element, amount in comp.element_composition.items():
        molar = element.molar_volume
        if molar is None or not math.isfinite(float(molar)):
            raise ValueError(f"no standard-state molar volume for {element}; give the volume per atom (v0) explicitly")
        total += amount * float(molar) * _CM3_PER_MOL_TO_A3
    return total / comp.num_atoms
