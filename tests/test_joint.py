"""Joint (types, fractional coordinates, lattice) diffusion: closed forms, invariances, guidance, masks,
invalid samples, training/checkpoint/CLI smoke runs, and the S.U.N. metrics."""

import math

import ase.io
import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase import hub
from diffase.analysis.matching import (
    composition_match_rate,
    match_rate,
    novel_mask,
    unique_mask,
)
from diffase.analysis.sun import property_success_rate, sun_metrics
from diffase.analysis.validity import composition_valid, structure_valid
from diffase.cli import main
from diffase.data import fields as F
from diffase.data.structures import structure_to_record
from diffase.diffusion.d3pm import AbsorbingD3PM, posterior_probs
from diffase.diffusion.ddpm import LatticeDDPM
from diffase.diffusion.guidance import guided_score_fn
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import monotone_schedule
from diffase.diffusion.wrapped_normal import (
    WrappedNormalProcess,
    score_second_moment,
    wrapped_normal_log_density,
    wrapped_normal_score,
)
from diffase.errors import InvalidStructureError, UnknownElementError
from diffase.generators import load_model
from diffase.generators.joint import (
    JointModel,
    decode_tokens,
    encode_records,
    make_batch,
)
from diffase.generators.joint_fields import joint_fields
from diffase.data.structures import record_to_structure
from diffase.nn.conditioning import ConditionSpec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.helpers import rocksalt, skewed_cell

ELEMENTS = [1, 3, 8, 11, 17]  # H Li O Na Cl


def tiny_model(conditions=(), seed=0, dtype=torch.float64) -> JointModel:
    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              conditions=[c.to_dict() for c in conditions])
    net = JointDenoiser(cfg).to(dtype)
    return JointModel(net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1, 2, 3, 2], device="cpu")


def _batch(structures=None, dtype=torch.float64, t=0.3):
    structures = structures or [rocksalt(), skewed_cell()]
    recs = encode_records([structure_to_record(s) for s in structures], ELEMENTS)
    batch = make_batch(recs, dtype=dtype)
    batch[F.TIME] = torch.full((len(structures),), t, dtype=dtype)
    return batch


# --- wrapped normal ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.005, 0.05, 0.2, 0.5])
def test_wrapped_normal_score_matches_autograd_of_log_density(sigma):
    d = torch.linspace(-0.7, 1.3, 41, dtype=torch.float64).requires_grad_(True)
    logp = wrapped_normal_log_density(d, sigma, n_images=5)
    (grad,) = torch.autograd.grad(logp.sum(), d)
    assert torch.allclose(wrapped_normal_score(d.detach(), sigma, n_images=5), grad, rtol=1e-9, atol=1e-6)


def test_wrapped_normal_density_is_normalised_periodic_and_uniform_at_sigma_max():
    x = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for sigma in (0.02, 0.3):
        p = wrapped_normal_log_density(x, sigma).exp()
        assert torch.trapezoid(p, x).item() == pytest.approx(1.0, abs=1e-6)
    d = torch.tensor([0.13], dtype=torch.float64)
    assert torch.allclose(wrapped_normal_score(d, 0.3), wrapped_normal_score(d + 2, 0.3))
    p_max = wrapped_normal_log_density(x, 0.5).exp()  # first Fourier term 2 exp(-2 pi^2 0.25) = 0.0144
    assert (p_max - 1).abs().max().item() == pytest.approx(2 * math.exp(-2 * math.pi**2 * 0.25), rel=1e-3)


def test_score_second_moment_limits_and_monte_carlo():
    assert score_second_moment(torch.tensor([0.005]))[0].item() == pytest.approx(1 / 0.005**2, rel=1e-3)
    gen = torch.Generator().manual_seed(0)
    d = 0.3 * torch.randn(400000, generator=gen, dtype=torch.float64)
    mc = (wrapped_normal_score(d, 0.3) ** 2).mean().item()
    assert score_second_moment(torch.tensor([0.3]))[0].item() == pytest.approx(mc, rel=0.02)


