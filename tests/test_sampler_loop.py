"""The one sampling loop against exact answers: what the predictor sees of known rows, the conditional law an
exact score must inpaint, and per-crystal random streams."""

from __future__ import annotations

import pytest
import torch

from diffase.data import fields as F
from diffase.diffusion import noise
from diffase.diffusion.d3pm import AbsorbingD3PM
from diffase.diffusion.ddpm import LatticeDDPM
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import repaint_schedule
from diffase.diffusion.ve import VEProcess
from diffase.diffusion.wrapped_normal import WrappedNormalProcess


class LevelTaggedProcess:
    """Deterministic stand-in: ``noise_to`` tags values with their level (+1000 per level), each corrector step
    adds 1 to every row, the predictor records what it is given and moves nothing."""

    key = "x"

    def __init__(self):
        self.predictor_inputs = []

    def prior(self, batch, *, generator=None):
        return torch.zeros_like(batch["x"])

    def noise_to(self, x0, level, batch, *, generator=None):
        return x0 + 1000.0 * max(level, 0)

    def forward_step(self, x, level, batch, *, generator=None):
        return x

    def corrector_step(self, x, score, level, batch, *, snr, generator=None):
        return x + 1.0

    def predictor_step(self, x, score, level, batch, *, generator=None):
        self.predictor_inputs.append((level, x.clone()))
        return x


@pytest.mark.parametrize("n_corrector", [1, 5])
def test_predictor_sees_known_rows_at_their_level_after_the_correctors(n_corrector):
    """Algorithm 1 of the inpainting paper: the known atoms are put back before every predictor step. The
    correctors move every row; without the re-imposition the predictor saw known rows moved by M."""
    proc = LevelTaggedProcess()
    given = torch.tensor([[1.0], [2.0], [3.0]])
    mask = torch.tensor([True, False, True])
    sample(lambda batch, level: {"x": torch.zeros_like(batch["x"])}, {"x": given.clone()}, [proc],
           repaint_schedule(6, 2, 2), n_corrector=n_corrector, known={"x": (mask, given)})
    assert proc.predictor_inputs
    for level, x in proc.predictor_inputs:
        assert torch.equal(x[mask], given[mask] + 1000.0 * level), f"known rows moved at level {level}"
        assert not torch.equal(x[~mask], given[~mask] + 1000.0 * level)  # the free row is the correctors' to move


# --- oracle: an exact score whose conditional law is known -------------------------------------------------
BOX = 6.0  # Angstrom, cubic cell
MEAN = torch.tensor([3.0, 3.0], dtype=torch.float64)  # (known atom, free atom) coordinate means, Angstrom
COV = torch.tensor([[0.25, 0.20], [0.20, 0.35]], dtype=torch.float64)  # Angstrom^2, per Cartesian axis
GIVEN = 3.5  # the known atom's coordinate on every axis, Angstrom
COND_MEAN = 3.0 + 0.20 / 0.25 * (GIVEN - 3.0)  # 3.4 Angstrom
COND_VAR = 0.35 - 0.20**2 / 0.25  # 0.19 Angstrom^2
IMAGES = torch.stack(torch.meshgrid(*(torch.arange(-6, 7, dtype=torch.float64) * BOX,) * 2, indexing="ij"), -1).reshape(-1, 2)


def exact_score(process: VEProcess):
    """Score of the two-atom law (per axis, N(MEAN, COV)) convolved with N(0, sigma^2) and wrapped in the box."""

    def score(batch, level):
        inv = torch.linalg.inv(COV + process.sigma_at(level) ** 2 * torch.eye(2, dtype=torch.float64))
        pos = batch[F.POSITIONS]
        pairs = torch.stack([pos[0::2], pos[1::2]], -1).reshape(-1, 1, 2) + IMAGES - MEAN  # (3B, images, 2)
        weights = torch.softmax(-0.5 * torch.einsum("nia,ab,nib->ni", pairs, inv, pairs), -1)
        grad = -torch.einsum("ni,nia->na", weights, pairs @ inv).reshape(-1, 3, 2)
        out = torch.empty_like(pos)
        out[0::2], out[1::2] = grad[..., 0], grad[..., 1]
        return {F.POSITIONS: out}

    return score


