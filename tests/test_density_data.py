"""Training data of ChargeDIFF's density models: ChargeDIFF's element groups, predicted densities beside DFT ones
(VQ-VAE and joint trainer), the eps_msd term of the VQ-VAE loss and the structure-only control on the crystals of
a density run."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from diffase.data import fields as F
from diffase.data.electronic.density_sets import read_density_set, read_label_densities
from diffase.data.element_groups import GROUP_NAMES, element_groups, group_members, groups_vector
from diffase.hub import read_checkpoint
from diffase.nn.vqvae3d import DensityVQVAE, VQVAE3DConfig
from diffase.predictors.predict_labels import predict_labels
from diffase.train.density_labels import DensityLatents
from diffase.train.joint_trainer import JointTrainConfig, computed_condition, train_joint_model
from diffase.train.vqvae_trainer import VQVAETrainConfig, train_vqvae, vqvae_loss

DFT_LABELS = ("mp-1000.npz", "mp-10015.npz")
TINY_VQVAE = {"channels": [4, 8, 8], "codebook_size": 16}


def test_chargediff_element_groups():
    assert len(GROUP_NAMES) == 17
    vec = element_groups([3, 26, 8])  # Li, Fe, O
    assert [GROUP_NAMES[i] for i in np.flatnonzero(vec)] == ["alkali", "tm3d", "oxide"]
    assert np.array_equal(groups_vector(["tm3d", "oxide"]), groups_vector("tm3d-oxide"))
    assert np.array_equal(groups_vector(["tm3d", "oxide"]), element_groups([26, 8]))
    assert group_members(["oxide", "alkali"]) == {8, 3, 11, 19, 37, 55, 87}
    with pytest.raises(ValueError, match="unknown element group.*tm3d"):
        groups_vector(["transition_metals"])
    record = {F.ATOMIC_NUMBERS: np.array([3, 3, 8])}
    assert np.array_equal(computed_condition("chemsys_groups", record, [3, 8]), element_groups([3, 8]))


@pytest.fixture(scope="module")
def density_folders(shared_data, tmp_path_factory):
    """A folder of two DFT labels and one of three densities predicted by the shipped density-mp20 for MP-20
    training crystals that carry no DFT label."""
    root = tmp_path_factory.mktemp("densities")
    dft = root / "dft"
    dft.mkdir()
    for name in DFT_LABELS:
        (dft / name).write_bytes((shared_data / "electronic" / name).read_bytes())
    labelled = set(pd.read_csv(shared_data / "electronic" / "index.csv")["material_id"])
    table = pd.read_csv(shared_data / "mp20" / "train.csv.gz", nrows=60)
    source = root / "structures.csv"
    table[~table["material_id"].isin(labelled)].head(8).to_csv(source, index=False)
    report = predict_labels(source, "density-mp20", root / "predicted")
    assert len(report.written) == 3  # the other five hold an element density-mp20 never saw
    return dft, root / "predicted"


def test_predicted_densities_are_read_only_when_asked_and_counted_by_source(density_folders):
    dft, predicted = density_folders
    with pytest.raises(ValueError, match="no DFT label with a density"):
        read_label_densities(predicted)
    entries = read_density_set(predicted, predicted=True)
    assert len(entries) == 3 and {e.source for e in entries} == {"density-mp20"}
    assert {e.source for e in read_label_densities(dft, predicted=True)} == {"dft"}


def test_density_latents_count_predicted_and_dft_sources(density_folders, tmp_path):
    dft, predicted = density_folders
    vq_path = tmp_path / "vq.pt"
    torch.save(DensityVQVAE(VQVAE3DConfig(**TINY_VQVAE)).checkpoint(), vq_path)
    records, names, counts = DensityLatents(str(vq_path)).load([dft, predicted, dft])
    assert counts["sources"] == {"dft": 2, "density-mp20": 3} and counts["duplicates"] == 2
    assert [r["label_source"] for r in records] == ["dft"] * 2 + ["density-mp20"] * 3
    assert records[0][F.DENSITY_LATENT].shape == (8, 8, 8, 3)


def test_the_eps_msd_term_adds_the_linear_density_error():
    torch.manual_seed(0)
    net = DensityVQVAE(VQVAE3DConfig(**TINY_VQVAE))
    grids = [torch.rand(32, 32, 32) * 0.3 + 1e-3 for _ in range(2)]
    torch.manual_seed(1)
    plain, parts = vqvae_loss(net, grids, rolls=False)
    torch.manual_seed(1)
    weighted, parts_w = vqvae_loss(net, grids, rolls=False, weight_eps_msd=2.0)
    assert "eps_msd" not in parts and parts_w["eps_msd"] > 0
    assert torch.isclose(weighted, plain + 2.0 * parts_w["eps_msd"], rtol=1e-5)


def test_vqvae_trains_on_predicted_densities_beside_the_dft_split(shared_data, density_folders, tmp_path):
    _, predicted = density_folders
    config = VQVAETrainConfig(max_steps=1, batch_size=2, epochs=1, warmup_steps=1, train_folders=[str(predicted)],
                              weight_eps_msd=1.0)
    best = train_vqvae(shared_data / "electronic", tmp_path / "run", model_config=TINY_VQVAE, config=config,
                       device="cpu", num_threads=1, progress=False)
    train = read_checkpoint(best)["train"]
    n_dft = len(train["split"]["train"])
    assert train["train_sources"] == {"dft": n_dft, "density-mp20": 3}
    assert train["n_train"] == n_dft + 3 and train["n_test"] == len(train["split"]["test"])


def test_a_structure_only_control_trains_on_the_crystals_of_the_density_run(density_folders, tmp_path):
    dft, predicted = density_folders
    vq_path = tmp_path / "vq.pt"
    torch.save(DensityVQVAE(VQVAE3DConfig(**TINY_VQVAE)).checkpoint(), vq_path)
    model_config = {"hidden": 16, "num_layers": 1, "num_freqs": 2, "time_dim": 8, "probe_hidden": 8,
                    "probe_neighbours": 4}
    common = dict(max_steps=1, batch_size=2, epochs=1, warmup_steps=1, density_vqvae=str(vq_path),
                  label_folders=[str(predicted)], conditions=["chemsys_groups"])
    runs = {}
    for name, extra in {"axlc": {"grid_fields": {"density_latent": 1.0}}, "axl": {"density_crystals": True}}.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            best = train_joint_model(dft, dft, tmp_path / name, model_config=model_config,
                                     config=JointTrainConfig(**common, **extra), device="cpu", num_threads=1,
                                     progress=False)
        assert any("3 of the 5 training densities were predicted" in str(w.message) for w in caught)
        runs[name] = read_checkpoint(best)
    axlc, axl = runs["axlc"], runs["axl"]
    assert axl["train"]["density_counts"] == axlc["train"]["density_counts"]
    assert axl["train"]["n_train"] == axlc["train"]["n_train"] == 5
    assert [f["name"] for f in axl["fields"]] == ["types", "coords", "lattice"]
    assert axl["model_config"]["grid_fields"] == {} and "density_vqvae" not in str(sorted(axl))
    assert axlc["fields"][-1]["name"] == "density_latent"
    assert axl["model_config"]["conditions"][0]["dim"] == 17
