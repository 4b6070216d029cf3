"""Valence density at any point from the atoms: a fitted superposition of spherical atomic densities (the baseline)
plus an invariant probe-point correction (the DeepDFT / ChargE3Net idea: probe points receive messages from atoms).

* :class:`AtomicSuperposition`: ``rho_0(p) = sum over atom images a within the cutoff of sum_k c[Z_a, k] g_k(|p - a|)``
  with ``g_k(r) = exp(-r^2 / 2 s_k^2) u(r)``, widths ``s_k`` log-spaced from 0.15 to 2 Angstrom, ``u`` the smooth
  polynomial cutoff of the score network. The coefficients c (e/Angstrom^3) are fitted to training densities by
  ridge least squares (:func:`fit_superposition`), so the "atomic densities" are those of the labels' smooth
  pseudo-density (no PAW augmentation), not of free atoms.
* :class:`ProbeDensityNet`: atoms start from the element descriptors of :mod:`~diffase.predictors.site_net` and
  are updated by its continuous-filter convolutions; each probe sums ``h_a * W(|p - a|)`` over its atom images
  (divided by ``sqrt(avg_probe_neighbors)``), and an MLP turns the sum into a correction ``delta(p)``,
  e/Angstrom^3: ``rho(p) = rho_0(p) + delta(p)``. The last layer starts at zero, so a fresh network is the
  superposition.

Only distances enter, so the density at a point is invariant to rotating or translating atoms and probe points
together, to the order of the atoms and to the choice of unit cell. The probe correction is one round of
atom -> probe messages (DeepDFT also passes messages between probes; with ~100 training crystals the smaller
model was preferred).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from diffase.data import fields as F
from diffase.data.structures import MAX_Z
from diffase.nn.score_net import PolynomialCutoff
from diffase.predictors.probe_graph import probe_atom_pairs
from diffase.predictors.site_net import InvariantAtomNet


@dataclass
class DensityNetConfig:
    """Hyper-parameters of :class:`ProbeDensityNet` (stored in every checkpoint); lengths in Angstrom."""

    hidden: int = 32
    num_layers: int = 2
    cutoff: float = 4.0  #: atom-atom and probe-atom cutoff
    num_radial: int = 12
    num_gaussians: int = 8  #: radial functions of each element's density in the superposition
    avg_num_neighbors: float = 20.0  #: atom message normalisation; set from the training data
    avg_probe_neighbors: float = 20.0  #: probe message normalisation; set from the training data

    def to_dict(self) -> dict:
        return asdict(self)


class AtomicSuperposition(nn.Module):
    """``rho_0`` at probes from per-element Gaussian coefficients ``coefficients`` (MAX_Z + 1, K), e/Angstrom^3;
    ``known`` (MAX_Z + 1,) marks the elements they were fitted for."""

    def __init__(self, num_gaussians: int, cutoff: float):
        super().__init__()
        self.register_buffer("widths", torch.logspace(math.log10(0.15), math.log10(2.0), num_gaussians))
        self.register_buffer("coefficients", torch.zeros(MAX_Z + 1, num_gaussians))
        self.register_buffer("known", torch.zeros(MAX_Z + 1, dtype=torch.bool))
        self.envelope = PolynomialCutoff(cutoff)

    def basis(self, distance: torch.Tensor) -> torch.Tensor:
        """``g_k(r)`` (E, K) of pair distances (E,), Angstrom."""
        return torch.exp(-0.5 * (distance[:, None] / self.widths) ** 2) * self.envelope(distance)[:, None]

    def forward(self, z_of_pair: torch.Tensor, probe_of_pair: torch.Tensor, distance: torch.Tensor,
                n_probes: int) -> torch.Tensor:
        """``rho_0`` (n_probes,), e/Angstrom^3, from the pairs' atomic numbers, probe indices and distances (E,)."""
        values = (self.basis(distance) * self.coefficients[z_of_pair]).sum(-1)
        return torch.zeros(n_probes, dtype=values.dtype, device=values.device).index_add_(0, probe_of_pair, values)


