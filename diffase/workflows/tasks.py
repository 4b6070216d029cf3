"""One unit of high-throughput work each: a host or a structure in, a JSON-friendly document out.

These are what the jobflow Makers (:mod:`diffase.workflows.makers`) and the Dask scatter (:mod:`diffase.parallel`)
run, so a job on a cluster and a call in a notebook give the same document. A document is a dict of plain
Python numbers, strings, lists and pymatgen ``Structure`` objects (MSONable, so a jobflow ``JobStore`` keeps
them and ``monty.json`` reads them back). Energies in eV, forces in eV/Angstrom, lengths in Angstrom.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator
from pymatgen.core import Structure

from diffase.calculators import MLIP
from diffase.data.structures import StructureLike, to_structure


def plain(value: Any) -> Any:
    """``value`` with numpy arrays as (nested) lists and numpy scalars as Python numbers, through dicts, lists
    and tuples (tuples become lists); anything else (a ``Structure``, a string) is returned as it is."""
    if isinstance(value, dict):
        return {key: plain(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def inpaint_host(host: StructureLike, transformation, n_best: int = 5) -> dict:
    """Guests inpainted into one host: ``transformation.apply_transformation(host, return_ranked_list=n_best)``.

    ``transformation``: an :class:`~diffase.transformations.InpaintIntercalantTransformation`. Returns
    ``host`` (Structure), ``host_formula`` and ``candidates``: the ranked list, each entry as the transformation
    gives it (``structure``, ``energy_per_atom`` in eV/atom, ``sample_index``...) with numpy numbers made plain.
    """
    host = to_structure(host, name="host")
    ranked = transformation.apply_transformation(host, return_ranked_list=n_best)
    return {"host": host, "host_formula": host.composition.reduced_formula, "candidates": plain(ranked)}


def relax_structure(structure: StructureLike, calculator: str | Calculator | MLIP = "chgnet", **relax_kw) -> dict:
    """:func:`diffase.simulate.relax` of one structure: ``structure`` (relaxed), ``formula``, ``n_atoms`` and
    the :meth:`~diffase.simulate.RelaxResult.info` scalars (energies in eV, forces in eV/Angstrom)."""
    from diffase.simulate.relax import relax

    result = relax(structure, calculator, **relax_kw)
    return {"structure": result.structure, "formula": result.structure.composition.reduced_formula,
            "n_atoms": result.n_atoms, **plain(result.info())}


def neb_document(result) -> dict:
    """A :class:`~diffase.simulate.NEBResult` as a document (energies in eV relative to the initial endpoint,
    path in Angstrom, ``images`` as Structures)."""
    return {"hop": result.hop, "hop_length": result.hop_length, "barrier": result.barrier,
            "delta_energy": result.delta_energy, "energies": plain(result.energies), "path": plain(result.path),
            "fit_path": plain(result.fit_path), "fit_energies": plain(result.fit_energies),
            "climbing_index": result.climbing_index, "converged": result.converged, "steps": result.steps,
            "supercell": list(result.supercell), "images": list(result.images)}


def migration_barriers_document(structure: StructureLike, species: str = "Li",
                                calculator: str | Calculator | MLIP = "chgnet", **neb_kw) -> dict:
    """:func:`diffase.simulate.migration_barriers` of one (relaxed) structure: ``structure``, ``species``,
    ``hops`` (one :func:`neb_document` per distinct vacancy hop) and ``lowest_barrier`` (eV)."""
    from diffase.simulate.neb import migration_barriers

    structure = to_structure(structure)
    hops = [neb_document(r) for r in migration_barriers(structure, species, calculator, **neb_kw)]
    return {"structure": structure, "formula": structure.composition.reduced_formula, "species": species,
            "hops": hops, "lowest_barrier": min(h["barrier"] for h in hops)}


def label_structure(structure: StructureLike, settings: dict | None = None, name: str = "structure") -> dict:
    """DFT label of one structure (GPAW single point, see :mod:`diffase.labeling`) as plain lists and numbers.

    ``settings``: :class:`~diffase.labeling.settings.LabelSettings` fields (absent ones take their defaults).
    Keys as in :func:`~diffase.labeling.gpaw_runner.label_from_raw`: ``energy`` (eV), ``efermi``, ``gap``
    (eV), ``rho32`` (N^3 density grid), ``dos`` (n_sites, n_points; states/eV), ``bader`` (e)...
    """
    from diffase.labeling.gpaw_runner import label_from_raw, run_single_point
    from diffase.labeling.settings import LabelSettings

    structure = to_structure(structure)
    label_settings = LabelSettings.from_dict(settings or {})
    label = label_from_raw(name, structure, run_single_point(structure, label_settings), label_settings)
    return {"structure": structure, **plain(label)}


def lowest_energy(structures: list[Structure], energies_per_atom: list[float]) -> dict:
    """The structure of lowest energy per atom (eV/atom) among ``structures``: ``structure``,
    ``energy_per_atom`` and its ``index`` in the list."""
    if len(structures) != len(energies_per_atom) or not structures:
        raise ValueError(f"need as many energies as structures (at least one), got {len(structures)} structures "
                         f"and {len(energies_per_atom)} energies")
    index = int(np.argmin(energies_per_atom))
    return {"structure": structures[index], "energy_per_atom": float(energies_per_atom[index]), "index": index}
