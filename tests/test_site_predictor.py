"""Site-DOS / Bader predictor: invariances, baseline, metrics, split, predicted-label marker and refusal,
``predict-labels`` resume. Tiny networks, toy labels, one thread: seconds."""

from __future__ import annotations

import dataclasses
import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data import fields as F
from diffase.data.electronic import dataset as label_io
from diffase.data.electronic.dataset import read_label, write_index, write_label
from diffase.errors import PredictedLabelError, SettingsMismatchError, UnknownElementError
from diffase.labeling.compare import label_errors
from diffase.predictors.baseline import ElementMeans
from diffase.predictors.metrics import element_table, site_errors, wasserstein_1d
from diffase.predictors.model import SiteLabelPredictor, make_checkpoint
from diffase.predictors.predict_labels import predict_labels
from diffase.predictors.site_net import SiteLabelNet, SiteNetConfig
from diffase.predictors.split import cross_validation_split, split_by_material
from diffase.train.site_trainer import load_site_labels, train_site_model, SiteTrainConfig
from tests.helpers import rocksalt, skewed_cell

GRID = np.linspace(-10, 10, 64, dtype=np.float32)


def toy_structures() -> list[Structure]:
    return [rocksalt(4.2, ("Na", "Cl")), rocksalt(4.0, ("K", "Cl")), rocksalt(4.6, ("Na", "O")), skewed_cell(),
            Structure(Lattice.hexagonal(3.1, 5.0), ["Li", "O", "O"], [[0, 0, 0], [1 / 3, 2 / 3, 0.4], [2 / 3, 1 / 3, 0.6]])]


def toy_label(structure: Structure, seed: int, name: str) -> dict:
    rng = np.random.default_rng(seed)
    n = len(structure)
    return {"material_id": np.array(name), "cif": np.array(structure.to(fmt="cif")), "energy": 0.0, "efermi": 1.0,
            "gap": 0.0, "rho32": np.zeros((4, 4, 4), np.float32), "dos": rng.random((n, len(GRID)), dtype=np.float32),
            "dos_grid": GRID, "dos_sigma": 0.1, "hirshfeld": np.zeros(n, np.float32),
            "bader": rng.normal(size=n).astype(np.float32)}