def inpaint_free_atom(n_crystals: int, *, known: bool, seed: int = 0) -> torch.Tensor:
    """Coordinates (3 n_crystals,) of the free atom after RePaint inpainting with the exact score."""
    process = VEProcess(num_levels=100)
    pos = torch.zeros(2 * n_crystals, 3, dtype=torch.float64)
    pos[0::2] = GIVEN
    batch = {F.POSITIONS: pos, F.CELL: BOX * torch.eye(3, dtype=torch.float64).repeat(n_crystals, 1, 1),
             F.NUM_ATOMS: torch.full((n_crystals,), 2), F.BATCH: torch.arange(n_crystals).repeat_interleave(2)}
    mask = torch.arange(2 * n_crystals) % 2 == 0
    out = sample(exact_score(process), batch, [process], repaint_schedule(100, 10, 3), n_corrector=5, snr=0.2,
                 known={F.POSITIONS: (mask, pos.clone())} if known else None,
                 generator=torch.Generator().manual_seed(seed))
    return out[F.POSITIONS][1::2].reshape(-1)


def test_inpainting_with_an_exact_score_reaches_the_conditional_law():
    """Exact wrapped-Gaussian score, known atom at 3.5 A: the free atom must follow N(3.4, 0.19) (conditional
    mean and variance of the Gaussian law), not the unconditional N(3.0, 0.35) that plain sampling gives."""
    free = inpaint_free_atom(200, known=True)
    sd = COND_VAR**0.5
    assert abs(free.mean().item() - COND_MEAN) < 0.15 * sd, free.mean().item()
    assert abs(free.var().item() / COND_VAR - 1) < 0.2, free.var().item()
    # negative control: the same check fails when nothing is known (the law is then the marginal one)
    plain = inpaint_free_atom(200, known=False)
    assert abs(plain.mean().item() - COND_MEAN) > 0.5 * sd


# --- per-crystal random streams ---------------------------------------------------------------------------
def two_crystal_batch(n_first: int, n_second: int) -> dict:
    counts = torch.tensor([n_first, n_second])
    return {F.NUM_ATOMS: counts, F.BATCH: torch.repeat_interleave(torch.arange(2), counts),
            F.CELL: torch.eye(3).repeat(2, 1, 1) * 5.0, F.POSITIONS: torch.zeros(int(counts.sum()), 3)}


def first_crystal_only(batch: dict) -> dict:
    n = int(batch[F.NUM_ATOMS][0])
    return {F.NUM_ATOMS: batch[F.NUM_ATOMS][:1], F.BATCH: batch[F.BATCH][:n], F.CELL: batch[F.CELL][:1],
            F.POSITIONS: batch[F.POSITIONS][:n]}


@pytest.mark.parametrize("process", [VEProcess(), WrappedNormalProcess(), LatticeDDPM(), AbsorbingD3PM(num_classes=4)],
                         ids=["ve", "wrapped_normal", "ddpm", "d3pm"])
def test_a_crystals_noise_does_not_depend_on_its_batch_partners(process):
    """With one stream per crystal, crystal 0 draws the same prior and the same steps alone or beside another."""
    pair, alone = two_crystal_batch(3, 5), first_crystal_only(two_crystal_batch(3, 5))
    draws = []
    for batch in (pair, alone):
        gens = noise.CrystalGenerators([11, 22][: len(batch[F.NUM_ATOMS])])
        x = process.prior(batch, generator=gens)
        if x.dtype == torch.long:  # D3PM: draw the masking of clean tokens, then a posterior sample
            x = process.noise_to(torch.zeros_like(x), 5, batch, generator=gens)
            y = process.predictor_step(x, torch.zeros(*x.shape, 4), 5, batch, generator=gens)
        else:
            y = process.predictor_step(x, torch.zeros_like(x), 5, batch, generator=gens)
        rows = 1 if isinstance(process, LatticeDDPM) else 3  # the cell: one row per crystal; else 3 atoms
        draws.append((x[:rows], y[:rows]))
    (x_pair, y_pair), (x_alone, y_alone) = draws
    assert torch.equal(x_pair, x_alone) and torch.equal(y_pair, y_alone)


def test_per_crystal_streams_refuse_a_field_of_unknown_layout():
    batch = two_crystal_batch(3, 5)
    with pytest.raises(ValueError, match="neither per atom"):
        noise.randn((4, 3), batch[F.POSITIONS], noise.CrystalGenerators([1, 2]), batch)
