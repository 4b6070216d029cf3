"""``SiteLabelNet``: an invariant message-passing network from a crystal to per-site DOS and Bader charges.

SchNet-style continuous-filter convolutions on the periodic radius graph (:func:`~diffase.data.neighbors.
radius_graph_pbc`). Atoms start from fixed physical descriptors of their element (:func:`element_descriptors`:
electronegativity, row, group, block, atomic radius, Mendeleev number, first ionisation energy) through an MLP to
``hidden`` features, not from a learned per-element embedding: with a hundred training materials most elements
occur in a handful of them, and descriptors let what is learned on one element carry to its neighbours in the
periodic table. Each layer multiplies neighbour features by a filter,
an MLP of Bessel radial functions times the smooth polynomial cutoff of the score network, sums over neighbours
(divided by ``avg_num_neighbors``) and updates each atom by a residual MLP. Two heads read the final features:

* site DOS (n_atoms, P), states/eV = the training mean DOS of the atom's element + a learned correction;
* Bader charge (n_atoms,), e = the element's mean charge + the charge each neighbour pair transfers, then
  projected so that each crystal's charges sum to zero (Bader charges of a neutral cell do, up to grid error).
  The transfer along an edge is antisymmetric (``t_ij = m(h_i, h_j, r) - m(h_j, h_i, r)``, times the cutoff
  envelope), so it moves charge between atoms without creating any.

Only interatomic distances enter, so the outputs are invariant to rotations, translations and the choice of unit
cell (a supercell gives every copy of a site the same values), and permuting atoms permutes the rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
import torch
from e3nn.math import soft_one_hot_linspace
from pymatgen.core import Element
from torch import nn

from diffase.data import fields as F
from diffase.data.neighbors import edge_vectors, radius_graph_pbc
from diffase.data.structures import MAX_Z
from diffase.nn.score_net import PolynomialCutoff


@dataclass
class SiteNetConfig:
    """Hyper-parameters of :class:`SiteLabelNet` (stored in every checkpoint). ``cutoff`` in Angstrom."""

    hidden: int = 64
    num_layers: int = 3
    cutoff: float = 5.0
    num_radial: int = 16
    dos_points: int = 512
    avg_num_neighbors: float = 20.0  #: message normalisation; set from the training data

    def to_dict(self) -> dict:
        return asdict(self)


def element_descriptors() -> torch.Tensor:
    """Standardised element descriptors, (MAX_Z + 1, 10) float32; row Z describes element Z (row 0 is zero).

    Columns: Pauling electronegativity, row, group, atomic radius (Angstrom), Mendeleev number, first ionisation
    energy (eV), each standardised over Z = 1..MAX_Z with a missing value (noble-gas electronegativity, unknown
    radius) set to the mean, then the s/p/d/f block one-hot.
    """
    values, blocks = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about missing data of heavy elements
        for z in range(1, MAX_Z + 1):
            el = Element.from_Z(z)
            values.append([el.X, el.row, el.group, el.atomic_radius or np.nan, el.mendeleev_no or np.nan,
                           el.ionization_energy or np.nan])
            blocks.append(["s", "p", "d", "f"].index(el.block))
    values = np.asarray(values, dtype=np.float64)
    values = (values - np.nanmean(values, axis=0)) / np.nanstd(values, axis=0)
    table = np.zeros((MAX_Z + 1, values.shape[1] + 4))
    table[1:, : values.shape[1]] = np.nan_to_num(values)
    table[np.arange(1, MAX_Z + 1), values.shape[1] + np.asarray(blocks)] = 1.0
    return torch.as_tensor(table, dtype=torch.float32)


class FilterConvolution(nn.Module):
    """One continuous-filter convolution with a residual update, (n_atoms, hidden) -> (n_atoms, hidden)."""

    def __init__(self, hidden: int, num_radial: int, avg_nn: float):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(num_radial, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.update = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.avg_nn = avg_nn

    def forward(self, h, src, dst, radial):
        msg = h[dst] * self.filter(radial)
        agg = torch.zeros_like(h).index_add_(0, src, msg) / math.sqrt(self.avg_nn)
        return h + self.update(torch.cat([h, agg], dim=-1))


class InvariantAtomNet(nn.Module):
    """The atom encoder the label predictors share: element descriptors -> species embedding -> ``num_layers``
    continuous-filter convolutions over the periodic radius graph (Bessel radial basis times a polynomial envelope).
    ``config`` needs ``hidden``, ``num_radial``, ``cutoff`` (Angstrom), ``avg_num_neighbors`` and ``num_layers``.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.register_buffer("descriptors", element_descriptors())
        self.species = nn.Sequential(nn.Linear(self.descriptors.shape[1], config.hidden), nn.SiLU(),
                                     nn.Linear(config.hidden, config.hidden))
        self.envelope = PolynomialCutoff(config.cutoff)
        self.layers = nn.ModuleList(FilterConvolution(config.hidden, config.num_radial, config.avg_num_neighbors)
                                    for _ in range(config.num_layers))

    def radial(self, distance: torch.Tensor) -> torch.Tensor:
        """Bessel radial functions times the envelope, (E, num_radial), of distances (E,), Angstrom. A distance of
        0 (a probe on a nucleus, where the Bessel basis is 0/0) takes the value at 1e-4 Angstrom."""
        distance = distance.clamp(min=1e-4)
        return soft_one_hot_linspace(distance, 0.0, self.config.cutoff, self.config.num_radial, basis="bessel",
                                     cutoff=True) * self.envelope(distance)[:, None]

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
        """Atom features (n_atoms, hidden) of a crystal batch (:func:`~diffase.data.batch.collate`), with the batch
        carrying its radius graph, the edges' radial features (E, num_radial) and their lengths (E,), Angstrom."""
        if F.EDGE_INDEX not in batch:
            batch = dict(batch)
            batch[F.EDGE_INDEX], batch[F.EDGE_CELL_SHIFT] = radius_graph_pbc(batch, self.config.cutoff)
        length = edge_vectors(batch).norm(dim=-1)
        radial = self.radial(length)
        src, dst = batch[F.EDGE_INDEX]
        h = self.species(self.descriptors[batch[F.ATOMIC_NUMBERS]])
        for layer in self.layers:
            h = layer(h, src, dst, radial)
        return h, batch, radial, length


