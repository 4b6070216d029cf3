"""The Bader-charge descriptor field of the joint backbone (issue 13): a per-site DDPM field beside A/X/L,
charge neutrality in the sampling loop, charges that follow their atoms, labels from the electronic set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.data import fields as F
from diffase.data.descriptor_records import load_descriptor_records
from diffase.data.structures import record_to_structure
from diffase.diffusion.constraints import ChargeNeutrality
from diffase.diffusion.ddpm import DDPM
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import level_timestep, monotone_schedule
from diffase.generators.joint import JointModel
from diffase.generators.joint_fields import descriptor_row_shapes, joint_fields
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.test_joint import ELEMENTS, _batch

V1_LABELS = ("mp-1000.npz", "mp-10015.npz")  # format 1: no Bader charges
V2_LABELS = ("mp-1070789.npz", "mp-1094608.npz")  # format 2: Bader charges of 5 and 4 sites


def bader_model(seed: int = 0, weight: float = 0.5, dtype: torch.dtype = torch.float64) -> JointModel:
    fields = joint_fields(len(ELEMENTS), descriptors={"bader_charge": weight})
    torch.manual_seed(seed)
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4,
                                            time_dim=16, node_fields=descriptor_row_shapes(fields))).to(dtype)
    return JointModel(net, fields, ELEMENTS, [0, 1, 2, 3, 2], device="cpu")


def _totals(x: torch.Tensor, batch: dict) -> torch.Tensor:
    return torch.zeros(batch[F.NUM_ATOMS].shape[0], dtype=x.dtype).index_add_(0, batch[F.BATCH], x)


# --- the neutrality constraint in the loop -----------------------------------------------------------
def test_neutrality_schedule_drives_the_total_charge_to_zero_at_the_end():
    """A Bader process whose 'network' pushes every crystal to a net charge: with the projection the loop
    ends at zero total charge per crystal, the removed share grows as t falls, and without it the charge
    stays (so the test sees the constraint, not the data)."""
    neutral = ChargeNeutrality(F.BADER_CHARGE)
    assert neutral.strength(1.0) == 0.0 and neutral.strength(0.0) == 1.0 and 0 < neutral.strength(0.5) < 1
    assert ChargeNeutrality(F.BADER_CHARGE, power=2.0).strength(0.5) == pytest.approx(0.25)
    process = DDPM(key=F.BADER_CHARGE, num_levels=20)
    batch = {F.BATCH: torch.tensor([0, 0, 0, 1, 1]), F.NUM_ATOMS: torch.tensor([3, 2]),
             F.CELL: torch.zeros(2, 3, 3, dtype=torch.float64)}
    totals = []

    def charged(b, level):  # predicted noise that moves every charge towards +1 e
        x = b[F.BADER_CHARGE]
        ab = float(process.alpha_bars[level_timestep(level, process.num_levels, process.num_steps)])
        totals.append(_totals(x, b).abs().max().item())
        return {F.BADER_CHARGE: (x - ab**0.5) / (1 - ab) ** 0.5}

    def run(projections):
        totals.clear()
        out = sample(charged, batch, [process], monotone_schedule(20), n_corrector=0, projections=projections,
                     generator=torch.Generator().manual_seed(0))
        return _totals(out[F.BADER_CHARGE], batch)

    free = run(())
    assert torch.allclose(free, torch.tensor([3.0, 2.0], dtype=torch.float64), atol=0.3)  # +1 e per site
    free_mid = totals[15]  # largest |total| at level 4 of 20 (t = 0.25), before its predictor step
    end = run([neutral])
    assert torch.allclose(end, torch.zeros(2, dtype=torch.float64), atol=1e-12)
    # progressive: late in reverse time part of the excess is still there (not projected away at once), less
    # than without the constraint
    assert 0.1 < totals[15] < 0.5 * free_mid
    with pytest.raises(ValueError, match="no process generates"):
        sample(charged, batch, [process], monotone_schedule(20), projections=[ChargeNeutrality(F.HIRSHFELD_CHARGE)])


def test_generated_crystals_carry_neutral_bader_charges_in_site_properties_and_arrays(tmp_path):
    model = bader_model()
    records = next(model.sample(3, num_atoms=[2, 3, 4], num_levels=10, seed=1))
    for rec in records:
        q = rec[F.BADER_CHARGE]
        assert q.shape == (len(rec[F.ATOMIC_NUMBERS]),) and abs(q.sum()) < 1e-9 and np.ptp(q) > 0
    structure = record_to_structure({**records[0], "valid": True, F.ATOMIC_NUMBERS: np.array([3, 8])})
    assert np.array_equal(structure.site_properties[F.BADER_CHARGE], records[0][F.BADER_CHARGE])
    atoms = AseAtomsAdaptor.get_atoms(structure)
    assert np.array_equal(atoms.arrays[F.BADER_CHARGE], records[0][F.BADER_CHARGE])
    # the same model without its projection gives charged crystals: the neutrality comes from the loop
    model.fields["bader_charge"].projection = None
    free = next(model.sample(3, num_atoms=[2, 3, 4], num_levels=10, seed=1))
    assert max(abs(r[F.BADER_CHARGE].sum()) for r in free) > 1e-3


# --- permutations ------------------------------------------------------------------------------------
def test_bader_charges_follow_their_atoms_under_permutation():
    """The denoiser's Bader head is permutation-equivariant: permuting the atoms (with their noisy charges)
    permutes the predicted charges the same way."""
    model = bader_model()
    batch = _batch()
    n = batch[F.BATCH].shape[0]
    batch[F.BADER_CHARGE] = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    out = model.net(batch)[F.BADER_CHARGE]
    assert out.shape == (n,)
    first = int(batch[F.NUM_ATOMS][0])
    perm = torch.cat([torch.randperm(first, generator=torch.Generator().manual_seed(2)),
                      first + torch.arange(n - first).flip(0)])
    permuted = {k: (v[perm] if k in (F.TYPE_TOKENS, F.FRAC_COORDS, F.BADER_CHARGE, F.POSITIONS,
                                     F.ATOMIC_NUMBERS) else v) for k, v in batch.items()}
    assert torch.allclose(model.net(permuted)[F.BADER_CHARGE], out[perm], atol=1e-12)
    assert not torch.allclose(out[perm], out)  # the permutation moves distinct charges


# --- checkpoints -------------------------------------------------------------------------------------
def test_a_bader_checkpoint_records_its_fields_and_reloads_them(tmp_path):
    model = bader_model(weight=0.25, dtype=torch.float32)  # the dtype a checkpoint loads in
    path = tmp_path / "bader.pt"
    torch.save(model.to_checkpoint(), path)
    again = JointModel.from_checkpoint(torch.load(path, weights_only=True), device="cpu")
    assert again.fields.to_list() == model.fields.to_list()
    assert again.fields["bader_charge"].loss_weight == 0.25 and again.descriptor_keys == [F.BADER_CHARGE]
    a = next(model.sample(2, num_atoms=3, num_levels=5, seed=4))
    b = next(again.sample(2, num_atoms=3, num_levels=5, seed=4))
    assert all(np.array_equal(x[F.BADER_CHARGE], y[F.BADER_CHARGE]) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="extra node fields"):
        JointModel(model.net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1], device="cpu")


# --- labels ------------------------------------------------------------------------------------------
def _label_folder(shared_data, tmp_path, files):
    folder = tmp_path / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copy(shared_data / "electronic" / name, folder / name)
    return folder


def test_labels_without_bader_are_skipped_and_counted_and_none_is_an_error(shared_data, tmp_path):
    folder = _label_folder(shared_data, tmp_path, V1_LABELS + V2_LABELS)
    records, names, counts = load_descriptor_records(folder, [F.BADER_CHARGE])
    assert counts["skipped"] == 2 and sorted(names) == ["mp-1070789", "mp-1094608"]
    for rec in records:
        assert rec[F.BADER_CHARGE].shape == rec[F.ATOMIC_NUMBERS].shape
    only_v1 = _label_folder(shared_data, tmp_path / "v1", V1_LABELS)
    with pytest.raises(ValueError, match="no Bader charges"):
        load_descriptor_records(only_v1, [F.BADER_CHARGE])


def test_reduction_keeps_each_charge_on_its_site(shared_data, tmp_path):
    """The Niggli reduction of a label's cell moves sites, never their charges to other sites."""
    from diffase.data.electronic.dataset import label_structure, read_label

    folder = _label_folder(shared_data, tmp_path, V2_LABELS[:1])
    [rec], _, _ = load_descriptor_records(folder, [F.BADER_CHARGE])
    label = read_label(folder / V2_LABELS[0])
    original = label_structure(label)
    assert not np.allclose(rec[F.CELL], original.lattice.matrix)  # this cell does change in the reduction
    frac = original.lattice.get_fractional_coords(rec[F.POSITIONS])  # reduced sites in the original cell
    for f, z, q in zip(frac, rec[F.ATOMIC_NUMBERS], rec[F.BADER_CHARGE]):
        d = original.frac_coords - f
        i = int(np.argmin(np.abs(d - np.round(d)).max(-1)))  # the original site at the same place
        assert np.abs(d[i] - np.round(d[i])).max() < 1e-6 and original[i].specie.Z == z
        assert q == pytest.approx(float(label["bader"][i]), abs=1e-6)