class ProbeDensityNet(InvariantAtomNet):
    """Crystal batch + probe points -> density and its superposition part (see the module docstring)."""

    def __init__(self, config: DensityNetConfig | None = None):
        config = config or DensityNetConfig()
        super().__init__(config)
        self.probe_filter = nn.Sequential(nn.Linear(config.num_radial, config.hidden), nn.SiLU(),
                                          nn.Linear(config.hidden, config.hidden))
        self.readout = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.SiLU(), nn.Linear(config.hidden, 1))
        nn.init.zeros_(self.readout[-1].weight)  # start exactly at the superposition
        nn.init.zeros_(self.readout[-1].bias)
        self.superposition = AtomicSuperposition(config.num_gaussians, config.cutoff)

    def at_probes(self, batch: dict[str, torch.Tensor], h: torch.Tensor, probes: Sequence[torch.Tensor]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Density and its superposition part, both (sum P_i,) e/Angstrom^3, at ``probes`` (one (P_i, 3) Cartesian
        tensor per crystal of ``batch``, Angstrom), given the atom features ``h`` of :meth:`~diffase.predictors.site_net.InvariantAtomNet.encode`."""
        starts = torch.cumsum(batch[F.NUM_ATOMS], 0) - batch[F.NUM_ATOMS]
        pairs_p, pairs_a, dists, offset = [], [], [], 0
        for i, points in enumerate(probes):
            lo, n = int(starts[i]), int(batch[F.NUM_ATOMS][i])
            p, a, d = probe_atom_pairs(points, batch[F.POSITIONS][lo : lo + n], batch[F.CELL][i], self.config.cutoff)
            pairs_p.append(p + offset)
            pairs_a.append(a + lo)
            dists.append(d)
            offset += points.shape[0]
        p, a, d = torch.cat(pairs_p), torch.cat(pairs_a), torch.cat(dists)
        base = self.superposition(batch[F.ATOMIC_NUMBERS][a], p, d, offset)
        messages = h[a] * self.probe_filter(self.radial(d))
        summed = torch.zeros(offset, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, p, messages)
        delta = self.readout(summed / math.sqrt(self.config.avg_probe_neighbors)).squeeze(-1)
        return base + delta, base

    def forward(self, batch: dict[str, torch.Tensor], probes: Sequence[torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`at_probes` with the atom features of ``batch``."""
        return self.at_probes(batch, self.encode(batch)[0], probes)


@torch.no_grad()
def fit_superposition(module: AtomicSuperposition, crystals, cutoff: float, ridge: float = 1e-6) -> None:
    """Set ``module``'s coefficients of the elements in ``crystals`` by ridge least squares (in place).

    ``crystals``: (atomic numbers (n,), positions (n, 3), cell (3, 3), probe points (P, 3), densities (P,)) tuples of
    torch tensors, Angstrom and e/Angstrom^3. Minimises ``sum (rho_0 - rho)^2 + ridge * mean(diag A^T A) * |c|^2``
    over all probes. The normal equations are summed crystal by crystal over the crystal's own elements, so memory
    does not grow with the number of crystals. Marks the fitted elements ``known``; the others keep their values.
    """
    k = module.widths.shape[0]
    elements = sorted({int(v) for c in crystals for v in c[0]})
    column = {el: i for i, el in enumerate(elements)}
    size = len(elements) * k
    gram = torch.zeros(size, size, dtype=torch.float64)
    rhs = torch.zeros(size, dtype=torch.float64)
    for z, pos, cell, probes, rho in crystals:
        p, a, d = probe_atom_pairs(probes, pos, cell, cutoff)
        local = sorted({int(v) for v in z})
        local_of_atom = torch.tensor([local.index(int(v)) for v in z])[a]
        design = torch.zeros(probes.shape[0], len(local), k, dtype=torch.float64)
        design.index_put_((p, local_of_atom), module.basis(d).double(), accumulate=True)
        design = design.reshape(probes.shape[0], -1)
        cols = torch.cat([torch.arange(k) + column[el] * k for el in local])
        gram[cols[:, None], cols[None, :]] += design.T @ design
        rhs[cols] += design.T @ rho.double()
    gram += ridge * gram.diagonal().mean() * torch.eye(size, dtype=gram.dtype)
    coefficients = torch.linalg.solve(gram, rhs).reshape(len(elements), k)
    module.coefficients[torch.tensor(elements)] = coefficients.to(module.coefficients.dtype)
    module.known[torch.tensor(elements)] = True
