"""DDPM (variance-preserving) diffusion of a continuous field (Ho et al. 2020): DiffCSP's lattice process, and
the process of per-site descriptors (Bader charges, DOS latents) and other continuous latents.

Forward: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` on the field ``key`` of the batch (rows = atoms for
a node field, crystals for a graph or grid field, each row of shape ``row_shape``), ``abar_t = prod_{s<=t}
(1 - beta_s)`` with linear ``beta`` from 1e-4 to 0.02 over T = 1000 steps; ``abar_T = 4e-5``, so the prior
is ``N(0, I)`` per entry. The network predicts ``eps``. :class:`LatticeDDPM` is the process on the
(B, 3, 3) cell (rows = lattice vectors, Angstrom).

The posterior ``q(L_s | L_t, L_0)`` between any two steps s < t is written once (:meth:`posterior`) and
serves the ancestral predictor with ``L_0`` estimated from the predicted noise; with s = t - 1 it is
DDPM's eq. 7, with fewer sampling levels the respaced process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from diffase.data import fields as F
from diffase.diffusion import noise
from diffase.diffusion.schedules import level_timestep


@dataclass
class DDPM:
    """DDPM on the batch field ``key`` (rows of ``row_shape``) with linear betas; trained on ``num_steps``
    steps, sampled on ``num_levels`` levels."""

    key: str
    row_shape: tuple[int, ...] = ()
    beta_min: float = 1e-4
    beta_max: float = 0.02
    num_steps: int = 1000
    num_levels: int = 1000

    def __post_init__(self):
        self.row_shape = tuple(int(d) for d in self.row_shape)  # a list after a JSON / checkpoint round trip

    def to_dict(self) -> dict:
        return {**asdict(self), "row_shape": list(self.row_shape)}

    @property
    def alpha_bars(self) -> torch.Tensor:
        """(T + 1,) float64 ``abar_t`` for t = 0..T (``abar_0 = 1``: the clean data)."""
        betas = torch.linspace(self.beta_min, self.beta_max, self.num_steps, dtype=torch.float64)
        return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])

    def _step(self, level: int) -> int:
        return level_timestep(level, self.num_levels, self.num_steps)

    def posterior(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, s: int) -> tuple[torch.Tensor, float]:
        """Mean and variance of ``q(x_s | x_t, x_0)`` for steps ``0 <= s < t``.

        With ``a = abar_t / abar_s``: mean ``= sqrt(abar_s)(1 - a)/(1 - abar_t) x_0
        + sqrt(a)(1 - abar_s)/(1 - abar_t) x_t``, variance ``= (1 - a)(1 - abar_s)/(1 - abar_t)``.
        """
        ab = self.alpha_bars
        ab_t, ab_s = float(ab[t]), float(ab[s])
        a = ab_t / ab_s
        mean = (ab_s**0.5 * (1 - a) / (1 - ab_t)) * x0 + (a**0.5 * (1 - ab_s) / (1 - ab_t)) * x_t
        return mean, (1 - a) * (1 - ab_s) / (1 - ab_t)

    # --- training ---------------------------------------------------------------------------------
    def corrupt(self, x0: torch.Tensor, t_step: torch.Tensor, *, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise ``x0`` (rows, *row_shape) at integer steps ``t_step`` (rows,) in 1..T; return ``(x_t, eps)``."""
        ab = self.alpha_bars.to(x0.device)[t_step].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        eps = noise.randn(x0.shape, x0, generator)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, eps

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor, *_) -> torch.Tensor:
        """Mean squared error of the predicted noise (further arguments, ``x_t`` and steps, are not needed)."""
        return ((output - target) ** 2).mean()

    # --- sampling ---------------------------------------------------------------------------------
    def prior(self, batch: dict, *, generator=None) -> torch.Tensor:
        """``N(0, I)`` rows (rows, *row_shape): one per atom for a node field, one per crystal otherwise; the
        dtype and device of the batch's cells."""
        like = batch[F.CELL]
        rows = batch[F.BATCH].shape[0] if F.field_kind(self.key) == "node" else batch[F.NUM_ATOMS].shape[0]
        return noise.randn((rows, *self.row_shape), like, generator, batch)

    def noise_to(self, x0: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Sample ``q(x_level | x_0)``; exactly ``x_0`` at level -1."""
        t = self._step(level)
        if t == 0:
            return x0
        ab = float(self.alpha_bars[t])
        return ab**0.5 * x0 + (1 - ab) ** 0.5 * noise.randn(x0.shape, x0, generator, batch)

    def forward_step(self, x: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Re-noise from ``level`` to ``level + 1``: ``sqrt(a) x + sqrt(1 - a) z``, ``a = abar_t'/abar_t``."""
        ab = self.alpha_bars
        a = float(ab[self._step(level + 1)] / ab[self._step(level)])
        return a**0.5 * x + (1 - a) ** 0.5 * noise.randn(x.shape, x, generator, batch)

    def predictor_step(self, x, output, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Ancestral step ``level -> level - 1``: sample the posterior with ``x_0 = (x - sqrt(1-abar) eps)/sqrt(abar)``."""
        t, s = self._step(level), self._step(level - 1)
        ab_t = float(self.alpha_bars[t])
        x0 = (x - (1 - ab_t) ** 0.5 * output) / ab_t**0.5
        mean, var = self.posterior(x, x0, t, s)
        if var == 0:
            return mean
        return mean + var**0.5 * noise.randn(x.shape, x, generator, batch)


@dataclass
class LatticeDDPM(DDPM):
    """:class:`DDPM` on ``cell`` (B, 3, 3), Angstrom (DiffCSP's lattice process)."""

    key: str = F.CELL
    row_shape: tuple[int, ...] = (3, 3)
