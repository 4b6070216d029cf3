"""Molecular dynamics with an MLIP through ASE: NVT (Nose-Hoover chain or Langevin) or NVE (velocity Verlet),
cell fixed, frames kept in memory for pathway analysis (:mod:`diffase.simulate.pathways`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units
from ase.calculators.calculator import Calculator
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.calculators import MLIP, get_calculator
from diffase.data.structures import StructureLike
from diffase.simulate.inputs import MIN_DISTANCE, to_atoms

#: Ensembles :func:`run_md` knows.
ENSEMBLES = ("nvt-nose-hoover", "nvt-langevin", "nve")


@dataclass
class MDResult:
    """Frames of one run, every ``interval`` steps, the first at time 0.

    structure: the starting cell (the cell never changes). frac_positions: (n_frames, n_atoms, 3) unwrapped
    fractional coordinates of that cell (an atom that crossed the cell boundary keeps counting).
    times: (n_frames,) fs. temperature: (n_frames,) K. potential_energy, kinetic_energy: (n_frames,) eV.
    """

    structure: Structure
    frac_positions: np.ndarray
    times: np.ndarray
    temperature: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    ensemble: str
    timestep: float

    @property
    def total_energy(self) -> np.ndarray:
        """Potential + kinetic energy per frame (eV); conserved in NVE."""
        return self.potential_energy + self.kinetic_energy

    def frame(self, k: int) -> Structure:
        """Structure of frame ``k`` (positions wrapped into the cell)."""
        return Structure(self.structure.lattice, self.structure.species, self.frac_positions[k] % 1.0)


def run_md(structure: StructureLike, calculator: str | Calculator | MLIP = "chgnet", *, temperature: float = 1000.0,
           steps: int = 1000, timestep: float = 2.0, ensemble: str = "nvt-nose-hoover", interval: int = 10,
           tdamp: float = 100.0, friction: float = 0.01, seed: int = 0, trajectory: str | Path | None = None,
           device: str = "auto", min_distance: float | None = MIN_DISTANCE) -> MDResult:
    """Run MD from ``structure`` (velocities drawn from Maxwell-Boltzmann at ``temperature``, K, with ``seed``).

    timestep: fs. ensemble: one of :data:`ENSEMBLES`. interval: steps between kept frames.
    tdamp: Nose-Hoover damping time (fs). friction: Langevin friction (1/fs).
    trajectory: optional ASE ``.traj`` file, written every ``interval`` steps.
    """
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; choose from {', '.join(ENSEMBLES)}")
    atoms = to_atoms(structure, min_distance=min_distance)
    start = AseAtomsAdaptor.get_structure(atoms)
    atoms.calc = get_calculator(calculator, device)
    rng = np.random.default_rng(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dt = timestep * units.fs
    if ensemble == "nve":
        dyn = VelocityVerlet(atoms, dt)
    elif ensemble == "nvt-langevin":
        dyn = Langevin(atoms, dt, temperature_K=temperature, friction=friction / units.fs, rng=rng)
    else:
        dyn = NoseHooverChainNVT(atoms, dt, temperature_K=temperature, tdamp=tdamp * units.fs)

    frames: dict[str, list] = {"frac": [], "t": [], "T": [], "epot": [], "ekin": []}

    def record() -> None:
        frames["frac"].append(atoms.get_scaled_positions(wrap=False))
        frames["t"].append(dyn.nsteps * timestep)
        frames["T"].append(atoms.get_temperature())
        frames["epot"].append(atoms.get_potential_energy())
        frames["ekin"].append(atoms.get_kinetic_energy())

    dyn.attach(record, interval=interval)
    if trajectory:
        traj = Trajectory(str(trajectory), "w", atoms)
        dyn.attach(traj.write, interval=interval)
    dyn.run(steps)
    if trajectory:
        traj.close()
    return MDResult(
        structure=start,
        frac_positions=np.asarray(frames["frac"]), times=np.asarray(frames["t"], dtype=float),
        temperature=np.asarray(frames["T"]), potential_energy=np.asarray(frames["epot"]),
        kinetic_energy=np.asarray(frames["ekin"]), ensemble=ensemble, timestep=timestep,
    )
