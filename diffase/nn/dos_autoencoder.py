"""Atomic-DOS autoencoder (Okuda, Takahara & Mizoguchi 2026, Methods): a site DOS of P = 512 points <-> a 30-d latent.

Encoder: ``log1p(dos)`` (1, P) -> four strided 1D convolutions (channels ``channels``, kernel 7, stride 2, SiLU)
-> linear map to ``latent_dim`` -> LayerNorm -> tanh, so every latent entry lies in (-1, 1): the range the joint
model's latent field is restricted to when sampled (:class:`~diffase.diffusion.constraints.LatentRange`).
Decoder: linear map back to the last convolution's shape -> four transposed convolutions -> ``softplus(raw) *
scale`` with a learnable output scale ``scale = softplus(s)`` (states/eV), so a decoded DOS is never negative.

Loss (:func:`dos_reconstruction_loss`, weights in :class:`DosLossWeights`): linear MSE (states/eV)^2, MSE of
``log1p`` (weights the tails and gaps as much as the peaks), relative shape term (MSE of the curves normalised to
unit area, times P^2 so a flat curve scores O(1)), and multi-scale gradient terms (MSE of finite differences at
strides 1, 4, 16 points: peak edges and band edges).

The energy grid is the autoencoder's: ``e_min``..``e_max`` (E - E_F, eV), ``dos_points`` values, stored in its
config, so a checkpoint says on which grid its decoded DOS lies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as TF

#: Checkpoint kind of an atomic-DOS autoencoder.
CHECKPOINT_KIND = "diffase-dos-autoencoder-v1"
_KERNEL, _STRIDE, _LEVELS = 7, 2, 4


@dataclass
class DosAutoencoderConfig:
    """Hyper-parameters of :class:`DosAutoencoder` and its energy grid (stored in every checkpoint)."""

    dos_points: int = 512  #: P, points of a site DOS
    e_min: float = -10.0  #: E - E_F of the first point, eV
    e_max: float = 10.0  #: E - E_F of the last point, eV
    latent_dim: int = 30
    channels: int = 32  #: channels of the convolutions

    def to_dict(self) -> dict:
        return asdict(self)

    def grid(self) -> np.ndarray:
        """The energies (P,) of a decoded DOS, eV relative to the Fermi level."""
        return np.linspace(self.e_min, self.e_max, self.dos_points)


@dataclass
class DosLossWeights:
    """Weights of the terms of :func:`dos_reconstruction_loss`."""

    linear: float = 1.0
    log: float = 1.0
    shape: float = 1.0
    gradient: float = 1.0
    gradient_strides: tuple[int, ...] = (1, 4, 16)

    def __post_init__(self):
        self.gradient_strides = tuple(int(s) for s in self.gradient_strides)


class DosAutoencoder(nn.Module):
    """Site DOS (n, P) states/eV <-> latent (n, latent_dim) in (-1, 1); see the module docstring."""

    def __init__(self, config: DosAutoencoderConfig):
        super().__init__()
        self.config = c = config
        if c.dos_points % _STRIDE**_LEVELS:
            raise ValueError(f"dos_points must be a multiple of {_STRIDE**_LEVELS}, got {c.dos_points}")
        self.reduced = c.dos_points // _STRIDE**_LEVELS
        pad = _KERNEL // 2
        down = [1] + [c.channels] * _LEVELS
        self.encoder = nn.Sequential(*[layer for i in range(_LEVELS) for layer in (
            nn.Conv1d(down[i], down[i + 1], _KERNEL, _STRIDE, pad), nn.SiLU())])
        self.to_latent = nn.Linear(c.channels * self.reduced, c.latent_dim)
        self.latent_norm = nn.LayerNorm(c.latent_dim)
        self.from_latent = nn.Linear(c.latent_dim, c.channels * self.reduced)
        up = [c.channels] * _LEVELS + [1]
        layers = []
        for i in range(_LEVELS):
            layers.append(nn.ConvTranspose1d(up[i], up[i + 1], _KERNEL, _STRIDE, pad, output_padding=1))
            if i < _LEVELS - 1:
                layers.append(nn.SiLU())
        self.decoder = nn.Sequential(*layers)
        self.log_scale = nn.Parameter(torch.zeros(()))  #: softplus(log_scale) is the output scale, states/eV

    def encode(self, dos: torch.Tensor) -> torch.Tensor:
        """Latents (n, latent_dim) in (-1, 1) of site DOS curves (n, P), states/eV."""
        h = self.encoder(torch.log1p(dos.clamp_min(0)).unsqueeze(1))
        return torch.tanh(self.latent_norm(self.to_latent(h.flatten(1))))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Site DOS (n, P), states/eV, >= 0, of latents (n, latent_dim)."""
        h = self.from_latent(latent).view(latent.shape[0], self.config.channels, self.reduced)
        return TF.softplus(self.decoder(TF.silu(h)).squeeze(1)) * TF.softplus(self.log_scale)

    def forward(self, dos: torch.Tensor) -> torch.Tensor:
        """Reconstruction (n, P) of ``dos`` (n, P)."""
        return self.decode(self.encode(dos))

    @torch.no_grad()
    def encode_numpy(self, dos: np.ndarray) -> np.ndarray:
        """:meth:`encode` of a numpy array (n, P) -> float64 (n, latent_dim), on the module's device."""
        p = next(self.parameters())
        return self.encode(torch.as_tensor(np.asarray(dos), dtype=p.dtype, device=p.device)).double().cpu().numpy()

    @torch.no_grad()
    def decode_numpy(self, latent: np.ndarray) -> np.ndarray:
        """:meth:`decode` of a numpy array (n, latent_dim) -> float64 (n, P) states/eV."""
        p = next(self.parameters())
        return self.decode(torch.as_tensor(np.asarray(latent), dtype=p.dtype, device=p.device)).double().cpu().numpy()


