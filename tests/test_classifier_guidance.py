"""Classifier guidance with a time-dependent site-DOS regressor (DOSMatGen's alternative to CFG, issue 16).

Scale 0 is plain sampling exactly; one guided predictor step lowers the regressor's loss against an unguided
step from the same state and noise (the sign and units of the gradient); NaN (free) rows add no gradient;
classifiers on another DOS grid or element vocabulary are refused; the trainer and its recipe run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.diffusion.guidance import classifier_guided_score_fn, site_dos_loss
from diffase.generators.dos_regressor import PRED_KEY, DOSRegressor
from diffase.generators.node_condition import apply_transform, site_dos_spec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.helpers import rocksalt
from tests.test_dos_conditioning import SPEC, N, _raw, dos_model
from tests.test_joint import ELEMENTS, _batch, tiny_model


def tiny_regressor(spec=SPEC, elements=ELEMENTS, seed=1) -> DOSRegressor:
    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(elements), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              node_fields={PRED_KEY: [spec["n_points"]]})
    return DOSRegressor(JointDenoiser(cfg).to(torch.float64), spec, elements, device="cpu")


def _records(**kw):
    s = rocksalt()
    return [r for batch in dos_model().sample_from([s, s], t_start=0.5, node_conditions=[_raw(len(s), 0), _raw(len(s), 1)],
                                                   num_levels=10, seed=3, **kw) for r in batch]


def test_scale_0_is_plain_sampling_exactly_and_a_positive_scale_changes_it():
    plain, off, on = _records(), _records(classifier=tiny_regressor(), classifier_scale=0.0), \
        _records(classifier=tiny_regressor(), classifier_scale=50.0)
    for a, b in zip(plain, off):
        for key in (F.ATOMIC_NUMBERS, F.FRAC_COORDS, F.CELL):
            assert np.array_equal(a[key], b[key]), key
    assert not np.allclose(plain[0][F.FRAC_COORDS], on[0][F.FRAC_COORDS])


def _guided_step_loss(scale: float, lattice: bool) -> float:
    """Regressor loss after one predictor step (coordinates and cell) from a fixed noisy state and noise."""
    model, reg = dos_model(), tiny_regressor()
    fields = model.fields.respaced(10)
    batch = _batch()
    batch[F.NODE_COND] = torch.as_tensor(apply_transform(SPEC, _raw(batch[F.BATCH].shape[0])))
    coords, cell = fields["coords"].process, fields["lattice"].process
    level, reg_fn = 6, reg.level_fn(fields)
    score_fn = classifier_guided_score_fn(model.model_fn(fields), reg_fn, scale, coords, cell if lattice else None)
    out = score_fn(batch, level)
    after = dict(batch)
    for proc in (coords, cell):
        gen = torch.Generator().manual_seed(7)
        after[proc.key] = proc.predictor_step(batch[proc.key], out[proc.key], level, batch, generator=gen)
    with torch.no_grad():
        return float(site_dos_loss(reg_fn(after, level - 1), batch[F.NODE_COND]))


@pytest.mark.parametrize("lattice", [False, True])
def test_one_guided_step_lowers_the_regressor_loss(lattice):
    plain = _guided_step_loss(0.0, lattice)
    guided = [_guided_step_loss(s, lattice) for s in (0.3, 1.0)]
    assert guided[0] < plain and guided[1] < guided[0], (plain, guided)


def test_free_rows_add_no_gradient():
    model, reg = tiny_model(), tiny_regressor()  # a network that does not read node_cond: only the gradient differs
    fields = model.fields.respaced(10)
    batch = _batch()
    n = batch[F.BATCH].shape[0]
    reg_fn, base = reg.level_fn(fields), model.model_fn(fields)
    target = torch.as_tensor(apply_transform(SPEC, _raw(n)))
    with torch.no_grad():
        own = reg_fn(batch, 6)

    def guided(node_cond):
        fn = classifier_guided_score_fn(base, reg_fn, 5.0, fields["coords"].process, fields["lattice"].process)
        return fn({**batch, F.NODE_COND: node_cond}, 6)

    plain = base(batch, 6)
    all_free = guided(torch.full_like(target, float("nan")))
    for key in (F.FRAC_COORDS, F.CELL):
        assert torch.equal(all_free[key], plain[key])
    free_row = target.clone()
    free_row[0] = float("nan")
    zero_residual = target.clone()
    zero_residual[0] = own[0]  # a row whose prediction is its target contributes no gradient either
    a, b = guided(free_row), guided(zero_residual)
    for key in (F.FRAC_COORDS, F.CELL):
        assert torch.isfinite(a[key]).all() and torch.allclose(a[key], b[key], atol=1e-12)
        assert not torch.allclose(a[key], plain[key])


def test_classifiers_on_another_grid_or_vocabulary_and_missing_targets_are_refused():
    s = rocksalt()
    model = dos_model()
    with pytest.raises(ValueError, match="grid differs"):
        next(model.sample_from([s], t_start=0.5, node_conditions=[_raw(len(s))],
                               classifier=tiny_regressor(site_dos_spec(2 * N, sigma_eV=0.07))))
    with pytest.raises(ValueError, match="vocabulary"):
        next(model.sample_from([s], t_start=0.5, node_conditions=[_raw(len(s))],
                               classifier=tiny_regressor(elements=[*ELEMENTS[:-1], 19])))
    with pytest.raises(ValueError, match="node_conditions"):
        next(model.sample_from([s], t_start=0.5, classifier=tiny_regressor()))


def test_a_model_without_site_dos_is_guided_on_the_classifiers_grid():
    s = rocksalt()
    model = tiny_model()
    with pytest.raises(ValueError, match="classifier="):
        next(model.sample_from([s], t_start=0.5, node_conditions=[_raw(len(s))]))
    kw = {"t_start": 0.5, "node_conditions": [_raw(len(s))], "num_levels": 10, "seed": 0, "classifier": tiny_regressor()}
    [[off]] = list(model.sample_from([s], classifier_scale=0.0, **kw))
    [[on]] = list(model.sample_from([s], classifier_scale=50.0, **kw))
    [[plain]] = list(model.sample_from([s], t_start=0.5, fix_lattice=False, num_levels=10, seed=0))
    assert np.array_equal(off[F.FRAC_COORDS], plain[F.FRAC_COORDS])
    assert not np.allclose(on[F.FRAC_COORDS], plain[F.FRAC_COORDS])


def test_the_trainer_fits_noisy_crystals_and_its_checkpoint_loads(shared_data, tmp_path):
    from diffase.hub import read_checkpoint
    from diffase.train.dos_regressor_trainer import (
        DosRegressorTrainConfig,
        train_dos_regressor,
    )
    from diffase.train.recipe import load_recipe

    folder = shared_data / "electronic"
    config = DosRegressorTrainConfig(batch_size=4, max_steps=2, checkpoint_every=1, max_val=4,
                                     node_condition_points=N, warmup_steps=1)
    best = train_dos_regressor(folder, folder, tmp_path / "run", config=config, limit_train=8, device="cpu",
                               progress=False, model_config={"hidden": 16, "num_layers": 1, "num_freqs": 2,
                                                             "time_dim": 16})
    reg = DOSRegressor.from_checkpoint(read_checkpoint(best), device="cpu")
    assert reg.node_condition["n_points"] == N and reg.meta["train"]["step"] == 2
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "dos-regressor-mp20.json")
    assert recipe.model == "dos-regressor" and recipe.config["node_condition_points"] == 128


def test_sample_and_the_dos_generator_take_the_classifier(monkeypatch):
    from diffase.generators.dos_conditioned import DOSConditionedGenerator

    model, reg = dos_model(), tiny_regressor()
    kw = {"node_conditions": [_raw(3)], "num_levels": 10, "seed": 0}
    [[plain]] = list(model.sample(1, **kw))
    [[off]] = list(model.sample(1, classifier=reg, classifier_scale=0.0, **kw))
    [[on]] = list(model.sample(1, classifier=reg, classifier_scale=50.0, **kw))
    assert np.array_equal(plain[F.FRAC_COORDS], off[F.FRAC_COORDS])
    assert not np.allclose(plain[F.FRAC_COORDS], on[F.FRAC_COORDS])
    calls = []
    monkeypatch.setattr(model, "sample_from", lambda *a, **k: calls.append(k) or iter([]))
    s = rocksalt()
    g = DOSConditionedGenerator(_raw(len(s)), model=model, classifier=reg, classifier_scale=3.0, n_samples=1,
                                num_levels=4, t_start=0.5)
    list(g.iter_batches([s]))
    assert calls[0]["classifier"] is reg and calls[0]["classifier_scale"] == 3.0