def test_trainer_fits_a_bader_model_on_the_labels_and_its_samples_reach_extxyz(shared_data, tmp_path):
    """One step of the project's joint trainer with the Bader field: v1 files skipped with a count, the
    checkpoint reloads with its field and weight, ``generate`` writes the charges as a per-atom extxyz column;
    a folder of v1 labels only is refused."""
    import ase.io

    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    folder = _label_folder(shared_data, tmp_path, V1_LABELS + V2_LABELS)
    kw = {"model_config": {"hidden": 16, "num_layers": 1, "num_freqs": 4, "time_dim": 16}, "device": "cpu",
          "num_threads": 1, "progress": False}
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1,
                              descriptor_fields={"bader_charge": 0.5})
    with pytest.warns(UserWarning, match="skipped 2 training and 2 validation label files without bader_charge"):
        best = train_joint_model(folder, folder, tmp_path / "run", config=config, **kw)
    model = JointModel.from_checkpoint(torch.load(best, weights_only=True), device="cpu")
    assert model.fields.names[-1] == "bader_charge" and model.fields["bader_charge"].loss_weight == 0.5
    assert model.meta["train"]["n_train"] == 2
    assert model.meta["train"]["skipped_without_descriptors"] == {"train": 2, "val": 2}
    out = tmp_path / "gen.extxyz"
    model.generate(2, out, batch_size=2, num_atoms=3, num_levels=5, seed=0, progress=False)
    for atoms in ase.io.read(out, ":"):  # neutral to float32 and extxyz rounding (8 digits)
        q = atoms.arrays[F.BADER_CHARGE]
        assert q.shape == (3,) and abs(q.sum()) < 1e-6 * np.abs(q).sum()
    only_v1 = _label_folder(shared_data, tmp_path / "v1", V1_LABELS)
    with pytest.raises(ValueError, match="no Bader charges"):
        train_joint_model(only_v1, only_v1, tmp_path / "run-v1", config=config, **kw)


