"""Relaxation and batched single points with CHGNet on real cells (Li2O, LiCoO2, LiFePO4)."""

import numpy as np
import pytest
from ase.io import read
from pymatgen.core import Structure

from diffase.calculators import get_calculator
from diffase.errors import InvalidStructureError
from diffase.simulate import forces, relax, relax_many, single_points

pytest.importorskip("chgnet")

CELLS = {"Li2O": "cif_Li2O.cif", "LiCoO2": "surfaces_icsd_LiCoO2.cif", "LiFePO4": "cif_LiFePO4.cif"}


def rattled(shared_data, name, stdev=0.05, seed=0):
    atoms = Structure.from_file(shared_data / "pmg" / CELLS[name]).to_ase_atoms()
    atoms.rattle(stdev=stdev, seed=seed)
    return atoms


@pytest.mark.parametrize("name, optimizer", [("Li2O", "FIRE"), ("LiCoO2", "BFGS"), ("LiFePO4", "BFGS")])
def test_relax_lowers_energy_and_force(shared_data, name, optimizer):
    atoms = rattled(shared_data, name)
    result = relax(atoms, fmax=0.1, steps=200, optimizer=optimizer)
    assert result.converged and result.steps > 0
    assert result.final_energy < result.initial_energy
    assert result.final_fmax < min(0.1, result.initial_fmax)
    assert result.final_energy_per_atom == pytest.approx(result.final_energy / len(atoms))
    assert 0 < result.max_displacement < 0.5
    assert not np.allclose(result.structure.lattice.matrix, atoms.cell.array)  # the cell relaxed too


def test_guest_only_relaxation_keeps_host_and_cell(shared_data, tmp_path):
    atoms = rattled(shared_data, "LiCoO2", stdev=0.1)
    host = np.array([s != "Li" for s in atoms.get_chemical_symbols()])
    result = relax(atoms, fixed=host, fmax=0.1, steps=100, trajectory=tmp_path / "guest.traj")
    assert result.final_energy < result.initial_energy and result.final_fmax < 0.1
    np.testing.assert_allclose(result.structure.lattice.matrix, atoms.cell.array, atol=1e-8)
    np.testing.assert_allclose(result.structure.cart_coords[host], atoms.positions[host], atol=1e-6)
    assert len(read(tmp_path / "guest.traj", index=":")) == result.steps + 1
    with pytest.raises(ValueError, match="relax_cell=True with fixed atoms"):
        relax(atoms, fixed=host, relax_cell=True)


def test_relax_many_streams_extxyz(shared_data, tmp_path):
    cells = [rattled(shared_data, "Li2O", seed=k) for k in range(2)]
    results = relax_many(cells, out=tmp_path / "relaxed.extxyz", fmax=0.1, relax_cell=False)
    frames = read(tmp_path / "relaxed.extxyz", index=":")
    assert len(frames) == 2
    assert frames[1].info["final_energy"] == pytest.approx(results[1].final_energy)
    assert frames[1].info["converged"] == results[1].converged


def test_batched_single_points_match_calculator(shared_data):
    cells = [rattled(shared_data, name) for name in CELLS]
    batch = single_points(cells, stress=True, batch_size=3)
    one = single_points(cells[2:], "chgnet", stress=True)[0]
    assert [b.n_atoms for b in batch] == [12, 12, 28]
    assert batch[2].energy == pytest.approx(one.energy, abs=1e-3)
    np.testing.assert_allclose(batch[2].forces, one.forces, atol=1e-3)
    assert [f.shape for f in forces(cells)] == [(12, 3), (12, 3), (28, 3)]
    assert -8 < batch[2].energy_per_atom < -7  # LiFePO4 on the MP2020 scale, eV/atom
    # the batched path (energy per atom x n, stress GPa -> eV/A^3, Voigt) agrees with the ASE calculator
    atoms = cells[2].copy()
    atoms.calc = get_calculator("chgnet")
    assert batch[2].energy == pytest.approx(atoms.get_potential_energy(), abs=1e-3)
    np.testing.assert_allclose(batch[2].forces, atoms.get_forces(), atol=1e-3)
    np.testing.assert_allclose(batch[2].stress, atoms.get_stress(), atol=1e-5)


def test_overlapping_atoms_are_named(shared_data):
    atoms = Structure.from_file(shared_data / "pmg" / CELLS["LiFePO4"]).to_ase_atoms()
    atoms.positions[5] = atoms.positions[9] + [0.1, 0.0, 0.0]
    with pytest.raises(InvalidStructureError, match=r"atoms 5 \(\w+\) and 9 \(\w+\) are 0.100 Angstrom apart"):
        relax(atoms)


def test_relax_command(shared_data, tmp_path, capsys):
    from diffase.cli import main

    out = tmp_path / "relaxed.extxyz"
    assert main(["relax", str(shared_data / "pmg" / CELLS["Li2O"]), "--out", str(out), "--fixed-cell",
                 "--optimizer", "BFGS", "--threads", "1"]) == 0
    [frame] = read(out, index=":")
    assert frame.info["name"] == "cif_Li2O" and frame.info["converged"]
    assert "wrote 1 relaxed crystals" in capsys.readouterr().out
    assert main(["relax", str(shared_data / "pmg" / CELLS["Li2O"]), "--out", str(out), "--checkpoint", "x.pth"]) == 2
    assert "applies to 'mattersim' only" in capsys.readouterr().err  # one line, no traceback
