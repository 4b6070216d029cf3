"""NequIP-style E(3)-equivariant score network on e3nn (the inpainting paper's network, its Table 2).

Input: a batch with ``atomic_numbers``, ``pos`` (Angstrom), ``cell``, ``batch``, ``sigma`` (noise level,
Angstrom, one per crystal) and the periodic edges (``edge_index``, ``edge_cell_shift``; built on the fly if
absent). Output: the score ``grad_x log p_sigma(x)`` of every atom, (n_atoms, 3), 1/Angstrom.

Architecture (defaults = the paper's shape): species embedded to ``32x0e`` node attributes; the noise level
embedded (smooth Fourier features of ``log sigma`` + MLP) to ``32x0e`` auxiliary attributes; both are the
node attributes of every self-interaction; 4 interaction blocks, each: linear (features x attributes),
tensor product of neighbour features with edge spherical harmonics (l <= 2) weighted by an MLP (width 64) of
16 Bessel radial functions with a smooth polynomial cutoff at 6 Angstrom, sum over neighbours, linear, a
self-connection and a gated nonlinearity; hidden ``32x0e + 32x1o``; output one ``1o`` vector per atom.

The network predicts ``-epsilon`` (the unit noise); the score is that divided by ``sigma``, so
``sigma * score`` stays O(1) at every noise level. The hidden vectors are ``1o`` (polar), so the network is
equivariant under rotations *and* inversion and the output is a polar vector like a displacement.

Only edge vectors enter, so the output is invariant to translations, to the choice of unit cell and to
wrapping atoms back into the cell, and equivariant to permutations of atoms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet, Gate
from torch import nn

from diffase.data import fields as F
from diffase.data.neighbors import edge_vectors, radius_graph_pbc
from diffase.data.structures import MAX_Z


@dataclass
class ScoreNetConfig:
    """Hyper-parameters of :class:`ScoreNet` (stored in every checkpoint)."""

    num_layers: int = 4
    cutoff: float = 6.0  #: Angstrom
    species_attr_dim: int = 32  #: initial node attributes, ``Nx0e``
    noise_attr_dim: int = 32  #: auxiliary attributes (noise level), ``Nx0e``
    hidden_irreps: str = "32x0e + 32x1o"
    sh_lmax: int = 2
    num_radial: int = 16
    radial_width: int = 64
    radial_layers: int = 2
    avg_num_neighbors: float = 40.0  #: message normalisation; set from the training data

    def to_dict(self) -> dict:
        return asdict(self)


class PolynomialCutoff(nn.Module):
    """Smooth envelope ``u(r)`` going to zero with two zero derivatives at ``cutoff`` (NequIP's p = 6)."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff, self.p = cutoff, p

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        x, p = r / self.cutoff, self.p
        env = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
        return env * (x < 1)


class NoiseEmbedding(nn.Module):
    """Smooth embedding of the noise level, (B,) Angstrom -> (B, dim).

    Features are ``log sigma / 3`` and low-frequency Fourier features ``sin/cos(2 pi f log sigma)`` with
    ``f ~ N(0, 0.2^2)`` (fixed at init), so they vary slowly over the three decades of sigma, then an MLP.
    High-frequency encodings (unit-scale f) oscillate several times over the range and make the smooth,
    strongly sigma-dependent gain that the score needs much slower to learn.
    """

    def __init__(self, dim: int, num_frequencies: int = 16, scale: float = 0.2):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_frequencies) * scale)
        self.mlp = nn.Sequential(nn.Linear(2 * num_frequencies + 1, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        log_sigma = torch.log(sigma).unsqueeze(-1)
        angle = 2 * math.pi * log_sigma * self.freqs
        return self.mlp(torch.cat([torch.sin(angle), torch.cos(angle), log_sigma / 3], dim=-1))


class Interaction(nn.Module):
    """One NequIP interaction block: point convolution + self-connection + gate (+ residual when shapes match)."""

    def __init__(self, irreps_in, irreps_out, irreps_attr, irreps_sh, num_radial, radial_width, radial_layers, avg_nn):
        super().__init__()
        irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l == 0])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_out if ir.l > 0])
        gates = o3.Irreps(f"{gated.num_irreps}x0e") if gated.num_irreps else o3.Irreps("")
        self.gate = Gate(scalars, [torch.nn.functional.silu], gates, [torch.sigmoid], gated)
        gate_in = self.gate.irreps_in

        self.linear_in = o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, irreps_in)
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in gate_in:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        mid = o3.Irreps(mid)
        mid_sorted, perm, _ = mid.sort()
        instructions = [(a, b, perm[c], mode, w) for a, b, c, mode, w in instructions]
        self.tp = o3.TensorProduct(irreps_in, irreps_sh, mid_sorted, instructions, shared_weights=False, internal_weights=False)
        self.radial = FullyConnectedNet([num_radial] + radial_layers * [radial_width] + [self.tp.weight_numel], torch.nn.functional.silu)
        self.linear_out = o3.FullyConnectedTensorProduct(mid_sorted.simplify(), irreps_attr, gate_in)
        self.self_connection = o3.FullyConnectedTensorProduct(irreps_in, irreps_attr, gate_in)
        self.avg_nn = avg_nn
        self.residual = irreps_in == irreps_out
        self.irreps_out = self.gate.irreps_out
        self._mid_simplify = mid_sorted.simplify() != mid_sorted

    def forward(self, h, attr, edge_src, edge_dst, edge_sh, edge_radial):
        x = self.linear_in(h, attr)
        msg = self.tp(x[edge_dst], edge_sh, self.radial(edge_radial))
        agg = torch.zeros(h.shape[0], msg.shape[1], dtype=msg.dtype, device=msg.device)
        agg.index_add_(0, edge_src, msg)
        out = self.linear_out(agg / math.sqrt(self.avg_nn), attr) + self.self_connection(h, attr)
        out = self.gate(out)
        return h + out if self.residual else out


