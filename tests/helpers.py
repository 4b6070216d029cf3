"""Small builders shared by tests (tiny models, small crystals)."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure

from diffase.nn.score_net import ScoreNet, ScoreNetConfig


def tiny_config(**kw) -> ScoreNetConfig:
    """A score network small enough for CPU tests in milliseconds."""
    base = dict(num_layers=2, hidden_irreps="8x0e + 8x1o", species_attr_dim=8, noise_attr_dim=8,
                num_radial=8, radial_width=16, cutoff=4.0, avg_num_neighbors=10.0)
    base.update(kw)
    return ScoreNetConfig(**base)


def tiny_net(seed: int = 0, **kw) -> ScoreNet:
    import torch

    torch.manual_seed(seed)
    return ScoreNet(tiny_config(**kw))


def rocksalt(a: float = 4.2, species=("Na", "Cl")) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]])


def skewed_cell() -> Structure:
    """A tiny, strongly skewed triclinic cell: atoms neighbour many of their own images."""
    return Structure(Lattice.from_parameters(2.1, 2.6, 7.5, 35, 125, 100), ["H", "O", "Li"],
                     [[0, 0, 0], [0.3, 0.6, 0.9], [0.7, 0.2, 0.45]])
