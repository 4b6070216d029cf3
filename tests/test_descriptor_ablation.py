"""The joint trainer on DFT + predicted label folders for the descriptor ablation (issue 13): every model of the
ablation sees the same crystals (``require_labels``), held-out materials never train and validation never holds
a training crystal, and a fine-tune adds a graph condition (band gap) that starts at zero."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.data.descriptor_records import load_descriptor_records
from diffase.data.electronic.dataset import read_label, write_index
from diffase.generators.joint import (
    JointModel,
    encode_records,
    make_batch,
    make_checkpoint,
)
from diffase.generators.joint_fields import joint_fields
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

V1, V2A, V2B = "mp-1000.npz", "mp-1070789.npz", "mp-1094608.npz"  # V1: no Bader charges
VOCABULARY = [1, 8, 12, 24, 31, 79]  # H O Mg Cr Ga Au: the labels' elements and two more
TINY = {"hidden": 16, "num_layers": 1, "time_dim": 16, "num_freqs": 4}


def _predicted(source, folder, material_id):
    label = {k: v for k, v in read_label(source).items() if k != "rho32"}
    np.savez(folder / f"{material_id}.npz", **{**label, "material_id": np.array(material_id),
                                               "predicted_by": np.array("site-labels-mp20")})


def _folders(shared_data, tmp_path):
    """DFT folder (one label without Bader charges, two with), predicted training labels (two new materials and a
    copy of a held-out test material) and predicted validation labels (one material); a predictor checkpoint
    whose split validates on V2A and tests on V2B."""
    src = shared_data / "electronic"
    dft, train_pred, val_pred = tmp_path / "dft", tmp_path / "pred", tmp_path / "pred-val"
    for folder in (dft, train_pred, val_pred):
        folder.mkdir()
    for name in (V1, V2A, V2B):
        shutil.copy(src / name, dft / name)
    write_index(dft)
    _predicted(src / V2A, train_pred, "pred-a")
    _predicted(src / V2B, train_pred, "pred-b")
    _predicted(src / V2B, train_pred, read_label(src / V2B)["material_id"])
    _predicted(src / V2A, val_pred, "pred-v")
    split = tmp_path / "predictor.pt"
    torch.save({"kind": "diffase-site-labels-v1", "train": {"split": {
        "train": ["pred-a", "pred-b"], "val": [read_label(src / V2A)["material_id"]],
        "test": [read_label(src / V2B)["material_id"]]}}}, split)
    return dft, train_pred, val_pred, split


def test_every_ablation_model_reads_the_same_crystals(shared_data, tmp_path):
    dft, train_pred, _, _ = _folders(shared_data, tmp_path)
    required = [F.BADER_CHARGE, F.SITE_DOS]
    ids = {}
    for name, keys in {"structure": [], "bader": [F.BADER_CHARGE], "dummy": [F.DUMMY_DESCRIPTOR]}.items():
        records, ids[name], counts = load_descriptor_records([dft, train_pred], keys, require=required)
        assert counts["skipped"] == 1 and counts["duplicates"] == 1  # V1 lacks Bader; the DFT label wins
        assert all(set(r) >= set(keys) and F.SITE_DOS not in r for r in records)
    assert ids["structure"] == ids["bader"] == ids["dummy"] and len(ids["structure"]) == 4
    with pytest.raises(ValueError, match="no per-site label"):
        load_descriptor_records(dft, [], require=["band_gap"])


def test_held_out_materials_never_train_and_validation_holds_no_training_crystal(shared_data, tmp_path):
    dft, train_pred, val_pred, split = _folders(shared_data, tmp_path)
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1,
                              label_folders=[str(train_pred)], val_label_folders=[str(val_pred)],
                              require_labels=[F.BADER_CHARGE, F.SITE_DOS], hold_out_from=str(split))
    with pytest.warns(UserWarning, match="2 of the 2 training labels were predicted"):
        best = train_joint_model(dft, dft, tmp_path / "run", config=config, device="cpu", num_threads=1,
                                 progress=False, model_config=TINY)
    meta = torch.load(best, weights_only=True)["train"]
    counts = meta["label_counts"]
    assert meta["n_train"] == 2 and counts["train"]["sources"] == {"site-labels-mp20": 2}
    assert counts["train"]["excluded"] == 3  # V2A (validates) and V2B (tested), from both folders
    assert meta["n_val"] == 2 and counts["val"]["sources"] == {"dft": 1, "site-labels-mp20": 1}
    assert meta["held_out"]["test"] == [read_label(dft / V2B)["material_id"]]
    model = JointModel.from_checkpoint(torch.load(best, weights_only=True), device="cpu")
    assert model.descriptor_keys == []  # the structure-only control of the ablation


def _pretrained(tmp_path, conditions=()):
    torch.manual_seed(5)
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(VOCABULARY), conditions=list(conditions), **TINY))
    path = tmp_path / "pretrained.pt"
    torch.save(make_checkpoint(net, joint_fields(len(VOCABULARY)), VOCABULARY, [0, 1, 2, 3, 4, 5]), path)
    return net, path


def test_a_fine_tune_adds_a_band_gap_condition_that_starts_at_zero(shared_data, tmp_path):
    dft, train_pred, _, _ = _folders(shared_data, tmp_path)
    net, pretrained = _pretrained(tmp_path)
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("material_id,band_gap\npred-a,1.5\npred-b,0.0\n")
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1, lr=0.0, ema_decay=0.5,
                              descriptor_fields={"bader_charge": 1.0}, label_folders=[str(train_pred)],
                              conditions=["band_gap"], init_from=str(pretrained))
    best = train_joint_model(dft, dft, tmp_path / "run", config=config, labels=gaps, device="cpu",
                             num_threads=1, progress=False)
    model = JointModel.from_checkpoint(torch.load(best, weights_only=True), device="cpu")
    assert [c["name"] for c in model.net.config.conditions] == ["band_gap"]
    tuned = model.net.state_dict()
    for key, value in net.state_dict().items():
        assert torch.allclose(tuned[key], value, atol=1e-6), key
    assert all(not v.any() for k, v in tuned.items() if k.startswith("conditions."))
    records, _, _ = load_descriptor_records(dft, [F.BADER_CHARGE])
    batch = make_batch(encode_records(records, VOCABULARY))
    batch[F.TIME] = torch.full((len(records),), 0.4)
    with torch.no_grad():
        free = model.net(batch)
        given = model.net({**batch, F.condition_key("band_gap"): torch.full((len(records),), 2.0)})
    assert all(torch.equal(free[k], given[k]) for k in free)  # step 0 = the pretrained network

    _, with_gap = _pretrained(tmp_path, conditions=[{"name": "band_gap"}])
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1,
                              label_folders=[str(train_pred)], require_labels=[F.BADER_CHARGE],
                              init_from=str(with_gap))
    with pytest.raises(ValueError, match="do not start with the pretrained model's"):
        train_joint_model(dft, dft, tmp_path / "run-2", config=config, device="cpu", progress=False)


def test_two_proportion_z_test_matches_the_textbook_values():
    from diffase.analysis.sun import two_proportion_z_test

    z, p = two_proportion_z_test(60, 100, 40, 100)  # pooled 0.5, se = sqrt(0.25 * 0.02)
    assert z == pytest.approx(2.0 / np.sqrt(0.5), rel=1e-12) and p == pytest.approx(0.004678, abs=1e-6)
    z_same, p_same = two_proportion_z_test(30, 64, 30, 64)
    assert z_same == 0.0 and p_same == 1.0
    assert all(np.isnan(two_proportion_z_test(0, 10, 0, 20)))
    with pytest.raises(ValueError):
        two_proportion_z_test(11, 10, 0, 10)


def test_the_shipped_descriptor_models_give_descriptors_for_a_fixed_structure():
    """joint-bader-mp20 / joint-ados-mp20 with the structure fixed: neutral charges, cation positive in MgO; a
    decoded non-negative DOS on the autoencoder's 512 points per site."""
    from pymatgen.core import Lattice, Structure

    from diffase.generators import load_model

    mgo = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    bader = load_model("joint-bader-mp20", device="cpu")
    [rec] = next(bader.sample_from([mgo], fix_lattice=True, fix_types=True, fix_coords=True, num_levels=10, seed=0))
    assert abs(rec["bader_charge"].sum()) < 1e-5 and rec["bader_charge"][0] > 0.2
    ados = load_model("joint-ados-mp20", device="cpu")
    [rec] = next(ados.sample_from([mgo], fix_lattice=True, fix_types=True, fix_coords=True, num_levels=10, seed=0))
    assert rec["atomic_dos"].shape == (2, 512) and (rec["atomic_dos"] >= 0).all()
    assert np.abs(rec["ados_latent"]).max() <= 1.0


def test_a_label_keeps_the_site_order_of_its_cif_rows(shared_data):
    """Per-site arrays follow the CIF rows; a CIF whose rows are not grouped by element keeps its order (pymatgen's
    CIF parser alone regroups them, pairing the arrays with the wrong atoms)."""
    from pymatgen.core import Structure
    from pymatgen.io.cif import CifWriter

    from diffase.data.electronic.dataset import label_structure

    grouped = label_structure(read_label(shared_data / "electronic" / V2B))
    order = [0, len(grouped) - 1] + list(range(1, len(grouped) - 1))  # interleave the elements
    mixed = Structure(grouped.lattice, [grouped[i].specie for i in order], [grouped[i].frac_coords for i in order])
    again = label_structure({"cif": str(CifWriter(mixed))})
    assert [s.specie for s in again] == [s.specie for s in mixed]
    assert np.allclose(again.frac_coords, mixed.frac_coords % 1.0, atol=1e-5)
    assert [s.specie for s in Structure.from_str(str(CifWriter(mixed)), fmt="cif")] != [s.specie for s in mixed]
