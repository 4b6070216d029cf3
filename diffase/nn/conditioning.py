"""Embeddings of diffusion time and of graph-level conditions (with a learned "no condition" vector).

A condition is declared by a :class:`ConditionSpec` and read from the batch key ``"cond:<name>"``
(:func:`diffase.data.fields.condition_key`). Three kinds, as in the joint-diffusion papers:

* ``scalar`` (band gap eV, formation energy eV/atom, density g/cm^3, ...): ``(value - mean) / std`` through
  sinusoidal features and a linear map;
* ``categorical`` (space group, ...): class index 0..dim-1 -> one-hot -> linear map (the space group's
  class is its international number 1..230, so its ``dim`` is 231);
* ``multi_hot`` (chemical system: one entry per element or element group): the vector -> linear map.

A NaN value (or a missing key) means "not given" and selects the condition's learned null embedding;
this is what classifier-free guidance drops to, in training (per-sample dropout) and in sampling.

Per-atom conditions (``node_cond`` (n_atoms, d), e.g. a site DOS) work the same way per atom
(:class:`NodeConditionEmbedding`): a row with a NaN is "not given" and takes the learned null vector, so a
crystal can condition some sites and leave the others free, and guidance can drop them all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffase.data import fields as F

CONDITION_KINDS = ("scalar", "categorical", "multi_hot")


def sinusoidal_embedding(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style features of ``x`` (m,) -> (m, dim): sin/cos at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=x.dtype, device=x.device) / half)
    args = x.unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


@dataclass
class ConditionSpec:
    """One graph-level condition: ``kind`` in ``CONDITION_KINDS``; ``dim`` = classes or vector length
    (1 for scalars); ``mean``/``std`` normalise scalars (set from the training labels)."""

    name: str
    kind: str = "scalar"
    dim: int = 1
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.kind not in CONDITION_KINDS:
            raise ValueError(f"condition {self.name!r}: kind must be one of {CONDITION_KINDS}, got {self.kind!r}")
        if self.std <= 0:
            raise ValueError(f"condition {self.name!r}: std must be > 0, got {self.std}")

    def to_dict(self) -> dict:
        return asdict(self)


class ConditionEmbedding(nn.Module):
    """Sum of per-condition embeddings (m, dim); absent (NaN / missing) conditions use a learned null vector."""

    def __init__(self, specs: list[ConditionSpec], dim: int):
        super().__init__()
        self.specs = list(specs)
        self.dim = dim
        self.maps = nn.ModuleDict()
        self.null = nn.ParameterDict()
        for spec in self.specs:
            width = dim if spec.kind == "scalar" else spec.dim
            self.maps[spec.name] = nn.Linear(width, dim)
            self.null[spec.name] = nn.Parameter(torch.zeros(dim))

    def forward(self, batch: dict, n_graph: int, like: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n_graph, self.dim, dtype=like.dtype, device=like.device)
        for spec in self.specs:
            value = batch.get(F.condition_key(spec.name))
            if value is None:
                out = out + self.null[spec.name]
                continue
            value = value.to(like.dtype).reshape(n_graph, -1)
            given = ~torch.isnan(value).any(-1, keepdim=True)
            clean = torch.nan_to_num(value)
            if spec.kind == "scalar":
                feats = sinusoidal_embedding((clean[:, 0] - spec.mean) / spec.std * 100.0, self.dim)
            elif spec.kind == "categorical":
                feats = nn.functional.one_hot(clean[:, 0].long().clamp(0, spec.dim - 1), spec.dim).to(like.dtype)
            else:
                feats = clean
            out = out + torch.where(given, self.maps[spec.name](feats), self.null[spec.name])
        return out


class NodeConditionEmbedding(nn.Module):
    """Per-atom conditions (n_atoms, ``dim_in``) -> (n_atoms, ``dim``) by a linear map; a row holding a NaN,
    or a batch without the field, takes a learned "not given" vector."""

    def __init__(self, dim_in: int, dim: int):
        super().__init__()
        self.map = nn.Linear(dim_in, dim)
        self.null = nn.Parameter(torch.zeros(dim))

    def forward(self, value: torch.Tensor | None, n_atoms: int, like: torch.Tensor) -> torch.Tensor:
        if value is None:
            return self.null.to(like.dtype).expand(n_atoms, -1)
        value = value.to(like.dtype)
        given = ~torch.isnan(value).any(-1, keepdim=True)
        return torch.where(given, self.map(torch.nan_to_num(value)), self.null.to(like.dtype))
