"""Small builders shared by tests (tiny models, small crystals)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


# --- a tiny joint model with the charge-density latent field (test_density_field, test_charge_guided) ---------------
DENSITY_ELEMENTS = [1, 3, 8, 11, 17]  # H Li O Na Cl
DENSITY_LATENT = (8, 8, 8, 2)  # an 8^3 latent of d = 2 (a 32^3 density)


def tiny_vqvae(seed: int = 0):
    from diffase.nn.vqvae3d import DensityVQVAE, VQVAE3DConfig

    torch.manual_seed(seed)
    return DensityVQVAE(VQVAE3DConfig(grid=32, channels=[4, 4, 4], latent_dim=DENSITY_LATENT[-1],
                                      codebook_size=16)).eval()


def density_fields(weights=(1.0, 1.0, 1.0)):
    from diffase.generators.joint_fields import joint_fields

    return joint_fields(len(DENSITY_ELEMENTS), weights, grids={"density_latent": 1.0},
                        grid_shapes={"density_latent": DENSITY_LATENT})


def density_net(fields, seed: int = 0, dtype=torch.float64, conditions: Sequence = ()):
    """A tiny joint denoiser of ``fields``, trained with the graph ``conditions`` (``ConditionSpec`` objects) if any."""
    from diffase.generators.joint_fields import grid_row_shapes
    from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig

    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(DENSITY_ELEMENTS), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              grid_fields=grid_row_shapes(fields), probe_hidden=8, probe_neighbours=6,
                              conditions=[c.to_dict() for c in conditions])
    return JointDenoiser(cfg).to(dtype)


def density_model(seed: int = 0, vqvae=None, conditions: Sequence = ()):
    """A tiny A/X/L/C joint model carrying ``vqvae`` (default :func:`tiny_vqvae`) as its density decoder."""
    from diffase.generators.descriptor_decoding import VQVAE_ENTRY
    from diffase.generators.joint import JointModel

    fields = density_fields()
    vq = vqvae if vqvae is not None else tiny_vqvae(seed)
    meta = {VQVAE_ENTRY: dict(vq.checkpoint())}
    return JointModel(density_net(fields, seed, conditions=conditions), fields, DENSITY_ELEMENTS, [0, 1, 2, 3, 2],
                      device="cpu", meta=meta)
