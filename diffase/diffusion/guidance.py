"""Classifier-free guidance as a thin wrapper of a score function (Ho & Salimans 2022).

``guided(out_uncond, out_cond, w) = out_uncond + w (out_cond - out_uncond)`` per field, with one
``guidance_scale`` w: 0 = unconditional, 1 = conditional, > 1 = stronger conditioning. Continuous outputs
(scores, predicted noise) are combined as they are; logits of discrete fields are combined as
log-probabilities (the guided distribution is ``p_u^(1-w) p_c^w``, renormalised by the softmax).
At w = 0 and w = 1 only one network call is made, so the identities hold exactly.

Classifier guidance (Dhariwal & Nichol 2021; DOSMatGen's alternative to CFG) wraps a score function the same
way: :func:`classifier_guided_score_fn` adds ``-scale * grad`` of a regressor's loss on the noisy crystal to
the coordinate and lattice outputs, in the units each process reads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffase.data import fields as F


def _is_condition(key: str) -> bool:
    return key.startswith(F.CONDITION_PREFIX) or key == F.NODE_COND


def drop_conditions(batch: dict) -> dict:
    """A shallow copy of ``batch`` with every condition, graph (``cond:*``) and per-atom (``node_cond``), set
    to NaN ("not given")."""
    out = dict(batch)
    for key, value in batch.items():
        if _is_condition(key):
            out[key] = torch.full_like(value, float("nan"))
    return out


def training_dropout(batch: dict, *, p_uncond: float, p_each: float = 0.0,
                     generator: torch.Generator | None = None) -> dict:
    """A shallow copy of ``batch`` with conditions dropped for guidance training, per crystal (graph
    conditions ``cond:*`` and the per-atom ``node_cond`` rows of the crystal's atoms).

    Each crystal loses ALL its conditions together with probability ``p_uncond``: the unconditional branch
    that sampling calls (:func:`drop_conditions` drops every condition at once) is then trained on a
    ``p_uncond`` share of crystals whatever the number of conditions. Dropping each condition on its own
    with ``p`` would train that branch on only ``p^k`` of the crystals (4 % for two conditions at 0.2).
    ``p_each`` additionally drops each remaining condition independently (0 = off), so a model conditioned
    on several properties also learns each one given alone.
    """
    keys = [k for k in batch if _is_condition(k)]
    if not keys:
        return batch
    for name, p in (("p_uncond", p_uncond), ("p_each", p_each)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    n_graph = batch[F.NUM_ATOMS].shape[0]
    device = batch[F.NUM_ATOMS].device
    drop_all = torch.rand(n_graph, generator=generator, device=device) < p_uncond
    out = dict(batch)
    for key in keys:
        drop = drop_all | (torch.rand(n_graph, generator=generator, device=device) < p_each)
        if key == F.NODE_COND:  # per-atom rows follow their crystal
            drop = drop[batch[F.BATCH]]
        value = batch[key]
        out[key] = torch.where(drop.view(-1, *([1] * (value.dim() - 1))), torch.full_like(value, float("nan")), value)
    return out


def guided_score_fn(model_fn: Callable[[dict, int], dict], guidance_scale: float,
                    discrete: frozenset[str] = frozenset({F.TYPE_TOKENS})) -> Callable[[dict, int], dict]:
    """Wrap ``model_fn(batch, level) -> {field: output}`` into the guided score function of the sampler.

    The conditional call sees the batch's ``cond:*`` and ``node_cond`` values; the unconditional one sees them
    all as NaN.
    Fields in ``discrete`` hold logits and are combined as log-probabilities.
    """
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0 (0 = unconditional, 1 = conditional), got {guidance_scale}")

    def score(batch: dict, level: int) -> dict:
        if guidance_scale == 0:
            return model_fn(drop_conditions(batch), level)
        cond = model_fn(batch, level)
        if guidance_scale == 1:
            return cond
        uncond = model_fn(drop_conditions(batch), level)
        out = {}
        for key, c in cond.items():
            u = uncond[key]
            if key in discrete:
                c, u = torch.log_softmax(c, -1), torch.log_softmax(u, -1)
            out[key] = u + guidance_scale * (c - u)
        return out

    return score


def site_dos_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the conditioned sites of the mean squared error over the grid between predicted and target
    site DOS rows, both (n_atoms, P) in the model's transformed units; NaN target rows ("free") add nothing.
    A sum over sites, so each crystal's gradient is its own whatever the batch."""
    given = torch.isfinite(target).all(-1)
    return ((pred[given] - target[given]) ** 2).mean(-1).sum()


def classifier_guided_score_fn(score_fn: Callable[[dict, int], dict], regressor_fn: Callable[[dict, int], torch.Tensor],
                               scale: float, coords_process, lattice_process=None) -> Callable[[dict, int], dict]:
    """Wrap ``score_fn`` with the gradient of a time-dependent regressor of the per-atom condition.

    ``regressor_fn(batch, level) -> (n_atoms, P)`` predicts the condition from the noisy crystal (differentiable
    in ``frac_coords`` and ``cell``); the target is the batch's ``node_cond`` (NaN rows free). With
    ``g = grad site_dos_loss`` the guided score is ``score - scale g``: the wrapped-normal coordinate output is a
    score divided by ``sqrt(E[score^2])`` (``coords_process``), so it gets ``- scale g_f / norm``; the DDPM
    lattice output is noise ``eps = -sqrt(1 - abar) score`` (``lattice_process``, None = coordinates only), so
    it gets ``+ scale sqrt(1 - abar) g_L``. ``scale`` 0 returns ``score_fn``'s output untouched.
    """
    if scale < 0:
        raise ValueError(f"classifier guidance scale must be >= 0 (0 = off), got {scale}")

    def score(batch: dict, level: int) -> dict:
        out = score_fn(batch, level)
        if scale == 0:
            return out
        with torch.enable_grad():
            frac = batch[F.FRAC_COORDS].detach().requires_grad_(True)
            cell = batch[F.CELL].detach().requires_grad_(True)
            pred = regressor_fn({**batch, F.FRAC_COORDS: frac, F.CELL: cell}, level)
            grad_frac, grad_cell = torch.autograd.grad(site_dos_loss(pred, batch[F.NODE_COND]), (frac, cell),
                                                       allow_unused=True)
        out = dict(out)
        if grad_frac is not None:
            out[F.FRAC_COORDS] = out[F.FRAC_COORDS] - scale * grad_frac / coords_process._norm_at(level)
        if lattice_process is not None and grad_cell is not None:
            abar = float(lattice_process.alpha_bars[lattice_process._step(level)])
            out[F.CELL] = out[F.CELL] + scale * (1 - abar) ** 0.5 * grad_cell
        return out

    return score
