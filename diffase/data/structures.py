"""Checks and conversions at the edge: pymatgen ``Structure`` / ASE ``Atoms`` <-> numpy crystal records.

A *crystal record* is a plain dict ``{"atomic_numbers": (n,) int64, "pos": (n, 3) float64 Angstrom,
"cell": (3, 3) float64 Angstrom (rows = lattice vectors)}`` plus optional metadata, the unit that
:mod:`diffase.data.batch` stacks into flat graphs.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
from ase import Atoms
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.data import fields as F
from diffase.errors import (
    DisorderedStructureError,
    InvalidStructureError,
    UnknownElementError,
)

StructureLike = Union[Structure, Atoms]

#: Largest atomic number diffase models can embed (Z = 1 .. MAX_Z).
MAX_Z = 100

#: Atoms closer than this (Angstrom, periodic images included) overlap: CDVAE's structural-validity
#: criterion, and the distance below which MLIP forces are meaningless.
MIN_DISTANCE = 0.5


def to_structure(obj: StructureLike, *, name: str | None = None) -> Structure:
    """Return ``obj`` as an ordered, periodic pymatgen ``Structure``; raise a clear error otherwise.

    Accepts a ``Structure`` or a fully periodic ASE ``Atoms`` with finite lattice and coordinates. ``name`` is
    used in error messages.
    """
    label = f" ({name})" if name else ""
    if isinstance(obj, Atoms):
        if not all(obj.pbc):
            raise InvalidStructureError(
                f"Atoms{label} is not periodic in all three directions (pbc={list(obj.pbc)}); "
                "diffase works on bulk crystals: set atoms.pbc = True and give a cell."
            )
        obj = AseAtomsAdaptor.get_structure(obj)
    if not isinstance(obj, Structure):
        raise TypeError(f"expected a pymatgen Structure or ASE Atoms{label}, got {type(obj).__name__}")
    if not obj.is_ordered:
        bad = next(site for site in obj if not site.is_ordered)
        raise DisorderedStructureError(
            f"structure {obj.formula}{label} is disordered (site {bad.species} at {bad.frac_coords.round(3)}); "
            "diffase needs one element per site: order it first, e.g. with pymatgen's "
            "OrderDisorderedStructureTransformation or EnumerateStructureTransformation."
        )
    for site in obj:
        sp = site.specie
        if not isinstance(getattr(sp, "element", sp), Element):
            raise UnknownElementError(
                f"structure {obj.formula}{label} has a site of {sp!r}, which is not a chemical element; "
                "replace dummy species by real elements."
            )
    if not np.isfinite(obj.lattice.matrix).all():
        raise InvalidStructureError(f"structure {obj.formula}{label} has a non-finite (NaN or infinite) lattice")
    bad = np.flatnonzero(~np.isfinite(obj.frac_coords).all(axis=1))
    if len(bad):
        raise InvalidStructureError(
            f"structure {obj.formula}{label} has non-finite (NaN or infinite) coordinates at site(s) "
            f"{', '.join(str(i) for i in bad[:5])}{' ...' if len(bad) > 5 else ''}; give every atom a position")
    if abs(obj.lattice.volume) < 1e-6:
        raise InvalidStructureError(f"structure {obj.formula}{label} has a degenerate lattice (volume ~ 0)")
    return obj


def structure_to_record(structure: StructureLike, *, name: str | None = None) -> dict[str, Any]:
    """Convert one crystal to a record of numpy arrays (positions wrapped into the cell)."""
    s = to_structure(structure, name=name)
    z = np.array([site.specie.Z for site in s], dtype=np.int64)
    if z.max(initial=0) > MAX_Z:
        raise UnknownElementError(f"{s.formula}: elements beyond Z={MAX_Z} are not supported")
    frac = np.mod(s.frac_coords, 1.0)
    cell = np.array(s.lattice.matrix, dtype=np.float64)
    return {F.ATOMIC_NUMBERS: z, F.POSITIONS: frac @ cell, F.CELL: cell}


def record_to_structure(record: dict[str, Any]) -> Structure:
    """Convert a crystal record back to a pymatgen ``Structure``.

    Uses Cartesian ``pos`` (kept as given) when present, else ``frac_coords``; per-site descriptors
    (:data:`diffase.data.fields.SITE_DESCRIPTORS`, e.g. ``bader_charge`` e) become ``site_properties``.
    A record still holding a masked atom type (atomic number < 1, or ``valid`` False: a generated sample whose type was never decided)
    raises :class:`InvalidStructureError`: it is an invalid sample, and no element is made up for it.
    """
    numbers = np.asarray(record[F.ATOMIC_NUMBERS])
    if not record.get("valid", True) or (numbers < 1).any():
        raise InvalidStructureError("this sample still holds a masked atom type: it is an invalid sample, "
                                    "count it as such (no element is made up for it)")
    cartesian = F.POSITIONS in record
    return Structure(
        Lattice(np.asarray(record[F.CELL], dtype=float)),
        [int(z) for z in numbers],
        np.asarray(record[F.POSITIONS if cartesian else F.FRAC_COORDS], dtype=float),
        coords_are_cartesian=cartesian,
        site_properties=_site_descriptors(record) or None,
    )


def _site_descriptors(record: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(record[k], dtype=float) for k in sorted(F.SITE_DESCRIPTORS) if k in record}


def record_to_atoms(record: dict[str, Any]) -> Atoms:
    """Convert a crystal record to a periodic ASE ``Atoms`` (per-site descriptors such as ``bader_charge`` in
    ``atoms.arrays``)."""
    atoms = Atoms(
        numbers=np.asarray(record[F.ATOMIC_NUMBERS]),
        positions=np.asarray(record[F.POSITIONS], dtype=float),
        cell=np.asarray(record[F.CELL], dtype=float),
        pbc=True,
    )
    for key, values in _site_descriptors(record).items():
        atoms.set_array(key, values)
    return atoms


def check_elements(records: list[dict[str, Any]], allowed: set[int] | None) -> None:
    """Raise :class:`UnknownElementError` if any record holds an element outside ``allowed`` (atomic numbers)."""
    if allowed is None:
        return
    for i, rec in enumerate(records):
        unknown = sorted(set(int(z) for z in rec[F.ATOMIC_NUMBERS]) - allowed)
        if unknown:
            names = ", ".join(Element.from_Z(z).symbol for z in unknown)
            raise UnknownElementError(
                f"crystal {i} contains {names}, which the model never saw in training; "
                f"it knows {len(allowed)} elements (see model.elements). Use a model trained on these elements."
            )
