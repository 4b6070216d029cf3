"""Generated latents decoded into the descriptors a user reads: ``ados_latent`` -> ``atomic_dos`` (states/eV),
``density_latent`` -> ``charge_density`` (e/Angstrom^3).

A joint model with the atomic-DOS latent field carries, in its checkpoint entry :data:`AUTOENCODER_ENTRY`, the
frozen autoencoder whose encoder made its training labels (:class:`~diffase.train.descriptor_labels.DescriptorLabels`
puts it there: config with the energy grid, weights, name, SHA-256). Every generated record then gets
``atomic_dos`` (n_atoms, P), the decoder's output on the autoencoder's grid (E - E_F, eV; non-negative by
construction), beside its ``ados_latent`` (n_atoms, 30).

Likewise a joint model with the charge-density latent field carries the frozen density VQ-VAE
(:mod:`diffase.nn.vqvae3d`) that encoded its training densities under :data:`VQVAE_ENTRY`; every generated
record gets ``charge_density`` (N, N, N) e/Angstrom^3 on the fractional points ``i / N`` of its cell, decoded from
its ``density_latent`` (n, n, n, d) (standardised per channel,
:meth:`~diffase.nn.vqvae3d.DensityVQVAE.encode_field`) with quantisation to the codebook first (as ChargeDIFF decodes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from diffase.data import fields as F
from diffase.nn.dos_autoencoder import DosAutoencoder, autoencoder_from_checkpoint
from diffase.nn.vqvae3d import DensityVQVAE

#: Key of the autoencoder's checkpoint inside a joint checkpoint (and so in ``JointModel.meta``).
AUTOENCODER_ENTRY = "dos_autoencoder"
#: Key of the density VQ-VAE's checkpoint inside a joint checkpoint (and so in ``JointModel.meta``).
VQVAE_ENTRY = "density_vqvae"


def decoder_entries(meta: dict) -> dict:
    """The decoder entries of a joint model's ``meta`` to store again in its checkpoint (empty if none)."""
    return {key: meta[key] for key in (AUTOENCODER_ENTRY, VQVAE_ENTRY) if key in meta}


def dos_decoder(meta: dict) -> DosAutoencoder:
    """The frozen autoencoder of a joint model's ``meta``; ``ValueError`` when its checkpoint holds none."""
    if AUTOENCODER_ENTRY not in meta:
        raise ValueError(f"this joint model generates ados_latent but its checkpoint holds no '{AUTOENCODER_ENTRY}' "
                         "to decode it; train it with `diffase train` (the trainer stores the autoencoder it used)")
    return autoencoder_from_checkpoint(meta[AUTOENCODER_ENTRY])


def density_decoder(meta: dict) -> DensityVQVAE:
    """The frozen density VQ-VAE of a joint model's ``meta``; ``ValueError`` when its checkpoint holds none."""
    if VQVAE_ENTRY not in meta:
        raise ValueError(f"this joint model generates density_latent but its checkpoint holds no '{VQVAE_ENTRY}' "
                         "to decode it; train it with `diffase train` (the trainer stores the VQ-VAE it used)")
    return DensityVQVAE.from_checkpoint(meta[VQVAE_ENTRY])


def decode_density(latent: np.ndarray, vqvae: DensityVQVAE) -> np.ndarray:
    """Density (N, N, N) float64 e/Angstrom^3 of one crystal's ``density_latent`` (n, n, n, d)
    (:meth:`~diffase.nn.vqvae3d.DensityVQVAE.decode_field`: unstandardised, quantised to the codebook, decoded)."""
    z = torch.as_tensor(np.asarray(latent), dtype=torch.float32).unsqueeze(0)
    return vqvae.decode_field(z)[0].double().numpy()


def decode_descriptors(records: Sequence[dict], meta: dict) -> list[dict]:
    """``records`` with ``atomic_dos`` (n_atoms, P) float64 states/eV added wherever they hold ``ados_latent``, and
    ``charge_density`` (N, N, N) float64 e/Angstrom^3 wherever they hold ``density_latent``."""
    records = list(records)
    if any(F.ADOS_LATENT in r for r in records):
        decoder = dos_decoder(meta)
        records = [{**r, F.ATOMIC_DOS: decoder.decode_numpy(r[F.ADOS_LATENT])} if F.ADOS_LATENT in r else r
                   for r in records]
    if any(F.DENSITY_LATENT in r for r in records):
        vqvae = density_decoder(meta)
        records = [{**r, F.CHARGE_DENSITY: decode_density(r[F.DENSITY_LATENT], vqvae)} if F.DENSITY_LATENT in r
                   else r for r in records]
    return records
