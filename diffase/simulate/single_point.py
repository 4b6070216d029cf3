"""Single points: energies and forces of many structures, batched where the potential supports it.

A potential given by name (or as an :class:`diffase.calculators.MLIP`) evaluates ``batch_size`` structures
per model call (CHGNet's ``predict_structure`` and MatterSim's dataloader take lists); a plain ASE calculator
is called once per structure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase.calculators.calculator import Calculator

from diffase.calculators import MLIP, resolve_potential
from diffase.data.structures import StructureLike
from diffase.simulate.inputs import to_atoms


@dataclass
class SinglePoint:
    """Energy (eV), forces ((n, 3), eV/Angstrom) and optional stress ((6,), eV/Angstrom^3, Voigt, ASE sign)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None

    @property
    def n_atoms(self) -> int:
        return len(self.forces)

    @property
    def energy_per_atom(self) -> float:
        """Energy per atom (eV/atom)."""
        return self.energy / self.n_atoms

    @property
    def fmax(self) -> float:
        """Largest force norm (eV/Angstrom)."""
        return float(np.linalg.norm(self.forces, axis=1).max(initial=0.0))


def single_points(structures: Sequence[StructureLike], calculator: str | Calculator | MLIP = "chgnet", *,
                  stress: bool = False, batch_size: int = 16, device: str = "auto",
                  min_distance: float | None = None) -> list[SinglePoint]:
    """Evaluate every structure once; returns one :class:`SinglePoint` each, in input order.

    ``min_distance`` (Angstrom): if given, structures with atoms closer than this raise
    :class:`diffase.errors.InvalidStructureError` first (off by default: samplers evaluate noisy structures).
    """
    atoms = [to_atoms(s, min_distance=min_distance, name=f"structure {i}") for i, s in enumerate(structures)]
    potential = resolve_potential(calculator, device)
    if isinstance(potential, MLIP):
        return [SinglePoint(**p) for p in potential.predict(atoms, stress=stress, batch_size=batch_size)]
    out = []
    for a in atoms:
        a.calc = potential
        out.append(SinglePoint(float(a.get_potential_energy()), np.array(a.get_forces(), dtype=np.float64),
                               np.array(a.get_stress(voigt=True), dtype=np.float64) if stress else None))
    return out


def forces(structures: Sequence[StructureLike], calculator: str | Calculator | MLIP = "chgnet", *,
           batch_size: int = 16, device: str = "auto") -> list[np.ndarray]:
    """Forces (one (n_i, 3) float64 array per structure, eV/Angstrom), batched; cheap to call every step of a
    sampling loop: the model is loaded once per process and no overlap check is made."""
    return [p.forces for p in single_points(structures, calculator, batch_size=batch_size, device=device)]
