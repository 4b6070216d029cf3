"""Variance-exploding diffusion of Cartesian atomic positions in a fixed periodic cell.

Forward process: ``x_sigma = x_0 + sigma * eps`` (Angstrom), eps ~ N(0, I), positions then wrapped into
the cell. Noise levels are geometric between ``sigma_min`` and ``sigma_max``:

* ``sigma_max = 10 Angstrom``: larger than the cells of MP-20 (median edge ~6 Angstrom), so the wrapped
  noisy positions are indistinguishable from uniform in the cell; the prior is therefore *uniform
  fractional coordinates*, exact for the periodic problem (and how the inpainting paper starts guests).
* ``sigma_min = 0.01 Angstrom``: below thermal vibration amplitudes (~0.05-0.1 Angstrom), so the last
  level is indistinguishable from a relaxed crystal for every downstream use.

Training uses denoising score matching (inpainting paper eq. 10) with weight ``lambda(sigma) = sigma^2``.
How training draws sigma (``train_sigma``) decides how much of the budget each noise level gets:

* ``"log_normal"`` (the default, what ``score-mp20`` was trained with): ``ln sigma ~ N(ln 0.3, 1.2^2)`` clipped
  to [sigma_min, sigma_max]. Chosen after a log-uniform run with an earlier noise embedding learned nothing
  below 0.3 Angstrom in 4 epochs: it concentrates draws on 0.03-3 Angstrom, where atoms are placed. The price
  is the lowest levels: only 2.8 % of draws fall below 0.03 Angstrom (0.3 % below 0.011).
* ``"log_uniform"``: sigma log-uniform, i.e. the level index (or diffusion time) drawn uniformly on the
  geometric ladder; 15.9 % of draws below 0.03 Angstrom.
* ``"uniform"``: sigma uniform on [sigma_min, sigma_max], how the inpainting and CHGGen papers draw it with
  eq. 10's weight; 0.2 % of draws below 0.03 Angstrom.

``benchmarks/sigma_sampling.py`` measures what the draw does to the per-sigma loss of the shipped model
(``benchmarks/results/sigma_sampling.md``).
The loss is:
``L = E || sigma * s_theta(x_sigma, sigma) - d_mic(x_sigma -> x_0) / sigma ||^2`` where ``d_mic`` is the
minimum-image displacement from the noisy to the clean position. For small sigma this is the exact target
``-eps``; for sigma comparable to the cell it uses the nearest image, the dominant term of the periodic
(wrapped-Gaussian) score.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from diffase.data import fields as F
from diffase.data.batch import wrap_positions
from diffase.diffusion import noise
from diffase.diffusion.schedules import geometric_sigmas


def minimum_image(disp: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Minimum-image version of displacements (n, 3) Angstrom in cells (n, 3, 3) (exact for reduced cells)."""
    frac = torch.einsum("ni,nij->nj", disp, torch.linalg.inv(cell))
    frac = frac - torch.round(frac)
    return torch.einsum("ni,nij->nj", frac, cell)


