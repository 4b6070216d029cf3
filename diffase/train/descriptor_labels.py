"""The joint trainer's descriptor labels: fields read from label files, and fields a frozen network encodes.

Bader charges and the control field come from :func:`~diffase.data.descriptor_records.load_descriptor_records`
as they are. The atomic-DOS latent field (``ados_latent``) is not stored in label files: its labels are the
latents (n_atoms, 30) in (-1, 1) of each site's DOS (``site_dos``, states/eV) under the encoder of a frozen
atomic-DOS autoencoder (:mod:`diffase.nn.dos_autoencoder`), computed once when the labels are loaded. The
autoencoder's checkpoint (config with its energy grid, weights, name, SHA-256: :func:`~diffase.hub.frozen_copy`,
as for the density VQ-VAE of :mod:`diffase.train.density_labels`) is copied into the joint checkpoint
(:meth:`DescriptorLabels.checkpoint_entries`), so a joint model decodes its latents with the very
weights that encoded its labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffase.data import fields as F
from diffase.data.descriptor_records import load_descriptor_records
from diffase.data.electronic.dataset import ElectronicDataset
from diffase.generators.descriptor_decoding import AUTOENCODER_ENTRY
from diffase.generators.joint_fields import ADOS_LATENT_DIM
from diffase.hub import frozen_copy
from diffase.nn.dos_autoencoder import autoencoder_from_checkpoint

#: Fields whose labels a frozen network encodes from a label field: field key -> the label field it encodes.
ENCODED_FROM = {F.ADOS_LATENT: F.SITE_DOS}


class DescriptorLabels:
    """Loads the labels of the descriptor fields ``keys`` (batch keys), encoding ``ados_latent`` with the frozen
    autoencoder ``dos_autoencoder`` (name or path; only read when ``ados_latent`` is among ``keys``)."""

    def __init__(self, keys: list[str], dos_autoencoder: str | Path | None):
        self.keys = list(keys)
        self.autoencoder_ckpt = None
        if F.ADOS_LATENT not in self.keys:
            return
        if dos_autoencoder is None:
            raise ValueError("the ados_latent field needs a frozen atomic-DOS autoencoder: set dos_autoencoder "
                             "(e.g. 'ados-autoencoder', made by `diffase train --recipe recipes/ados-autoencoder.json`)")
        ckpt, self.autoencoder_ckpt = frozen_copy(dos_autoencoder)
        self.autoencoder = autoencoder_from_checkpoint(ckpt)
        if self.autoencoder.config.latent_dim != ADOS_LATENT_DIM:
            raise ValueError(f"{dos_autoencoder}: latent dimension {self.autoencoder.config.latent_dim}, the "
                             f"ados_latent field has {ADOS_LATENT_DIM}")

    def load(self, folders: str | Path | Sequence[str | Path], **select) -> tuple[list[dict], list[str], dict]:
        """Records, material ids and counts, as :func:`~diffase.data.descriptor_records.load_descriptor_records`
        gives them for ``folders`` (``select``: its ``require`` / ``exclude`` / ``only`` / ``limit``), with
        ``ados_latent`` (n_atoms, 30) encoded from the site DOS in place of ``site_dos``. The labels' DOS grid must
        be the autoencoder's."""
        records, names, counts = load_descriptor_records(folders, [ENCODED_FROM.get(k, k) for k in self.keys],
                                                         **select)
        if self.autoencoder_ckpt is None:
            return records, names, counts
        grid = self.autoencoder.config.grid()
        for folder in counts["folders"]:
            label_grid = np.asarray(ElectronicDataset(folder).dos_grid, dtype=np.float64)
            if label_grid.shape != grid.shape or not np.allclose(label_grid, grid, atol=1e-3):
                raise ValueError(f"the site DOS of {folder} lies on {label_grid[0]:.2f}..{label_grid[-1]:.2f} eV "
                                 f"({len(label_grid)} points), the autoencoder's grid is {grid[0]:.2f}..{grid[-1]:.2f} "
                                 f"eV ({len(grid)} points); train an autoencoder on these labels")
        for record in records:
            record[F.ADOS_LATENT] = self.autoencoder.encode_numpy(record.pop(F.SITE_DOS))
        return records, names, counts

    def checkpoint_entries(self) -> dict:
        """Entries for the joint checkpoint: the autoencoder's, when the ``ados_latent`` field is trained."""
        return {} if self.autoencoder_ckpt is None else {AUTOENCODER_ENTRY: self.autoencoder_ckpt}
