"""The model side of DOSMatGen (issue 16): a joint model conditioned per atom on the site DOS.

Guidance identities at the score-function level, masked sites (given rows reach the network transformed, free
rows take the null vector), the template start, per-crystal dropout of the site DOS in training, refusals (DOS of
the wrong length, NaN inside a row, a model without site-DOS conditioning), the trainer over a DFT and a predicted
label folder with held-out materials, the checkpoint contract (``node_condition``, transform round trip), and the
integral-conserving resampling."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.diffusion.guidance import guided_score_fn, training_dropout
from diffase.generators.joint import JointModel, make_checkpoint
from diffase.generators.joint_fields import joint_fields
from diffase.generators.node_condition import (
    apply_transform,
    invert_transform,
    resample_dos,
    site_dos_spec,
)
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.helpers import rocksalt
from tests.test_joint import ELEMENTS, _batch, tiny_model

N = 8  # points of the tiny site-DOS grid
SPEC = site_dos_spec(N, sigma_eV=0.07)


def dos_model(seed: int = 0) -> JointModel:
    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              node_cond_dim=N)
    net = JointDenoiser(cfg).to(torch.float64)
    with torch.no_grad():  # a visible null vector, so "free" differs from a given zero DOS
        net.node_cond.null.normal_()
    return JointModel(net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1, 2, 3, 2], device="cpu",
                      node_condition=SPEC)


def _raw(n_atoms: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 1.0, (n_atoms, N))


# --- guidance ---------------------------------------------------------------------------------------------
def test_guidance_0_is_the_unconditional_network_and_1_the_conditional_one():
    model = dos_model()
    fn = model.model_fn(model.fields)
    batch = _batch()
    n = batch[F.BATCH].shape[0]
    batch[F.NODE_COND] = torch.as_tensor(apply_transform(SPEC, _raw(n)))
    free = {**batch, F.NODE_COND: torch.full_like(batch[F.NODE_COND], float("nan"))}
    uncond, cond = fn(free, 300), fn(batch, 300)
    for scale, expected in ((0.0, uncond), (1.0, cond)):
        out = guided_score_fn(fn, scale)(batch, 300)
        for key in (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL):
            assert torch.equal(out[key], expected[key]), (scale, key)
    assert not torch.allclose(uncond[F.FRAC_COORDS], cond[F.FRAC_COORDS])
    two = guided_score_fn(fn, 2.0)(batch, 300)  # w = 2: u + 2 (c - u), DOSMatGen's w = scale - 1 = 1
    assert torch.allclose(two[F.CELL], 2 * cond[F.CELL] - uncond[F.CELL])


def test_masked_sites_get_their_transformed_dos_and_free_sites_the_null_vector(monkeypatch):
    model = dos_model()
    s = rocksalt()
    raw = np.full((len(s), N), np.nan)
    raw[0] = _raw(1, seed=3)[0]
    seen_in, seen_out = [], []
    embed = model.net.node_cond
    real = embed.forward

    def spy(value, n_atoms, like):
        out = real(value, n_atoms, like)
        seen_in.append(None if value is None else value.clone())
        seen_out.append(out.detach().clone())
        return out

    monkeypatch.setattr(embed, "forward", spy)
    list(model.sample_from([s], t_start=0.1, node_conditions=[raw], guidance_scale=2.0, num_levels=10, seed=0))
    conditional = [(x, o) for x, o in zip(seen_in, seen_out) if not torch.isnan(x).all()]
    unconditional = [o for x, o in zip(seen_in, seen_out) if torch.isnan(x).all()]
    assert conditional and len(unconditional) == len(conditional)  # scale 2: one call of each per evaluation
    expected = torch.as_tensor(np.log1p(raw[0]))
    null = embed.null.detach()
    for x, o in conditional:
        assert torch.allclose(x[0], expected)  # raw states/eV in, log1p inside the model
        assert torch.allclose(o[0], embed.map(expected).detach())
        assert torch.isnan(x[1:]).all() and torch.equal(o[1:], null.expand(len(s) - 1, -1))
    for o in unconditional:
        assert torch.equal(o, null.expand(len(s), -1))


def test_template_started_at_the_smallest_t_start_returns_the_template():
    model = dos_model()
    s = rocksalt()
    [[rec]] = list(model.sample_from([s], t_start=1e-3, node_conditions=[_raw(len(s))], seed=0))  # level 1 of 1000
    reduced = s.get_reduced_structure()
    assert rec["valid"] and rec[F.ATOMIC_NUMBERS].tolist() == [site.specie.Z for site in reduced]
    d = rec[F.FRAC_COORDS] - reduced.frac_coords
    assert np.abs(d - np.round(d)).max() < 0.03  # the template's noise at level 1: sigma ~ 0.005 per coordinate
    assert np.allclose(np.abs(rec[F.CELL]), np.abs(reduced.lattice.matrix), atol=0.05)


def test_sample_takes_one_dos_per_crystal_and_its_atom_counts():
    model = dos_model()
    raws = [_raw(2), _raw(3, seed=1)]
    [records] = list(model.sample(2, node_conditions=raws, guidance_scale=1.5, num_levels=4, seed=0))
    assert [len(r[F.ATOMIC_NUMBERS]) for r in records] == [2, 3]
    with pytest.raises(ValueError, match="disagrees with the rows"):
        next(model.sample(2, num_atoms=2, node_conditions=raws, num_levels=4))
    with pytest.raises(ValueError, match="3 per-atom condition arrays for n=2"):
        next(model.sample(2, node_conditions=raws + raws[:1], num_levels=4))


# --- training --------------------------------------------------------------------------------------------
def test_training_drops_the_site_dos_per_crystal():
    counts = torch.tensor([2, 3, 4] * 300)
    n = int(counts.sum())
    batch = {F.NUM_ATOMS: counts, F.BATCH: torch.repeat_interleave(torch.arange(900), counts),
             F.NODE_COND: torch.ones(n, N)}
    out = training_dropout(batch, p_uncond=0.2, generator=torch.Generator().manual_seed(1))
    dropped = torch.isnan(out[F.NODE_COND])
    assert torch.equal(dropped.all(-1), dropped.any(-1))  # whole rows
    per_crystal = torch.zeros(900, dtype=torch.float64).index_add_(0, batch[F.BATCH], dropped.all(-1).double())
    assert set(per_crystal.tolist()) <= {0.0} | set(counts.double().tolist())  # whole crystals, mixed in a batch
    frac = (per_crystal > 0).double().mean().item()
    assert 0.15 < frac < 0.25


def _labels(shared_data, tmp_path):
    """A DFT folder of 4 labels and a predicted folder: 2 new materials plus a copy of a DFT one."""
    from diffase.data.electronic.dataset import read_label, write_index

    names = ["mp-1000.npz", "mp-10015.npz", "mp-1070789.npz", "mp-1094608.npz"]
    dft, predicted = tmp_path / "dft", tmp_path / "predicted"
    dft.mkdir()
    predicted.mkdir()
    for name in names:
        shutil.copy(shared_data / "electronic" / name, dft / name)
    for i, name in enumerate(names[:3]):
        label = read_label(shared_data / "electronic" / name)
        label = {k: v for k, v in label.items() if k not in ("rho32", "format_version")}
        mid = label["material_id"] if i == 0 else f"pred-{i}"
        np.savez(predicted / f"{mid}.npz", **{**label, "material_id": np.array(mid),
                                              "predicted_by": np.array("site-labels-mp20"),
                                              "dos_sigma": np.float64(0.0707)})
    write_index(dft)
    return dft, predicted, [read_label(dft / n)["material_id"] for n in names]


def test_trainer_reads_dft_and_predicted_folders_counts_them_and_holds_out(shared_data, tmp_path):
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    dft, predicted, ids = _labels(shared_data, tmp_path)
    split = tmp_path / "predictor.pt"  # a site-label predictor's split: ids[3] tested, ids[2] validates
    torch.save({"kind": "diffase-site-labels-v1", "train": {"split": {"train": ids[:2], "val": [ids[2]],
                                                                       "test": [ids[3]]}}}, split)
    config = JointTrainConfig(epochs=1, max_steps=2, batch_size=2, warmup_steps=1, node_condition="site_dos",
                              node_condition_points=N, label_folders=[str(predicted)], hold_out_from=str(split))
    with pytest.warns(UserWarning, match="2 of the 4 training site DOS were predicted"):
        best = train_joint_model(dft, dft, tmp_path / "run", config=config, device="cpu", num_threads=1,
                                 progress=False, model_config={"hidden": 16, "num_layers": 1, "time_dim": 16,
                                                               "num_freqs": 4})
    ckpt = torch.load(best, weights_only=True)
    meta = ckpt["train"]
    assert meta["node_condition_label_sources"] == {"dft": 2, "site-labels-mp20": 2}
    counts = meta["node_condition_counts"]
    assert counts["train"]["duplicates"] == 1  # the DFT label wins over its predicted copy
    assert counts["train"]["excluded"] == 2 and counts["val"]["sources"] == {"dft": 1}
    assert meta["n_train"] == 4 and meta["n_val"] == 1 and meta["held_out"]["test"] == [ids[3]]
    assert ckpt["node_condition"] == {**SPEC, "sigma_eV": pytest.approx(0.1 / np.sqrt(2), rel=1e-6)}
    model = JointModel.from_checkpoint(ckpt, device="cpu")
    assert model.node_condition == ckpt["node_condition"] and model.net.config.node_cond_dim == N
    again = JointModel.from_checkpoint(model.to_checkpoint(), device="cpu")  # the transform travels along
    assert again.node_condition == model.node_condition
    raw = _raw(2)
    assert np.allclose(again._node_condition_arrays([raw], [{F.ATOMIC_NUMBERS: np.zeros(2)}])[0], np.log1p(raw))


def test_records_carry_the_resampled_transformed_dos_on_their_sites(shared_data, tmp_path):
    from diffase.data.descriptor_records import load_site_dos_records
    from diffase.data.electronic.dataset import label_structure, read_label

    dft, _, _ = _labels(shared_data, tmp_path)
    records, names, _ = load_site_dos_records([dft], SPEC)
    i = names.index("mp-1070789")
    label = read_label(dft / "mp-1070789.npz")
    original = label_structure(label)
    raw = resample_dos(label["dos_grid"], label["dos"], -10, 10, N)
    rec = records[i]
    frac = original.lattice.get_fractional_coords(rec[F.POSITIONS])
    for f, row in zip(frac, rec[F.NODE_COND]):
        d = original.frac_coords - f
        j = int(np.argmin(np.abs(d - np.round(d)).max(-1)))  # the original site at the same place
        assert np.allclose(invert_transform(SPEC, row), raw[j], atol=1e-9)


def test_fine_tuning_adds_a_zero_site_dos_input_so_step_0_is_the_prior():
    from diffase.train.joint_trainer import _fine_tune_config, _load_pretrained_weights

    prior = tiny_model()
    pretrained = prior.to_checkpoint()
    net = JointDenoiser(_fine_tune_config(pretrained, None, [], {}, N)).double()
    _load_pretrained_weights(net, pretrained)
    batch = _batch()
    batch[F.TIME] = torch.full((batch[F.NUM_ATOMS].shape[0],), 0.4, dtype=torch.float64)
    expected = prior.net(batch)
    for node_cond in (torch.randn(batch[F.BATCH].shape[0], N, dtype=torch.float64), None):
        out = net({**batch, F.NODE_COND: node_cond} if node_cond is not None else batch)
        for key in (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL):
            assert torch.allclose(out[key], expected[key], atol=1e-12)


# --- refusals --------------------------------------------------------------------------------------------
def test_wrong_length_nan_inside_a_row_and_models_without_site_dos_are_refused():
    model = dos_model()
    s = rocksalt()
    bad_length = np.ones((len(s), N + 1))
    with pytest.raises(ValueError, match=f"needs {N} per row"):
        next(model.sample_from([s], t_start=0.2, node_conditions=[bad_length], num_levels=3))
    partial = _raw(len(s))
    partial[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"row\(s\) \[1\] hold NaN among numbers"):
        next(model.sample_from([s], t_start=0.2, node_conditions=[partial], num_levels=3))
    with pytest.raises(ValueError, match="not trained with per-atom conditions"):
        next(tiny_model().sample_from([s], t_start=0.2, node_conditions=[_raw(len(s))], num_levels=3))
    with pytest.raises(ValueError, match="not trained with per-atom conditions"):
        next(tiny_model().sample(1, node_conditions=[_raw(2)], num_levels=3))
    assert tiny_model().node_condition is None
    with pytest.raises(ValueError, match="node condition of 5 points"):
        JointModel(model.net, model.fields, ELEMENTS, [0, 1], device="cpu", node_condition=site_dos_spec(5))


def test_a_checkpoint_without_node_condition_loads_with_none():
    ckpt = make_checkpoint(tiny_model().net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1])
    assert "node_condition" not in ckpt
    assert JointModel.from_checkpoint(ckpt, device="cpu").node_condition is None


# --- grid and transform ---------------------------------------------------------------------------------
def test_resampling_conserves_the_integral_and_the_transform_round_trips():
    e = np.linspace(-10, 10, 512)
    rng = np.random.default_rng(0)
    peaks = [w * np.exp(-0.5 * ((e - c) / 0.07) ** 2) for w, c in zip(rng.uniform(0.5, 3, 3), (-4.3, -0.2, 2.9))]
    dos = np.vstack([*peaks, np.exp(-0.5 * ((e - 9.97) / 0.07) ** 2)])  # the last: a peak at the window's edge
    out = resample_dos(e, dos, -10, 10, 128)
    assert out.shape == (4, 128) and (out >= 0).all()
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    assert np.allclose(trapezoid(out, np.linspace(-10, 10, 128)), trapezoid(dos, e), rtol=1e-12)
    assert np.allclose(resample_dos(e, np.full(512, 2.5), -10, 10, 128), 2.5)  # a flat DOS stays flat
    raw = np.vstack([out[:1], np.full((1, 128), np.nan)])
    assert np.allclose(invert_transform(SPEC, apply_transform(SPEC, raw))[0], raw[0])
    assert np.isnan(apply_transform(SPEC, raw)[1]).all()
    with pytest.raises(ValueError, match="transform"):
        site_dos_spec(8, transform="sqrt")


def test_the_dos_recipe_is_accepted_by_the_joint_trainer():
    from pathlib import Path

    from diffase.train.recipe import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "dos-mp20.json")
    assert recipe.config["node_condition"] == "site_dos" and recipe.config["p_uncond"] == 0.2
    assert recipe.config["init_from"] == "joint-mp20" and recipe.config["hold_out_from"] == "site-labels-mp20"