class ScoreNet(nn.Module):
    """E(3)-equivariant score network ``s(x, sigma)`` for periodic crystals (see the module docstring)."""

    def __init__(self, config: ScoreNetConfig | None = None):
        super().__init__()
        self.config = config = config or ScoreNetConfig()
        self.species = nn.Embedding(MAX_Z + 1, config.species_attr_dim)
        self.noise = NoiseEmbedding(config.noise_attr_dim)
        irreps_attr = o3.Irreps(f"{config.species_attr_dim}x0e + {config.noise_attr_dim}x0e").simplify()
        self.irreps_sh = o3.Irreps.spherical_harmonics(config.sh_lmax)
        self.envelope = PolynomialCutoff(config.cutoff)
        hidden = o3.Irreps(config.hidden_irreps)
        irreps = o3.Irreps(f"{config.species_attr_dim}x0e")
        self.layers = nn.ModuleList()
        for _ in range(config.num_layers):
            layer = Interaction(
                irreps, hidden, irreps_attr, self.irreps_sh, config.num_radial,
                config.radial_width, config.radial_layers, config.avg_num_neighbors,
            )
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.readout = o3.FullyConnectedTensorProduct(irreps, irreps_attr, "1x1o")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Score (n_atoms, 3) in 1/Angstrom for noise level ``batch["sigma"]`` (n_crystals,) in Angstrom."""
        if F.EDGE_INDEX not in batch:
            batch = dict(batch)
            batch[F.EDGE_INDEX], batch[F.EDGE_CELL_SHIFT] = radius_graph_pbc(batch, self.config.cutoff)
        graph = batch[F.BATCH]
        sigma = batch[F.SIGMA]
        species = self.species(batch[F.ATOMIC_NUMBERS])
        attr = torch.cat([species, self.noise(sigma)[graph]], dim=-1)

        vec = edge_vectors(batch)
        length = vec.norm(dim=-1)
        edge_sh = o3.spherical_harmonics(self.irreps_sh, vec, normalize=True, normalization="component")
        radial = soft_one_hot_linspace(length, 0.0, self.config.cutoff, self.config.num_radial, basis="bessel", cutoff=True)
        radial = radial * self.envelope(length).unsqueeze(-1)
        src, dst = batch[F.EDGE_INDEX]

        h = species
        for layer in self.layers:
            h = layer(h, attr, src, dst, edge_sh, radial)
        eps = self.readout(h, attr)  # predicts -epsilon
        return eps / sigma[graph].unsqueeze(-1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