@pytest.fixture
def label_folder(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    for i, s in enumerate(toy_structures()):
        write_label(folder / f"m{i}.npz", toy_label(s, i, f"m{i}"))
    write_index(folder)
    return folder


def random_net(seed: int = 0) -> SiteLabelNet:
    """A tiny network whose heads are not zero (the fresh network is exactly the baseline: too easy to test)."""
    torch.manual_seed(seed)
    net = SiteLabelNet(SiteNetConfig(hidden=8, num_layers=2, cutoff=4.0, num_radial=6, dos_points=len(GRID),
                                     avg_num_neighbors=10.0))
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return net


def toy_predictor(seed: int = 0) -> SiteLabelPredictor:
    structures = toy_structures()
    labels = [toy_label(s, i, f"m{i}") for i, s in enumerate(structures)]
    baseline = ElementMeans.fit([np.array([site.specie.Z for site in s]) for s in structures],
                                [lab["dos"] for lab in labels], [lab["bader"] for lab in labels])
    net = random_net(seed)
    net.set_baseline(baseline.elements, baseline.dos, baseline.charge)
    return SiteLabelPredictor(net, baseline, GRID, 0.1)


def predict(predictor: SiteLabelPredictor, structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    out = predictor.predict(structure)
    return out[F.SITE_DOS], out[F.BADER_CHARGE]


# --- invariances --------------------------------------------------------------------------------------------

def test_predictions_are_invariant_to_rotation_translation_and_permutation():
    predictor = toy_predictor()
    s = skewed_cell()
    dos, q = predict(predictor, s)
    assert np.abs(dos).max() > 0.1 and np.abs(q).max() > 1e-3  # a non-trivial network

    rot = torch.tensor([[0.36, 0.48, -0.8], [-0.8, 0.6, 0.0], [0.48, 0.64, 0.6]]).numpy()  # orthogonal
    rotated = Structure(Lattice(s.lattice.matrix @ rot.T), s.species, s.cart_coords @ rot.T, coords_are_cartesian=True)
    translated = s.copy()
    translated.translate_sites(range(len(s)), [0.37, -0.21, 0.55])
    perm = [2, 0, 1]
    permuted = Structure(s.lattice, [s.species[i] for i in perm], s.frac_coords[perm])
    for other, rows in ((rotated, slice(None)), (translated, slice(None)), (permuted, perm)):
        dos_o, q_o = predict(predictor, other)
        np.testing.assert_allclose(dos_o, dos[rows], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(q_o, q[rows], rtol=1e-5, atol=1e-4)


def test_supercell_and_another_cell_basis_give_the_same_site_predictions():
    predictor = toy_predictor()
    s = skewed_cell()
    dos, q = predict(predictor, s)
    supercell = s * (2, 1, 3)  # pymatgen keeps the images of a site together: site i -> rows i*6 .. i*6+5
    dos_s, q_s = predict(predictor, supercell)
    np.testing.assert_allclose(dos_s, np.repeat(dos, 6, axis=0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(q_s, np.repeat(q, 6), rtol=1e-5, atol=1e-4)
    m = s.lattice.matrix
    sheared = Structure(Lattice([m[0], m[0] + m[1], m[2] - m[0]]), s.species, s.cart_coords, coords_are_cartesian=True)
    dos_b, q_b = predict(predictor, sheared)
    np.testing.assert_allclose(dos_b, dos, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(q_b, q, rtol=1e-5, atol=1e-4)


def test_predicted_charges_of_a_crystal_sum_to_zero():
    _, q = predict(toy_predictor(), skewed_cell())
    assert abs(q.sum()) < 1e-5


# --- baseline, metrics, split -------------------------------------------------------------------------------

def test_element_means_by_hand():
    numbers = [np.array([11, 17]), np.array([11, 8])]
    dos = [np.array([[1.0, 3.0], [0.0, 2.0]]), np.array([[3.0, 5.0], [4.0, 4.0]])]
    charges = [np.array([np.nan, np.nan]), np.array([0.8, -0.8])]  # the first crystal has no Bader charges
    means = ElementMeans.fit(numbers, dos, charges)
    assert means.elements.tolist() == [8, 11, 17]
    np.testing.assert_allclose(means.dos, [[4, 4], [2, 4], [0, 2]])
    np.testing.assert_allclose(means.charge, [-0.8, 0.8, 0.0])  # Cl: no charge seen -> 0 (neutral)
    assert means.n_dos.tolist() == [1, 2, 1] and means.n_charge.tolist() == [1, 1, 0]
    base_dos, base_q = means.predict(np.array([17, 11]))
    np.testing.assert_allclose(base_dos, [[0, 2], [2, 4]])
    np.testing.assert_allclose(base_q, [0.0, 0.8])
    assert ElementMeans.from_dict(means.to_dict()).dos.tolist() == means.dos.tolist()
    with pytest.raises(UnknownElementError, match="Fe"):
        means.predict(np.array([26, 11]))


def test_wasserstein_of_a_shifted_peak_is_the_shift():
    grid = np.linspace(-10, 10, 2001)
    peak = np.exp(-0.5 * (grid / 0.3) ** 2)
    shifted = np.exp(-0.5 * ((grid - 1.5) / 0.3) ** 2)
    assert wasserstein_1d(shifted[None], peak[None], grid)[0] == pytest.approx(1.5, abs=0.01)
    assert wasserstein_1d(2 * peak[None], peak[None], grid)[0] == pytest.approx(0.0, abs=1e-9)  # shape only


def test_element_table_counts_and_relative_error():
    numbers = np.array([8, 8, 11])
    ref = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 3.0]])
    pred = ref + np.array([[0.5], [0.5], [1.0]])
    errors = site_errors(pred, ref, np.array([0.0, 0.0, 1.0]), np.array([0.5, np.nan, 0.0]), np.array([0.0, 1.0]))
    rows = {r["element"]: r for r in element_table(numbers, errors)}
    assert rows["O"]["n_sites"] == 2 and rows["O"]["dos_mae"] == pytest.approx(0.5)
    assert rows["O"]["dos_relative_mae"] == pytest.approx(0.5 / 1.5)
    assert rows["O"]["n_bader"] == 1 and rows["O"]["bader_mae"] == pytest.approx(0.5)
    assert rows["all"]["n_sites"] == 3 and rows["all"]["bader_mae"] == pytest.approx(0.75)


def test_split_holds_out_whole_materials_whose_elements_stay_in_training():
    rng = np.random.default_rng(1)
    materials = [set(rng.choice(20, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(60)]
    parts = split_by_material(materials, test_fraction=0.2, val_fraction=0.1, seed=3)
    assert parts == split_by_material(materials, test_fraction=0.2, val_fraction=0.1, seed=3)
    assert 0 < parts.count("test") <= 12 and 0 < parts.count("val") <= 6
    train_elements = set().union(*(m for m, p in zip(materials, parts) if p == "train"))
    assert all(m <= train_elements for m, p in zip(materials, parts) if p != "train")


def test_cross_validation_tests_each_material_at_most_once_with_its_elements_in_training():
    rng = np.random.default_rng(2)
    materials = [set(rng.choice(25, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(40)]
    tested = []
    for fold in range(4):
        parts = cross_validation_split(materials, fold, 4, val_fraction=0.1, seed=5)
        train_elements = set().union(*(m for m, p in zip(materials, parts) if p == "train"))
        assert all(m <= train_elements for m, p in zip(materials, parts) if p != "train")
        assert parts.count("val") == 4
        tested += [i for i, p in enumerate(parts) if p == "test"]
    assert len(tested) == len(set(tested)) > 30  # each material at most once; most of them tested
    with pytest.raises(ValueError, match="fold"):
        cross_validation_split(materials, 4, 4)


# --- predicted labels: marker, refusal, streamed and resumable writing --------------------------------------

@pytest.fixture
def checkpoints(tmp_path):
    paths = []
    for seed in (0, 1):
        p = toy_predictor(seed)
        ckpt = make_checkpoint(p.net, p.baseline, GRID, 0.1, held_out={
            "n_test_materials": 3, "model": [{"element": "all", "dos_mae": 0.25, "bader_mae": 0.1}]})
        paths.append(tmp_path / f"toy-{seed}.pt")
        torch.save(ckpt, paths[-1])
    return paths


def structures_file(tmp_path, structures) -> str:
    import pandas as pd

    path = tmp_path / "structures.csv"
    pd.DataFrame({"material_id": [f"s{i}" for i in range(len(structures))],
                  "cif": [s.to(fmt="cif") for s in structures]}).to_csv(path, index=False)
    return str(path)


def test_predicted_labels_are_marked_and_refused_as_dft_references(tmp_path, checkpoints, label_folder):
    source = structures_file(tmp_path, toy_structures()[:2])
    predict_labels(source, str(checkpoints[0]), tmp_path / "out")
    label = read_label(tmp_path / "out" / "s0.npz")
    assert label["predicted_by"] == "toy-0" and len(label["predictor_sha256"]) == 64
    assert '"dos_mae": 0.25' in label["predictor_error"] and label["dos"].shape == (8, len(GRID))  # conventional rocksalt cell
    np.testing.assert_allclose(label["dos"], toy_predictor(0).predict(toy_structures()[0])[F.SITE_DOS])
    dft = read_label(label_folder / "m0.npz")
    assert not label_io.is_predicted(dft)
    with pytest.raises(PredictedLabelError, match="predicted by 'toy-0'"):
        label_errors(dft, label)
    # nor may a predictor be trained on them
    write_label(label_folder / "s0.npz", {k: v for k, v in label.items() if k != "format_version"})
    write_index(label_folder)
    with pytest.raises(PredictedLabelError):
        load_site_labels(label_folder)


def test_interrupted_predict_labels_resumes_without_duplicates(tmp_path, checkpoints, monkeypatch):
    from diffase.predictors import predict_labels as module

    structures = toy_structures() + [rocksalt(5.0, ("Fe", "O"))]  # Fe: never seen, skipped
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
        predict_labels(source, str(checkpoints[0]), out, batch_size=2)
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    assert sorted(first) == ["s0.npz", "s1.npz"]

    monkeypatch.setattr(module, "write_label", real_write)
    report = predict_labels(source, str(checkpoints[0]), out, batch_size=2)
    assert report.skipped == ["s0", "s1"] and report.written == ["s2", "s3", "s4"] and report.refused == {"s5": ["Fe"]}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("s[01].npz")} == first  # not rewritten
    index = (out / "index.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in index[1:]) == [f"s{i}.npz" for i in range(5)]
    assert not list(out.glob("*.part*"))

    with pytest.raises(SettingsMismatchError, match="predictor_sha256"):
        predict_labels(source, str(checkpoints[1]), out)
    assert sorted(p.name for p in out.glob("*.npz")) == [f"s{i}.npz" for i in range(5)]


def test_cli_predict_labels(tmp_path, checkpoints, capsys):
    from diffase.cli import main

    source = structures_file(tmp_path, toy_structures()[:3] + [rocksalt(5.0, ("Fe", "O"))])
    assert main(["predict-labels", source, "--model", str(checkpoints[0]), "--out", str(tmp_path / "o")]) == 0
    assert "3 predicted, 0 already there, 1 skipped" in capsys.readouterr().out
    assert main(["predict-labels", source, "--model", str(checkpoints[1]), "--out", str(tmp_path / "o")]) == 2
    assert "other settings" in capsys.readouterr().err


# --- training ----------------------------------------------------------------------------------------------

def test_training_writes_held_out_tables_with_the_baseline(label_folder, tmp_path):
    config = SiteTrainConfig(epochs=2, batch_size=2, max_steps=3, warmup_steps=1, test_fraction=0.2,
                             val_fraction=0.2, split_seed=0)
    best = train_site_model(label_folder, tmp_path / "run", model_config={"hidden": 8, "num_layers": 1},
                            config=config, device="cpu", num_threads=1, progress=False)
    ckpt = torch.load(best, weights_only=True)
    held_out = ckpt["held_out"]
    assert ckpt["train"]["n_labels"] == 5 and held_out["n_test_materials"] == ckpt["train"]["n_test"] >= 1
    assert {"model", "baseline", "baseline_neutral"} <= set(held_out)
    assert held_out["model"][-1]["n_sites"] == held_out["baseline"][-1]["n_sites"] == held_out["n_test_sites"]
    assert set(held_out["test_materials"]).isdisjoint(ckpt["train"]["split"]["train"])
    predictor = SiteLabelPredictor.load(str(best))
    assert predictor.name == "best" and predictor.held_out_summary()["n_test_materials"] == held_out["n_test_materials"]


def test_resume_after_the_label_folder_changed_is_refused(label_folder, tmp_path):
    """A resumed run recomputes the split from the folder: with a label added, materials trained on could land
    in the test split, so the resume is refused; the unchanged folder resumes."""
    config = SiteTrainConfig(epochs=2, batch_size=2, max_steps=2, warmup_steps=1, test_fraction=0.2,
                             val_fraction=0.2, split_seed=0)
    kw = dict(model_config={"hidden": 8, "num_layers": 1}, device="cpu", num_threads=1, progress=False)
    train_site_model(label_folder, tmp_path / "run", config=config, **kw)
    train_site_model(label_folder, tmp_path / "run", config=dataclasses.replace(config, max_steps=3), **kw)
    extra = toy_structures()[0]
    write_label(label_folder / "m99.npz", toy_label(extra, 99, "m99"))
    write_index(label_folder)
    with pytest.raises(ValueError, match="another split of the labels"):
        train_site_model(label_folder, tmp_path / "run", config=dataclasses.replace(config, max_steps=4), **kw)