def test_wrapped_normal_process_levels_and_noise_to():
    proc = WrappedNormalProcess(num_levels=100)
    assert proc.sigma_at(99) == pytest.approx(0.5) and proc.sigma_at(-1) == 0.0
    assert proc.sigma_at(0) == pytest.approx(0.005 ** (1 - 0.01) * 0.5**0.01)
    x0 = torch.rand(10, 3, dtype=torch.float64)
    assert torch.equal(proc.noise_to(x0, -1, {}), x0)
    noisy, target = proc.corrupt(x0, torch.full((10,), 500))
    assert ((noisy >= 0) & (noisy < 1)).all() and target.shape == (10, 3)


# --- DDPM lattice -----------------------------------------------------------------------------------
def test_ddpm_posterior_matches_ddpm_eq7_and_gaussian_conjugacy():
    proc = LatticeDDPM()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ab = proc.alpha_bars
    assert torch.allclose(ab[1:], torch.cumprod(1 - betas, 0)) and ab[-1].item() < 1e-4
    x0, xt = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, 3, dtype=torch.float64)
    t = 400
    mean, var = proc.posterior(xt, x0, t, t - 1)
    b = betas[t - 1]
    ref_mean = ab[t - 1].sqrt() * b / (1 - ab[t]) * x0 + (1 - b).sqrt() * (1 - ab[t - 1]) / (1 - ab[t]) * xt
    assert torch.allclose(mean, ref_mean) and var == pytest.approx(float((1 - ab[t - 1]) / (1 - ab[t]) * b))
    # brute force over a jump s < t: product of q(x_t | x_s) and q(x_s | x_0) Gaussians
    s = 250
    a = ab[t] / ab[s]
    prec = a / (1 - a) + 1 / (1 - ab[s])
    brute_mean = (a.sqrt() / (1 - a) * xt + ab[s].sqrt() / (1 - ab[s]) * x0) / prec
    mean, var = proc.posterior(xt, x0, t, s)
    assert torch.allclose(mean, brute_mean) and var == pytest.approx(float(1 / prec))


# --- D3PM types -------------------------------------------------------------------------------------
def _brute_force_posterior(k, x_t, x0, a_t, a_s):
    """q(x_s | x_t, x_0) from the (K+1)x(K+1) absorbing transition matrices."""
    m = k  # mask index
    a_ts = a_t / a_s
    q_ts = a_ts * np.eye(k + 1)
    q_ts[:, m] += 1 - a_ts  # row = from, column = to
    q_s0 = np.zeros(k + 1)
    q_s0[x0] = a_s
    q_s0[m] += 1 - a_s
    joint = q_ts[:, x_t] * q_s0
    return joint / joint.sum()


def test_d3pm_posterior_sums_to_one_and_matches_brute_force():
    k, a_t, a_s = 3, 0.35, 0.8
    for x0 in range(k):
        for x_t in (x0, k):  # reachable states: unchanged or masked
            closed = posterior_probs(torch.tensor([x_t]), torch.nn.functional.one_hot(torch.tensor([x0]), k).double(),
                                     a_t, a_s)[0].numpy()
            assert closed.sum() == pytest.approx(1.0)
            assert np.allclose(closed, _brute_force_posterior(k, x_t, x0, a_t, a_s))
    probs = torch.softmax(torch.randn(6, k, dtype=torch.float64), -1)
    model = posterior_probs(torch.tensor([0, 1, 2, 3, 3, 3]), probs, 0.2, 0.6)
    assert torch.allclose(model.sum(-1), torch.ones(6, dtype=torch.float64))


def test_d3pm_schedule_prior_and_final_step_unmasks_everything():
    proc = AbsorbingD3PM(num_classes=4, num_levels=10)
    assert proc.alpha(0.0).item() == pytest.approx(1.0) and proc.alpha(1.0).item() == 0.0
    batch = {F.BATCH: torch.zeros(5, dtype=torch.long)}
    x = proc.prior(batch)
    assert (x == proc.mask_token).all()
    logits = torch.randn(5, 4)
    out = proc.predictor_step(x, logits, 0, batch, generator=torch.Generator().manual_seed(0))
    assert (out < proc.mask_token).all()
    x0 = torch.tensor([0, 1, 2, 3, 1])
    assert torch.equal(proc.noise_to(x0, -1, batch), x0) and (proc.noise_to(x0, 9, batch) == 4).all()


