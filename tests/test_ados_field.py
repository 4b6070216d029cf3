"""The atomic-DOS latent field and the dummy control field of the joint backbone (issue 13): the autoencoder,
the latent range restriction in the sampling loop, descriptors that follow their atoms, the control field's
seeding, labels without a site DOS, and ``diffase generate --descriptors``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.data.descriptor_records import dummy_values, load_descriptor_records
from diffase.diffusion.constraints import LatentRange
from diffase.diffusion.ddpm import DDPM
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import level_timestep, monotone_schedule
from diffase.generators.descriptor_decoding import AUTOENCODER_ENTRY
from diffase.generators.joint import JointModel
from diffase.generators.joint_fields import (
    ADOS_LATENT_DIM,
    descriptor_row_shapes,
    joint_fields,
)
from diffase.nn.dos_autoencoder import (
    DosAutoencoder,
    DosAutoencoderConfig,
    DosLossWeights,
    dos_reconstruction_loss,
    make_checkpoint,
)
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.test_joint import ELEMENTS, _batch

V2_LABELS = ("mp-1070789.npz", "mp-1094608.npz")  # 5 and 4 sites, site DOS on -10..10 eV, 512 points


def tiny_autoencoder(seed: int = 0) -> DosAutoencoder:
    torch.manual_seed(seed)
    return DosAutoencoder(DosAutoencoderConfig(latent_dim=ADOS_LATENT_DIM, channels=2))


def descriptor_model(descriptors: dict, seed: int = 0) -> JointModel:
    fields = joint_fields(len(ELEMENTS), descriptors=descriptors)
    torch.manual_seed(seed)
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4,
                                            time_dim=16, node_fields=descriptor_row_shapes(fields))).double()
    meta = {AUTOENCODER_ENTRY: make_checkpoint(tiny_autoencoder(), DosLossWeights())}
    return JointModel(net, fields, ELEMENTS, [0, 1, 2, 3, 2], device="cpu", meta=meta)


# --- autoencoder -------------------------------------------------------------------------------------
def test_autoencoder_round_trip_shapes_latent_range_and_non_negative_dos():
    ae = tiny_autoencoder()
    dos = torch.rand(6, 512, dtype=torch.float32) * torch.tensor([0.1, 1, 10, 100, 1e3, 1e4])[:, None]
    z = ae.encode(dos)
    assert z.shape == (6, ADOS_LATENT_DIM) and z.abs().max() <= 1.0
    assert z.abs().max() > 0.5  # LayerNorm before tanh: entries spread over the range, not squashed to 0
    recon = ae.decode(z)
    assert recon.shape == (6, 512) and recon.min() >= 0 and ae(dos).shape == (6, 512)
    np.testing.assert_allclose(ae.decode_numpy(ae.encode_numpy(dos.numpy())), recon.detach().numpy(), rtol=1e-5)
    assert np.allclose(DosAutoencoderConfig().grid()[[0, -1]], [-10.0, 10.0])


def test_composite_loss_terms_vanish_on_a_perfect_reconstruction_and_follow_their_weights():
    target = torch.rand(4, 512) * 5
    total, parts = dos_reconstruction_loss(target.clone(), target, DosLossWeights())
    assert total.item() == pytest.approx(0.0, abs=1e-10) and set(parts) == {"linear", "log", "shape", "gradient"}
    pred = target.roll(7, dims=1)  # same values, shifted in energy: only the linear-scale terms see it
    _, parts = dos_reconstruction_loss(pred, target, DosLossWeights())
    assert all(v > 0 for v in parts.values())
    only_shape, _ = dos_reconstruction_loss(pred, target, DosLossWeights(linear=0, log=0, gradient=0))
    assert only_shape.item() == pytest.approx(parts["shape"].item())
    _, scaled_parts = dos_reconstruction_loss(2 * target, target, DosLossWeights())
    assert scaled_parts["shape"].item() == pytest.approx(0.0, abs=1e-8) and scaled_parts["linear"] > 0


# --- latent range restriction ------------------------------------------------------------------------
def test_range_restriction_keeps_latents_in_range_at_the_end_and_is_weak_early():
    """A latent process whose 'network' pushes every entry towards +3: with the restriction the loop ends in
    [-1, 1], early levels still leave entries beyond it, and without the restriction the end stays near 3."""
    restrict = LatentRange(F.ADOS_LATENT)
    x = torch.tensor([[3.0, -2.0, 0.5]])
    assert torch.equal(restrict(x, 0.0, {}), torch.tensor([[1.0, -1.0, 0.5]]))
    assert torch.allclose(restrict(x, 0.95, {}), torch.tensor([[2.9, -1.95, 0.5]]))
    process = DDPM(key=F.ADOS_LATENT, row_shape=(4,), num_levels=20)
    batch = {F.BATCH: torch.tensor([0, 0, 0, 1, 1]), F.NUM_ATOMS: torch.tensor([3, 2]),
             F.CELL: torch.zeros(2, 3, 3, dtype=torch.float64)}
    seen = []

    def pushes_to_three(b, level):
        z = b[F.ADOS_LATENT]
        ab = float(process.alpha_bars[level_timestep(level, process.num_levels, process.num_steps)])
        seen.append(z.abs().max().item())
        return {F.ADOS_LATENT: (z - 3 * ab**0.5) / (1 - ab) ** 0.5}

    def run(projections):
        seen.clear()
        return sample(pushes_to_three, batch, [process], monotone_schedule(20), n_corrector=0,
                      projections=projections, generator=torch.Generator().manual_seed(0))[F.ADOS_LATENT]

    free = run(())
    assert free.min() > 2.5  # the 'network' alone ends far outside the range
    end = run([restrict])
    assert end.shape == (5, 4) and end.abs().max() <= 1.0 and torch.allclose(end, torch.ones_like(end), atol=0.05)
    assert max(seen[2:8]) > 1.5  # early in reverse time the restriction lets latents leave [-1, 1]
    with pytest.raises(ValueError, match="not a node field"):
        LatentRange(F.CELL)


def test_generated_crystals_carry_latents_in_range_and_decoded_non_negative_dos():
    model = descriptor_model({"ados_latent": 1.0})
    records = next(model.sample(3, num_atoms=[2, 3, 4], num_levels=10, seed=1))
    for rec in records:
        n = len(rec[F.ATOMIC_NUMBERS])
        assert rec[F.ADOS_LATENT].shape == (n, ADOS_LATENT_DIM) and np.abs(rec[F.ADOS_LATENT]).max() <= 1.0
        assert rec[F.ATOMIC_DOS].shape == (n, 512) and rec[F.ATOMIC_DOS].min() >= 0
    again = JointModel.from_checkpoint(model.to_checkpoint(), device="cpu")  # the decoder travels with the model
    assert AUTOENCODER_ENTRY in again.meta
    model.fields["ados_latent"].projection = None
    free = next(model.sample(3, num_atoms=[2, 3, 4], num_levels=10, seed=1))
    assert max(np.abs(r[F.ADOS_LATENT]).max() for r in free) > 1.0  # the range comes from the loop
    del model.meta[AUTOENCODER_ENTRY]
    with pytest.raises(ValueError, match="holds no 'dos_autoencoder'"):
        next(model.sample(1, num_atoms=2, num_levels=3, seed=1))


# --- permutations ------------------------------------------------------------------------------------
def test_descriptor_outputs_follow_their_atoms_under_permutation():
    model = descriptor_model({"bader_charge": 1.0, "ados_latent": 1.0, "dummy_descriptor": 1.0})
    batch = _batch()
    n = batch[F.BATCH].shape[0]
    gen = torch.Generator().manual_seed(3)
    batch[F.BADER_CHARGE] = torch.randn(n, generator=gen, dtype=torch.float64)
    batch[F.ADOS_LATENT] = torch.randn(n, ADOS_LATENT_DIM, generator=gen, dtype=torch.float64)
    batch[F.DUMMY_DESCRIPTOR] = torch.randn(n, generator=gen, dtype=torch.float64)
    out = model.net(batch)
    first = int(batch[F.NUM_ATOMS][0])
    perm = torch.cat([torch.randperm(first, generator=torch.Generator().manual_seed(2)),
                      first + torch.arange(n - first).flip(0)])
    per_atom = (F.TYPE_TOKENS, F.FRAC_COORDS, F.POSITIONS, F.ATOMIC_NUMBERS, *model.descriptor_keys)
    permuted = model.net({k: (v[perm] if k in per_atom else v) for k, v in batch.items()})
    for key in model.descriptor_keys:
        assert out[key].shape[0] == n
        assert torch.allclose(permuted[key], out[key][perm], atol=1e-12), key
        assert not torch.allclose(out[key][perm], out[key]), key  # the permutation moves distinct values


# --- labels ------------------------------------------------------------------------------------------
def _label_folder(shared_data, folder, files, drop=()):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        if not drop:
            shutil.copy(shared_data / "electronic" / name, folder / name)
            continue
        with np.load(shared_data / "electronic" / name) as npz:
            np.savez(folder / name, **{k: npz[k] for k in npz.files if k not in drop})
    return folder


def test_dummy_field_is_reproducible_per_seed_and_follows_sites_through_the_reduction(shared_data, tmp_path):
    a = dummy_values("mp-1", 500)
    assert np.array_equal(a, dummy_values("mp-1", 500)) and not np.allclose(a, dummy_values("mp-1", 500, seed=1))
    assert not np.allclose(a, dummy_values("mp-2", 500))
    assert abs(a.mean()) < 0.15 and abs(a.std() - 1) < 0.1  # N(0, 1)
    folder = _label_folder(shared_data, tmp_path / "labels", V2_LABELS[:1])
    [rec], [name], _ = load_descriptor_records(folder, [F.DUMMY_DESCRIPTOR, F.BADER_CHARGE])
    from diffase.data.electronic.dataset import read_label

    label = read_label(folder / V2_LABELS[0])
    order = [int(np.argmin(np.abs(label["bader"] - q))) for q in rec[F.BADER_CHARGE]]  # site of each record row
    assert np.allclose(rec[F.DUMMY_DESCRIPTOR], dummy_values(name, len(label["bader"]))[order])


def _autoencoder_file(tmp_path):
    path = tmp_path / "ae.pt"
    torch.save(make_checkpoint(tiny_autoencoder(), DosLossWeights()), path)
    return path


def test_labels_without_site_dos_are_an_error_for_an_ados_model(shared_data, tmp_path):
    from diffase.train.descriptor_labels import DescriptorLabels

    labels = DescriptorLabels([F.ADOS_LATENT], _autoencoder_file(tmp_path))
    records, _, counts = labels.load(_label_folder(shared_data, tmp_path / "ok", V2_LABELS))
    assert counts["skipped"] == 0 and all(r[F.ADOS_LATENT].shape == (len(r[F.ATOMIC_NUMBERS]), 30) for r in records)
    assert all(F.SITE_DOS not in r for r in records)
    no_dos = _label_folder(shared_data, tmp_path / "no-dos", V2_LABELS, drop=("dos",))
    with pytest.raises(ValueError, match="has ados_latent|has site_dos.*no site DOS"):
        labels.load(no_dos)
    with pytest.raises(ValueError, match="needs a frozen atomic-DOS autoencoder"):
        DescriptorLabels([F.ADOS_LATENT], None)


def test_trainer_and_generate_descriptors_write_decoded_dos_arrays_and_a_summary(shared_data, tmp_path, capsys):
    """One step of the joint trainer with the ADOS and dummy fields, the autoencoder copied into the checkpoint,
    and ``diffase generate --descriptors`` writing per-atom arrays and the summary CSV; a structure-only model
    is refused with the flag."""
    import ase.io
    import pandas as pd

    from diffase.cli import main
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    folder = _label_folder(shared_data, tmp_path / "labels", V2_LABELS)
    config = JointTrainConfig(epochs=1, max_steps=1, batch_size=2, warmup_steps=1,
                              descriptor_fields={"ados_latent": 1.0, "dummy_descriptor": 0.5},
                              dos_autoencoder=str(_autoencoder_file(tmp_path)))
    best = train_joint_model(folder, folder, tmp_path / "run", config=config, device="cpu", num_threads=1,
                             progress=False, model_config={"hidden": 16, "num_layers": 1, "num_freqs": 4,
                                                           "time_dim": 16})
    ckpt = torch.load(best, weights_only=True)
    assert ckpt[AUTOENCODER_ENTRY]["sha256"] and ckpt[AUTOENCODER_ENTRY]["model_config"]["channels"] == 2
    out = tmp_path / "gen.extxyz"
    code = main(["generate", "--model", str(best), "--n", "2", "--num-atoms", "3", "--steps", "5", "--out", str(out),
                 "--device", "cpu", "--descriptors"])
    assert code == 0
    frames = ase.io.read(out, ":")
    for atoms in frames:
        assert atoms.arrays[F.ATOMIC_DOS].shape == (3, 512) and atoms.arrays[F.ATOMIC_DOS].min() >= 0
        assert atoms.arrays[F.ADOS_LATENT].shape == (3, 30) and atoms.arrays[F.DUMMY_DESCRIPTOR].shape == (3,)
    summary = pd.read_csv(out.with_name(out.name + ".descriptors.csv"))
    assert len(summary) == len(frames) and {"formula", "n_atoms", "dos_at_fermi_states_per_eV", "latent_abs_max",
                                            "mean_dummy"} <= set(summary.columns)
    assert (summary["latent_abs_max"] <= 1.0).all() and (summary["n_atoms"] == 3).all()
    structure_only = tmp_path / "plain.pt"
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=8, num_layers=1, time_dim=8))
    torch.save(JointModel(net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1], device="cpu").to_checkpoint(),
               structure_only)
    code = main(["generate", "--model", str(structure_only), "--n", "1", "--out", str(tmp_path / "p.extxyz"),
                 "--device", "cpu", "--descriptors"])
    assert code != 0 and "generates the structure only" in capsys.readouterr().err
    assert not (tmp_path / "p.extxyz").exists()


@pytest.mark.parametrize("name", ["joint-ados-finetune", "joint-dummy-finetune"])
def test_the_experimental_descriptor_recipes_are_accepted_and_match_the_bader_budget(name):
    import json
    from pathlib import Path

    from diffase.train.recipe import load_recipe

    root = Path(__file__).resolve().parents[1] / "recipes" / "experimental"
    recipe = load_recipe(root / f"{name}.json")
    bader = json.loads((root / "joint-bader-finetune.json").read_text())["config"]
    assert recipe.config["init_from"] == "joint-mp20" and len(recipe.config["descriptor_fields"]) == 1
    own = {"descriptor_fields", "dos_autoencoder"}
    assert {k: v for k, v in recipe.config.items() if k not in own} == {k: v for k, v in bader.items() if k not in own}
