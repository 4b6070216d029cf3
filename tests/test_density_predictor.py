"""Density predictor: invariances, the grid convention of the labels, the superposition fit, checkpoint round trip,
training tables, predicted density labels (marked, refused as DFT, resumable). Tiny networks, one thread."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data.electronic.dataset import (
    ElectronicDataset,
    read_label,
    write_index,
    write_label,
)
from diffase.data.electronic.density import density_to_chgcar
from diffase.errors import PredictedLabelError, UnknownElementError
from diffase.labeling.compare import density_errors, label_errors
from diffase.predictors.density_model import DensityPredictor, make_density_checkpoint
from diffase.predictors.density_net import (
    AtomicSuperposition,
    DensityNetConfig,
    ProbeDensityNet,
    fit_superposition,
)
from diffase.predictors.predict_labels import predict_labels
from diffase.predictors.probe_graph import grid_points, probe_atom_pairs
from diffase.train.density_trainer import (
    DensityTrainConfig,
    load_density_labels,
    train_density_model,
)
from tests.helpers import skewed_cell
from tests.test_site_predictor import structures_file

TOY_GRID = 8


def rocksalt(a: float, species: tuple[str, str]) -> Structure:
    """Primitive two-atom rock-salt cell (Structure.from_spacegroup takes seconds on a busy machine)."""
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), list(species),
                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def random_predictor(seed: int = 0, grid: int = 32) -> DensityPredictor:
    """A tiny network with random weights (a fresh one is exactly the superposition: too easy to test) and
    random coefficients for H, Li, O, Na, Cl."""
    torch.manual_seed(seed)
    net = ProbeDensityNet(DensityNetConfig(hidden=8, num_layers=2, cutoff=3.5, num_radial=6, num_gaussians=4,
                                           avg_num_neighbors=10.0, avg_probe_neighbors=10.0))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    known = torch.tensor([1, 3, 8, 11, 17])
    net.superposition.coefficients[known] = torch.rand(len(known), 4)
    net.superposition.known[known] = True
    return DensityPredictor(net, grid)


def random_points(structure: Structure, n: int = 50, seed: int = 0) -> np.ndarray:
    frac = np.random.default_rng(seed).uniform(-0.5, 1.5, size=(n, 3))  # inside and outside the cell
    return frac @ structure.lattice.matrix


# --- invariances --------------------------------------------------------------------------------------------

def test_density_at_the_same_points_is_invariant_to_rotation_translation_and_permutation():
    predictor = random_predictor()
    s = skewed_cell()
    points = random_points(s)
    rho = predictor.predict_at(s, points)
    assert rho.std() > 1e-2  # a non-trivial density

    rot = np.array([[0.36, 0.48, -0.8], [-0.8, 0.6, 0.0], [0.48, 0.64, 0.6]])  # orthogonal
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.cart_coords @ rot.T, coords_are_cartesian=True)
    np.testing.assert_allclose(predictor.predict_at(rotated, points @ rot.T), rho, rtol=1e-4, atol=1e-5)
    shift = np.array([0.37, -0.21, 0.55])
    translated = Structure(s.lattice, s.species, s.cart_coords + shift, coords_are_cartesian=True)
    np.testing.assert_allclose(predictor.predict_at(translated, points + shift), rho, rtol=1e-4, atol=1e-5)
    perm = [2, 0, 1]
    permuted = Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm])
    np.testing.assert_allclose(predictor.predict_at(permuted, points), rho, rtol=1e-4, atol=1e-5)
    # and the density does move with the atoms
    assert np.abs(predictor.predict_at(translated, points) - rho).max() > 1e-2


def test_supercell_and_another_cell_basis_give_the_same_density_at_the_same_points():
    predictor = random_predictor()
    s = skewed_cell()
    points = random_points(s, seed=1)
    rho = predictor.predict_at(s, points)
    np.testing.assert_allclose(predictor.predict_at(s * (2, 1, 3), points), rho, rtol=1e-4, atol=1e-5)
    m = s.lattice.matrix
    sheared = Structure(Lattice([m[0], m[0] + m[1], m[2] - m[0]]), s.species, s.cart_coords, coords_are_cartesian=True)
    np.testing.assert_allclose(predictor.predict_at(sheared, points), rho, rtol=1e-4, atol=1e-5)
    # the 16^3 grid of the doubled cell holds the 8^3 grid of the cell
    small = predictor.predict(s, grid=8)
    doubled = predictor.predict(s * (2, 2, 2), grid=16)
    np.testing.assert_allclose(doubled[:8, :8, :8], small, rtol=1e-4, atol=1e-5)


def test_probe_pairs_match_brute_force_images():
    s = skewed_cell()
    cell = torch.tensor(s.lattice.matrix)
    pos = torch.tensor(s.cart_coords)
    probes = torch.tensor(random_points(s, 20, seed=2))
    p, a, d = probe_atom_pairs(probes, pos, cell, 3.0)
    shifts = torch.cartesian_prod(*[torch.arange(-6, 7, dtype=torch.float64)] * 3) @ cell
    expected = sorted((i, j, round(float(r), 6)) for i in range(len(probes)) for j in range(len(pos))
                      for r in (probes[i] - pos[j] - shifts).norm(dim=-1) if r < 3.0)
    assert sorted(zip(p.tolist(), a.tolist(), [round(float(r), 6) for r in d])) == expected and len(expected) > 50


# --- the labels' grid convention ----------------------------------------------------------------------------

def test_grid_points_are_the_voxels_of_a_density_array():
    """Point (i*n + j)*n + k of grid_points is voxel [i, j, k] at fractional (i/n, j/n, k/n): checked against
    pymatgen's reading of a density array (the CHGCAR convention of diffase.data.electronic.density)."""
    s = Structure(Lattice.from_parameters(3.0, 4.0, 5.0, 80, 95, 110), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.4, 0.3]])
    n = 6
    rho = np.random.default_rng(0).random((n, n, n))
    chgcar = density_to_chgcar(s, rho)
    points = grid_points(torch.tensor(s.lattice.matrix), n).numpy()
    for flat in (0, 7, 43, 150, 215):
        i, j, k = np.unravel_index(flat, (n, n, n))
        frac = s.lattice.get_fractional_coords(points[flat])
        np.testing.assert_allclose(frac, [i / n, j / n, k / n], atol=1e-12)
        assert chgcar.value_at(*frac) == pytest.approx(rho[i, j, k] * s.volume) == pytest.approx(
            chgcar.data["total"].reshape(-1)[flat])


