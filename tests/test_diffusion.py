"""VE process closed forms, schedules, the sampler loop, and DSM training on a toy set."""

import math

import pytest
import torch

from diffase.data import fields as F
from diffase.data.batch import collate
from diffase.data.structures import structure_to_record
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import geometric_sigmas, monotone_schedule, repaint_schedule
from diffase.diffusion.ve import VEProcess, minimum_image
from diffase.errors import SamplingError
from diffase.train.objective import dsm_loss
from tests.helpers import rocksalt, skewed_cell, tiny_net


def _batch(n_copies=1, dtype=torch.float64):
    return collate([structure_to_record(s) for s in [rocksalt(), skewed_cell()] * n_copies], dtype=dtype)


def test_geometric_sigmas_endpoints_and_ratio():
    s = geometric_sigmas(0.01, 10.0, 200)
    assert s[0].item() == pytest.approx(0.01) and s[-1].item() == pytest.approx(10.0)
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios))


def test_repaint_schedule_small_case_by_hand():
    # N=6 levels, jump 2, 2 passes: jump points 0 and 2 (range(0, 6 - 2, 2)), each revisited once
    assert repaint_schedule(6, jump_length=2, n_resample=2) == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    assert repaint_schedule(7, jump_length=10, n_resample=3) == monotone_schedule(7)
    assert repaint_schedule(5, jump_length=1, n_resample=1) == [4, 3, 2, 1, 0, -1]


def test_repaint_schedule_paper_defaults_counts():
    levels = repaint_schedule(200, jump_length=10, n_resample=3)
    steps = list(zip(levels[:-1], levels[1:]))
    down = sum(b == a - 1 for a, b in steps)
    up = sum(b == a + 1 for a, b in steps)
    assert (down, up) == (200 + 2 * 19 * 10, 2 * 19 * 10) and down + up == len(steps)
    assert levels[0] == 199 and levels[-1] == -1


def test_corrupt_target_is_minus_unit_noise_for_small_sigma():
    proc, batch = VEProcess(), _batch()
    torch.manual_seed(0)
    noisy, target = proc.corrupt(batch, torch.full((2,), 1e-3, dtype=torch.float64))
    disp = minimum_image(noisy[F.POSITIONS] - batch[F.POSITIONS], batch[F.CELL][batch[F.BATCH]])
    torch.testing.assert_close(target, -disp / 1e-3)
    assert target.std().item() == pytest.approx(1.0, abs=0.5)


def test_forward_step_and_renoise_variances_match_closed_form():
    proc = VEProcess(num_levels=50)
    s = proc.sigmas
    level = 20
    x = torch.full((20000, 3), 5e5, dtype=torch.float64)  # centre of a huge cell: wrapping never acts
    batch = {F.CELL: torch.eye(3, dtype=torch.float64)[None] * 1e6, F.BATCH: torch.zeros(len(x), dtype=torch.long)}
    gen = torch.Generator().manual_seed(0)
    up = proc.forward_step(x, level, batch, generator=gen)
    expected = math.sqrt(s[level + 1] ** 2 - s[level] ** 2)
    assert (up - x).std().item() == pytest.approx(expected, rel=0.03)
    renoised = proc.noise_to(x, level, batch, generator=gen)  # host re-noise, inpainting eq. 11
    assert (renoised - x).std().item() == pytest.approx(s[level].item(), rel=0.03)
    assert torch.equal(proc.noise_to(x, -1, batch), x)  # level -1: exactly the data


def test_predictor_matches_closed_form_on_gaussian_data():
    """Data ~ N(0, c^2) has the exact score -x / (c^2 + sigma^2) at level sigma. One ancestral step maps
    variance v to ``a^2 v + s_{l-1}^2 (s_l^2 - s_{l-1}^2) / s_l^2`` with ``a = 1 - (s_l^2 - s_{l-1}^2) / (c^2 + s_l^2)``;
    the simulated sampler must follow that recursion, which ends near c^2."""
    c2 = 0.5**2
    proc = VEProcess(sigma_min=0.01, sigma_max=5.0, num_levels=40)
    n = 20000
    batch = {F.CELL: torch.eye(3, dtype=torch.float64)[None] * 1e6, F.BATCH: torch.zeros(n, dtype=torch.long),
             F.NUM_ATOMS: torch.tensor([n]), F.POSITIONS: torch.zeros(n, 3, dtype=torch.float64)}
    gen = torch.Generator().manual_seed(0)
    centre = 5e5  # centre of a huge cell: wrapping never acts
    x = centre + torch.randn(n, 3, generator=gen, dtype=torch.float64) * math.sqrt(c2 + proc.sigmas[-1] ** 2)
    var = c2 + proc.sigma_at(proc.num_levels - 1) ** 2
    for level in range(proc.num_levels - 1, -1, -1):
        s2, s2_next = proc.sigma_at(level) ** 2, proc.sigma_at(level - 1) ** 2
        score = -(x - centre) / (c2 + s2)
        x = proc.predictor_step(x, score, level, batch, generator=gen)
        var = (1 - (s2 - s2_next) / (c2 + s2)) ** 2 * var + s2_next * (s2 - s2_next) / s2
    assert (x - centre).var().item() == pytest.approx(var, rel=0.04)
    assert var == pytest.approx(c2, rel=0.25)


