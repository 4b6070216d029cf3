"""Wrapped-normal diffusion of fractional coordinates (DiffCSP, Jiao et al. 2023, sec. 4.2).

Forward process, per fractional axis: ``f_t = w(f_0 + sigma(t) eps)``, ``eps ~ N(0, 1)``, ``w(x) = x mod 1``,
with ``sigma(t) = sigma_min^(1-t) sigma_max^t`` (exponential, 0.005 -> 0.5, t = step / T). At sigma = 0.5
the wrapped normal is within 1.5% of uniform on [0, 1) (its first Fourier term is 2 exp(-2 pi^2 sigma^2)
= 0.014), so, as in DiffCSP, the prior is uniform fractional coordinates.

The transition density is the wrapped normal ``p(d) = sum_k N(d + k; 0, sigma^2)`` of the displacement d;
its score ``d/dd log p`` is computed exactly from the sum over the ``2 n_images + 1`` nearest images
(log-sum-exp; images beyond |k| = 3 weigh < exp(-24) at sigma = 0.5). The network predicts the score
divided by ``sqrt(E[score^2])`` (per axis, at that sigma); this is DiffCSP's loss weight
``lambda_t = 1 / E[||grad log q||^2]`` written as a normalised target, so every level contributes O(1).
``E[score^2]`` is computed by quadrature (no Monte Carlo).

Written by hand: no maintained library provides the wrapped-normal score/process on a torus.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch

from diffase.data import fields as F
from diffase.diffusion import noise
from diffase.diffusion.schedules import level_timestep


def _images(n_images: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(-n_images, n_images + 1, dtype=like.dtype, device=like.device)


def wrapped_normal_log_density(d: torch.Tensor, sigma: torch.Tensor | float, n_images: int = 3) -> torch.Tensor:
    """Elementwise log density of the wrapped normal N_w(0, sigma^2) on [0, 1) at displacements ``d``.

    ``sigma`` broadcasts against ``d`` (fractional units). Truncated to images |k| <= ``n_images``.
    """
    sigma = torch.as_tensor(sigma, dtype=d.dtype, device=d.device)
    x = d.unsqueeze(-1) + _images(n_images, d)
    s = sigma.unsqueeze(-1)
    return torch.logsumexp(-0.5 * (x / s) ** 2, dim=-1) - torch.log(sigma * math.sqrt(2 * math.pi))


def wrapped_normal_score(d: torch.Tensor, sigma: torch.Tensor | float, n_images: int = 3) -> torch.Tensor:
    """Elementwise score ``d/dd log N_w(d; 0, sigma^2)`` (1/fractional unit), exact up to the image cut-off."""
    sigma = torch.as_tensor(sigma, dtype=d.dtype, device=d.device)
    x = d.unsqueeze(-1) + _images(n_images, d)
    s2 = (sigma**2).unsqueeze(-1)
    weights = torch.softmax(-0.5 * x**2 / s2, dim=-1)
    return -(weights * x).sum(-1) / s2.squeeze(-1)


def score_second_moment(sigma: torch.Tensor, n_images: int = 3, n_points: int = 2001) -> torch.Tensor:
    """``E_{d ~ N_w(0, sigma^2)}[score(d)^2]`` per axis, by trapezoidal quadrature; ``sigma`` (m,) -> (m,).

    The grid covers ``|d| <= min(0.5, 10 sigma)``, so narrow and wide wrapped normals are resolved alike
    (equals 1/sigma^2 for small sigma).
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    half = torch.clamp(10 * sigma, max=0.5)
    u = torch.linspace(-1.0, 1.0, n_points, dtype=torch.float64)
    d = half.unsqueeze(-1) * u  # (m, P)
    s = sigma.unsqueeze(-1)
    density = torch.exp(wrapped_normal_log_density(d, s, n_images))
    score = wrapped_normal_score(d, s, n_images)
    return torch.trapezoid(density * score**2, d, dim=-1) / torch.trapezoid(density, d, dim=-1)


@functools.lru_cache(maxsize=8)
def _score_norm_table(sigma_min: float, sigma_max: float, num_steps: int, n_images: int) -> torch.Tensor:
    t = torch.arange(num_steps + 1, dtype=torch.float64).clamp_min(1) / num_steps
    return score_second_moment(sigma_min ** (1 - t) * sigma_max**t, n_images).sqrt()


