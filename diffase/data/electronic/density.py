"""Charge density grids: read (CHGCAR, AECCAR, cube), regrid to N^3, write (CHGCAR, cube).

Conventions used throughout diffase:

- A density array ``rho`` has shape ``(n1, n2, n3)``: values at the fractional points ``(i/n1, j/n2, k/n3)`` of the
  cell, in **e/Angstrom^3**. Its electron count is ``rho.mean() * volume``.
- At the file edge the object is pymatgen's :class:`~pymatgen.io.vasp.outputs.Chgcar` (a ``VolumetricData``), whose
  ``data["total"]`` follows VASP: ``rho * V`` (e), so that ``data["total"].mean()`` is the electron count.
- Cube files (Gaussian format, read and written by ASE) store e/Bohr^3 and Bohr; conversion happens here.

Regridding is Fourier interpolation (mp-pyrho's ``interpolate_fourier``): the field is band-limited to the
frequencies both grids share, so the zero-frequency term, hence the electron count, is kept exactly, and a field
already band-limited on the target grid is reproduced exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.units import Bohr
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.common import VolumetricData
from pymatgen.io.vasp import Chgcar, Poscar

from diffase.data import fields as F
from diffase.data.structures import record_to_structure

#: Grid size N of the N^3 charge-density field diffase stores and learns (the shared GPAW labels hold 32^3).
DEFAULT_GRID = 32


def density_to_chgcar(structure: Structure, rho: np.ndarray) -> Chgcar:
    """Wrap a density ``rho`` (n1, n2, n3) e/Angstrom^3 of ``structure`` as a ``Chgcar`` (data = rho x V)."""
    rho = np.asarray(rho, dtype=np.float64)
    if rho.ndim != 3:
        raise ValueError(f"a density grid has 3 axes, got shape {rho.shape}")
    return Chgcar(Poscar(structure), {"total": rho * structure.lattice.volume})


def chgcar_to_density(volumetric: VolumetricData, key: str = "total") -> np.ndarray:
    """The density (n1, n2, n3) in e/Angstrom^3 of a pymatgen ``VolumetricData`` (``data[key] / V``)."""
    return np.asarray(volumetric.data[key], dtype=np.float64) / volumetric.structure.lattice.volume


def read_cube(path: str | Path) -> Chgcar:
    """Read a Gaussian cube file of an electron density (e/Bohr^3) into a ``Chgcar`` (data = rho x V, e)."""
    from ase.io.cube import read_cube_data

    data, atoms = read_cube_data(str(path))
    atoms.pbc = True
    return density_to_chgcar(AseAtomsAdaptor.get_structure(atoms), np.asarray(data) / Bohr**3)


def read_density(path: str | Path) -> Chgcar:
    """Read a charge density file: ``*.cube`` via ASE, anything else (CHGCAR, AECCAR*, ``.gz``) via pymatgen."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such charge density file: {path}")
    if path.name.lower().endswith(".cube"):
        return read_cube(path)
    return Chgcar.from_file(str(path))


def read_total_density(aeccar0: str | Path, aeccar2: str | Path) -> Chgcar:
    """The all-electron (core + valence) density of a VASP run: AECCAR0 + AECCAR2, the input Bader analysis needs."""
    core, valence = read_density(aeccar0), read_density(aeccar2)
    if core.dim != valence.dim:
        raise ValueError(f"AECCAR0 grid {core.dim} and AECCAR2 grid {valence.dim} differ; they must come from one run")
    return Chgcar(Poscar(valence.structure), {"total": core.data["total"] + valence.data["total"]})


def electron_count(rho: np.ndarray, volume: float) -> float:
    """Electrons in the cell: ``mean(rho) * volume`` for ``rho`` in e/Angstrom^3 and ``volume`` in Angstrom^3."""
    return float(np.mean(rho) * volume)


def gaussian_smear(rho: np.ndarray, lattice: np.ndarray, sigma: float) -> np.ndarray:
    """Convolve a periodic grid ``rho`` (n1, n2, n3) with a normalised Gaussian of std ``sigma`` (Angstrom).

    Done in Fourier space (coefficients times ``exp(-sigma^2 |G|^2 / 2)``): the exact periodic convolution, which keeps
    the mean. mp-pyrho's real-space ``gaussian_smear`` does the same job but took 5 s (sigma 0.2 A) to 70 s (0.3 A)
    on a 56^3 grid here, against milliseconds for one FFT.
    """
    rho = np.asarray(rho, dtype=np.float64)
    n1, n2, n3 = rho.shape
    reciprocal = 2 * np.pi * np.linalg.inv(np.asarray(lattice, dtype=np.float64)).T  # rows b_i, 1/Angstrom
    m = np.meshgrid(np.fft.fftfreq(n1, 1.0 / n1), np.fft.fftfreq(n2, 1.0 / n2), np.fft.rfftfreq(n3, 1.0 / n3),
                    indexing="ij")
    g = np.stack(m, axis=-1) @ reciprocal  # (n1, n2, n3 // 2 + 1, 3) Cartesian wave vectors, 1/Angstrom
    damping = np.exp(-0.5 * sigma**2 * np.einsum("...i,...i->...", g, g))
    return np.fft.irfftn(np.fft.rfftn(rho) * damping, s=rho.shape, axes=(0, 1, 2))