def test_a_superposition_fitted_to_a_dft_label_lines_up_with_its_voxels(shared_data):
    """A superposition fitted to one GPAW label on the predictor's grid points reproduces it; the same fit on
    points moved by half a voxel, or in the transposed (Fortran) order, does not: the points are the voxels."""
    items = sorted(load_density_labels(shared_data / "electronic"), key=lambda it: it["name"])
    # a cell whose three axes differ in length, so that no axis permutation is a symmetry of its grid
    item = next(it for it in items if np.diff(np.sort(np.linalg.norm(it["record"]["cell"], axis=1))).min() > 0.3)
    record, rho = item["record"], item["rho"]
    cell = torch.as_tensor(record["cell"])
    z, pos = torch.as_tensor(record["atomic_numbers"]), torch.as_tensor(record["pos"])
    n = item["grid"]
    right = grid_points(cell, n)
    shifted = right + cell[0] / (2 * n)
    transposed = right.reshape(n, n, n, 3).permute(2, 1, 0, 3).reshape(-1, 3)

    def eps(points):
        module = AtomicSuperposition(8, 4.0)
        fit_superposition(module, [(z, pos, cell, points[::3], rho[::3])], 4.0)
        p, a, d = probe_atom_pairs(points, pos, cell, 4.0)
        return density_errors(module(z[a], p, d, len(points)).double().numpy(), rho.double().numpy())[
            "density_eps_msd"]

    good = eps(right)
    assert good < 0.02 and eps(shifted) > 3 * good and eps(transposed) > 3 * good


# --- superposition fit, checkpoint --------------------------------------------------------------------------

