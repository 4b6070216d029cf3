"""The committed training recipes (recipes/*.json): they match the shipped checkpoints, their cards name
them, and each runs one training step through ``diffase train --recipe``."""

import json
from pathlib import Path

import pytest
import torch

from diffase.cli import main
from diffase.generators.joint_fields import fields_from_checkpoint, joint_fields
from diffase.train.recipe import Recipe, load_recipe, train_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.json"), key=lambda p: p.stem)
SHIPPED = sorted(p.stem for p in (ROOT / "models").glob("*.pt"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DIFFASE_CACHE", str(tmp_path_factory.getbasetemp() / "record-cache"))


def test_every_shipped_model_has_a_recipe_named_by_its_card():
    assert SHIPPED and [p.stem for p in RECIPES] == SHIPPED
    for name in SHIPPED:
        card = (ROOT / "models" / f"{name}.md").read_text()
        assert f"diffase train --recipe recipes/{name}.json" in card and "train.py" not in card


@pytest.mark.parametrize("name", SHIPPED)
def test_recipe_holds_the_settings_stored_in_the_shipped_checkpoint(name):
    recipe = load_recipe(ROOT / "recipes" / f"{name}.json")
    ckpt = torch.load(ROOT / "models" / f"{name}.pt", weights_only=True)
    stored = ckpt["train"]
    assert (recipe.train, recipe.val) == (stored["data"], stored["val_data"])
    network = {k: v for k, v in ckpt["model_config"].items()
               if k not in {"avg_num_neighbors", "num_elements", "conditions", "dos_points", "e_min", "e_max",
                            "avg_probe_neighbors"}}
    if recipe.config.get("init_from"):  # fine-tuned: the pretrained model's network plus inputs set by the data
        pretrained = torch.load(ROOT / "models" / f"{recipe.config['init_from']}.pt", weights_only=True)
        from_data = ("node_fields", "node_cond_dim", "grid_fields")
        assert recipe.model_config == {}
        prior = pretrained["model_config"]
        assert {k: v for k, v in network.items() if k not in from_data and k in prior} == {
            k: v for k, v in prior.items() if k in network and k not in from_data}
        from dataclasses import MISSING
        from dataclasses import fields as dataclass_fields

        from diffase.nn.joint_denoiser import JointDenoiserConfig

        defaults = {f.name: f.default if f.default is not MISSING else f.default_factory()
                    for f in dataclass_fields(JointDenoiserConfig) if (f.default, f.default_factory) != (MISSING, MISSING)}
        newer = {k: v for k, v in network.items() if k not in prior and k not in from_data}
        assert newer == {k: defaults[k] for k in newer}  # settings added after the pretrained model: defaults
    else:
        assert recipe.model_config == network
    if recipe.model == "score":
        assert recipe.process == ckpt["process"]
    elif recipe.model == "joint":
        weights = tuple(recipe.config.get(f"weight_{k}", 1.0) for k in ("types", "coords", "lattice"))
        expected = joint_fields(len(ckpt["elements"]), weights, descriptors=recipe.config.get("descriptor_fields"),
                                grids=recipe.config.get("grid_fields"), grid_shapes=ckpt["model_config"].get("grid_fields"))
        assert expected.to_list() == fields_from_checkpoint(ckpt).to_list()
    # the budget is the shipped run's length in steps; everything else is the stored loop config
    budget = {"max_steps": stored["step"], "max_time_s": None}
    assert recipe.config == {**stored["config"], **budget}


# recipe keys naming extra data folders: predicted labels made by `diffase predict-labels` into the ignored runs/,
# which a fresh checkout (CI) does not have; the one-step test trains on the shared DFT folder alone
PREDICTED_FOLDER_KEYS = ("label_folders", "val_label_folders", "train_folders")


def _without_predicted_folders(recipe, tmp_path, drop_conditions=False):
    """A copy of ``recipe`` in ``tmp_path`` with its predicted-folder keys emptied; returns (path, keys changed)."""
    copy = json.loads(recipe.read_text())
    skip = {k for k in PREDICTED_FOLDER_KEYS if k in copy["config"]}
    copy["config"].update({k: [] for k in skip})
    if drop_conditions:
        copy["config"]["conditions"] = []
        skip.add("conditions")
    path = tmp_path / recipe.name
    path.write_text(json.dumps(copy))
    return path, skip


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_each_recipe_runs_one_training_step(recipe, shared_data, tmp_path):
    data = str(shared_data / "mp20" / "train.csv.gz")  # validation on training rows: only elements it saw
    stored = json.loads(recipe.read_text())
    skip = set()
    if stored["model"] in ("site-labels", "dos-autoencoder", "density", "vqvae"):
        # a label folder (a density folder for the VQ-VAE), split by material inside
        recipe, skip = _without_predicted_folders(recipe, tmp_path)
        data_args = [str(shared_data / "electronic")]
    elif (stored["config"].get("node_condition") or stored["model"] == "dos-regressor"
          or stored["config"].get("grid_fields") or stored["config"].get("density_crystals")):
        recipe, skip = _without_predicted_folders(recipe, tmp_path)  # label folders or density sets
        data_args = [str(shared_data / "electronic")] * 2
    elif stored["config"].get("require_labels"):  # descriptor ablation: the few DFT crystals lack band gaps
        recipe, skip = _without_predicted_folders(recipe, tmp_path, drop_conditions=True)
        data_args = [str(shared_data / "electronic")] * 2
    else:
        data_args = [data, data, "--limit-train", "8", "--max-val", "4"]
    code = main(["train", *data_args, "--recipe", str(recipe), "--out", str(tmp_path / "run"), "--max-steps", "1",
                 "--device", "cpu", "--threads", "1"])
    assert code == 0 and (tmp_path / "run" / "best.pt").exists()
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    expected = {k: v for k, v in json.loads(recipe.read_text())["config"].items()
                if k not in {"max_steps", "max_val", *skip}}
    assert last["step"] == 1 and last["train"]["config"] | expected == last["train"]["config"]


@pytest.mark.parametrize("section, entry", [("config", {"learning_rate": 1e-3}),
                                            ("model_config", {"avg_num_neighbors": 40}),
                                            ("process", {"sigma_max": 5.0})])
def test_a_recipe_naming_a_setting_its_trainer_does_not_accept_is_refused(section, entry, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"model": "joint" if section == "process" else "score", section: entry}))
    with pytest.raises(ValueError, match=next(iter(entry))):
        load_recipe(path)
    path.write_text(json.dumps({"model": "score", "epochs": 3}))
    with pytest.raises(ValueError, match="unknown key.*'epochs'"):
        load_recipe(path)


def test_joint_recipe_refuses_several_devices(tmp_path):
    with pytest.raises(ValueError, match="one device"):
        train_recipe(Recipe(model="joint"), train="t.csv", val="v.csv", out=tmp_path, devices=2)
