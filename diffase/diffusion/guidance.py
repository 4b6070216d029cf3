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


def drop_conditions(batch: dict) -> dict:
    """A shallow copy of ``batch`` with every graph condition set to NaN ("not given")."""
    out = dict(batch)
    for key, value in batch.items():
        if key.startswith(F.CONDITION_PREFIX):
            out[key] = torch.full_like(value, float("nan"))
    return out


def guided_score_fn(model_fn: Callable[[dict, int], dict], guidance_scale: float,
                    discrete: frozenset[str] = frozenset({F.TYPE_TOKENS})) -> Callable[[dict, int], dict]:
    """Wrap ``model_fn(batch, level) -> {field: output}`` into the guided score function of the sampler.

    The conditional call sees the batch's ``cond:*`` values; the unconditional one sees them all as NaN.
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