class SiteLabelNet(InvariantAtomNet):
    """Crystal batch -> ``{"site_dos": (n, P), "bader_charge": (n,)}`` (see the module docstring).

    ``mean_dos`` (MAX_Z + 1, P) and ``mean_charge`` (MAX_Z + 1,) are the per-element baseline tables (rows of
    elements never seen are zero; the predictor refuses such elements before calling the network).
    """

    def __init__(self, config: SiteNetConfig | None = None):
        config = config or SiteNetConfig()
        super().__init__(config)
        self.dos_head = nn.Sequential(nn.Linear(config.hidden, config.hidden), nn.SiLU(),
                                      nn.Linear(config.hidden, config.dos_points))
        self.transfer_head = nn.Sequential(nn.Linear(2 * config.hidden + config.num_radial, config.hidden), nn.SiLU(),
                                           nn.Linear(config.hidden, 1))
        for head in (self.dos_head, self.transfer_head):  # start exactly at the baseline
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)
        self.register_buffer("mean_dos", torch.zeros(MAX_Z + 1, config.dos_points))
        self.register_buffer("mean_charge", torch.zeros(MAX_Z + 1))

    def set_baseline(self, elements, dos, charge) -> None:
        """Fill the baseline tables from :class:`~diffase.predictors.baseline.ElementMeans` arrays."""
        z = torch.as_tensor(elements, dtype=torch.long)
        self.mean_dos[z] = torch.as_tensor(dos, dtype=self.mean_dos.dtype)
        self.mean_charge[z] = torch.as_tensor(charge, dtype=self.mean_charge.dtype)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h, batch, radial, length = self.encode(batch)
        z = batch[F.ATOMIC_NUMBERS]
        src, dst = batch[F.EDGE_INDEX]
        dos = self.mean_dos[z] + self.dos_head(h)
        transfer = (self.transfer_head(torch.cat([h[src], h[dst], radial], -1))
                    - self.transfer_head(torch.cat([h[dst], h[src], radial], -1))).squeeze(-1)
        charge = self.mean_charge[z].index_add(0, src, transfer * self.envelope(length))
        graph, n_graph = batch[F.BATCH], batch[F.NUM_ATOMS].shape[0]
        total = torch.zeros(n_graph, dtype=charge.dtype, device=charge.device).index_add_(0, graph, charge)
        charge = charge - (total / batch[F.NUM_ATOMS].to(charge.dtype))[graph]
        return {F.SITE_DOS: dos, F.BADER_CHARGE: charge}

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
