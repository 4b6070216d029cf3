"""A 3D VQ-VAE of periodic charge-density grids (ChargeDIFF's density autoencoder): 32^3 grid -> 8^3 x d latent.

Units at the edge: :meth:`DensityVQVAE.encode` takes densities in **e/Angstrom^3** and :meth:`DensityVQVAE.decode`
returns them; inside, the network sees ChargeDIFF's log scale (:meth:`DensityVQVAE.to_log_scale`)

    x = (log10(clip(rho, rho_min, rho_max)) - log10(rho_min)) / (log10(rho_max) - log10(rho_min)),

which maps [rho_min, rho_max] (default 1e-4 .. 100 e/Angstrom^3, the anchor's thresholds) onto [0, 1]; its inverse
(:meth:`DensityVQVAE.from_log_scale`) is ``rho = rho_min * (rho_max / rho_min) ** x``. The clip is the transform's
only loss: values below rho_min (vacuum, and the negative ringing of Fourier-regridded densities) come back as
rho_min, values above rho_max as rho_max.

Shapes: a batch of grids ``(B, N, N, N)`` (N = ``config.grid``, 32) is encoded to ``(B, d, N/4, N/4, N/4)``
(``d = config.latent_dim``). Every convolution pads circularly (the grid is one periodic cell) and the encoder
downsamples by 2 twice, so rolling the input by 4 grid points along an axis rolls the latent by exactly one voxel,
and rolling the latent by one rolls the decoded grid by 4 (tested). The decoder upsamples by nearest-neighbour
repetition followed by a circular convolution (a transposed convolution cannot pad circularly).

The quantiser (:class:`VectorQuantiser`) snaps each latent voxel to its nearest codebook vector (Euclidean) and
passes gradients straight through to the encoder; its loss is ``|sg(z) - e|^2 + commitment * |z - sg(e)|^2``
(van den Oord et al. 2017). ChargeDIFF's diffusion runs on the pre-quantisation latent (:meth:`encode`) and
quantises before decoding (:meth:`decode` with ``quantise=True``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from diffase.hub import network_from_checkpoint, read_checkpoint

CHECKPOINT_KIND = "diffase-vqvae3d-v1"


@dataclass
class VQVAE3DConfig:
    """Hyper-parameters of :class:`DensityVQVAE` (stored in every checkpoint)."""

    grid: int = 32  #: N of the N^3 input grid (divisible by 4)
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  #: widths at N, N/2, N/4
    latent_dim: int = 3  #: d, channels of the N/4 latent (ChargeDIFF: 3)
    codebook_size: int = 512  #: codebook vectors (ChargeDIFF: 8192, for ~10^5 densities)
    commitment: float = 1.0  #: weight of the commitment term (ChargeDIFF: 1.0)
    rho_min: float = 1e-4  #: e/Angstrom^3, lower clip of the log scale
    rho_max: float = 100.0  #: e/Angstrom^3, upper clip of the log scale

    def to_dict(self) -> dict:
        return asdict(self)


def circular_conv(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Conv3d:
    """A 3D convolution padded periodically (``kernel // 2`` on each side)."""
    return nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, padding_mode="circular")


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))`` with circular 3^3 convolutions; shape kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_norm(channels), nn.SiLU(), circular_conv(channels, channels),
                                  _norm(channels), nn.SiLU(), circular_conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VectorQuantiser(nn.Module):
    """Nearest-codebook-vector quantisation of ``(B, d, n, n, n)`` latents with a straight-through gradient.

    Dead codes are restarted in training mode: ``usage`` keeps an exponential average (decay :attr:`USAGE_DECAY`
    per batch) of how many latent voxels chose each code, and a code whose average falls below
    :attr:`DEAD_BELOW` is moved onto a random latent voxel of the batch (its average set to :attr:`RESTART_USAGE`,
    a grace of ~45 batches). All averages start at 0, so the first training batch places the whole codebook on
    encoder outputs (a data-dependent initialisation). Without this, a 512-code book collapsed to 4 codes used
    (perplexity 1.0) within 72 steps on the shared labels."""

    USAGE_DECAY = 0.95
    DEAD_BELOW = 0.01
    RESTART_USAGE = 0.1

    def __init__(self, codebook_size: int, dim: int, commitment: float):
        super().__init__()
        self.commitment = commitment
        self.codebook = nn.Embedding(codebook_size, dim)
        self.codebook.weight.data.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.register_buffer("usage", torch.zeros(codebook_size))

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, indices: torch.Tensor) -> int:
        """Update ``usage`` with a batch's ``indices`` and move dead codes onto random voxels of ``z``; returns how
        many codes were moved."""
        counts = torch.bincount(indices.reshape(-1), minlength=self.usage.numel()).to(self.usage)
        self.usage.mul_(self.USAGE_DECAY).add_((1 - self.USAGE_DECAY) * counts)
        dead = (self.usage < self.DEAD_BELOW).nonzero().squeeze(1)
        if len(dead):
            flat = z.movedim(1, -1).reshape(-1, z.shape[1])
            self.codebook.weight[dead] = flat[torch.randint(0, len(flat), (len(dead),), device=flat.device)]
            self.usage[dead] = self.RESTART_USAGE
        return len(dead)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """Index ``(B, n, n, n)`` of the nearest (Euclidean) codebook vector of each latent voxel."""
        flat = z.movedim(1, -1).reshape(-1, z.shape[1])
        return torch.cdist(flat, self.codebook.weight).argmin(dim=1).view(z.shape[0], *z.shape[2:])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors ``(B, d, n, n, n)`` of ``indices`` (B, n, n, n)."""
        return self.codebook(indices).movedim(-1, 1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z_q, loss, indices)``: ``z_q`` equals the nearest codes in value and passes ``d/dz_q`` to ``z``."""
        indices = self.indices(z)
        if self.training:
            self.restart_dead_codes(z.detach(), indices)
        e = self.lookup(indices)
        loss = F.mse_loss(e, z.detach()) + self.commitment * F.mse_loss(z, e.detach())
        return z + (e - z).detach(), loss, indices


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity ``exp(H)`` of the code histogram of ``indices`` and the fraction (and count) of codes used."""
    counts = torch.bincount(indices.reshape(-1), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    used = int((counts > 0).sum())
    return {"perplexity": float(entropy.exp()), "codes_used": used, "fraction_used": used / codebook_size}


class DensityVQVAE(nn.Module):
    """Encoder (circular convs, two stride-2 steps) -> :class:`VectorQuantiser` -> decoder, on log-scaled grids."""

    def __init__(self, config: VQVAE3DConfig | None = None):
        super().__init__()
        self.config = config = config or VQVAE3DConfig()
        if config.grid % 4:
            raise ValueError(f"the grid size must be divisible by 4 (two stride-2 steps), got {config.grid}")
        if not 0 < config.rho_min < config.rho_max:
            raise ValueError(f"need 0 < rho_min < rho_max, got {config.rho_min}, {config.rho_max}")
        c1, c2, c3 = config.channels
        self.encoder = nn.Sequential(
            circular_conv(1, c1), nn.SiLU(),
            circular_conv(c1, c2, stride=2), ResidualBlock(c2),
            circular_conv(c2, c3, stride=2), ResidualBlock(c3),
            _norm(c3), nn.SiLU(), circular_conv(c3, config.latent_dim, kernel=1))
        self.quantiser = VectorQuantiser(config.codebook_size, config.latent_dim, config.commitment)
        self.decoder = nn.Sequential(
            circular_conv(config.latent_dim, c3), ResidualBlock(c3),
            nn.Upsample(scale_factor=2, mode="nearest"), circular_conv(c3, c2), ResidualBlock(c2),
            nn.Upsample(scale_factor=2, mode="nearest"), circular_conv(c2, c1),
            _norm(c1), nn.SiLU(), circular_conv(c1, 1))
        self.meta: dict = {}

    # -- the log scale -------------------------------------------------------------------------------------------
    def to_log_scale(self, rho: torch.Tensor) -> torch.Tensor:
        """ChargeDIFF's log scale of a density in e/Angstrom^3 (any shape): values in [0, 1]."""
        lo, hi = math.log10(self.config.rho_min), math.log10(self.config.rho_max)
        return (torch.log10(rho.clamp(self.config.rho_min, self.config.rho_max)) - lo) / (hi - lo)

    def from_log_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_log_scale`: density in e/Angstrom^3 (exact for rho in [rho_min, rho_max])."""
        lo, hi = math.log10(self.config.rho_min), math.log10(self.config.rho_max)
        return torch.pow(10.0, lo + x * (hi - lo))

    # -- the network on log-scaled grids --------------------------------------------------------------------------
    def encode_log(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent ``(B, d, N/4, N/4, N/4)`` of log-scaled grids ``x`` (B, N, N, N)."""
        if x.shape[1:] != (self.config.grid,) * 3:
            raise ValueError(f"expected density grids (B, {self.config.grid}, {self.config.grid}, {self.config.grid}), "
                             f"got {tuple(x.shape)}; regrid first (diffase.data.electronic.density.regrid)")
        return self.encoder(x.unsqueeze(1))

    def decode_log(self, z: torch.Tensor) -> torch.Tensor:
        """Log-scaled grids ``(B, N, N, N)`` decoded from latents ``z`` (B, d, N/4, N/4, N/4), quantised or not."""
        return self.decoder(z).squeeze(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass on log-scaled grids ``x`` (B, N, N, N): reconstruction (B, N, N, N), quantiser loss and
        code indices (B, N/4, N/4, N/4)."""
        z_q, vq_loss, indices = self.quantiser(self.encode_log(x))
        return self.decode_log(z_q), vq_loss, indices

    # -- the public API, in e/Angstrom^3 -----------------------------------------------------------------------
    def encode(self, rho: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent ``(B, d, N/4, N/4, N/4)`` (what the diffusion runs on) of densities ``rho``
        (B, N, N, N) in e/Angstrom^3."""
        return self.encode_log(self.to_log_scale(rho))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook vectors ``(B, d, n, n, n)`` of latents ``z`` and their indices ``(B, n, n, n)``."""
        indices = self.quantiser.indices(z)
        return self.quantiser.lookup(indices), indices

    def decode(self, z: torch.Tensor, *, quantise: bool = True) -> torch.Tensor:
        """Densities ``(B, N, N, N)`` in e/Angstrom^3 from latents ``z`` (B, d, N/4, N/4, N/4), snapped to the
        codebook first unless ``quantise=False``."""
        if quantise:
            z = self.quantise(z)[0]
        return self.from_log_scale(self.decode_log(z))

    # -- the latent as a joint model's generated field --------------------------------------------------------------
    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation (d,) of the codebook vectors (every code sits on encoder outputs:
        dead codes are restarted there), the scale a joint model diffuses the latent on."""
        weights = self.quantiser.codebook.weight.detach()
        return weights.mean(0), weights.std(0)

    @torch.no_grad()
    def encode_field(self, rho: torch.Tensor) -> torch.Tensor:
        """The joint model's ``density_latent`` (B, n, n, n, d), channels last, of densities ``rho`` (B, N, N, N)
        e/Angstrom^3: the pre-quantisation latent standardised per channel by :meth:`latent_stats` (about unit
        variance, as the DDPM prior N(0, 1) assumes; the raw latent of vqvae-density has std ~0.1-0.2)."""
        mean, std = self.latent_stats()
        return (self.encode(rho).movedim(1, -1) - mean) / std

    @torch.no_grad()
    def decode_field(self, z: torch.Tensor) -> torch.Tensor:
        """Densities (B, N, N, N) e/Angstrom^3 of ``density_latent`` values ``z`` (B, n, n, n, d): the inverse of
        :meth:`encode_field`'s standardisation, then :meth:`decode` with quantisation."""
        mean, std = self.latent_stats()
        return self.decode((z * std + mean).movedim(-1, 1))

    def latent_mask(self, mask, min_fraction: float = 0.5):
        """Latent voxels (n, n, n) bool of a density-grid region ``mask`` (N, N, N) bool (numpy or torch): voxel m
        is in when at least ``min_fraction`` of the 4^3 density points nearest to its centre (points 4m - 2 ..
        4m + 1 along each axis, periodic) are."""
        grid, n = self.config.grid, self.config.grid // 4
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (grid,) * 3:
            raise ValueError(f"a density mask is ({grid}, {grid}, {grid}) bool, got {tuple(mask.shape)}")
        if not 0 < min_fraction <= 1:
            raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
        blocks = torch.roll(mask.double(), (2, 2, 2), dims=(0, 1, 2)).view(n, 4, n, 4, n, 4)
        return blocks.mean(dim=(1, 3, 5)) >= min_fraction

    @torch.no_grad()
    def reconstruct(self, rho: torch.Tensor, *, quantise: bool = True) -> torch.Tensor:
        """``decode(encode(rho))`` in e/Angstrom^3, without gradients."""
        return self.decode(self.encode(rho), quantise=quantise)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint(self, **extra) -> dict:
        """Checkpoint dict (tensors and JSON-like values only; read back with ``weights_only=True``)."""
        return {"kind": CHECKPOINT_KIND, "model_config": self.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}, **extra}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu") -> DensityVQVAE:
        """The network of a checkpoint dict, in eval mode on ``device``; the other entries go to ``meta``."""
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, cls, VQVAE3DConfig)
        net.meta = meta
        return net.to(device).eval()

    @classmethod
    def load(cls, name: str = "vqvae-density", device: str | torch.device = "cpu") -> DensityVQVAE:
        """A named (``models/``, ``$DIFFASE_MODELS``, cache) or local checkpoint, read with ``weights_only=True``."""
        return cls.from_checkpoint(read_checkpoint(name), device)
