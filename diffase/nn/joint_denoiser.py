"""Periodic E(3)-invariant denoiser of atom types, fractional coordinates and lattice (DiffCSP's CSPNet).

Input: a batch with ``type_tokens`` (n,) (0..K-1 elements, K = mask), ``frac_coords`` (n, 3), ``cell``
(B, 3, 3) Angstrom (rows = vectors), ``t`` (B,) diffusion time in [0, 1], ``batch``, ``num_atoms``, optional
``node_cond`` (n, d), graph conditions ``cond:<name>`` and the noisy values of extra generated node fields
(``node_fields``, e.g. ``bader_charge`` (n,)). Output: ``{type_tokens: (n, K) logits of the clean type,
frac_coords: (n, 3) normalised score, cell: (B, 3, 3) predicted lattice noise}`` plus, per extra node field,
its predicted noise in the field's shape; a generated grid field (``grid_fields``: at most one, the charge-density
latent ``density_latent`` (B, n, n, n, d)) gets its predicted noise from probe nodes (:mod:`diffase.nn.probe_branch`).

Architecture: every pair of atoms of a crystal (self-pairs included) exchanges a message built from both
atoms' features, Fourier features ``sin/cos(2 pi k df)``, k = 1..``num_freqs``, of the fractional difference
``df = f_j - f_i``, and the lattice inner products ``L L^T`` (6 numbers, Angstrom^2 / 36). Messages are
averaged per atom, and a residual MLP updates the atom (``num_layers`` layers of width ``hidden``, pre-norm).
Heads: linear per atom for types and coordinates; per crystal, the mean atom feature gives a 3x3 matrix M
and the lattice output is ``M L`` (equivariant: rotating the cell rotates it the same way). Each extra node
field (``node_fields``: batch key -> row shape, ``[]`` for one number per atom) enters the atom embedding by a
linear map of its noisy value and leaves by a linear head per atom (invariant scalars, so the symmetries
below hold for it too).

Symmetry, by construction: invariant to rotations/reflections of the Cartesian frame (only ``L L^T``
enters), to translations of fractional coordinates and integer image shifts (only periodic functions of
``df``), equivariant to permutations (mean aggregation). A re-choice of the unit cell changes ``L L^T``
and ``df``; diffase feeds every crystal in its Niggli-reduced cell (training data and user templates
alike), which makes the whole pipeline invariant to the input cell choice (tested).

Size: the papers use 512 x 6 (DiffCSP, ~12 M parameters); the shipped CPU-trained model is smaller (see
its card). Hooks for richer models: ``node_cond_dim`` adds per-atom conditions to the node embedding (NaN
rows = "not given", a learned null vector, as graph conditions); ``grid_fields`` adds ChargeDIFF's second node type,
charge probes on an n^3 grid (:class:`~diffase.nn.probe_branch.ProbeBranch`: atom<->probe messages after every
atom layer, probe<->probe circular convolutions, width ``probe_hidden``, edges from the ``probe_neighbours`` nearest
probes of each atom). A network without grid fields has no probe modules: its state-dict keys, and its outputs, are
those of a network built before the probe branch existed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from diffase.data import fields as F
from diffase.data.neighbors import all_pairs
from diffase.nn.conditioning import (
    ConditionEmbedding,
    ConditionSpec,
    NodeConditionEmbedding,
    sinusoidal_embedding,
)
from diffase.nn.probe_branch import ProbeBranch
from diffase.nn.scatter import mean_over

_TRIU = (torch.tensor([0, 0, 0, 1, 1, 2]), torch.tensor([0, 1, 2, 1, 2, 2]))


@dataclass
class JointDenoiserConfig:
    """Hyper-parameters of :class:`JointDenoiser` (stored in every checkpoint)."""

    num_elements: int  #: K real type tokens (the mask token is K)
    hidden: int = 256
    num_layers: int = 4
    num_freqs: int = 10
    time_dim: int = 128
    node_cond_dim: int = 0
    conditions: list = field(default_factory=list)  #: ConditionSpec dicts
    node_fields: dict = field(default_factory=dict)  #: extra generated node fields: batch key -> row shape (list)
    grid_fields: dict = field(default_factory=dict)  #: generated grid fields: batch key -> row shape [n, n, n, d]
    probe_hidden: int = 32  #: width of the probe nodes (only with grid_fields)
    probe_neighbours: int = 20  #: probes each atom exchanges messages with (only with grid_fields)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def condition_specs(self) -> list[ConditionSpec]:
        return [c if isinstance(c, ConditionSpec) else ConditionSpec(**c) for c in self.conditions]


class CSPLayer(nn.Module):
    """One message-passing layer: ``h_i += MLP(h_i, mean_j phi(h_i, h_j, fourier(df_ij), L L^T))``.

    The first linear map of the edge MLP is split into node-, edge- and graph-level parts, so the n^2
    edges only see one (hidden x hidden) product.
    """

    def __init__(self, hidden: int, edge_dim: int, graph_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.msg_i = nn.Linear(hidden, hidden)
        self.msg_j = nn.Linear(hidden, hidden, bias=False)
        self.msg_edge = nn.Linear(edge_dim, hidden, bias=False)
        self.msg_graph = nn.Linear(graph_dim, hidden, bias=False)
        self.msg_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h, edge_i, edge_j, edge_feat, graph_feat, node_graph):
        x = self.norm(h)
        pre = (self.msg_i(x) + self.msg_graph(graph_feat)[node_graph])[edge_i] + self.msg_j(x)[edge_j]
        msg = self.msg_out(pre + self.msg_edge(edge_feat))
        return h + self.update(torch.cat([x, mean_over(msg, edge_i, h.shape[0])], dim=-1))


class JointDenoiser(nn.Module):
    """CSPNet-style denoiser of (types, fractional coordinates, lattice); see the module docstring."""

    def __init__(self, config: JointDenoiserConfig):
        super().__init__()
        self.config = config
        c = config
        self.type_embedding = nn.Embedding(c.num_elements + 1, c.hidden)
        self.time_mlp = nn.Sequential(nn.Linear(c.time_dim, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.conditions = ConditionEmbedding(c.condition_specs, c.time_dim)
        self.node_cond = NodeConditionEmbedding(c.node_cond_dim, c.hidden) if c.node_cond_dim else None
        self.layers = nn.ModuleList(CSPLayer(c.hidden, 6 * c.num_freqs, 6) for _ in range(c.num_layers))
        self.out_norm = nn.LayerNorm(c.hidden)
        self.type_head = nn.Linear(c.hidden, c.num_elements)
        self.coord_head = nn.Linear(c.hidden, 3)
        self.lattice_head = nn.Linear(c.hidden, 9)
        self.field_inputs = nn.ModuleDict({k: nn.Linear(math.prod(s), c.hidden) for k, s in c.node_fields.items()})
        self.field_heads = nn.ModuleDict({k: nn.Linear(c.hidden, math.prod(s)) for k, s in c.node_fields.items()})
        if len(c.grid_fields) > 1:
            raise ValueError(f"the joint denoiser has probe nodes for one grid field, got {sorted(c.grid_fields)}")
        #: batch key of the grid field the probe branch predicts; None: no probe modules (the network as before)
        self.grid_key = next(iter(c.grid_fields), None)
        self.probes = None if self.grid_key is None else ProbeBranch(
            c.grid_fields[self.grid_key], c.hidden, c.probe_hidden, c.num_layers, c.num_freqs, c.probe_neighbours)
        self.register_buffer("freqs", 2 * math.pi * torch.arange(1, c.num_freqs + 1, dtype=torch.float32),
                             persistent=False)

    def forward(self, batch: dict) -> dict:
        tokens, frac, cell = batch[F.TYPE_TOKENS], batch[F.FRAC_COORDS], batch[F.CELL]
        graph, num_atoms = batch[F.BATCH], batch[F.NUM_ATOMS]
        n_graph = num_atoms.shape[0]
        temb = sinusoidal_embedding(batch[F.TIME].to(frac.dtype) * 1000.0, self.config.time_dim)
        temb = temb + self.conditions(batch, n_graph, frac)
        crystal_feat = self.time_mlp(temb)
        h = self.type_embedding(tokens) + crystal_feat[graph]
        if self.node_cond is not None:
            h = h + self.node_cond(batch.get(F.NODE_COND), tokens.shape[0], frac)
        for key, embed in self.field_inputs.items():
            h = h + embed(batch[key].to(frac.dtype).reshape(tokens.shape[0], -1))

        edge_i, edge_j = all_pairs(num_atoms)
        args = (frac[edge_j] - frac[edge_i]).unsqueeze(-1) * self.freqs.to(frac.dtype)  # (E, 3, k)
        edge_feat = torch.cat([torch.sin(args), torch.cos(args)], dim=-1).reshape(edge_i.shape[0], -1)
        gram = cell @ cell.transpose(-1, -2)
        graph_feat = gram[:, _TRIU[0], _TRIU[1]] / 36.0
        if self.probes is not None:
            probe_graph = self.probes.build(frac, gram, graph, self.freqs, graph_feat)
            p = self.probes.embed_probes(batch[self.grid_key].to(frac.dtype), crystal_feat)
        for i, layer in enumerate(self.layers):
            h = layer(h, edge_i, edge_j, edge_feat, graph_feat, graph)
            if self.probes is not None:
                h, p = self.probes.layers[i](h, p, probe_graph)

        h = self.out_norm(h)
        pooled = mean_over(h, graph, n_graph)
        lattice = self.lattice_head(pooled).view(n_graph, 3, 3) @ cell
        out = {F.TYPE_TOKENS: self.type_head(h), F.FRAC_COORDS: self.coord_head(h), F.CELL: lattice}
        for key, head in self.field_heads.items():
            out[key] = head(h).reshape(tokens.shape[0], *self.config.node_fields[key])
        if self.probes is not None:
            out[self.grid_key] = self.probes.output(p, n_graph)
        return out
