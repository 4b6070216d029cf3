"""Relaxation of crystals with an MLIP through ASE: optimizers (FIRE, BFGS, LBFGS), the cell through
``FrechetCellFilter``, chosen atoms held by ``FixAtoms`` (e.g. a host while its guests relax)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.constraints import FixAtoms
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.calculators import MLIP, get_calculator, resolve_potential
from diffase.data.io import append_extxyz
from diffase.data.structures import StructureLike
from diffase.simulate.inputs import MIN_DISTANCE, to_atoms

#: Optimizers by name (ASE classes; any ``ase.optimize.Optimizer`` subclass is accepted too).
OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS, "LBFGS": LBFGS}


@dataclass
class RelaxResult:
    """Outcome of one relaxation. Energies in eV, forces in eV/Angstrom, lengths in Angstrom.

    ``initial_fmax``/``final_fmax`` are the largest force norms on the atoms free to move.
    ``converged`` is the optimizer's verdict: with the cell relaxed, ASE's criterion also includes the
    stress (times the cell volume, per FrechetCellFilter). ``max_displacement`` is the largest
    minimum-image displacement of any atom between start and end, in the final cell.
    """

    structure: Structure
    initial_energy: float
    final_energy: float
    initial_fmax: float
    final_fmax: float
    steps: int
    converged: bool
    max_displacement: float
    trajectory: str | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.structure)

    @property
    def initial_energy_per_atom(self) -> float:
        """eV/atom."""
        return self.initial_energy / self.n_atoms

    @property
    def final_energy_per_atom(self) -> float:
        """eV/atom."""
        return self.final_energy / self.n_atoms

    def info(self) -> dict:
        """JSON-friendly scalars (written into extxyz headers by :func:`relax_many`)."""
        return {"initial_energy": self.initial_energy, "final_energy": self.final_energy,
                "final_energy_per_atom": self.final_energy_per_atom, "initial_fmax": self.initial_fmax,
                "final_fmax": self.final_fmax, "steps": self.steps, "converged": self.converged,
                "max_displacement": self.max_displacement}


def _fixed_indices(fixed, n_atoms: int) -> np.ndarray:
    """Indices from an index list or a boolean mask of length ``n_atoms``."""
    arr = np.asarray(fixed)
    if arr.dtype == bool:
        if arr.shape != (n_atoms,):
            raise ValueError(f"a boolean 'fixed' mask needs one entry per atom ({n_atoms}), got shape {arr.shape}")
        return np.flatnonzero(arr)
    arr = arr.astype(int).ravel()
    if arr.size and (arr.min() < -n_atoms or arr.max() >= n_atoms):
        raise ValueError(f"'fixed' holds atom indices outside 0..{n_atoms - 1}")
    return np.mod(arr, n_atoms)


def _fmax(atoms: Atoms) -> float:
    """Largest force norm on the atoms free to move (constrained forces), eV/Angstrom."""
    return float(np.linalg.norm(atoms.get_forces(), axis=1).max(initial=0.0))


def _max_displacement(start: Atoms, end: Atoms) -> float:
    """Largest minimum-image displacement (Angstrom), measured in the final cell."""
    dfrac = end.get_scaled_positions(wrap=False) - start.get_scaled_positions(wrap=False)
    dfrac -= np.round(dfrac)
    return float(np.linalg.norm(dfrac @ end.cell.array, axis=1).max(initial=0.0))


def relax(structure: StructureLike, calculator: str | Calculator | MLIP = "chgnet", *, fmax: float = 0.1,
          steps: int = 500, optimizer: str | type = "FIRE", relax_cell: bool | None = None,
          fixed: Sequence[int] | np.ndarray | None = None, trajectory: str | Path | None = None,
          device: str = "auto", min_distance: float | None = MIN_DISTANCE) -> RelaxResult:
    """Relax one crystal (``Structure`` or ``Atoms``) with an MLIP.

    fmax: force threshold (eV/Angstrom; the inpainting paper uses 0.1 with FIRE). steps: optimizer step limit.
    relax_cell: relax the cell too (FrechetCellFilter); default True, but False when ``fixed`` is given.
    fixed: atoms held in place (indices or a boolean mask), e.g. the host in a guest-only relaxation; cannot
    be combined with ``relax_cell=True``. trajectory: optional ASE ``.traj`` path written by the optimizer.
    min_distance: overlapping-atom check (Angstrom, None to skip).
    """
    atoms = to_atoms(structure, min_distance=min_distance)
    if fixed is not None:
        if relax_cell:
            raise ValueError("relax_cell=True with fixed atoms is ill-defined; relax the positions only "
                             "(relax_cell=False, the default when fixed is given)")
        atoms.set_constraint(FixAtoms(indices=_fixed_indices(fixed, len(atoms))))
    relax_cell = fixed is None if relax_cell is None else relax_cell
    opt_cls = OPTIMIZERS.get(optimizer.upper()) if isinstance(optimizer, str) else optimizer
    if opt_cls is None:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")

    atoms.calc = get_calculator(calculator, device)
    start = atoms.copy()
    initial_energy, initial_fmax = float(atoms.get_potential_energy()), _fmax(atoms)
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    opt = opt_cls(target, logfile=None, trajectory=str(trajectory) if trajectory else None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    opt.close()
    return RelaxResult(
        structure=AseAtomsAdaptor.get_structure(atoms),
        initial_energy=initial_energy,
        final_energy=float(atoms.get_potential_energy()),
        initial_fmax=initial_fmax,
        final_fmax=_fmax(atoms),
        steps=int(opt.nsteps),
        converged=converged,
        max_displacement=_max_displacement(start, atoms),
        trajectory=str(trajectory) if trajectory else None,
    )


def relax_many(structures: Sequence[StructureLike], calculator: str | Calculator | MLIP = "chgnet", *,
               out: str | Path | None = None, names: Sequence[str] | None = None,
               on_result: Callable[[str, RelaxResult], None] | None = None, device: str = "auto",
               **relax_kw) -> list[RelaxResult]:
    """Relax each structure in turn with one shared model (``relax_kw`` as in :func:`relax`).

    out: an extxyz file to which each relaxed structure is appended as soon as it is done, with its name and
    the :meth:`RelaxResult.info` scalars in its header, so an interrupted run keeps what it finished.
    names: one per structure (default: the index). on_result: called with (name, result) after each one.
    """
    potential = resolve_potential(calculator, device)
    names = [str(n) for n in names] if names is not None else [str(i) for i in range(len(structures))]
    results = []
    for name, s in zip(names, structures, strict=True):
        result = relax(s, potential, device=device, **relax_kw)
        if out is not None:
            append_extxyz(out, [result.structure], [{"name": name, **result.info()}])
        if on_result is not None:
            on_result(name, result)
        results.append(result)
    return results
