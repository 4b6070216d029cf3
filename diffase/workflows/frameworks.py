"""Host frameworks of generated crystals: remove the guests, symmetrise what is left, count the guests back.

CHGGen's middle step. A crystal generated without conditioning (say Li10Si4 in a random cell) is relaxed;
its guest species (Li) is removed; the remaining framework (Si4) is symmetrised by the tolerance ladder
(:func:`diffase.analysis.symmetry.symmetrize_by_ladder`); the guests are then inpainted back into the
symmetric framework.

Bookkeeping of the guest count: symmetrisation returns a *primitive* cell, which may hold fewer framework
atoms than the generated cell (Si4 -> Si2). The guests are scaled by the same factor so the composition is
kept: ``n_guest' = n_guest x n_framework' / n_framework`` (10 x 2/4 = 5 Li). When that is not a whole number
(Si4 -> Si1 would need 2.5 Li) the framework is repeated along its shortest axis by the smallest integer
that makes every guest count whole (x2: Si2 + 5 Li). A symmetrisation that changes the framework's
composition (atoms merged at a large tolerance) is rejected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from pymatgen.core import Element, Structure

from diffase.analysis.symmetry import LOW_SYMMETRY, TOLERANCE_LADDER, symmetrize_by_ladder
from diffase.data.structures import StructureLike, to_structure
from diffase.errors import DiffaseError, UnknownElementError


class NoSymmetricFrameworkError(DiffaseError, ValueError):
    """A framework could not be symmetrised into an allowed space group (the message says why)."""


@dataclass
class Framework:
    """A symmetric host framework and the guests to inpaint into it.

    ``structure``: the refined primitive framework (guest-free), repeated ``multiplier`` times along its
    shortest axis when needed for whole guest counts. ``guests``: ``{symbol: count}`` for ``structure``.
    ``spacegroup_symbol``/``spacegroup_number``, ``symprec`` (Angstrom), ``angle_tolerance`` (degrees):
    what the ladder found and where. ``source``: an identifier of the crystal it came from.
    """

    structure: Structure
    guests: dict[str, int]
    spacegroup_symbol: str
    spacegroup_number: int
    symprec: float
    angle_tolerance: float
    multiplier: int = 1
    source: str | None = None

    def info(self) -> dict:
        """JSON-friendly summary (no structure)."""
        return {"source": self.source, "framework_formula": self.structure.composition.formula.replace(" ", ""),
                "guests": dict(self.guests), "spacegroup_symbol": self.spacegroup_symbol,
                "spacegroup_number": self.spacegroup_number, "symprec": self.symprec,
                "angle_tolerance": self.angle_tolerance, "multiplier": self.multiplier}


def parse_guest_species(guest: str | Iterable[str]) -> tuple[str, ...]:
    """Guest element symbols from ``"Li"``, ``"Li,Na"`` or ``["Li", "Na"]``; unknown symbols raise."""
    items = guest.split(",") if isinstance(guest, str) else list(guest)
    symbols = tuple(dict.fromkeys(str(s).strip() for s in items if str(s).strip()))
    if not symbols:
        raise ValueError("no guest species given (e.g. guest='Li')")
    for s in symbols:
        if not Element.is_valid_symbol(s):
            raise UnknownElementError(f"guest {s!r} is not a chemical element symbol")
    return symbols


def split_guests(structure: StructureLike, guest: str | Iterable[str]) -> tuple[Structure, dict[str, int]]:
    """The framework (``structure`` without its guest sites) and the guest counts ``{symbol: n}``.

    Raises ``ValueError`` when no guest atom is present or nothing but guests is.
    """
    s = to_structure(structure)
    symbols = parse_guest_species(guest)
    counts = {g: int(round(s.composition[g])) for g in symbols if s.composition[g] > 0}
    if not counts:
        raise ValueError(f"{s.composition.reduced_formula} contains no {', '.join(symbols)} to remove")
    framework = s.copy()
    framework.remove_species(list(counts))
    if len(framework) == 0:
        raise ValueError(f"{s.composition.reduced_formula} is made only of guests ({', '.join(counts)}): "
                         "nothing is left as a framework")
    return framework, counts


def scale_guest_counts(guests: Mapping[str, int], n_framework_before: int,
                       n_framework_after: int) -> tuple[dict[str, int], int]:
    """Guest counts for a framework that went from ``n_framework_before`` to ``n_framework_after`` atoms
    (same composition), and the smallest repeat ``multiplier`` of the new framework that makes them whole.

    Returns ``({symbol: count for multiplier x new framework}, multiplier)``; e.g. ``({"Li": 10}, 4, 1)`` ->
    ``({"Li": 5}, 1)`` would need 2.5 Li for one atom, so ``(..., 4, 1)`` -> ``({"Li": 5}, 2)``.
    """
    if n_framework_before < 1 or n_framework_after < 1:
        raise ValueError(f"framework atom counts must be positive, got {n_framework_before}, {n_framework_after}")
    exact = {g: Fraction(int(n) * n_framework_after, n_framework_before) for g, n in guests.items()}
    multiplier = math.lcm(*(f.denominator for f in exact.values())) if exact else 1
    return {g: int(f * multiplier) for g, f in exact.items()}, multiplier


def repeat_along_shortest_axis(structure: Structure, multiplier: int) -> Structure:
    """A copy of ``structure`` repeated ``multiplier`` times along its shortest lattice vector."""
    if multiplier < 1:
        raise ValueError(f"multiplier must be >= 1, got {multiplier}")
    scaling = np.ones(3, dtype=int)
    scaling[int(np.argmin(structure.lattice.abc))] = multiplier
    return structure.make_supercell(scaling.tolist(), in_place=False)


def extract_framework(structure: StructureLike, guest: str | Iterable[str], *,
                      ladder: Sequence[tuple[float, float]] = TOLERANCE_LADDER,
                      excluded: Iterable[int] = LOW_SYMMETRY, source: str | None = None) -> Framework:
    """Remove the guests from ``structure``, symmetrise the framework by ``ladder`` until its space group is
    not ``excluded``, and scale the guest count to the symmetrised cell (module docstring).

    Raises :class:`NoSymmetricFrameworkError` when every rung gives an excluded group or the symmetrisation
    changed the framework's composition; ``ValueError`` for structures without guests or without a framework.
    """
    framework, guests = split_guests(structure, guest)
    found = symmetrize_by_ladder(framework, ladder, excluded)
    if found is None:
        symprec, angle = ladder[-1]
        raise NoSymmetricFrameworkError(
            f"framework {framework.composition.formula.replace(' ', '')} stays in an excluded space group "
            f"up to symprec {symprec} Angstrom / angle tolerance {angle} degrees")
    symmetric = found.structure
    if symmetric.composition.reduced_composition != framework.composition.reduced_composition:
        raise NoSymmetricFrameworkError(
            f"symmetrising at symprec {found.symprec} Angstrom changed the framework from "
            f"{framework.composition.formula.replace(' ', '')} to {symmetric.composition.formula.replace(' ', '')} "
            "(atoms merged)")
    counts, multiplier = scale_guest_counts(guests, len(framework), len(symmetric))
    if multiplier > 1:
        symmetric = repeat_along_shortest_axis(symmetric, multiplier)
    return Framework(symmetric, counts, found.spacegroup_symbol, found.spacegroup_number, found.symprec,
                     found.angle_tolerance, multiplier, source)
