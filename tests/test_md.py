"""MD with CHGNet, visited-site density and pathway dimensionality."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from diffase.simulate import (MDResult, percolation_dimension, plot_site_density, run_md, site_density,
                              vacancy_supercell)


@pytest.fixture(scope="module")
def li2o(shared_data):
    return Structure.from_file(shared_data / "pmg" / "cif_Li2O.cif")


def test_nve_conserves_energy(li2o):
    pytest.importorskip("chgnet")
    md = run_md(li2o, ensemble="nve", temperature=300, steps=40, timestep=1.0, interval=5, seed=1)
    assert md.frac_positions.shape == (9, 12, 3) and md.times[-1] == 40.0
    drift = np.abs(md.total_energy - md.total_energy[0]).max() / len(li2o)
    assert drift < 1e-3  # eV/atom over 40 fs
    assert md.kinetic_energy.std() > 0  # atoms do move


def test_nvt_with_vacancy_keeps_atoms_and_cell(li2o):
    pytest.importorskip("chgnet")
    cell = vacancy_supercell(SpacegroupAnalyzer(li2o).get_primitive_standard_structure(), "Li", min_length=6.0)
    assert cell.composition.reduced_formula == "Li15O8"
    md = run_md(cell, temperature=1000, steps=10, timestep=2.0, interval=5, ensemble="nvt-langevin", seed=0)
    again = run_md(cell, temperature=1000, steps=10, timestep=2.0, interval=5, ensemble="nvt-langevin", seed=0)
    np.testing.assert_allclose(md.frac_positions, again.frac_positions, atol=1e-6)  # same seed, same run
    assert md.frac_positions.shape == (3, 23, 3)
    assert md.frame(-1).lattice == cell.lattice and len(md.frame(-1)) == len(cell)
    assert np.all(np.isfinite(md.temperature)) and md.temperature[0] > 0


def test_percolation_dimension_of_channels_layers_and_pockets():
    grid = np.zeros((8, 8, 8), dtype=bool)
    assert percolation_dimension(grid) == 0
    grid[2:4, 2:4, 2:4] = True
    assert percolation_dimension(grid) == 0  # an isolated pocket
    grid[:, 5, 5] = True
    assert percolation_dimension(grid) == 1  # a channel along a
    staircase = np.zeros((8, 8, 8), dtype=bool)
    for i in range(8):
        staircase[i, i, 0] = staircase[i, (i + 1) % 8, 0] = True
    assert percolation_dimension(staircase) == 1  # a diagonal channel through the cell corner
    diagonal = np.zeros((8, 8, 8), dtype=bool)
    diagonal[np.arange(8), np.arange(8), np.arange(8)] = True
    assert percolation_dimension(diagonal) == 1  # voxels touching only at corners
    assert percolation_dimension(diagonal, connectivity=6) == 0
    grid[:, :, 0] = True
    assert percolation_dimension(grid) == 2
    assert percolation_dimension(np.ones((4, 4, 4), dtype=bool)) == 3


def test_site_density_of_a_channel(tmp_path):
    """Synthetic trajectory: one Li glides along c (a 1D channel), one Li rattles in place."""
    pytest.importorskip("pymatgen.analysis.diffusion")
    structure = Structure(Lattice.tetragonal(5.0, 6.0), ["Li", "Li", "O"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    t = np.linspace(0, 1, 200)
    frac = np.repeat(structure.frac_coords[None], len(t), axis=0)
    frac[:, 0, 2] = 2 * t  # crosses the cell twice along c
    frac[:, 1, 0] += 0.02 * np.sin(40 * t)
    md = MDResult(structure, frac, t * 1000, np.full_like(t, 300.0), np.zeros_like(t), np.zeros_like(t), "nve", 1.0)
    density = site_density(md, "Li", interval=0.5)
    assert density.visits.sum() == 2 * len(t)
    volume_element = structure.volume / density.density.size
    assert density.density.sum() * volume_element == pytest.approx(1.0)
    assert density.dimensionality() == 1
    png = plot_site_density(density, tmp_path / "pathway.png")
    assert png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="contains no Na"):
        site_density(md, "Na")