@dataclass
class VEProcess:
    """VE process on ``pos`` with geometric noise levels; also the corruption for training.

    ``num_levels`` is the sampling discretisation N (levels 0..N-1, sigma increasing); training draws
    sigma continuously (``train_sigma``).
    """

    sigma_min: float = 0.01
    sigma_max: float = 10.0
    num_levels: int = 200
    train_sigma: str = "log_normal"  #: "log_normal" (ln sigma ~ N(ln train_sigma_median, train_log_std^2)), "log_uniform" or "uniform"
    train_sigma_median: float = 0.3  #: Angstrom
    train_log_std: float = 1.2

    key = F.POSITIONS

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def sigmas(self) -> torch.Tensor:
        """(N,) float64 noise levels, Angstrom, increasing."""
        return geometric_sigmas(self.sigma_min, self.sigma_max, self.num_levels)

    def sigma_at(self, level: int) -> float:
        """Noise level in Angstrom of a schedule level (0 for level -1, the clean data)."""
        return 0.0 if level < 0 else float(self.sigmas[level])

    # --- training ---------------------------------------------------------------------------------
    def sample_sigma(self, n: int, *, generator=None, device=None) -> torch.Tensor:
        """(n,) training noise levels in [sigma_min, sigma_max], Angstrom (see ``train_sigma``)."""
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        if self.train_sigma == "log_uniform":
            return torch.exp(lo + torch.rand(n, generator=generator, device=device) * (hi - lo))
        if self.train_sigma == "log_normal":
            z = torch.randn(n, generator=generator, device=device)
            return torch.exp((math.log(self.train_sigma_median) + self.train_log_std * z).clamp(lo, hi))
        if self.train_sigma == "uniform":
            return self.sigma_min + torch.rand(n, generator=generator, device=device) * (self.sigma_max - self.sigma_min)
        raise ValueError(f"train_sigma must be 'log_normal', 'log_uniform' or 'uniform', got {self.train_sigma!r}")

    def corrupt(self, batch: dict, sigma: torch.Tensor, *, generator=None) -> tuple[dict, torch.Tensor]:
        """Noised copy of ``batch`` at per-crystal ``sigma`` (B,), and the regression target (n, 3).

        The target is ``d_mic(x_sigma -> x_0) / sigma`` (unitless, ~ -eps), what ``sigma * score`` should be.
        """
        pos, cell, graph = batch[F.POSITIONS], batch[F.CELL], batch[F.BATCH]
        sig = sigma.to(pos.dtype)[graph].unsqueeze(-1)
        noisy = wrap_positions(pos + sig * noise.randn(pos.shape, pos, generator, batch), cell, graph)
        target = minimum_image(pos - noisy, cell[graph]) / sig
        out = dict(batch)
        out[F.POSITIONS], out[F.SIGMA] = noisy, sigma.to(pos.dtype)
        return out, target

    def loss(self, score: torch.Tensor, target: torch.Tensor, batch: dict) -> torch.Tensor:
        """DSM loss with lambda = sigma^2: per-atom squared error, mean over each crystal, then over crystals."""
        sig = batch[F.SIGMA][batch[F.BATCH]].unsqueeze(-1)
        per_atom = ((sig * score - target) ** 2).sum(-1)
        graph = batch[F.BATCH]
        n_graph = batch[F.NUM_ATOMS].shape[0]
        per_graph = torch.zeros(n_graph, dtype=per_atom.dtype, device=per_atom.device).index_add_(0, graph, per_atom)
        return (per_graph / batch[F.NUM_ATOMS]).mean()

    # --- sampling ----------------------------------------------------------------------------------
    def prior(self, batch: dict, *, generator=None) -> torch.Tensor:
        """Positions uniform in each crystal's cell (n, 3), Angstrom: the wrapped limit of large sigma."""
        pos = batch[F.POSITIONS]
        frac = noise.rand(pos.shape, pos, generator, batch)
        return torch.einsum("ni,nij->nj", frac, batch[F.CELL][batch[F.BATCH]])

    def noise_to(self, x0: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Sample ``x_level ~ q(x_level | x0)`` = ``x0 + sigma_level z``; exactly ``x0`` at level -1."""
        if level < 0:
            return x0
        noisy = x0 + self.sigma_at(level) * noise.randn(x0.shape, x0, generator, batch)
        return wrap_positions(noisy, batch[F.CELL], batch[F.BATCH])

    def forward_step(self, x: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Re-noise from ``level`` to ``level + 1``: add ``sqrt(sigma_{l+1}^2 - sigma_l^2) z`` (RePaint jump)."""
        var = self.sigma_at(level + 1) ** 2 - self.sigma_at(level) ** 2
        return wrap_positions(x + var**0.5 * noise.randn(x.shape, x, generator, batch), batch[F.CELL], batch[F.BATCH])

    def predictor_step(self, x, score, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Ancestral step from ``level`` to ``level - 1`` (Song et al. 2021, SMLD ancestral sampling).

        ``x' = x + (s_l^2 - s_{l-1}^2) score + sqrt(s_{l-1}^2 (s_l^2 - s_{l-1}^2) / s_l^2) z``.
        """
        s2, s2_next = self.sigma_at(level) ** 2, self.sigma_at(level - 1) ** 2
        step = s2 - s2_next
        x = x + step * score + (s2_next * step / s2) ** 0.5 * noise.randn(x.shape, x, generator, batch)
        return wrap_positions(x, batch[F.CELL], batch[F.BATCH])

    def corrector_step(self, x, score, level: int, batch: dict, *, snr: float, generator=None) -> torch.Tensor:
        """Langevin step at ``level`` with step size ``eps = 2 (snr ||z|| / ||score||)^2`` per crystal.

        Norms are over all atoms of a crystal (Song et al. 2021, Algorithm 4). The step size is capped at
        ``sigma_level^2`` (a step then moves atoms by at most ~sqrt(2) sigma): with the exact score
        ``||score|| ~ ||z|| / sigma`` the rule gives ``2 snr^2 sigma^2``, far below the cap, but a score that
        a network underestimates would otherwise fling atoms across the cell.
        """
        z = noise.randn(x.shape, x, generator, batch)
        graph, n_graph = batch[F.BATCH], batch[F.NUM_ATOMS].shape[0]

        def per_graph_norm(v):
            sq = torch.zeros(n_graph, dtype=v.dtype, device=v.device).index_add_(0, graph, (v * v).sum(-1))
            return sq.sqrt()

        eps = 2 * (snr * per_graph_norm(z) / per_graph_norm(score).clamp_min(1e-12)) ** 2
        eps = eps.clamp(max=self.sigma_at(level) ** 2)[graph].unsqueeze(-1)
        x = x + eps * score + (2 * eps).sqrt() * z
        return wrap_positions(x, batch[F.CELL], batch[F.BATCH])
