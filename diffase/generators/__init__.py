"""User-facing generators: a network, its processes and a checkpoint, behind ``sample``-style methods."""

from __future__ import annotations

import os

import torch

from diffase import hub
from diffase.runtime import configure_threads, resolve_device


def load_model(name: str | os.PathLike = hub.DEFAULT_SCORE_MODEL, device: str | torch.device = "auto"):
    """Load a named or local checkpoint (offline, ``weights_only=True``), once per process and device: a score
    model, a joint model, or the charge-density VQ-VAE (``"vqvae-density"``, a
    :class:`~diffase.nn.vqvae3d.DensityVQVAE`).

    ``device="auto"`` picks CUDA when available, else the CPU (threads set by
    :func:`diffase.runtime.configure_threads`). Raises :class:`~diffase.errors.CheckpointNotFoundError`
    naming every place it looked.
    """
    from diffase.generators import joint
    from diffase.generators.score_model import CHECKPOINT_KIND, ScoreModel
    from diffase.nn import vqvae3d

    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()

    def build():
        ckpt = hub.read_checkpoint(name)
        if ckpt["kind"] == CHECKPOINT_KIND:
            return ScoreModel.from_checkpoint(ckpt, dev)
        if ckpt["kind"] == joint.CHECKPOINT_KIND:
            return joint.JointModel.from_checkpoint(ckpt, dev)
        if ckpt["kind"] == vqvae3d.CHECKPOINT_KIND:
            return vqvae3d.DensityVQVAE.from_checkpoint(ckpt, dev)
        raise ValueError(f"{ckpt['path']}: unknown checkpoint kind {ckpt['kind']!r}")

    return hub.cached(name, dev, build)


def __getattr__(name: str):
    if name == "DOSConditionedGenerator":  # imported on first use: importing diffase.generators loads no pymatgen
        from diffase.generators.dos_conditioned import DOSConditionedGenerator

        return DOSConditionedGenerator
    if name == "ChargeGuidedGenerator":
        from diffase.generators.charge_guided import ChargeGuidedGenerator

        return ChargeGuidedGenerator
    raise AttributeError(f"module 'diffase.generators' has no attribute {name!r}")