def test_d3pm_loss_is_finite_and_zero_on_unmasked_atoms_vlb():
    proc = AbsorbingD3PM(num_classes=4)
    x0 = torch.tensor([0, 1, 2, 3])
    logits = torch.randn(4, 4, requires_grad=True)
    loss = proc.loss(logits, x0, x0.clone(), torch.full((4,), 500))  # nothing masked
    assert loss.item() == 0.0
    x_t = torch.tensor([4, 4, 2, 3])
    loss = proc.loss(logits, x0, x_t, torch.full((4,), 500))
    loss.backward()
    assert math.isfinite(loss.item()) and logits.grad[2:].abs().sum() == 0


# --- the three processes in the one sampler loop ---------------------------------------------------
def test_training_targets_are_what_the_predictor_reads():
    """A last step fed the training target of a point mass lands exactly on it (sign and scale agree)."""
    wn, lat = WrappedNormalProcess(), LatticeDDPM()
    f0 = torch.rand(50, 3, dtype=torch.float64)
    noisy, target = wn.corrupt(f0, torch.ones(50, dtype=torch.long))  # step 1 = level 0 of 1000
    d = wn.predictor_step(noisy, target, 0, {}) - f0
    assert torch.allclose(d, torch.round(d), atol=1e-9)
    x0 = torch.randn(4, 3, 3, dtype=torch.float64)
    xt, eps = lat.corrupt(x0, torch.ones(4, dtype=torch.long))
    assert torch.allclose(lat.predictor_step(xt, eps, 0, {}), x0, atol=1e-12)


def test_sampler_with_exact_scores_returns_the_data_distribution():
    """Exact network outputs for a known data law (wrapped normal coordinates, Gaussian cells, i.i.d. types)
    run through the sampler's predictors (T = 1000 levels) give back that law; the coordinates' Langevin
    corrector, alone at one level, keeps that level's marginal (up to its known step-size bias)."""
    n, f_mu, f_std, l_mu, l_std = 1000, 0.3, 0.05, 2.0, 0.5
    pi = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    types, coords, lattice = AbsorbingD3PM(3), WrappedNormalProcess(), LatticeDDPM()

    def f_sigma(level):  # std of the coordinates' marginal at a level
        return (f_std**2 + coords.sigma_at(level) ** 2) ** 0.5

    def exact(batch, level):
        ab = float(lattice.alpha_bars[level + 1])
        score = wrapped_normal_score(batch[F.FRAC_COORDS] - f_mu, f_sigma(level))
        return {F.TYPE_TOKENS: pi.log().expand(n, 3), F.FRAC_COORDS: score / coords._norm_at(level),
                F.CELL: (1 - ab) ** 0.5 * (batch[F.CELL] - ab**0.5 * l_mu) / (ab * l_std**2 + 1 - ab)}

    gen = torch.Generator().manual_seed(0)
    batch = {F.BATCH: torch.arange(n), F.NUM_ATOMS: torch.ones(n, dtype=torch.long),
             F.CELL: torch.zeros(n, 3, 3, dtype=torch.float64)}
    out = sample(exact, batch, [types, coords, lattice], monotone_schedule(1000), n_corrector=0, generator=gen)
    d = torch.remainder(out[F.FRAC_COORDS] - f_mu + 0.5, 1.0) - 0.5
    assert d.mean().abs() < 0.005 and d.std().item() == pytest.approx(f_std, rel=0.06)
    assert out[F.CELL].mean().item() == pytest.approx(l_mu, abs=0.03)
    assert out[F.CELL].std().item() == pytest.approx(l_std, rel=0.04)
    assert torch.allclose(torch.bincount(out[F.TYPE_TOKENS], minlength=3).double() / n, pi, atol=0.05)

    level = 600
    x = f_mu + f_sigma(level) * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    for _ in range(20):
        x = coords.corrector_step(x, exact({F.FRAC_COORDS: x, F.CELL: batch[F.CELL]}, level)[F.FRAC_COORDS], level,
                                  {}, generator=gen)
    d = torch.remainder(x - f_mu + 0.5, 1.0) - 0.5
    # unadjusted Langevin with step h keeps a Gaussian of variance v at v / (1 - h / 2v) (DiffCSP's step, no MH)
    v, h = f_sigma(level) ** 2, coords.corrector_step_lr * (coords.sigma_at(level) / coords.sigma_min) ** 2
    assert d.std().item() == pytest.approx((v / (1 - h / (2 * v))) ** 0.5, rel=0.04)


