"""Structures into the simulation layer: one ordered, periodic ``Atoms`` per input, with overlapping atoms caught.

MLIPs give meaningless, often huge, forces when two atoms (or an atom and its own periodic image) sit closer
than any bond; relaxation, NEB and MD then explode far from the cause. :func:`to_atoms` stops that at the edge
and names the offending atoms.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.data.structures import MIN_DISTANCE, StructureLike, to_structure
from diffase.errors import InvalidStructureError


def check_overlaps(atoms: Atoms, min_distance: float = MIN_DISTANCE, *, name: str | None = None) -> None:
    """Raise :class:`InvalidStructureError` if any two atoms (periodic images included) are closer than
    ``min_distance`` (Angstrom), naming the closest pair by index and element."""
    i, j, d = neighbor_list("ijd", atoms, float(min_distance))
    if len(d) == 0:
        return
    k = int(np.argmin(d))
    a, b = sorted((int(i[k]), int(j[k])))
    symbols = atoms.get_chemical_symbols()
    what = f"atom {a} ({symbols[a]}) and its own periodic image" if a == b else (
        f"atoms {a} ({symbols[a]}) and {b} ({symbols[b]})")
    label = f" in {name}" if name else ""
    raise InvalidStructureError(
        f"overlapping atoms{label}: {what} are {d[k]:.3f} Angstrom apart, below the {min_distance} Angstrom "
        f"threshold ({len(d) // 2 or 1} such pair(s)). Remove or move one of them (or lower min_distance)."
    )


def to_atoms(structure: StructureLike, *, min_distance: float | None = MIN_DISTANCE,
             name: str | None = None) -> Atoms:
    """A fresh periodic ``Atoms`` (no calculator) from a ``Structure`` or ``Atoms``, validated by
    :func:`diffase.data.structures.to_structure` and, unless ``min_distance`` is None, :func:`check_overlaps`.
    Constraints already set on an ``Atoms`` input are kept."""
    s = to_structure(structure, name=name)
    if isinstance(structure, Atoms):
        atoms = structure.copy()
        atoms.calc = None
    else:
        atoms = AseAtomsAdaptor.get_atoms(s)
    if min_distance is not None:
        check_overlaps(atoms, min_distance, name=name)
    return atoms
