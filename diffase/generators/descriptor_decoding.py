"""Generated latents decoded into the descriptors a user reads: ``ados_latent`` -> ``atomic_dos`` (states/eV).

A joint model with the atomic-DOS latent field carries, in its checkpoint entry :data:`AUTOENCODER_ENTRY`, the
frozen autoencoder whose encoder made its training labels (:class:`~diffase.train.descriptor_labels.DescriptorLabels`
puts it there: config with the energy grid, weights, name, SHA-256). Every generated record then gets
``atomic_dos`` (n_atoms, P), the decoder's output on the autoencoder's grid (E - E_F, eV; non-negative by
construction), beside its ``ados_latent`` (n_atoms, 30).
"""

from __future__ import annotations

from collections.abc import Sequence

from diffase.data import fields as F
from diffase.nn.dos_autoencoder import DosAutoencoder, autoencoder_from_checkpoint

#: Key of the autoencoder's checkpoint inside a joint checkpoint (and so in ``JointModel.meta``).
AUTOENCODER_ENTRY = "dos_autoencoder"


def decoder_entries(meta: dict) -> dict:
    """The decoder entries of a joint model's ``meta`` to store again in its checkpoint (empty if none)."""
    return {AUTOENCODER_ENTRY: meta[AUTOENCODER_ENTRY]} if AUTOENCODER_ENTRY in meta else {}


def dos_decoder(meta: dict) -> DosAutoencoder:
    """The frozen autoencoder of a joint model's ``meta``; ``ValueError`` when its checkpoint holds none."""
    if AUTOENCODER_ENTRY not in meta:
        raise ValueError(f"this joint model generates ados_latent but its checkpoint holds no '{AUTOENCODER_ENTRY}' "
                         "to decode it; train it with `diffase train` (the trainer stores the autoencoder it used)")
    return autoencoder_from_checkpoint(meta[AUTOENCODER_ENTRY])


def decode_descriptors(records: Sequence[dict], meta: dict) -> list[dict]:
    """``records`` with ``atomic_dos`` (n_atoms, P) float64 states/eV added wherever they hold ``ados_latent``."""
    records = list(records)
    if not any(F.ADOS_LATENT in r for r in records):
        return records
    decoder = dos_decoder(meta)
    return [{**r, F.ATOMIC_DOS: decoder.decode_numpy(r[F.ADOS_LATENT])} if F.ADOS_LATENT in r else r
            for r in records]