# --- denoiser invariances ---------------------------------------------------------------------------
def _net(seed=0):
    torch.manual_seed(seed)
    return JointDenoiser(JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4,
                                             time_dim=16)).double()


def _matches(fn, batch, other, out_map=lambda out: out, lattice_map=lambda x: x) -> bool:
    """Whether ``fn(other)`` equals ``fn(batch)`` with atoms mapped by ``out_map`` and the lattice output by
    ``lattice_map`` (types and coordinates invariant, the lattice output equivariant)."""
    out, res = fn(batch), fn(other)
    return (torch.allclose(res[F.TYPE_TOKENS], out_map(out[F.TYPE_TOKENS]), atol=1e-10)
            and torch.allclose(res[F.FRAC_COORDS], out_map(out[F.FRAC_COORDS]), atol=1e-10)
            and torch.allclose(res[F.CELL], lattice_map(out[F.CELL]), atol=1e-10))


def _plus_coords(net, term):
    """A deliberately broken variant of ``net``: ``term(batch)`` (n, 3) added to the coordinate output."""
    return lambda b: {**net(b), F.FRAC_COORDS: net(b)[F.FRAC_COORDS] + term(b)}


def test_denoiser_rotation_translation_and_integer_shift_invariance():
    """Each check also fails for a variant of the network that breaks the symmetry it names."""
    net, batch = _net(), _batch()
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    q[:, 0] *= -1 if torch.det(q) > 0 else 1  # include a reflection
    rotated = {**batch, F.CELL: batch[F.CELL] @ q.T}
    shifted = {**batch, F.FRAC_COORDS: torch.remainder(batch[F.FRAC_COORDS] + torch.tensor([0.3, -0.2, 0.7],
                                                                                           dtype=torch.float64), 1.0)}
    imaged = {**batch, F.FRAC_COORDS: batch[F.FRAC_COORDS] + torch.randint(-2, 3, batch[F.FRAC_COORDS].shape)}
    assert _matches(net, batch, rotated, lattice_map=lambda x: x @ q.T)
    assert _matches(net, batch, shifted) and _matches(net, batch, imaged)
    reads_cell = _plus_coords(net, lambda b: 0.1 * b[F.CELL][b[F.BATCH], 0])  # the Cartesian first lattice vector
    absolute = _plus_coords(net, lambda b: 0.1 * torch.sin(2 * math.pi * b[F.FRAC_COORDS]))  # periodic, not relative
    aperiodic = _plus_coords(net, lambda b: 0.1 * torch.sin(math.pi * b[F.FRAC_COORDS]))  # period 2, not 1
    assert not _matches(reads_cell, batch, rotated, lattice_map=lambda x: x @ q.T)
    assert not _matches(absolute, batch, shifted) and _matches(absolute, batch, imaged)
    assert not _matches(aperiodic, batch, imaged)


def test_denoiser_permutation_equivariance():
    net, batch = _net(), _batch()
    counts = batch[F.NUM_ATOMS].tolist()  # permute atoms within each crystal
    perm = torch.cat([torch.randperm(counts[0]), counts[0] + torch.randperm(counts[1])])
    assert not torch.equal(perm, torch.arange(len(perm)))
    permuted = {**batch, F.TYPE_TOKENS: batch[F.TYPE_TOKENS][perm], F.FRAC_COORDS: batch[F.FRAC_COORDS][perm]}
    assert _matches(net, batch, permuted, out_map=lambda out: out[perm])
    by_index = _plus_coords(net, lambda b: 0.01 * torch.arange(len(b[F.FRAC_COORDS]), dtype=torch.float64)[:, None])
    assert not _matches(by_index, batch, permuted, out_map=lambda out: out[perm])


