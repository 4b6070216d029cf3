"""Training of the atomic-DOS autoencoder (:mod:`diffase.nn.dos_autoencoder`) on the site DOS of a label folder,
then its held-out reconstruction error beside a PCA baseline.

Data: every site of every DFT label in the folder (:func:`~diffase.train.site_trainer.load_site_labels`; predicted
labels are refused there), on the labels' own grid (shared/data/electronic: E - E_F in [-10, 10] eV, 512 points;
the autoencoder stores the grid it was trained on). Materials, with all their sites, are split by
:func:`~diffase.predictors.split.split_by_material` (train / val / test, seeded). ``predicted_labels``: a folder
written by ``diffase predict-labels``; its sites join the *training* sites only (never validation or test), and
the checkpoint counts them. The loop (EMA, checkpoints, resume, best by validation loss) is
:func:`diffase.train.loop.train_loop`. After it, ``best.pt`` is scored on the test sites
(:func:`held_out_reconstruction`) beside a PCA with as many components as the latent, fitted on the same training
sites, and the table is stored in it (``held_out``) and in ``held_out.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from diffase.data import fields as F
from diffase.data.electronic.dataset import ElectronicDataset, is_predicted, read_label
from diffase.nn.dos_autoencoder import (
    DosAutoencoder,
    DosAutoencoderConfig,
    DosLossWeights,
    autoencoder_from_checkpoint,
    dos_reconstruction_loss,
    make_checkpoint,
)
from diffase.predictors.metrics import element_table, site_errors
from diffase.predictors.split import refuse_changed_split, split_by_material
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop
from diffase.train.site_trainer import load_site_labels


@dataclass
class DosAutoencoderTrainConfig(LoopConfig):
    """Loop settings plus the loss weights (:class:`~diffase.nn.dos_autoencoder.DosLossWeights`), the split of the
    materials and an optional folder of predicted labels whose sites join the training sites."""

    loss_weights: dict = field(default_factory=dict)  #: DosLossWeights fields, e.g. {"shape": 0.5}
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_seed: int = 0
    predicted_labels: str | None = None


def predicted_site_dos(folder: str | Path, grid: np.ndarray) -> np.ndarray:
    """Site DOS (n_sites, P), states/eV, of the predicted labels in ``folder`` (``ValueError`` for a DFT label in it
    or another grid than ``grid``)."""
    rows = []
    for path in ElectronicDataset(folder).files:
        label = read_label(path)
        if not is_predicted(label):
            raise ValueError(f"{path} is a DFT label; predicted_labels must hold only `diffase predict-labels` output")
        if not np.allclose(label["dos_grid"], grid, atol=1e-4):
            raise ValueError(f"{path}: predicted DOS on another energy grid than the DFT labels")
        rows.append(label["dos"].astype(np.float32))
    return np.concatenate(rows)


def pca_reconstruction(train: np.ndarray, test: np.ndarray, components: int) -> np.ndarray:
    """``test`` (n, P) projected on the first ``components`` principal axes of ``train`` (m, P) and back."""
    mean = train.mean(0)
    _, _, axes = np.linalg.svd(train - mean, full_matrices=False)
    axes = axes[:components]
    return (test - mean) @ axes.T @ axes + mean


def held_out_reconstruction(net: DosAutoencoder, train_dos: np.ndarray, test_dos: np.ndarray, numbers: np.ndarray,
                            grid: np.ndarray) -> dict:
    """Per-element error tables (:func:`~diffase.predictors.metrics.element_table`: DOS MAE states/eV, relative MAE,
    Wasserstein distance eV) of the autoencoder's reconstruction of ``test_dos`` (n, P) (sites with atomic numbers
    ``numbers``) and of a PCA with ``latent_dim`` components fitted on ``train_dos``."""
    no_charge = np.full(len(test_dos), np.nan)
    recon = {"autoencoder": net.decode_numpy(net.encode_numpy(test_dos)),
             "pca": pca_reconstruction(train_dos.astype(np.float64), test_dos.astype(np.float64),
                                       net.config.latent_dim)}
    return {name: element_table(numbers, site_errors(r, test_dos, no_charge, no_charge, grid))
            for name, r in recon.items()}


def train_dos_autoencoder(
    labels: str | Path,
    out_dir: str | Path,
    *,
    model_config: dict | None = None,
    config: DosAutoencoderTrainConfig | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) the atomic-DOS autoencoder on the site DOS of the DFT labels in ``labels``; return
    ``best.pt`` (held-out tables included). ``model_config``: :class:`DosAutoencoderConfig` fields except the grid
    (``dos_points``, ``e_min``, ``e_max``: from the labels)."""
    config = config or DosAutoencoderTrainConfig()
    weights = DosLossWeights(**config.loss_weights)
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    items = load_site_labels(labels)
    grid = np.asarray(items[0]["dos_grid"], dtype=np.float64)
    parts = split_by_material([set(it["record"][F.ATOMIC_NUMBERS].tolist()) for it in items],
                              test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                              seed=config.split_seed)
    split = {part: [it for it, p in zip(items, parts) if p == part] for part in ("train", "val", "test")}

    def sites(part: str) -> np.ndarray:
        return np.concatenate([it["record"][F.SITE_DOS] for it in split[part]]).astype(np.float32)

    train_dos = sites("train")
    n_predicted = 0
    if config.predicted_labels:
        extra = predicted_site_dos(config.predicted_labels, grid)
        n_predicted = len(extra)
        train_dos = np.concatenate([train_dos, extra])
    names = {part: [it["name"] for it in split[part]] for part in split}
    state = read_resume_state(out_dir)
    refuse_changed_split(state, names, out_dir, labels)
    grid_settings = {"dos_points": len(grid), "e_min": float(grid[0]), "e_max": float(grid[-1])}
    if state is not None:
        net_config = DosAutoencoderConfig(**state["model_config"])
    else:
        net_config = DosAutoencoderConfig(**{**(model_config or {}), **grid_settings})
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = DosAutoencoder(net_config).to(dev)

    def loss_fn(model, rows: Sequence[np.ndarray], generator):
        target = torch.as_tensor(np.stack(rows), device=dev)
        return dos_reconstruction_loss(model(target), target, weights)

    def checkpoint_fn(model, **extra):
        return make_checkpoint(model, weights, **extra)

    meta = {
        "data": str(labels), "val_data": None, "n_labels": len(items), "split": names,
        "n_train_sites": len(train_dos), "n_train_sites_predicted": n_predicted,
        "predicted_labels": config.predicted_labels,
        "n_val_sites": int(sum(len(it["record"][F.SITE_DOS]) for it in split["val"])),
        "n_test_sites": int(sum(len(it["record"][F.SITE_DOS]) for it in split["test"])),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads), "objective": asdict(config),
    }
    best = train_loop(net, list(train_dos), list(sites("val")), loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    numbers = np.concatenate([it["record"][F.ATOMIC_NUMBERS] for it in split["test"]])
    ckpt["held_out"] = {"n_test_materials": len(split["test"]), "n_test_sites": len(numbers),
                        **held_out_reconstruction(autoencoder_from_checkpoint(ckpt), train_dos, sites("test"),
                                                  numbers, grid)}
    torch.save(ckpt, best)
    (Path(out_dir) / "held_out.json").write_text(json.dumps(ckpt["held_out"], indent=1))
    return best