@pytest.mark.parametrize("name", ["joint-bader-tiny", "joint-bader-finetune"])
def test_the_experimental_bader_recipes_are_accepted_by_the_joint_trainer(name):
    from pathlib import Path

    from diffase.train.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "experimental" / f"{name}.json")
    assert recipe.model == "joint" and recipe.config["descriptor_fields"] == {"bader_charge": 1.0}


def test_fine_tuning_starts_from_the_pretrained_weights_and_vocabulary(shared_data, tmp_path):
    """``init_from``: the structure weights and element vocabulary of a pretrained joint model start the run
    (with lr 0 they end unchanged), only the Bader input map and head are new; a pretrained model that never
    saw an element of the labels is refused, naming it."""
    from diffase.generators.joint import make_checkpoint
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    vocabulary = [1, 8, 12, 24, 31, 79]  # H O Mg Cr Ga Au: the labels' elements and two more
    torch.manual_seed(5)
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(vocabulary), hidden=16, num_layers=1, num_freqs=4,
                                            time_dim=16))
    pretrained = tmp_path / "pretrained.pt"
    torch.save(make_checkpoint(net, joint_fields(len(vocabulary)), vocabulary, [0, 1, 2]), pretrained)
    folder = _label_folder(shared_data, tmp_path, V2_LABELS)
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1, lr=0.0, ema_decay=0.5,
                              descriptor_fields={"bader_charge": 1.0}, init_from=str(pretrained))
    best = train_joint_model(folder, folder, tmp_path / "run", config=config, device="cpu", num_threads=1,
                             progress=False)
    model = JointModel.from_checkpoint(torch.load(best, weights_only=True), device="cpu")
    assert model.elements == vocabulary and model.descriptor_keys == [F.BADER_CHARGE]
    tuned = model.net.state_dict()
    for key, value in net.state_dict().items():
        assert torch.allclose(tuned[key], value, atol=1e-6), key
    assert {k.split(".")[0] for k in tuned if k not in net.state_dict()} == {"field_inputs", "field_heads"}
    torch.save(make_checkpoint(net, joint_fields(len(vocabulary)), [1, 8, 12, 24, 31, 80], [0, 1]), pretrained)
    with pytest.raises(ValueError, match="never saw Au"):
        train_joint_model(folder, folder, tmp_path / "run-2", config=config, device="cpu", progress=False)


def test_predicted_labels_are_read_marked_and_reported(shared_data, tmp_path):
    """A label written by a predictor (no density grid, ``predicted_by`` set) is used, its records say so, and the
    trainer warns and records how many training labels were predicted."""
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    folder = _label_folder(shared_data, tmp_path, V2_LABELS[:1])
    with np.load(shared_data / "electronic" / V2_LABELS[1]) as npz:
        label = {k: npz[k] for k in npz.files if k != "rho32"}
    np.savez(folder / "predicted.npz", **label, predicted_by=np.array("site-labels-mp20"))
    records, _, counts = load_descriptor_records(folder, [F.BADER_CHARGE])
    assert counts["skipped"] == 0 and sorted(r["label_source"] for r in records) == ["dft", "site-labels-mp20"]
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1,
                              descriptor_fields={"bader_charge": 1.0})
    with pytest.warns(UserWarning, match="1 of the 2 training labels were predicted"):
        best = train_joint_model(folder, folder, tmp_path / "run", config=config, device="cpu", num_threads=1,
                                 progress=False, model_config={"hidden": 16, "num_layers": 1, "time_dim": 16})
    meta = torch.load(best, weights_only=True)["train"]
    assert meta["descriptor_label_sources"] == {"dft": 1, "site-labels-mp20": 1}