def test_pipeline_is_invariant_to_the_choice_of_unit_cell(monkeypatch):
    """Two cell choices of one crystal (one given as ASE Atoms) give the same samples: the generator feeds every
    crystal in its Niggli-reduced cell. The network alone is not invariant to the cell choice (it reads L L^T and
    fractional differences), so without that reduction the samples differ: the check can fail."""
    s = Structure(Lattice.from_parameters(3.1, 4.3, 5.2, 81, 97, 104), ["Li", "O", "Na"],
                  [[0.1, 0.2, 0.3], [0.55, 0.6, 0.15], [0.8, 0.05, 0.7]])
    rechosen = s.copy()
    u = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])  # unimodular: same lattice, another basis
    assert round(abs(np.linalg.det(u))) == 1
    rechosen.make_supercell(u)
    assert len(rechosen) == len(s)
    model, kw = tiny_model(), {"t_start": 0.3, "num_levels": 5, "seed": 0}

    def same_samples() -> bool:
        [[x]] = model.sample_from([s], **kw)
        [[y]] = model.sample_from([AseAtomsAdaptor.get_atoms(rechosen)], **kw)
        d = x[F.FRAC_COORDS] - y[F.FRAC_COORDS]
        return np.allclose(x[F.CELL], y[F.CELL], atol=1e-8) and np.allclose(d, np.round(d), atol=1e-8)

    assert same_samples()
    monkeypatch.setattr(Structure, "get_reduced_structure", lambda self, *args, **kwargs: self.copy())
    assert not same_samples()


# --- guidance ---------------------------------------------------------------------------------------
def test_guidance_zero_is_unconditional_and_one_is_conditional():
    spec = ConditionSpec("band_gap", "scalar", 1, 1.0, 1.5)
    model = tiny_model(conditions=[spec])
    batch = _batch()
    batch[F.condition_key("band_gap")] = torch.tensor([2.0, 0.5], dtype=torch.float64)
    model_fn = model.model_fn(model.fields)
    cond = model_fn(batch, 500)
    uncond = model_fn({k: v for k, v in batch.items() if not k.startswith(F.CONDITION_PREFIX)}, 500)
    assert not torch.allclose(cond[F.FRAC_COORDS], uncond[F.FRAC_COORDS])
    g0, g1, g2 = (guided_score_fn(model_fn, w)(batch, 500) for w in (0.0, 1.0, 2.0))
    for key in cond:
        assert torch.equal(g0[key], uncond[key]) and torch.equal(g1[key], cond[key])
    assert torch.allclose(g2[F.CELL], 2 * cond[F.CELL] - uncond[F.CELL])
    ls = torch.log_softmax
    assert torch.allclose(ls(g2[F.TYPE_TOKENS], -1),
                          ls(2 * ls(cond[F.TYPE_TOKENS], -1) - ls(uncond[F.TYPE_TOKENS], -1), -1))
    with pytest.raises(ValueError, match="guidance_scale"):
        guided_score_fn(model_fn, -1.0)


def test_condition_given_defaults_to_conditional_and_unknown_condition_is_an_error():
    model = tiny_model(conditions=[ConditionSpec("band_gap")])
    assert model._check_guidance({"band_gap": 2.0}, None) == 1.0
    assert model._check_guidance(None, None) == 0.0
    with pytest.raises(ValueError, match="needs conditions"):
        model._check_guidance(None, 2.0)
    with pytest.raises(ValueError, match="not trained with condition 'density'"):
        next(model.sample(2, conditions={"density": 3.0}, num_levels=5))


def test_space_group_condition_means_the_same_class_in_training_and_sampling():
    from diffase.train.joint_trainer import condition_arrays

    rec = structure_to_record(rocksalt())  # Fm-3m, number 225
    values, [spec] = condition_arrays(["space_group"], [rec], ["nacl"], ELEMENTS, None)
    model = tiny_model(conditions=[spec])
    asked = model.condition_values({"space_group": 225}, 1)["space_group"]
    assert values["space_group"][0] == asked[0] == 225
    for bad in (231, 2.5, -1):
        with pytest.raises(ValueError, match="class index"):
            model.condition_values({"space_group": bad}, 1)