def regrid(
    rho: np.ndarray,
    shape: int | tuple[int, int, int] = DEFAULT_GRID,
    *,
    lattice: np.ndarray | None = None,
    smear: float = 0.0,
) -> np.ndarray:
    """Fourier-interpolate a periodic grid ``rho`` (n1, n2, n3) onto ``shape`` (an int means N^3).

    The mean (hence the electron count) is preserved to round-off. Downsampling drops the frequencies the target
    grid cannot hold, so a density with sharp peaks (semicore d states, all-electron cusps) rings below zero.
    ``smear`` > 0 (Angstrom; needs ``lattice``, (3, 3) Angstrom) first applies :func:`gaussian_smear`, which removes
    most of that ringing at the price of blurred peaks.
    """
    try:
        from pyrho.utils import interpolate_fourier
    except ImportError as exc:
        raise ImportError("regridding needs mp-pyrho: pip install mp-pyrho (or diffase[electronic])") from exc

    shape = (shape,) * 3 if isinstance(shape, int) else tuple(int(n) for n in shape)
    rho = np.asarray(rho, dtype=np.float64)
    if smear > 0:
        if lattice is None:
            raise ValueError("regrid(smear=...) needs the lattice (3, 3) in Angstrom")
        rho = gaussian_smear(rho, lattice, smear)
    if rho.shape == shape:
        return rho.copy()
    return interpolate_fourier(rho, list(shape))


def regrid_chgcar(
    volumetric: VolumetricData, shape: int | tuple[int, int, int] = DEFAULT_GRID, *, smear: float = 0.0
) -> Chgcar:
    """A ``Chgcar`` of the same structure with every data set (total, diff) regridded by :func:`regrid`."""
    lattice = volumetric.structure.lattice.matrix
    data = {key: regrid(np.asarray(v), shape, lattice=lattice, smear=smear) for key, v in volumetric.data.items()}
    return Chgcar(Poscar(volumetric.structure), data)


def grid_in_cell(grid: np.ndarray, lattice: np.ndarray, new_lattice: np.ndarray) -> np.ndarray:
    """The same periodic field on the grid of another basis of the same lattice (Niggli reduction, a flip of
    handedness): ``grid`` (n, n, n, ...) holds values at the fractional points ``m / n`` of ``lattice`` (3, 3)
    Angstrom, rows = vectors; ``new_lattice`` = S ``lattice`` with S an integer matrix of determinant +-1. Exact:
    the point ``m' / n`` of the new cell is the point ``m' S / n`` (mod 1) of the old one, also on the grid.
    Trailing axes (channels) ride along. ``ValueError`` when S is not unimodular or the grid not n x n x n."""
    grid = np.asarray(grid)
    n = grid.shape[0]
    if grid.ndim < 3 or grid.shape[1:3] != (n, n):
        raise ValueError(f"grid_in_cell needs an n x n x n grid (plus channels), got shape {grid.shape}")
    change = np.asarray(new_lattice, dtype=np.float64) @ np.linalg.inv(np.asarray(lattice, dtype=np.float64))
    integer = np.rint(change)
    if not np.allclose(change, integer, atol=1e-6) or round(abs(np.linalg.det(integer))) != 1:
        raise ValueError(f"the new cell is not another basis of the same lattice (S = {np.round(change, 4).tolist()}); "
                         "only a unimodular integer change of basis maps a grid exactly")
    points = np.indices((n, n, n)).reshape(3, -1).T @ integer.astype(np.int64) % n  # (n^3, 3) old indices
    return grid[points[:, 0], points[:, 1], points[:, 2]].reshape(grid.shape)


def write_chgcar(structure: Structure, rho: np.ndarray, path: str | Path) -> Path:
    """Write ``rho`` (e/Angstrom^3) as a VASP CHGCAR (values rho x V) that VESTA, pymatgen and bader read."""
    path = Path(path)
    density_to_chgcar(structure, rho).write_file(str(path))
    return path


def write_record_chgcar(record: dict, path: str | Path) -> Path:
    """Write a crystal record's ``charge_density`` (N, N, N) e/Angstrom^3 (a generated record of a joint model with
    the density field) as a CHGCAR of its structure, values rho x V (e), so ``data["total"].mean()`` is the
    electron count ``mean(rho) * V``."""
    if F.CHARGE_DENSITY not in record:
        raise ValueError("this record carries no charge_density; sample a joint model that generates density_latent")
    return write_chgcar(record_to_structure(record), record[F.CHARGE_DENSITY], path)


def write_cube(structure: Structure, rho: np.ndarray, path: str | Path) -> Path:
    """Write ``rho`` (e/Angstrom^3) as a Gaussian cube file (e/Bohr^3, the cube convention) with ASE."""
    from ase.io.cube import write_cube as ase_write_cube

    path = Path(path)
    with open(path, "w") as fh:
        ase_write_cube(fh, AseAtomsAdaptor.get_atoms(structure), data=np.asarray(rho) * Bohr**3)
    return path
