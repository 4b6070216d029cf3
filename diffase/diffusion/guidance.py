"""Classifier-free guidance as a thin wrapper of a score function (Ho & Salimans 2022).

``guided(out_uncond, out_cond, w) = out_uncond + w (out_cond - out_uncond)`` per field, with one
``guidance_scale`` w: 0 = unconditional, 1 = conditional, > 1 = stronger conditioning. Continuous outputs
(scores, predicted noise) are combined as they are; logits of discrete fields are combined as
log-probabilities (the guided distribution is ``p_u^(1-w) p_c^w``, renormalised by the softmax).
At w = 0 and w = 1 only one network call is made, so the identities hold exactly.
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