# --- sampling: masks, templates, seeds, invalid samples ---------------------------------------------
def test_fixed_fields_end_exactly_as_given():
    model = tiny_model()
    given = [rocksalt().get_primitive_structure(), skewed_cell()]
    assert [len(s) for s in given] == [2, 3]
    fix_types = [np.array([True, False]), np.array([False, True, True])]
    fix_coords = [np.array([False, True]), np.array([True, False, True])]
    out = next(model.sample_from(given, fix_lattice=True, fix_types=fix_types, fix_coords=fix_coords,
                                 num_levels=20, seed=1))
    for rec, s, ft, fc in zip(out, given, fix_types, fix_coords):
        ref = encode_records([structure_to_record(s.get_reduced_structure())], ELEMENTS)[0]
        assert np.allclose(rec[F.CELL], ref[F.CELL], atol=1e-12)
        assert np.array_equal(rec[F.ATOMIC_NUMBERS][ft], ref[F.ATOMIC_NUMBERS][ft])
        assert np.allclose(rec[F.FRAC_COORDS][fc], ref[F.FRAC_COORDS][fc], atol=1e-12)


def test_template_start_and_seeded_sampling_are_reproducible():
    model = tiny_model()
    a = next(model.sample_from([rocksalt()], t_start=0.2, num_levels=20, seed=3))
    b = next(model.sample_from([rocksalt()], t_start=0.2, num_levels=20, seed=3))
    assert np.array_equal(a[0][F.FRAC_COORDS], b[0][F.FRAC_COORDS])
    x = list(model.sample(5, batch_size=2, num_levels=10, seed=7))
    y = list(model.sample(5, batch_size=2, num_levels=10, seed=7, start_batch=1))
    assert [len(r) for r in x] == [2, 2, 1] and len(y) == 2
    assert np.array_equal(x[1][0][F.FRAC_COORDS], y[0][0][F.FRAC_COORDS])  # resume gives the same crystals
    with pytest.raises(ValueError, match="t_start"):
        next(model.sample_from([rocksalt()], t_start=1.5))
    with pytest.raises(UnknownElementError):
        next(model.sample_from([rocksalt(species=("K", "Br"))], t_start=0.5))


def test_mask_token_left_is_an_invalid_sample_never_an_element():
    z, ok = decode_tokens(np.array([0, 4, 5]), ELEMENTS)  # 5 = mask token for 5 elements
    assert not ok and z.tolist() == [1, 17, 0]
    model = tiny_model()
    out = {F.TYPE_TOKENS: torch.tensor([0, 5, 2]), F.FRAC_COORDS: torch.rand(3, 3, dtype=torch.float64),
           F.CELL: 4 * torch.eye(3, dtype=torch.float64).expand(2, 3, 3), F.NUM_ATOMS: torch.tensor([1, 2]),
           F.BATCH: torch.tensor([0, 1, 1])}
    good, bad = model._to_records(out)
    assert good["valid"] and not bad["valid"] and bad[F.ATOMIC_NUMBERS].tolist() == [0, 8]
    record_to_structure(good)
    with pytest.raises(InvalidStructureError, match="masked atom type"):
        record_to_structure(bad)


def test_left_handed_cells_are_returned_right_handed_with_the_same_positions():
    model = tiny_model()
    cell = torch.tensor([[[-4.0, 0, 0], [0, 4.0, 0], [0, 0, 5.0]]], dtype=torch.float64)
    frac = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    out = {F.TYPE_TOKENS: torch.tensor([1]), F.FRAC_COORDS: frac, F.CELL: cell, F.NUM_ATOMS: torch.tensor([1]),
           F.BATCH: torch.tensor([0])}
    rec = model._to_records(out)[0]
    assert np.linalg.det(rec[F.CELL]) > 0
    cart = (frac @ cell[0]).numpy()[0]
    diff = (rec[F.POSITIONS][0] - cart) @ np.linalg.inv(rec[F.CELL])
    assert np.allclose(diff, np.round(diff), atol=1e-12)


# --- training, checkpoints, CLI ---------------------------------------------------------------------
@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFASE_CACHE", str(tmp_path / "cache"))
    hub._CACHE.clear()
    return tmp_path


