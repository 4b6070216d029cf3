"""Training of the charge-density VQ-VAE (:class:`~diffase.nn.vqvae3d.DensityVQVAE`) on a folder of densities,
then its held-out reconstruction test.

Data: whatever :func:`~diffase.data.electronic.density_sets.read_density_set` reads from the folder (diffase DFT
labels, a CHGCAR folder, ChargeDIFF's layout); the run records how many densities it saw. Materials are split by
:func:`~diffase.predictors.split.split_by_material` (train / val / test, seeded). Each training batch is rolled by
a random whole number of grid points along each axis (a translation of the crystal: the same density, so an
honest augmentation; validation is not rolled). ``train_folders`` add densities that only train (e.g. predicted by
density-mp20; never a material of the validation or test part; counted by source in the checkpoint). Loss per
batch: mean |x_rec - x| on ChargeDIFF's log scale plus the quantiser's codebook + commitment loss, optionally plus
``weight_eps_msd`` x the eps_msd of the linear density (the held-out metric). The loop (EMA, checkpoints, resume,
best by validation loss) is :func:`diffase.train.loop.train_loop`; after it ``best.pt`` is scored on the test materials
(:func:`reconstruction_table`) and the table is stored in it (``held_out``) and in ``held_out.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from diffase.data.electronic.density_sets import (
    DensityEntry,
    read_density_set,
    read_density_sets,
)
from diffase.labeling.compare import density_errors
from diffase.nn.vqvae3d import DensityVQVAE, VQVAE3DConfig, codebook_usage
from diffase.predictors.split import refuse_changed_split, split_by_material
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop


@dataclass
class VQVAETrainConfig(LoopConfig):
    """Loop settings plus the split (fractions of materials, seed) and the roll augmentation switch."""

    test_fraction: float = 0.3
    val_fraction: float = 0.1
    split_seed: int = 0
    random_rolls: bool = True  #: roll each training grid by random whole grid points (a crystal translation)
    #: more density sets that only train (e.g. densities predicted by density-mp20, ``diffase predict-labels``):
    #: materials of the split's validation and test parts are never read from them
    train_folders: list = field(default_factory=list)
    #: weight of an eps_msd term, sum (rho_rec - rho)^2 / sum rho^2 per grid on the linear density (e/Angstrom^3),
    #: beside the log-scale L1 (which weighs a factor 1.2 error at 1e-3 e/Angstrom^3 as much as one at a density peak)
    weight_eps_msd: float = 0.0


def random_rolls(x: torch.Tensor) -> torch.Tensor:
    """Each grid of ``x`` (B, N, N, N) rolled by its own random shift (0..N-1 points per axis; torch's RNG)."""
    shifts = torch.randint(0, x.shape[1], (x.shape[0], 3))
    return torch.stack([torch.roll(g, tuple(s.tolist()), dims=(0, 1, 2)) for g, s in zip(x, shifts)])


def vqvae_loss(net: DensityVQVAE, grids: Sequence[torch.Tensor], *, rolls: bool,
               weight_eps_msd: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Loss of ``net`` on densities ``grids`` (each (N, N, N) e/Angstrom^3): log-scale L1 + quantiser loss
    (+ ``weight_eps_msd`` x the batch mean of each grid's eps_msd on the clipped linear density); with ``rolls``
    (training only) each grid is first translated by :func:`random_rolls`."""
    rho = torch.stack(list(grids)).to(next(net.parameters()).device)
    x = net.to_log_scale(random_rolls(rho) if rolls else rho)
    recon, vq_loss, indices = net(x)
    rec = F.l1_loss(recon, x)
    usage = codebook_usage(indices, net.config.codebook_size)
    parts = {"rec": rec.detach(), "vq": vq_loss.detach(), "perplexity": usage["perplexity"]}
    total = rec + vq_loss
    if weight_eps_msd:
        target, guess = net.from_log_scale(x), net.from_log_scale(recon)
        eps = ((guess - target) ** 2).sum(dim=(1, 2, 3)) / (target**2).sum(dim=(1, 2, 3))
        parts["eps_msd"] = eps.mean().detach()
        total = total + weight_eps_msd * eps.mean()
    return total, parts


def pool_upsample(rho: np.ndarray, factor: int = 4) -> np.ndarray:
    """Baseline of the latent's size: ``rho`` (N, N, N) averaged over ``factor``^3 blocks, then periodic trilinear
    interpolation from the block centres back to N^3 (keeps the mean, hence the electron count)."""
    coarse = rho.reshape(*(s for n in rho.shape for s in (n // factor, factor))).mean(axis=(1, 3, 5))
    out = coarse
    for axis, n in enumerate(rho.shape):
        t = (np.arange(n) - (factor - 1) / 2) / factor  # fine points in coarse-index units
        lo = np.floor(t).astype(int)
        w = (t - lo).reshape([-1 if a == axis else 1 for a in range(3)])
        m = out.shape[axis]
        out = (1 - w) * np.take(out, lo % m, axis=axis) + w * np.take(out, (lo + 1) % m, axis=axis)
    return out


def reconstruction_table(net: DensityVQVAE, entries: Sequence[DensityEntry], train_mean: np.ndarray) -> dict:
    """Errors (:func:`~diffase.labeling.compare.density_errors`: eps_msd, NMAE; mean and median over materials)
    of the VQ-VAE and of baselines on ``entries``, and the codebook usage of their latents.

    Rows: ``vqvae`` (quantised latent), ``pre_quantisation`` (the latent the diffusion sees, decoded unquantised),
    ``log_clip`` (the log scale's clip alone: the floor any decoder of this scale has), ``pool_upsample``
    (:func:`pool_upsample`: 8^3 block means, 1 number per latent voxel against the latent's d), ``uniform`` (each
    material's own mean density everywhere: knows the electron count) and ``training_mean`` (the voxel-wise mean
    of the training grids, ``train_mean``)."""
    device = next(net.parameters()).device
    net.eval()
    rows: dict[str, list[dict]] = {k: [] for k in ("vqvae", "pre_quantisation", "log_clip", "pool_upsample",
                                                   "uniform", "training_mean")}
    codes = []
    with torch.no_grad():
        for entry in entries:
            rho = torch.as_tensor(entry.rho, dtype=torch.float32, device=device)[None]
            z = net.encode(rho)
            z_q, indices = net.quantise(z)
            codes.append(indices.cpu())
            guesses = {"vqvae": net.decode(z_q, quantise=False), "pre_quantisation": net.decode(z, quantise=False),
                       "log_clip": net.from_log_scale(net.to_log_scale(rho))}
            guesses = {k: v[0].double().cpu().numpy() for k, v in guesses.items()}
            guesses.update(pool_upsample=pool_upsample(entry.rho.astype(np.float64)),
                           uniform=np.full(entry.rho.shape, entry.rho.mean(), dtype=np.float64),
                           training_mean=train_mean)
            for name, guess in guesses.items():
                rows[name].append(density_errors(guess, entry.rho))
    table = {}
    for name, errs in rows.items():
        eps, nmae = np.array([e["density_eps_msd"] for e in errs]), np.array([e["density_nmae"] for e in errs])
        table[name] = {"n": len(errs), "eps_msd_mean": float(eps.mean()), "eps_msd_median": float(np.median(eps)),
                       "nmae_mean": float(nmae.mean()), "nmae_median": float(np.median(nmae))}
    usage = codebook_usage(torch.cat([c.reshape(-1) for c in codes]), net.config.codebook_size)
    return {"n_materials": len(entries), "materials": [e.name for e in entries], "errors": table,
            "codebook": {**usage, "latent_voxels": int(sum(c.numel() for c in codes))}}


def split_densities(entries: Sequence[DensityEntry], config: VQVAETrainConfig) -> dict[str, list[DensityEntry]]:
    """Train / val / test materials of ``entries`` by :func:`~diffase.predictors.split.split_by_material`."""
    elements = [{site.specie.Z for site in e.structure} for e in entries]
    parts = split_by_material(elements, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                              seed=config.split_seed)
    return {part: [e for e, p in zip(entries, parts) if p == part] for part in ("train", "val", "test")}


def train_vqvae(
    data: str | Path,
    out_dir: str | Path,
    *,
    model_config: dict | None = None,
    config: VQVAETrainConfig | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a density VQ-VAE on the densities in ``data``; return ``best.pt`` (held-out table
    included). ``model_config``: :class:`~diffase.nn.vqvae3d.VQVAE3DConfig` fields."""
    config = config or VQVAETrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    net_config = VQVAE3DConfig(**(model_config or {}))
    entries = read_density_set(data, grid=net_config.grid)
    split = split_densities(entries, config)
    names = {part: [e.name for e in split[part]] for part in split}
    # train-only densities: never a validation or test material, nor one the split already trains on
    extra, _ = read_density_sets(config.train_folders, grid=net_config.grid,
                                 exclude={*names["val"], *names["test"], *names["train"]})
    state = read_resume_state(out_dir)
    refuse_changed_split(state, names, out_dir, data)
    if state is not None:
        net_config = VQVAE3DConfig(**state["model_config"])
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = DensityVQVAE(net_config).to(dev)
    grids = {part: [torch.as_tensor(e.rho, dtype=torch.float32) for e in split[part]] for part in split}
    grids["train"] += [torch.as_tensor(e.rho, dtype=torch.float32) for e in extra]

    def loss_fn(model, items, generator):
        return vqvae_loss(model, items, rolls=config.random_rolls and model.training,
                          weight_eps_msd=config.weight_eps_msd)

    def checkpoint_fn(model, **extra):
        return model.checkpoint(**extra)

    meta = {
        "data": str(data), "val_data": None, "n_labels": len(entries), "split": names,
        "n_train": len(grids["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
        "train_sources": dict(Counter(e.source for e in [*split["train"], *extra])),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads), "objective": asdict(config),
    }
    best = train_loop(net, grids["train"], grids["val"], loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    train_mean = np.mean([e.rho for e in split["train"]], axis=0).astype(np.float64)
    ckpt["held_out"] = reconstruction_table(DensityVQVAE.from_checkpoint(ckpt, dev), split["test"], train_mean)
    torch.save(ckpt, best)
    (Path(out_dir) / "held_out.json").write_text(json.dumps(ckpt["held_out"], indent=1))
    return best