def test_superposition_fit_recovers_known_coefficients():
    truth = AtomicSuperposition(4, 3.5)
    truth.coefficients[8] = torch.tensor([0.9, -0.3, 0.2, 0.05])
    truth.coefficients[11] = torch.tensor([0.1, 0.4, -0.1, 0.02])
    crystals = []
    for s in (rocksalt(4.6, ("Na", "O")), Structure(Lattice.hexagonal(3.3, 4.1), ["Na", "O", "O"],
                                                    [[0, 0, 0], [1 / 3, 2 / 3, 0.4], [2 / 3, 1 / 3, 0.7]])):
        cell, pos = torch.as_tensor(s.lattice.matrix), torch.as_tensor(s.cart_coords)
        z = torch.tensor([site.specie.Z for site in s])
        points = grid_points(cell, 10)
        p, a, d = probe_atom_pairs(points, pos, cell, 3.5)
        crystals.append((z, pos, cell, points, truth(z[a], p, d, len(points)).double()))
    fitted = AtomicSuperposition(4, 3.5)
    fit_superposition(fitted, crystals, 3.5, ridge=1e-12)
    np.testing.assert_allclose(fitted.coefficients[[8, 11]], truth.coefficients[[8, 11]], rtol=1e-3, atol=1e-4)
    assert fitted.known.nonzero().flatten().tolist() == [8, 11]


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    predictor = random_predictor()
    path = tmp_path / "dens.pt"
    torch.save(make_density_checkpoint(predictor.net, 32, held_out={"summary": {"mean_model_eps_msd": 0.01}}), path)
    loaded = DensityPredictor.load(str(path))  # read with weights_only=True through diffase.hub
    s = skewed_cell()
    points = random_points(s)
    np.testing.assert_allclose(loaded.predict_at(s, points), predictor.predict_at(s, points), rtol=1e-6)
    assert loaded.name == "dens" and loaded.grid == 32 and loaded.held_out_summary()["mean_model_eps_msd"] == 0.01
    assert loaded.predict(s).shape == (32, 32, 32)
    with pytest.raises(UnknownElementError, match="Fe"):
        loaded.predict(rocksalt(4.3, ("Fe", "O")))


# --- training ------------------------------------------------------------------------------------------------

def toy_structures() -> list[Structure]:
    return [rocksalt(4.2, ("Na", "Cl")), rocksalt(4.6, ("Na", "O")), skewed_cell(), rocksalt(3.6, ("Li", "Cl")),
            Structure(Lattice.hexagonal(3.1, 5.0), ["Li", "O", "O"], [[0, 0, 0], [1 / 3, 2 / 3, 0.4], [2 / 3, 1 / 3, 0.6]]),
            Structure(Lattice.cubic(3.0), ["Li", "H"], [[0, 0, 0], [0.5, 0.5, 0.5]])]


def toy_label(structure: Structure, name: str) -> dict:
    """A label whose density is a random predictor's at its 8^3 grid points."""
    n = len(structure)
    rho = random_predictor(7).predict(structure, grid=TOY_GRID).astype(np.float32)
    return {"material_id": np.array(name), "cif": np.array(structure.to(fmt="cif")), "energy": 0.0, "efermi": 0.0,
            "gap": 0.0, "rho32": rho, "dos": np.zeros((n, 4), np.float32), "dos_grid": np.linspace(-1, 1, 4),
            "dos_sigma": 0.1, "hirshfeld": np.zeros(n, np.float32), "bader": np.zeros(n, np.float32)}


