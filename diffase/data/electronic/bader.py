"""Grid-based Bader partition of a periodic charge density, vectorised with numpy.

Why written here: the Henkelman group's ``bader`` is a Fortran program (not on PyPI, not installable here);
``pybader`` (last release 2020) is unmaintained; BaderKit (numba) pins ``pymatgen<=2025.10.7`` and would
downgrade diffase's pymatgen. This module needs only numpy.

Algorithm (the on-grid method of Henkelman, Arnaldsson & Jonsson, Comput. Mater. Sci. 36, 354 (2006)), written as
whole-array operations instead of a loop over points:

1. every grid point points to the one of its 26 periodic neighbours with the steepest ascent
   ``(rho_nb - rho) / |r_nb - r|`` (Cartesian distances, so skewed cells are handled), or to itself at a maximum;
2. pointer jumping (``target = target[target]`` until nothing changes, ~log2(path length) passes) sends every point
   to the density maximum its ascent path ends at;
3. each maximum is given to the nearest atom (periodic minimum image), and each atom's basin integrates a density.

Basins must come from the total (core + valence) density, which has a maximum at every nucleus: a valence-only
density of a PAW/pseudopotential code often has none at a cation (Na with one valence electron in NaCl gets no
basin at all). For VASP that is AECCAR0 + AECCAR2 (:func:`~diffase.data.electronic.density.read_total_density`),
with electrons counted either from the same grid or, as the Henkelman group recommends, from the valence CHGCAR
(``integrated_density``); for GPAW it is the all-electron density, which GPAW normalises to integrate to sum Z.
The on-grid method carries a lattice bias (ascent restricted to 26 directions) that falls as the grid is refined.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Lattice

_OFFSETS = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if any(d)], dtype=np.int64)  # (26, 3)


@dataclass
class BaderResult:
    """Outcome of :func:`bader_partition`.

    ``basin_atom`` (n1, n2, n3) int: index of the atom whose basin holds each grid point;
    ``electrons`` (n_atoms,): electrons of the integrated density in each basin, e;
    ``volumes`` (n_atoms,): basin volumes, Angstrom^3; ``n_maxima``: density maxima found (>= atoms with a basin).
    """

    basin_atom: np.ndarray
    electrons: np.ndarray
    volumes: np.ndarray
    n_maxima: int


def ascent_targets(rho: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Flat index (n1*n2*n3,) of each grid point's steepest-ascent neighbour (itself at a local maximum).

    ``rho`` (n1, n2, n3) is periodic; ``lattice`` (3, 3) holds the cell vectors as rows, Angstrom.
    """
    shape = rho.shape
    step_vectors = np.asarray(lattice, dtype=np.float64) / np.array(shape, dtype=np.float64)[:, None]
    index = np.arange(rho.size, dtype=np.int64).reshape(shape)
    best_slope = np.zeros(shape)
    target = index.copy()
    for offset in _OFFSETS:
        shift = tuple(-offset)  # rolled[i] = array[i + offset]
        slope = (np.roll(rho, shift, axis=(0, 1, 2)) - rho) / np.linalg.norm(offset @ step_vectors)
        steeper = slope > best_slope
        best_slope = np.where(steeper, slope, best_slope)
        target = np.where(steeper, np.roll(index, shift, axis=(0, 1, 2)), target)
    return target.ravel()


def follow_to_maxima(target: np.ndarray) -> np.ndarray:
    """Resolve a pointer array (each entry the next point of an ascent path) to each path's final point."""
    while True:
        jumped = target[target]
        if np.array_equal(jumped, target):
            return target
        target = jumped


def bader_partition(
    reference_density: np.ndarray,
    lattice: np.ndarray,
    frac_coords: np.ndarray,
    *,
    integrated_density: np.ndarray | None = None,
) -> BaderResult:
    """Split the cell into Bader basins of ``reference_density`` and count electrons of ``integrated_density`` in them.

    Both densities are (n1, n2, n3) in e/Angstrom^3 on the same grid (``integrated_density`` defaults to the
    reference); ``lattice`` (3, 3) Angstrom rows; ``frac_coords`` (n_atoms, 3) atom positions.
    """
    rho = np.asarray(reference_density, dtype=np.float64)
    if rho.ndim != 3:
        raise ValueError(f"a density grid has 3 axes, got shape {rho.shape}")
    counted = rho if integrated_density is None else np.asarray(integrated_density, dtype=np.float64)
    if counted.shape != rho.shape:
        raise ValueError(f"integrated density grid {counted.shape} differs from the reference grid {rho.shape}")
    frac_coords = np.atleast_2d(np.asarray(frac_coords, dtype=np.float64))
    lat = Lattice(lattice)

    end = follow_to_maxima(ascent_targets(rho, lat.matrix))
    maxima, basin_of_point = np.unique(end, return_inverse=True)
    max_frac = np.stack(np.unravel_index(maxima, rho.shape), axis=1) / np.array(rho.shape)
    atom_of_maximum = np.argmin(lat.get_all_distances(max_frac, frac_coords), axis=1)
    basin_atom = atom_of_maximum[basin_of_point]

    voxel = lat.volume / rho.size
    n_atoms = len(frac_coords)
    electrons = np.bincount(basin_atom, weights=counted.ravel(), minlength=n_atoms) * voxel
    volumes = np.bincount(basin_atom, minlength=n_atoms) * voxel
    return BaderResult(basin_atom.reshape(rho.shape), electrons, volumes, int(len(maxima)))


def bader_charges(result: BaderResult, electrons_of_neutral_atoms: np.ndarray) -> np.ndarray:
    """Atomic charges (n_atoms,), e: neutral-atom electrons minus basin electrons (positive = electron loss).

    ``electrons_of_neutral_atoms`` (n_atoms,) is Z when the integrated density holds every electron (an all-electron
    density), the valence count (POTCAR ZVAL, setup valence) when it holds the valence electrons only.
    """
    return np.asarray(electrons_of_neutral_atoms, dtype=np.float64) - result.electrons