def test_sampler_keeps_known_atoms_exactly_and_runs_repaint():
    """With the exact score of point masses (data = one position per atom), the RePaint loop puts every
    unknown atom on its point and every known atom exactly where given, even though the score pulls the known
    atoms to other points: the last predictor step (sigma_0 -> 0) lands on the point mass exactly."""
    proc = VEProcess(num_levels=12)
    batch = _batch(2)
    given = batch[F.POSITIONS].clone()
    mask = torch.zeros(len(given), dtype=torch.bool)
    mask[::2] = True
    cells = batch[F.CELL][batch[F.BATCH]]
    inside = 0.1 + 0.8 * torch.rand(len(given), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    targets = torch.einsum("ni,nij->nj", inside, cells)  # one point per atom, well inside its cell

    def score_fn(b, level):  # exact score of a point mass at each target, noise level sigma
        return {F.POSITIONS: -minimum_image(b[F.POSITIONS] - targets, cells) / proc.sigma_at(level) ** 2}

    out = sample(score_fn, batch, [proc], repaint_schedule(12, 3, 2), n_corrector=1, snr=0.2,
                 known={F.POSITIONS: (mask, given)}, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[F.POSITIONS][mask], given[mask])
    torch.testing.assert_close(out[F.POSITIONS][~mask], targets[~mask], rtol=0, atol=1e-9)  # inside their cells


def test_sampler_is_seeded():
    net = tiny_net().double()
    proc = VEProcess(num_levels=5)

    def score_fn(b, level):
        b[F.SIGMA] = torch.full((b[F.NUM_ATOMS].shape[0],), proc.sigma_at(level), dtype=torch.float64)
        with torch.no_grad():
            return {F.POSITIONS: net(b)}

    runs = [sample(score_fn, _batch(), [proc], monotone_schedule(5), n_corrector=1,
                   generator=torch.Generator().manual_seed(seed))[F.POSITIONS] for seed in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2], atol=1e-3), "the sampler ignores its generator"


def test_sampler_raises_on_nan():
    proc = VEProcess(num_levels=4)
    with pytest.raises(SamplingError, match="NaN"):
        sample(lambda b, level: {F.POSITIONS: torch.full_like(b[F.POSITIONS], float("nan"))}, _batch(), [proc],
               monotone_schedule(4), n_corrector=0)


def test_dsm_loss_decreases_on_toy_set():
    torch.manual_seed(0)
    net, proc = tiny_net(), VEProcess(sigma_min=0.05, sigma_max=1.0)
    batch = collate([structure_to_record(rocksalt(a)) for a in (4.0, 4.2, 4.4, 4.6)] * 2)

    def held_out_loss():
        with torch.no_grad():
            return float(dsm_loss(net, proc, batch, generator=torch.Generator().manual_seed(123)))

    before = held_out_loss()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(60):
        opt.zero_grad()
        dsm_loss(net, proc, batch).backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)


def test_training_sigma_distributions():
    gen = torch.Generator().manual_seed(0)
    normal = VEProcess().sample_sigma(20000, generator=gen)
    assert normal.min() >= 0.01 and normal.max() <= 10.0
    assert torch.log(normal).median().exp().item() == pytest.approx(0.3, rel=0.05)
    uniform = VEProcess(train_sigma="log_uniform").sample_sigma(20000, generator=gen)
    assert torch.log10(uniform).mean().item() == pytest.approx(-0.5, abs=0.03)  # midpoint of -2 .. 1
    linear = VEProcess(train_sigma="uniform").sample_sigma(20000, generator=gen)
    assert linear.mean().item() == pytest.approx(5.005, abs=0.1)  # midpoint of 0.01 .. 10 Angstrom
    with pytest.raises(ValueError, match="train_sigma"):
        VEProcess(train_sigma="log").sample_sigma(3)


def test_corrector_step_is_capped_when_the_score_is_underestimated():
    proc = VEProcess(num_levels=20)
    n = 5000
    batch = {F.CELL: torch.eye(3, dtype=torch.float64)[None] * 1e6, F.BATCH: torch.zeros(n, dtype=torch.long),
             F.NUM_ATOMS: torch.tensor([n])}
    x = torch.full((n, 3), 5e5, dtype=torch.float64)
    tiny_score = torch.full((n, 3), 1e-9, dtype=torch.float64)
    moved = proc.corrector_step(x, tiny_score, 3, batch, snr=0.2, generator=torch.Generator().manual_seed(0))
    assert (moved - x).std().item() == pytest.approx(2**0.5 * proc.sigma_at(3), rel=0.05)  # sqrt(2 eps), eps = sigma^2
