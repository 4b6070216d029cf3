"""Space groups of generated crystals: detection, symmetrisation by a tolerance ladder, success rates.

Everything goes through pymatgen's ``SpacegroupAnalyzer`` (spglib underneath):

* :func:`space_group`: the space group at one tolerance (CHGGen reports final structures at 0.1 Angstrom /
  10 degrees); if spglib finds nothing, the answer is P1.
* :func:`symmetrize_by_ladder`: the CHGGen framework step. Try increasing tolerances (site tolerance
  0.1 -> 2.0 Angstrom, angle 10 -> 30 degrees, :data:`TOLERANCE_LADDER`) until the space group is not in the
  excluded low-symmetry set (P1 / P-1 by default), then take spglib's refined (conventional standard)
  cell and its primitive standard cell: atoms are moved onto the symmetric positions found. The ladder stops
  at the *first* allowed group, which for a distorted crystal is often a subgroup of the ideal one (Cm for
  perturbed diamond, as spglib finds a mirror at a smaller tolerance than the full Fd-3m); exclude more
  groups (e.g. ``range(1, 16)``, triclinic and monoclinic) to push on to higher symmetry.
* :func:`symmetry_success_rate`: the fraction of structures whose space group is not excluded.

Space groups are handled as international numbers (1 = P1, 2 = P-1); :func:`parse_space_groups` turns
user input such as ``"P1,P-1"`` or ``"1,2"`` into that set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from pymatgen.symmetry.groups import SpaceGroup

#: Space groups counted as "no symmetry found" by default: P1 (1) and P-1 (2).
LOW_SYMMETRY = frozenset({1, 2})

#: (site tolerance in Angstrom, angle tolerance in degrees), loosest last: CHGGen's ladder.
TOLERANCE_LADDER = ((0.1, 10.0), (0.2, 15.0), (0.5, 15.0), (0.8, 15.0), (1.0, 20.0), (1.5, 30.0), (2.0, 30.0))

#: Tolerances of the final space-group assignment (CHGGen: 0.1 Angstrom, 10 degrees).
FINAL_SYMPREC, FINAL_ANGLE_TOLERANCE = 0.1, 10.0


def parse_space_groups(spec: str | int | Iterable[str | int]) -> frozenset[int]:
    """International numbers of space groups given as numbers or Hermann-Mauguin symbols.

    ``"P1,P-1"``, ``"1,2"``, ``[1, "P-1"]`` all give ``frozenset({1, 2})``. Raises ``ValueError`` naming an
    unknown symbol or a number outside 1..230.
    """
    items = spec.split(",") if isinstance(spec, str) else [spec] if isinstance(spec, int) else list(spec)
    out = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        if text.isdigit():
            number = int(text)
            if not 1 <= number <= 230:
                raise ValueError(f"space group number {number} is outside 1..230")
        else:
            try:
                number = SpaceGroup(text).int_number
            except ValueError as err:
                raise ValueError(f"unknown space group symbol {text!r} (give e.g. 'P1', 'P-1' or a number)") from err
        out.add(number)
    if not out:
        raise ValueError(f"no space group given in {spec!r}")
    return frozenset(out)


def space_group(structure: Structure, symprec: float = FINAL_SYMPREC,
                angle_tolerance: float = FINAL_ANGLE_TOLERANCE) -> tuple[str, int]:
    """(Hermann-Mauguin symbol, international number) of ``structure`` at the given tolerances
    (Angstrom, degrees); ``("P1", 1)`` when spglib finds no symmetry or fails."""
    try:
        sga = SpacegroupAnalyzer(structure, symprec=symprec, angle_tolerance=angle_tolerance)
        return sga.get_space_group_symbol(), int(sga.get_space_group_number())
    except (TypeError, ValueError):  # spglib returned no dataset
        return "P1", 1


@dataclass
class LadderResult:
    """A structure symmetrised at the first tolerance of the ladder that gave an allowed space group.

    ``structure`` is the primitive standard cell of spglib's refined structure (exactly symmetric);
    ``spacegroup_symbol``/``spacegroup_number`` are its space group at that tolerance; ``symprec``
    (Angstrom) and ``angle_tolerance`` (degrees) the rung that succeeded; ``rung`` its index (0 = tightest).
    """

    structure: Structure
    spacegroup_symbol: str
    spacegroup_number: int
    symprec: float
    angle_tolerance: float
    rung: int


def symmetrize_by_ladder(structure: Structure, ladder: Sequence[tuple[float, float]] = TOLERANCE_LADDER,
                         excluded: Iterable[int] = LOW_SYMMETRY) -> LadderResult | None:
    """Symmetrise ``structure`` at the first (site tolerance, angle tolerance) of ``ladder`` whose space group
    is not ``excluded``; None if every rung gives an excluded group (or spglib fails at every rung).

    The result is the primitive standard cell of the refined structure (CHGGen: refined conventional cell,
    then its primitive cell). Symmetrisation at a large tolerance can merge atoms: callers that need the
    composition unchanged (e.g. :func:`diffase.workflows.frameworks.extract_framework`) check it.
    """
    excluded = frozenset(excluded)
    if not ladder:
        raise ValueError("the tolerance ladder is empty; give at least one (symprec, angle_tolerance) pair")
    for rung, (symprec, angle) in enumerate(ladder):
        try:
            sga = SpacegroupAnalyzer(structure, symprec=float(symprec), angle_tolerance=float(angle))
            number = int(sga.get_space_group_number())
            if number in excluded:
                continue
            symmetric = sga.get_primitive_standard_structure()
            symbol = sga.get_space_group_symbol()
        except (TypeError, ValueError):  # spglib found no dataset at this tolerance
            continue
        return LadderResult(symmetric, symbol, number, float(symprec), float(angle), rung)
    return None


def symmetry_success_rate(spacegroup_numbers: Sequence[int | None], excluded: Iterable[int] = LOW_SYMMETRY) -> float:
    """Fraction of entries whose space group is not ``excluded``; None (a structure that failed before its
    space group could be assigned) counts as a failure. NaN for an empty sequence."""
    if len(spacegroup_numbers) == 0:
        return float("nan")
    excluded = frozenset(excluded)
    return float(np.mean([n is not None and int(n) not in excluded for n in spacegroup_numbers]))