def test_train_resume_load_and_generate_cli(shared_data, isolated, capsys, monkeypatch):
    import diffase.train.joint_trainer as joint_trainer
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    training_steps = []  # one entry per loss evaluated with gradients (validation runs without)
    real_loss = joint_trainer.joint_loss

    def counting_loss(*args, **kwargs):
        training_steps.append(torch.is_grad_enabled())
        return real_loss(*args, **kwargs)

    out = isolated / "run"
    kw = {"model_config": {"hidden": 16, "num_layers": 1, "num_freqs": 4, "time_dim": 16}, "device": "cpu",
          "num_threads": 1, "limit_train": 48, "progress": False}
    cfg = {"epochs": 1, "batch_size": 24, "max_val": 16, "warmup_steps": 2,
           "conditions": ["density", "chemical_system"]}
    best = train_joint_model(shared_data / "mp20" / "train.csv.gz", shared_data / "mp20" / "val.csv.gz", out,
                             config=JointTrainConfig(max_steps=1, **cfg), **kw)
    assert (out / "last.pt").exists() and best.exists()
    monkeypatch.setattr(joint_trainer, "joint_loss", counting_loss)
    train_joint_model(shared_data / "mp20" / "train.csv.gz", shared_data / "mp20" / "val.csv.gz", out,
                      config=JointTrainConfig(**cfg), **kw)  # resumes and finishes the epoch
    assert sum(training_steps) == 1  # only the missing step: a run restarted from scratch ends at step 2 too
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and ckpt["epoch"] == 1 and (out / "log.csv").read_text().count("\n") == 2
    model = load_model(out / "best.pt", device="cpu")
    assert isinstance(model, JointModel) and set(model.condition_specs) == {"density", "chemical_system"}
    gen = isolated / "gen.extxyz"
    args = ["generate", "--model", str(out / "best.pt"), "--n", "3", "--batch-size", "2", "--steps", "5",
            "--out", str(gen), "--condition", "density=3.0", "--condition", "chemical_system=Li-O"]
    assert main(args) == 0
    state = (isolated / "gen.extxyz.progress.json").read_text()
    assert '"batches": 2' in state
    assert [a.info["sample"] for a in ase.io.read(gen, ":")] == [0, 1, 2]  # run-wide indices across batches
    assert main(args) == 0  # a finished run started again writes nothing more
    assert (isolated / "gen.extxyz.progress.json").read_text() == state
    assert main(args[:-4] + ["--seed", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["generate", "--model", str(out / "best.pt"), "--out", str(isolated / "x.extxyz"),
                 "--condition", "band_gap=2.0"]) == 2
    assert "not trained with condition 'band_gap'" in capsys.readouterr().err


# --- evaluation metrics -----------------------------------------------------------------------------
def test_validity_uniqueness_novelty_and_sun():
    assert composition_valid("NaCl") and composition_valid("Fe") and not composition_valid("Na2Cl")
    nacl, licl = rocksalt(), rocksalt(5.1, ("Li", "Cl"))
    crowded = Structure(Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    assert structure_valid(nacl) and not structure_valid(crowded)
    gen = [nacl, nacl.copy(), licl, crowded, None]
    assert unique_mask(gen).tolist() == [True, False, True, True, False]
    assert novel_mask(gen, [nacl]).tolist() == [False, False, True, True, False]
    res = sun_metrics(gen, [nacl], e_above_hull=lambda ss: [0.05 if s.composition.reduced_formula == "LiCl" else 1.0
                                                            for s in ss])
    f = res["fractions"]
    assert f["valid"] == pytest.approx(0.6) and f["unique"] == pytest.approx(0.6)
    assert f["unique_novel"] == pytest.approx(0.4) and f["sun"] == pytest.approx(0.2) and f["vsun"] == pytest.approx(0.2)
    sub = sun_metrics(gen, [nacl], e_above_hull=lambda ss: [0.0] * len(ss), max_stability=1, seed=0)
    assert sub["n_stability"] == 1 and np.isfinite(sub["e_above_hull"]).sum() == 1
    # candidates = unique, novel and structurally valid (LiCl only: 0.2) x stable fraction 1 of the subset
    assert sub["fractions"]["sun"] == pytest.approx(0.2)
    assert not composition_valid("LaTbNdYZrMnZnCoCuSnGeBiBSbTeCF")  # too many oxidation-state combinations
    assert composition_valid("CuZnAlNiFeCoCrMnTiV")  # an all-metal alloy is valid whatever its size
    assert match_rate([nacl, licl], [nacl.copy(), nacl])["match_rate"] == 0.5
    assert composition_match_rate([nacl, licl], [nacl, nacl]) == 0.5
    assert property_success_rate([1.95, 2.5, float("nan")], 2.0) == pytest.approx(1 / 3)