@pytest.fixture
def label_folder(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    for i, s in enumerate(toy_structures()):
        write_label(folder / f"m{i}.npz", toy_label(s, f"m{i}"))
    write_index(folder)
    return folder


def test_training_fits_the_superposition_and_writes_held_out_errors(label_folder, tmp_path):
    config = DensityTrainConfig(epochs=2, batch_size=2, max_steps=3, warmup_steps=1, probes_per_crystal=64,
                                fit_stride=1, test_fraction=0.2, val_fraction=0.2)
    best = train_density_model(label_folder, tmp_path / "run", model_config={"hidden": 8, "num_layers": 1,
                                                                             "num_gaussians": 4},
                               config=config, device="cpu", num_threads=1, progress=False)
    ckpt = torch.load(best, weights_only=True)
    held_out = ckpt["held_out"]
    assert ckpt["train"]["n_labels"] == 6 and held_out["summary"]["n_test_materials"] == ckpt["train"]["n_test"] >= 1
    assert set(held_out["test_materials"]).isdisjoint(ckpt["train"]["split"]["train"])
    row = held_out["rows"][0]
    assert row["baseline_eps_msd"] < 1.0 and {"model_eps_msd", "model_nmae", "baseline_nmae"} <= set(row)
    predictor = DensityPredictor.load(str(best))
    assert predictor.grid == TOY_GRID and predictor.unseen([1, 3, 8, 11, 17, 26]) == ["Fe"]
    # the errors stored are those of the stored weights on the test material's full grid
    test = read_label(label_folder / f"{held_out['test_materials'][0]}.npz")
    from diffase.data.electronic.dataset import label_structure

    rho = predictor.predict(label_structure(test))
    assert density_errors(rho, test["rho32"])["density_eps_msd"] == pytest.approx(row["model_eps_msd"], rel=1e-4)


# --- predicted density labels --------------------------------------------------------------------------------

@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "toy-density.pt"
    torch.save(make_density_checkpoint(random_predictor().net, TOY_GRID, held_out={
        "summary": {"n_test_materials": 3, "mean_model_eps_msd": 0.002}}), path)
    return path


def test_predicted_density_labels_are_marked_refused_as_dft_and_resume(tmp_path, checkpoint, label_folder,
                                                                       monkeypatch):
    from diffase.predictors import predict_labels as module

    structures = toy_structures()[:4] + [rocksalt(5.0, ("Fe", "O"))]  # Fe: never seen, skipped
    source = structures_file(tmp_path, structures)
    out = tmp_path / "out"
    real_write, written = module.write_label, []

    def dying_write(path, label):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(path.name)
        return real_write(path, label)

    monkeypatch.setattr(module, "write_label", dying_write)
    with pytest.raises(KeyboardInterrupt):
        predict_labels(source, str(checkpoint), out, batch_size=2)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert sorted(first) == ["s0.npz", "s1.npz"]
    monkeypatch.setattr(module, "write_label", real_write)
    report = predict_labels(source, str(checkpoint), out, batch_size=2)
    assert report.skipped == ["s0", "s1"] and report.written == ["s2", "s3"] and report.refused == {"s4": ["Fe"]}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("s[01].npz")} == first  # not rewritten

    label = read_label(out / "s2.npz")
    assert label["predicted_by"] == "toy-density" and len(label["predictor_sha256"]) == 64
    assert '"mean_model_eps_msd": 0.002' in label["predictor_error"] and "dos" not in label
    np.testing.assert_allclose(label["rho32"], random_predictor().predict(toy_structures()[2], grid=TOY_GRID),
                               rtol=1e-4, atol=1e-5)  # the label's structure went through a CIF
    assert np.isnan(label["bader"]).all() and label["bader"].shape == (3,)
    # refused wherever a DFT density is required: a comparison's reference, predictor training, dataset items
    dft = read_label(label_folder / "m2.npz")
    with pytest.raises(PredictedLabelError, match="predicted by 'toy-density'"):
        label_errors(dft, label)
    write_label(label_folder / "s2.npz", {k: v for k, v in label.items() if k != "format_version"})
    write_index(label_folder)
    with pytest.raises(PredictedLabelError):
        load_density_labels(label_folder)
    dataset = ElectronicDataset(label_folder)
    with pytest.raises(PredictedLabelError):
        dataset[[p.name for p in dataset.files].index("s2.npz")]


def test_cli_predict_labels_with_a_density_model(tmp_path, checkpoint, capsys):
    from diffase.cli import main

    source = structures_file(tmp_path, toy_structures()[:2])
    assert main(["predict-labels", source, "--model", str(checkpoint), "--out", str(tmp_path / "o")]) == 0
    assert "2 predicted, 0 already there, 0 skipped" in capsys.readouterr().out
    assert read_label(tmp_path / "o" / "s1.npz")["rho32"].shape == (TOY_GRID,) * 3