def dos_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weights: DosLossWeights
                            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted composite loss of reconstructions ``pred`` against ``target`` (n, P), states/eV, and its terms."""
    points = target.shape[-1]

    def unit_area(x):
        return x / x.sum(-1, keepdim=True).clamp_min(1e-8)

    parts = {
        "linear": TF.mse_loss(pred, target),
        "log": TF.mse_loss(torch.log1p(pred.clamp_min(0)), torch.log1p(target.clamp_min(0))),
        "shape": TF.mse_loss(unit_area(pred) * points, unit_area(target) * points),
        "gradient": sum(TF.mse_loss(pred[:, s:] - pred[:, :-s], target[:, s:] - target[:, :-s])
                        for s in weights.gradient_strides) / len(weights.gradient_strides),
    }
    total = sum(getattr(weights, name) * value for name, value in parts.items())
    return total, {k: v.detach() for k, v in parts.items()}


def make_checkpoint(net: DosAutoencoder, loss_weights: DosLossWeights, **extra) -> dict:
    """Checkpoint dict of an autoencoder: kind, config (incl. the energy grid), weights, loss weights, ``extra``."""
    return {"kind": CHECKPOINT_KIND, "model_config": net.config.to_dict(),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "loss_weights": {**asdict(loss_weights), "gradient_strides": list(loss_weights.gradient_strides)},
            **extra}


def autoencoder_from_checkpoint(ckpt: dict) -> DosAutoencoder:
    """The frozen (eval mode, no gradients) autoencoder of a checkpoint dict; ``ValueError`` for another kind."""
    if ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"checkpoint kind {ckpt.get('kind')!r} is not an atomic-DOS autoencoder ({CHECKPOINT_KIND}); "
                         "name a checkpoint made by `diffase train --recipe recipes/ados-autoencoder.json`")
    net = DosAutoencoder(DosAutoencoderConfig(**ckpt["model_config"]))
    net.load_state_dict(ckpt["state_dict"])
    return net.eval().requires_grad_(False)
