"""Charge density grids, learning normalisation, site DOS and Bader charges (diffase.data.electronic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data.electronic.bader import bader_charges, bader_partition
from diffase.data.electronic.density import (
    chgcar_to_density,
    density_to_chgcar,
    electron_count,
    gaussian_smear,
    read_density,
    read_total_density,
    regrid,
    regrid_chgcar,
    write_chgcar,
    write_cube,
)
from diffase.data.electronic.dos import (
    DEFAULT_SIGMA,
    DOSMATGEN_WINDOW,
    JOINT_DESCRIPTOR_WINDOW,
    DosWindow,
    site_dos_from_complete_dos,
    smear_levels,
)
from diffase.data.electronic.normalise import LogDensityScaler
from diffase.data.electronic.plots import plot_density_slices, plot_isosurface, plot_site_dos

NACL_CHGCAR = "pmg/command_line_chargemol_spin_unpolarized_CHGCAR.gz"  # rocksalt NaCl, valence only (8 e)
DATA = Path(__file__).parent / "data"
#: Reference Bader electrons from BaderKit 0.10.2 (``Bader.from_vasp(path, method=..., vacuum_tol=False,
#: nna_cutoff=False).atom_charges``), run in a separate environment on the same grids.
BADERKIT_NACL_NA = {"on-grid": 10.1421, "near-grid": 10.1379}  # tests/data/nacl_gpaw_ae_density.npz
BADERKIT_FE3O4 = {  # pmg/io_vasp_outputs_CHGCAR.Fe3O4_ref.gz, sites in file order (6 Fe, 8 O)
    "on-grid": [33.6118, 63.5816, 63.5816, 63.6445, 63.5816, 33.6119,
                9.272, 9.0436, 9.2727, 9.2731, 9.2729, 9.2727, 9.272, 9.0436],
    "near-grid": [33.6928, 63.575, 63.575, 63.7049, 63.575, 33.6932,
                  9.2452, 9.0241, 9.2452, 9.2452, 9.2452, 9.2452, 9.2452, 9.0241],
}


def rocksalt(a: float = 5.64) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def smooth_field(shape, modes=((1, 0, 0), (0, 2, 1), (1, 1, 1))):
    """A positive periodic field holding only the given low Fourier modes (band-limited on any grid >= 8^3)."""
    f = np.stack(np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij"), axis=-1)
    rho = np.full(shape, 1.0)
    for k, m in enumerate(modes):
        rho += 0.2 / (k + 1) * np.cos(2 * np.pi * (f @ np.array(m)) + k)
    return rho


def atomic_density(structure: Structure, electrons: dict[str, float], decay: dict[str, float], shape) -> np.ndarray:
    """Periodic sum of Slater densities N (z^3 / 8 pi) exp(-z r), rescaled to integrate to sum N on the grid."""
    frac = np.stack(np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    rho = np.zeros(len(frac))
    for site in structure:
        d = frac - site.frac_coords
        d -= np.round(d)
        r = np.linalg.norm(d @ structure.lattice.matrix, axis=1)
        z = decay[site.specie.symbol]
        rho += electrons[site.specie.symbol] * z**3 / (8 * np.pi) * np.exp(-z * r)
    rho = rho.reshape(shape)
    total = sum(electrons[s.specie.symbol] for s in structure)
    return rho * total / electron_count(rho, structure.volume)


# --- charge density grids ----------------------------------------------------------------------------------------


def test_regrid_keeps_electron_count_of_real_chgcar(shared_data):
    chgcar = read_density(shared_data / NACL_CHGCAR)
    rho = chgcar_to_density(chgcar)
    volume = chgcar.structure.volume
    assert rho.shape == (56, 56, 56)
    assert electron_count(rho, volume) == pytest.approx(8.0, abs=1e-5)
    for shape in (32, (24, 40, 48), 64):
        out = regrid(rho, shape)
        assert out.shape == ((shape,) * 3 if isinstance(shape, int) else shape)
        assert electron_count(out, volume) == pytest.approx(electron_count(rho, volume), rel=1e-10)


def test_regrid_reproduces_a_smooth_field_exactly():
    fine = smooth_field((60, 60, 60))
    coarse = regrid(fine, 16)
    np.testing.assert_allclose(coarse, smooth_field((16, 16, 16)), atol=1e-10)
    np.testing.assert_allclose(regrid(coarse, (60, 60, 60)), fine, atol=1e-10)


def test_smearing_keeps_electrons_and_removes_ringing_of_sharp_density(shared_data):
    chgcar = read_density(shared_data / "pmg/io_vasp_outputs_CHGCAR.Fe3O4_ref.gz")  # sharp peaks on 72^3
    rho, lattice = chgcar_to_density(chgcar), chgcar.structure.lattice.matrix
    plain = regrid(rho, 32)
    smeared = regrid(rho, 32, lattice=lattice, smear=0.3)
    assert plain.min() < 0  # truncation rings below zero
    assert smeared.min() > 0
    volume = chgcar.structure.volume
    assert electron_count(smeared, volume) == pytest.approx(electron_count(rho, volume), rel=1e-10)
    np.testing.assert_allclose(gaussian_smear(smooth_field((8, 8, 8), modes=()), lattice, 0.5), 1.0)
    with pytest.raises(ValueError, match="lattice"):
        regrid(rho, 32, smear=0.3)


def test_chgcar_write_read_round_trip(tmp_path, shared_data):
    chgcar = regrid_chgcar(read_density(shared_data / NACL_CHGCAR), 32)
    rho = chgcar_to_density(chgcar)
    back = read_density(write_chgcar(chgcar.structure, rho, tmp_path / "CHGCAR"))
    np.testing.assert_allclose(chgcar_to_density(back), rho, rtol=1e-9, atol=1e-6 * rho.max())
    assert electron_count(chgcar_to_density(back), back.structure.volume) == pytest.approx(8.0, abs=1e-4)
    assert back.structure.matches(chgcar.structure)


def test_cube_write_read_round_trip(tmp_path):
    structure = rocksalt()
    rho = smooth_field((20, 24, 28))
    back = read_density(write_cube(structure, rho, tmp_path / "rho.cube"))
    np.testing.assert_allclose(chgcar_to_density(back), rho, rtol=1e-4)  # cube keeps ~5 significant digits
    np.testing.assert_allclose(back.structure.lattice.matrix, structure.lattice.matrix, atol=1e-5)


def test_total_density_adds_aeccar0_and_aeccar2(tmp_path):
    structure = rocksalt()
    core, valence = smooth_field((12, 12, 12)), 2 * smooth_field((12, 12, 12), modes=((0, 1, 0),))
    total = read_total_density(write_chgcar(structure, core, tmp_path / "AECCAR0"),
                               write_chgcar(structure, valence, tmp_path / "AECCAR2"))
    np.testing.assert_allclose(chgcar_to_density(total), core + valence, rtol=1e-6)


def test_density_input_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_density(tmp_path / "CHGCAR")
    with pytest.raises(ValueError, match="3 axes"):
        density_to_chgcar(rocksalt(), np.ones((4, 4)))


# --- normalisation -----------------------------------------------------------------------------------------------


def test_log_scaler_round_trip_numpy_and_torch(shared_data):
    rho = regrid(chgcar_to_density(read_density(shared_data / NACL_CHGCAR)), 32)
    scaler = LogDensityScaler.fit([rho, 0.5 * rho], offset=1e-3)
    y = scaler.transform(rho)
    assert abs(float(np.mean(np.concatenate([y.ravel(), scaler.transform(0.5 * rho).ravel()])))) < 1e-9
    np.testing.assert_allclose(scaler.inverse(y), rho, rtol=1e-12, atol=1e-15)
    t = torch.as_tensor(rho, dtype=torch.float64)
    torch.testing.assert_close(scaler.inverse(scaler.transform(t)), t)
    assert LogDensityScaler.from_dict(json.loads(json.dumps(scaler.as_dict()))) == scaler


def test_log_scaler_rejects_density_below_offset():
    with pytest.raises(ValueError, match="offset"):
        LogDensityScaler(offset=1e-3).transform(np.array([0.1, -0.01]))
    with pytest.raises(ValueError):
        LogDensityScaler(offset=0.0)


# --- site DOS ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def complete_dos(shared_data):
    from pymatgen.electronic_structure.dos import CompleteDos

    with open(shared_data / "pmg/electronic_structure_dos_complete_dos.json") as fh:
        return CompleteDos.from_dict(json.load(fh))


def test_site_dos_of_complete_dos(complete_dos):
    dos = site_dos_from_complete_dos(complete_dos)
    grid = DOSMATGEN_WINDOW.grid()
    assert dos.shape == (len(complete_dos.structure), 512)
    assert grid[0] == -10 and grid[-1] == 10 and len(grid) == 512
    assert (dos >= 0).all()
    # the states each site holds inside the window, straight from pymatgen (both spins, E_F at 0) ...
    energies = complete_dos.energies - complete_dos.efermi
    inside = (energies > -10 + 0.5) & (energies < 10 - 0.5)  # away from the edges, where smearing tails cross them
    step = np.gradient(energies)
    for i in (0, 1, 9):
        site = complete_dos.structure[i]
        raw = sum(np.asarray(v) for v in complete_dos.get_site_dos(site).densities.values())
        expected = float((raw * step)[inside].sum())
        got = float(dos[i][(grid > -9.5) & (grid < 9.5)].sum() * (grid[1] - grid[0]))
        assert got == pytest.approx(expected, rel=0.03)
    # ... and spin-summed: a spin-polarised Fe site holds more states than one spin channel
    fe = complete_dos.structure[1]
    up_only = np.asarray(complete_dos.get_site_dos(fe).densities[list(complete_dos.get_site_dos(fe).densities)[0]])
    assert dos[1].sum() * (grid[1] - grid[0]) > float((up_only * step)[inside].sum()) * 1.5


def test_dos_joint_descriptor_window_and_semicore_cut(complete_dos):
    full = site_dos_from_complete_dos(complete_dos, JOINT_DESCRIPTOR_WINDOW)
    cut = site_dos_from_complete_dos(complete_dos, JOINT_DESCRIPTOR_WINDOW, semicore_below=-15.0)
    assert full.shape == cut.shape == (25, 512)
    grid = JOINT_DESCRIPTOR_WINDOW.grid()
    assert (grid[0], grid[-1]) == (-15.0, 5.0)
    # cutting states below the window removes their tails at the lower edge and nothing well inside it
    np.testing.assert_allclose(cut[:, grid > -13], full[:, grid > -13], atol=1e-6)
    assert (cut[:, 0] <= full[:, 0] + 1e-12).all()
    # this file's deep states (-20 to -24 eV) lie too far below for their tails to matter, so the cut itself is
    # checked on a semicore level 0.3 eV under the window: without the cut its tail leaks in, with it nothing does
    levels, weights = np.array([-15.3, -5.0]), np.array([[1.0, 1.0]])
    leaky = smear_levels(levels, weights, JOINT_DESCRIPTOR_WINDOW, sigma=0.2)
    clean = smear_levels(levels, weights, JOINT_DESCRIPTOR_WINDOW, sigma=0.2, semicore_below=-15.0)
    assert leaky[0, 0] > 0.5 and clean[0, 0] < 1e-12
    np.testing.assert_allclose(clean[:, grid > -13], leaky[:, grid > -13], atol=1e-12)


def test_smear_levels_is_normalised_gaussian():
    window = DosWindow(-5.0, 5.0, 2001)
    dos = smear_levels(np.array([0.0, 1.0]), np.array([[2.0, 1.0]]), window, sigma=0.2)
    grid = window.grid()
    assert dos.sum() * (grid[1] - grid[0]) == pytest.approx(3.0, rel=1e-6)
    assert grid[np.argmax(dos[0])] == pytest.approx(0.0, abs=0.01)
    assert dos[0, np.argmin(np.abs(grid))] == pytest.approx(2.0 / (0.2 * np.sqrt(2 * np.pi)), rel=1e-3)
    assert DEFAULT_SIGMA == pytest.approx(0.1 / np.sqrt(2))
    with pytest.raises(ValueError):
        smear_levels(np.zeros(3), np.zeros((2, 4)))


# --- Bader -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["near-grid", "on-grid"])
def test_bader_ionic_rocksalt_signs_sum_and_periodic_shift(method):
    structure = rocksalt()
    electrons = {"Na": 10.0, "Cl": 18.0}  # Na+ and Cl- cores: an ideal ionic crystal
    rho = atomic_density(structure, electrons, {"Na": 7.0, "Cl": 4.0}, (40, 40, 40))
    z = np.array([s.specie.Z for s in structure], dtype=float)
    result = bader_partition(rho, structure.lattice.matrix, structure.frac_coords, method=method)
    charges = bader_charges(result, z)
    na = np.array([s.specie.symbol == "Na" for s in structure])
    assert (charges[na] > 0.5).all() and (charges[~na] < -0.5).all()
    assert charges.sum() == pytest.approx(z.sum() - electron_count(rho, structure.volume), abs=1e-9)
    assert charges.sum() == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(charges[na], charges[na][0], atol=1e-6)  # symmetry-equivalent sites agree
    assert result.volumes.sum() == pytest.approx(structure.volume)
    # the same crystal with its origin moved off-centre: basins now wrap across the cell faces
    shift = np.array([7, 13, 21])
    moved = bader_partition(np.roll(rho, shift, axis=(0, 1, 2)), structure.lattice.matrix,
                            structure.frac_coords + shift / 40.0, method=method)
    np.testing.assert_allclose(bader_charges(moved, z), charges, atol=1e-9)


@pytest.mark.parametrize("method", ["near-grid", "on-grid"])
def test_bader_nacl_all_electron_gpaw_density(method):
    """NaCl from a real DFT total density (GPAW all-electron, core included; tests/data, 54 kB)."""
    data = np.load(DATA / "nacl_gpaw_ae_density.npz")
    rho = data["ae_density"].astype(np.float64)
    volume = abs(np.linalg.det(data["lattice"]))
    assert electron_count(rho, volume) == pytest.approx(28.0, abs=1e-3)  # 11 + 17 electrons
    result = bader_partition(rho, data["lattice"], data["frac_coords"], method=method)
    charges = bader_charges(result, data["atomic_numbers"])
    assert result.n_maxima == 2  # one maximum per nucleus
    assert charges[0] > 0.8 and charges[1] < -0.8  # Na+ Cl-
    assert charges.sum() == pytest.approx(28.0 - electron_count(rho, volume), abs=1e-9)
    # reference: BaderKit 0.10.2 on the same grid (written out as a CHGCAR), electrons in the Na basin
    assert result.electrons[0] == pytest.approx(BADERKIT_NACL_NA[method], abs=0.002)


def test_bader_methods_agree_and_bad_method_is_refused():
    structure = rocksalt().get_primitive_structure()
    rho = atomic_density(structure, {"Na": 10.0, "Cl": 18.0}, {"Na": 7.0, "Cl": 4.0}, (30, 30, 30))
    args = (rho, structure.lattice.matrix, structure.frac_coords)
    near, on = (bader_partition(*args, method=m).electrons for m in ("near-grid", "on-grid"))
    np.testing.assert_allclose(near, on, atol=0.03)
    with pytest.raises(ValueError, match="method"):
        bader_partition(*args, method="weight")


def test_bader_skewed_primitive_cell_matches_cubic_cell():
    cubic = rocksalt()
    primitive = cubic.get_primitive_structure()  # 60 degree cell
    electrons, decay = {"Na": 10.0, "Cl": 18.0}, {"Na": 7.0, "Cl": 4.0}
    z = {"Na": 11.0, "Cl": 17.0}
    charges = {}
    for name, s, n in (("cubic", cubic, 48), ("primitive", primitive, 30)):
        rho = atomic_density(s, electrons, decay, (n, n, n))
        q = bader_charges(bader_partition(rho, s.lattice.matrix, s.frac_coords), [z[x.specie.symbol] for x in s])
        charges[name] = q[[x.specie.symbol == "Na" for x in s]].mean()
    assert charges["primitive"] == pytest.approx(charges["cubic"], abs=0.05)


def test_bader_on_real_chgcars(shared_data):
    # Li (bcc, 1 atom): its basin is the whole cell
    li = read_density(shared_data / "pmg/io_vasp_outputs_CHGCAR.nospin.gz")
    result = bader_partition(chgcar_to_density(li), li.structure.lattice.matrix, li.structure.frac_coords)
    assert bader_charges(result, [1.0])[0] == pytest.approx(0.0, abs=1e-6)
    # Fe3O4: every electron is in some basin, and the basins match BaderKit's
    fe3o4 = read_density(shared_data / "pmg/io_vasp_outputs_CHGCAR.Fe3O4_ref.gz")
    rho = chgcar_to_density(fe3o4)
    for method, tolerance in (("on-grid", 2e-4), ("near-grid", 0.005)):
        result = bader_partition(rho, fe3o4.structure.lattice.matrix, fe3o4.structure.frac_coords, method=method)
        assert result.electrons.sum() == pytest.approx(electron_count(rho, fe3o4.structure.volume), rel=1e-12)
        np.testing.assert_allclose(result.electrons, BADERKIT_FE3O4[method], atol=tolerance)
    # NaCl valence-only CHGCAR: Na (one valence electron) has no density maximum, so it gets no basin; this is why
    # basins must come from the total (core + valence) density
    nacl = read_density(shared_data / NACL_CHGCAR)
    result = bader_partition(chgcar_to_density(nacl), nacl.structure.lattice.matrix, nacl.structure.frac_coords)
    assert result.electrons[0] == 0.0 and result.electrons[1] == pytest.approx(8.0, abs=1e-5)


def test_bader_with_separate_integrated_density():
    structure = rocksalt()
    rho = atomic_density(structure, {"Na": 10.0, "Cl": 18.0}, {"Na": 7.0, "Cl": 4.0}, (24, 24, 24))
    doubled = bader_partition(rho, structure.lattice.matrix, structure.frac_coords, integrated_density=2 * rho)
    single = bader_partition(rho, structure.lattice.matrix, structure.frac_coords)
    np.testing.assert_allclose(doubled.electrons, 2 * single.electrons)
    with pytest.raises(ValueError, match="grid"):
        bader_partition(rho, structure.lattice.matrix, structure.frac_coords, integrated_density=rho[:-1])


# --- plots -------------------------------------------------------------------------------------------------------


def test_plots_write_pngs(tmp_path, complete_dos):
    structure = rocksalt().get_primitive_structure()
    rho = atomic_density(structure, {"Na": 10.0, "Cl": 18.0}, {"Na": 7.0, "Cl": 4.0}, (16, 16, 16))
    for path in (plot_density_slices(structure, rho, tmp_path / "slices.png"),
                 plot_site_dos(DOSMATGEN_WINDOW.grid(), {"a": site_dos_from_complete_dos(complete_dos)},
                               tmp_path / "dos.png", max_sites=3)):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_isosurface_png(tmp_path):
    pytest.importorskip("skimage", reason="isosurfaces need scikit-image (diffase[electronic])")
    structure = rocksalt().get_primitive_structure()
    rho = atomic_density(structure, {"Na": 10.0, "Cl": 18.0}, {"Na": 7.0, "Cl": 4.0}, (16, 16, 16))
    path = plot_isosurface(structure, rho, tmp_path / "iso.png", level=0.5)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="outside"):
        plot_isosurface(structure, rho, tmp_path / "bad.png", level=1e6)