@dataclass
class WrappedNormalProcess:
    """Wrapped-normal process on ``frac_coords`` (n_atoms, 3), trained on ``num_steps`` steps, sampled on
    ``num_levels`` levels (see :func:`~diffase.diffusion.schedules.level_timestep`).

    The network output for this field is the normalised score ``score / sqrt(E[score^2])``.
    ``corrector_step_lr`` is DiffCSP's Langevin step ``gamma``: step = gamma (sigma / sigma_min)^2.
    """

    sigma_min: float = 0.005
    sigma_max: float = 0.5
    num_steps: int = 1000
    num_levels: int = 1000
    n_images: int = 3
    corrector_step_lr: float = 1e-5

    key = F.FRAC_COORDS

    def to_dict(self) -> dict:
        return asdict(self)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Noise level (fractional units) at time ``t`` in [0, 1]; 0 at t = 0 exactly (the clean data)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        sig = self.sigma_min ** (1 - t) * self.sigma_max**t
        return torch.where(t > 0, sig, torch.zeros_like(sig))

    def sigma_at(self, level: int) -> float:
        """Noise level of a sampling level (0 at level -1)."""
        return float(self.sigma(level_timestep(level, self.num_levels, self.num_steps) / self.num_steps))

    @property
    def score_norms(self) -> torch.Tensor:
        """(T + 1,) float64 ``sqrt(E[score^2])`` at steps 0..T (entry 0 unused: sigma = 0 is the data)."""
        return _score_norm_table(self.sigma_min, self.sigma_max, self.num_steps, self.n_images)

    def _norm_at(self, level: int) -> float:
        return float(self.score_norms[level_timestep(level, self.num_levels, self.num_steps)])

    # --- training ---------------------------------------------------------------------------------
    def corrupt(self, f0: torch.Tensor, t_step_atom: torch.Tensor, *, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise ``f0`` (n, 3) at per-atom integer steps ``t_step_atom`` (n,) in 1..T; return ``(f_t, target)``.

        ``target`` (n, 3) is the normalised score of ``q(f_t | f_0)``, what the network should output.
        """
        sig = self.sigma(t_step_atom / self.num_steps).to(f0.dtype).unsqueeze(-1)
        d = sig * noise.randn(f0.shape, f0, generator)
        norm = self.score_norms.to(f0.device)[t_step_atom].to(f0.dtype).unsqueeze(-1)
        target = wrapped_normal_score(d, sig, self.n_images) / norm
        return torch.remainder(f0 + d, 1.0), target

    @staticmethod
    def loss(output: torch.Tensor, target: torch.Tensor, *_) -> torch.Tensor:
        """Mean squared error of the normalised score (DiffCSP's lambda_t-weighted score matching; further
        arguments, ``x_t`` and steps, are not needed)."""
        return ((output - target) ** 2).mean()

    # --- sampling ---------------------------------------------------------------------------------
    def prior(self, batch: dict, *, generator=None) -> torch.Tensor:
        """Uniform fractional coordinates (n_atoms, 3)."""
        n = batch[F.BATCH].shape[0]
        like = batch[F.CELL]
        return noise.rand((n, 3), like, generator, batch)

    def noise_to(self, x0: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Sample ``q(f_level | f_0)``; exactly ``f_0`` at level -1."""
        if level < 0:
            return x0
        return torch.remainder(x0 + self.sigma_at(level) * noise.randn(x0.shape, x0, generator, batch), 1.0)

    def forward_step(self, x: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Re-noise from ``level`` to ``level + 1`` (variance ``sigma_{l+1}^2 - sigma_l^2``)."""
        var = self.sigma_at(level + 1) ** 2 - self.sigma_at(level) ** 2
        return torch.remainder(x + var**0.5 * noise.randn(x.shape, x, generator, batch), 1.0)

    def predictor_step(self, x, output, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Ancestral step ``level -> level - 1``: ``x + (s^2 - s'^2) score + sqrt(s'^2 (s^2 - s'^2) / s^2) z``."""
        s, s_next = self.sigma_at(level), self.sigma_at(level - 1)
        score = output * self._norm_at(level)
        step = s**2 - s_next**2
        x = x + step * score + (s_next**2 * step / s**2) ** 0.5 * noise.randn(x.shape, x, generator, batch)
        return torch.remainder(x, 1.0)

    def corrector_step(self, x, output, level: int, batch: dict, *, generator=None, **_) -> torch.Tensor:
        """Langevin step at ``level`` with step ``gamma (sigma / sigma_min)^2`` (DiffCSP; ``snr`` is unused)."""
        s = self.sigma_at(level)
        step = self.corrector_step_lr * (s / self.sigma_min) ** 2
        x = x + step * output * self._norm_at(level) + (2 * step) ** 0.5 * noise.randn(x.shape, x, generator, batch)
        return torch.remainder(x, 1.0)
