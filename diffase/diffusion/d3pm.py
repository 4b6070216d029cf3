"""Absorbing-state D3PM on atom types (Austin et al. 2021; MatterGen's atom-type process).

Types are tokens ``0..K-1`` (a model's element list) plus the absorbing mask token ``K``. Forward: each
token is independently replaced by the mask with probability ``1 - alpha(t)``, with the cosine schedule
``alpha(t) = cos^2(pi/2 (t + s)/(1 + s)) / cos^2(pi/2 s/(1 + s))``, s = 0.008, t = step / T, so that
``alpha(0) = 1`` and ``alpha(1) = 0`` (at t = 1 every token is masked: the prior).

The posterior ``q(x_s | x_t, x_0)`` (s < t) is written once (:func:`posterior_probs`): an unmasked token stays;
a masked one becomes ``x_0`` with probability ``(alpha_s - alpha_t)/(1 - alpha_t)`` and stays masked
otherwise. The model's reverse step is the same posterior with ``x_0`` replaced by the network's
distribution ``p(x_0 | x_t)`` (softmax of its logits over the K real tokens: it can never propose the mask).
Training minimises the variational bound (T times the KL at a random step, nats per atom) plus 0.01 times
the cross-entropy of ``p(x_0 | x_t)`` on masked atoms (D3PM's hybrid loss, lambda = 0.01).

At step 0 the unmasking probability is 1, so the reverse process ends with no mask; a mask that is still
there (a truncated schedule, a given mask) is reported as an invalid sample by the generator, never
replaced by a made-up element.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from diffase.data import fields as F
from diffase.diffusion import noise
from diffase.diffusion.schedules import level_timestep


def posterior_probs(x_t: torch.Tensor, x0_probs: torch.Tensor, alpha_t: torch.Tensor | float,
                    alpha_s: torch.Tensor | float) -> torch.Tensor:
    """``q(x_s | x_t, x_0)`` summed over ``x_0 ~ x0_probs``: (n, K + 1) probabilities (last column = mask).

    ``x_t`` (n,) tokens in 0..K; ``x0_probs`` (n, K) a distribution over clean tokens (one-hot for the true
    posterior, the network's softmax for the model); ``alpha_t <= alpha_s`` keep-probabilities at the two
    times (scalars or (n,)).
    """
    n, k = x0_probs.shape
    alpha_t = torch.as_tensor(alpha_t, dtype=x0_probs.dtype, device=x0_probs.device).expand(n)
    alpha_s = torch.as_tensor(alpha_s, dtype=x0_probs.dtype, device=x0_probs.device).expand(n)
    masked = x_t == k
    denom = (1 - alpha_t).clamp_min(1e-12)
    unmask = ((alpha_s - alpha_t) / denom).unsqueeze(-1)
    stay = ((1 - alpha_s) / denom).unsqueeze(-1)
    from_mask = torch.cat([unmask * x0_probs, stay], dim=-1)
    kept = torch.nn.functional.one_hot(x_t.clamp_max(k), k + 1).to(x0_probs.dtype)
    return torch.where(masked.unsqueeze(-1), from_mask, kept)


@dataclass
class AbsorbingD3PM:
    """Absorbing D3PM on ``type_tokens`` over ``num_classes`` real tokens (mask = ``num_classes``)."""

    num_classes: int
    num_steps: int = 1000
    num_levels: int = 1000
    cosine_s: float = 0.008
    ce_weight: float = 0.01

    key = F.TYPE_TOKENS

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mask_token(self) -> int:
        return self.num_classes

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """Probability that a token is still unmasked at time ``t`` in [0, 1] (1 at t = 0, 0 at t = 1)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        s = self.cosine_s
        a = torch.cos(0.5 * math.pi * (t + s) / (1 + s)) ** 2 / math.cos(0.5 * math.pi * s / (1 + s)) ** 2
        return torch.where(t >= 1, torch.zeros_like(a), a.clamp(0.0, 1.0))

    def _alpha_at(self, level: int) -> float:
        return float(self.alpha(level_timestep(level, self.num_levels, self.num_steps) / self.num_steps))

    def _mask_where(self, x: torch.Tensor, p_mask: torch.Tensor | float, generator, batch: dict | None = None) -> torch.Tensor:
        u = noise.rand(x.shape, x, generator, batch, dtype=torch.float64)
        return torch.where(u < torch.as_tensor(p_mask, dtype=torch.float64, device=x.device),
                           torch.full_like(x, self.mask_token), x)

    # --- training ---------------------------------------------------------------------------------
    def corrupt(self, x0: torch.Tensor, t_step_atom: torch.Tensor, *, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask clean tokens ``x0`` (n,) at per-atom integer steps ``t_step_atom`` (n,) in 1..T; return
        ``(x_t, x0)``: the target of the network's logits is the clean token."""
        return self._mask_where(x0, 1 - self.alpha(t_step_atom / self.num_steps), generator), x0

    def loss(self, logits: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t_step_atom: torch.Tensor) -> torch.Tensor:
        """Hybrid loss ``T * KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) + ce_weight * CE``, mean over atoms.

        ``logits`` (n, K) of ``p(x_0 | x_t)``; ``x0``, ``x_t`` (n,) tokens; ``t_step_atom`` (n,) steps in 1..T.
        """
        t = t_step_atom.to(torch.float64)
        a_t = self.alpha(t / self.num_steps).to(logits.dtype)
        a_s = self.alpha((t - 1) / self.num_steps).to(logits.dtype)
        log_p0 = torch.log_softmax(logits, dim=-1)
        q = posterior_probs(x_t, torch.nn.functional.one_hot(x0, self.num_classes).to(logits.dtype), a_t, a_s)
        p = posterior_probs(x_t, log_p0.exp(), a_t, a_s)
        kl = torch.where(q > 0, q * (torch.log(q.clamp_min(1e-30)) - torch.log(p.clamp_min(1e-30))), 0.0).sum(-1)
        masked = (x_t == self.mask_token).to(logits.dtype)
        ce = -log_p0.gather(-1, x0.unsqueeze(-1)).squeeze(-1) * masked
        return self.num_steps * kl.mean() + self.ce_weight * ce.sum() / masked.sum().clamp_min(1.0)

    # --- sampling ---------------------------------------------------------------------------------
    def prior(self, batch: dict, *, generator=None) -> torch.Tensor:
        """Every atom masked (n_atoms,)."""
        n = batch[F.BATCH].shape[0]
        return torch.full((n,), self.mask_token, dtype=torch.long, device=batch[F.BATCH].device)

    def noise_to(self, x0: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Sample ``q(x_level | x_0)``: mask with probability ``1 - alpha``; exactly ``x_0`` at level -1."""
        return self._mask_where(x0, 1 - self._alpha_at(level), generator, batch)

    def forward_step(self, x: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Re-noise from ``level`` to ``level + 1``: mask unmasked tokens with probability ``1 - alpha'/alpha``."""
        a, a_next = self._alpha_at(level), self._alpha_at(level + 1)
        return self._mask_where(x, 1 - a_next / a if a > 0 else 1.0, generator, batch)

    def predictor_step(self, x, output, level: int, batch: dict, *, generator=None) -> torch.Tensor:
        """Sample ``p(x_{level-1} | x_level)`` = the posterior with ``x_0 ~ softmax(output)``."""
        probs = posterior_probs(x, torch.softmax(output.to(torch.float64), -1), self._alpha_at(level),
                                self._alpha_at(level - 1))
        return noise.multinomial(probs, generator, batch)
