"""The joint trainer's charge-density labels: density sets encoded once into ``density_latent`` by a frozen VQ-VAE.

Densities come from whatever :func:`~diffase.data.electronic.density_sets.read_density_set` reads (a label folder's
``rho32``, a folder of CHGCAR/AECCAR/cube files regridded to N^3, ChargeDIFF's ``structure/`` +
``charge_density/`` layout). Each crystal is put in its Niggli-reduced cell with its density moved exactly onto that
cell's grid (:func:`~diffase.data.electronic.density_sets.reduced_density_record`), then encoded by the VQ-VAE
(:meth:`~diffase.nn.vqvae3d.DensityVQVAE.encode_field`: pre-quantisation latent, standardised per channel) into
``density_latent`` (n, n, n, d). The VQ-VAE's checkpoint is copied into the joint checkpoint
(:func:`~diffase.hub.frozen_copy`, the mechanism that carries the atomic-DOS autoencoder), so generated latents are
decoded by the very weights that encoded the training densities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from diffase.data import fields as F
from diffase.data.electronic.density_sets import (
    read_density_sets,
    reduced_density_record,
)
from diffase.generators.descriptor_decoding import VQVAE_ENTRY
from diffase.hub import frozen_copy
from diffase.nn.vqvae3d import DensityVQVAE


class DensityLatents:
    """Reads density sets and encodes them with the frozen VQ-VAE ``vqvae`` (name or path)."""

    def __init__(self, vqvae: str | Path):
        ckpt, self.entry = frozen_copy(vqvae)
        self.vqvae = DensityVQVAE.from_checkpoint(ckpt)

    @property
    def row_shape(self) -> tuple[int, int, int, int]:
        """(n, n, n, d) of one crystal's ``density_latent``: n = grid / 4, d = the VQ-VAE's latent_dim."""
        n = self.vqvae.config.grid // 4
        return (n, n, n, self.vqvae.config.latent_dim)

    def load(self, folders: str | Path | Sequence[str | Path], *, exclude: Sequence[str] = (),
             only: Sequence[str] | None = None, limit: int | None = None) -> tuple[list[dict], list[str], dict]:
        """Records (Niggli-reduced, with ``density_latent``), names and counts of the density sets ``folders``, as
        :func:`~diffase.data.electronic.density_sets.read_density_sets` selects them (``exclude``, ``only``,
        ``limit``; each material once, predicted densities included and counted by source)."""
        entries, counts = read_density_sets(folders, grid=self.vqvae.config.grid, exclude=exclude, only=only,
                                            limit=limit)
        if not entries:
            raise ValueError(f"no density read from {', '.join(counts['folders'])} ({counts['excluded']} held out)")
        records = []
        for entry in entries:
            record = reduced_density_record(entry)
            rho = torch.as_tensor(record.pop(F.CHARGE_DENSITY), dtype=torch.float32).unsqueeze(0)
            record[F.DENSITY_LATENT] = self.vqvae.encode_field(rho)[0].numpy()
            record["label_source"] = entry.source
            records.append(record)
        return records, [e.name for e in entries], counts

    def checkpoint_entries(self) -> dict:
        """Entries for the joint checkpoint: the VQ-VAE that encoded (and will decode) the latents."""
        return {VQVAE_ENTRY: self.entry}
