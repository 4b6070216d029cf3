"""Per-step constraints of the sampling loop: projections applied to a field after every predictor step.

A projection is data given to :func:`diffase.diffusion.sampler.sample`, like the processes: it names the field
it acts on (``key``) and maps ``(x, t, batch) -> x``, where ``t`` in [0, 1] is the diffusion time of the
level just reached (1 = the prior, 0 = the clean data, so the last call of a run has ``t = 0``).
Projections are stored in checkpoints by :data:`PROJECTIONS` name and their ``to_dict()`` settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from diffase.data import fields as F


@dataclass
class ProgressiveProjection:
    """What every progressive projection shares: the node field ``key`` it acts on and the strength
    ``lambda(t) = (1 - t)^power`` of its correction: 0 at the prior (t = 1), 1 at the last step (t = 0)."""

    key: str
    power: float = 1.0

    def __post_init__(self):
        if F.field_kind(self.key) != "node":
            raise ValueError(f"{type(self).__name__} acts on a per-site field; {self.key!r} is not a node field")
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")

    def to_dict(self) -> dict:
        return asdict(self)

    def strength(self, t: float) -> float:
        """Share of the correction applied at time ``t`` in [0, 1]: 1 at t = 0, 0 at t = 1."""
        return (1.0 - float(t)) ** self.power


@dataclass
class ChargeNeutrality(ProgressiveProjection):
    """Progressive charge neutrality of a per-site charge field (Okuda, Takahara & Mizoguchi 2026).

    After each predictor step every crystal's mean excess charge ``m_g = sum_i q_i / n_g`` (e per site) is
    removed with strength ``lambda(t) = (1 - t)^power``: ``q_i <- q_i - lambda(t) m_g``. Early in reverse time
    (t near 1) the charges move freely; at the last step (t = 0, lambda = 1) each crystal's total charge is
    zero to float rounding. ``key``: the node field (n_atoms,) of charges, e.
    """

    key: str = F.BADER_CHARGE

    def __call__(self, x: torch.Tensor, t: float, batch: dict) -> torch.Tensor:
        """Charges (n_atoms,) e with ``strength(t)`` of each crystal's mean excess removed."""
        graph, counts = batch[F.BATCH], batch[F.NUM_ATOMS]
        total = torch.zeros(counts.shape[0], dtype=x.dtype, device=x.device).index_add_(0, graph, x)
        return x - self.strength(t) * (total / counts.to(x.dtype))[graph]


@dataclass
class LatentRange(ProgressiveProjection):
    """Progressive restriction of a latent field to [-1, 1] (the tanh range of the atomic-DOS autoencoder's
    latents; Okuda, Takahara & Mizoguchi 2026).

    After each predictor step every entry's excess over the range is removed with strength
    ``lambda(t) = (1 - t)^power``: ``z <- z - lambda(t) (z - clip(z, -1, 1))``. Early in reverse time (t near 1)
    the latents move freely; at the last step (t = 0, lambda = 1) every entry lies in [-1, 1].
    ``key``: a node field (n_atoms, d) of latents (dimensionless).
    """

    key: str = F.ADOS_LATENT

    def __call__(self, x: torch.Tensor, t: float, batch: dict) -> torch.Tensor:
        """Latents with ``strength(t)`` of their excess over [-1, 1] removed (same shape)."""
        return x - self.strength(t) * (x - x.clamp(-1.0, 1.0))


#: Projection classes by the name a checkpoint stores.
PROJECTIONS = {cls.__name__: cls for cls in (ChargeNeutrality, LatentRange)}
