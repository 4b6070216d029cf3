"""Held-out reconstruction error of the atomic-DOS autoencoder beside a 30-component PCA fitted on the same sites.

Reads an autoencoder checkpoint made by ``diffase train --recipe recipes/ados-autoencoder.json``, rebuilds its
split by material from the names it stores (the label folder it was trained on must still hold them), refits the
PCA baseline on the same training sites (:func:`diffase.train.dos_autoencoder_trainer.pca_reconstruction`) and
scores both on the test materials' sites (DFT labels only): DOS MAE (states/eV), relative MAE (MAE / mean |DOS|),
1-D Wasserstein distance of the unit-area curves (eV), overall and per element (elements with >= ``--min-sites``
test sites). Prints the machine and settings and writes Markdown to ``--out``.

    python benchmarks/ados_autoencoder.py --model models/ados-autoencoder.pt
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

from diffase.data import fields as F
from diffase.nn.dos_autoencoder import autoencoder_from_checkpoint
from diffase.runtime import configure_threads
from diffase.train.dos_autoencoder_trainer import (
    held_out_reconstruction,
    predicted_site_dos,
)
from diffase.train.site_trainer import load_site_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/ados-autoencoder.pt")
    p.add_argument("--min-sites", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/ados_autoencoder.md")
    args = p.parse_args()
    configure_threads(1)
    ckpt = torch.load(args.model, weights_only=True)
    info = ckpt["train"]
    items = {it["name"]: it for it in load_site_labels(info["data"])}
    missing = [n for part in info["split"].values() for n in part if n not in items]
    if missing:
        raise SystemExit(f"{info['data']} no longer holds {len(missing)} labels of the stored split: {missing[:5]}")

    def sites(part):
        return np.concatenate([items[n]["record"][F.SITE_DOS] for n in info["split"][part]]).astype(np.float32)

    train_dos = sites("train")
    if info.get("predicted_labels"):
        train_dos = np.concatenate([train_dos, predicted_site_dos(info["predicted_labels"], items[
            info["split"]["train"][0]]["dos_grid"])])
    test_dos = sites("test")
    numbers = np.concatenate([items[n]["record"][F.ATOMIC_NUMBERS] for n in info["split"]["test"]])
    net = autoencoder_from_checkpoint(ckpt)
    grid = net.config.grid()
    start = time.perf_counter()
    tables = held_out_reconstruction(net, train_dos, test_dos, numbers, grid)
    secs = time.perf_counter() - start
    latents = net.encode_numpy(test_dos)
    load = os.getloadavg()[0]
    settings = (f"Machine {platform.machine()} ({platform.processor() or 'cpu'}), torch {torch.__version__}, one torch "
                f"thread, load average {load:.1f} (other jobs on the 2 cores). Model `{args.model}`: step {info['step']}, "
                f"{info['n_parameters']:,} parameters, latent {net.config.latent_dim}, grid {grid[0]:.0f}..{grid[-1]:.0f} "
                f"eV ({len(grid)} points), trained {info['wall_time_s']:.0f} s on {info['hardware']['device_name']} "
                f"({info['hardware']['torch_threads']} thread). Data `{info['data']}`: {info['n_labels']} DFT labels "
                f"split by material (seed {info['objective']['split_seed']}): {len(info['split']['train'])} train, "
                f"{len(info['split']['val'])} validation, {len(info['split']['test'])} test materials; "
                f"{info['n_train_sites']} training sites ({info['n_train_sites_predicted']} of them predicted by "
                f"site-labels-mp20), {len(test_dos)} test sites (DFT).")
    print(settings)
    lines = ["# Atomic-DOS autoencoder: held-out reconstruction", "", settings, "",
             (f"PCA: {net.config.latent_dim} components fitted on the same {len(train_dos)} training sites. "
              f"Scoring both took {secs:.2f} s. Test latents in [-1, 1]: "
              f"{int((np.abs(latents) <= 1).all(1).sum())}/{len(latents)} sites."), "",
             "| method | test sites | DOS MAE (states/eV) | relative MAE | Wasserstein (eV) |",
             "| --- | --- | --- | --- | --- |"]
    overall = {name: rows[-1] for name, rows in tables.items()}
    for name, row in overall.items():
        lines.append(f"| {name} | {row['n_sites']} | {row['dos_mae']:.3f} | {row['dos_relative_mae']:.3f} | "
                     f"{row['dos_wasserstein']:.3f} ({row['n_wasserstein']} sites) |")
    lines += ["", f"Per element (test sites, elements with >= {args.min_sites} sites):", "",
              "| element | sites | MAE autoencoder | MAE PCA | W1 autoencoder (eV) | W1 PCA (eV) |",
              "| --- | --- | --- | --- | --- | --- |"]
    for ae_row, pca_row in zip(tables["autoencoder"][:-1], tables["pca"][:-1]):
        if ae_row["n_sites"] >= args.min_sites:
            lines.append(f"| {ae_row['element']} | {ae_row['n_sites']} | {ae_row['dos_mae']:.3f} | "
                         f"{pca_row['dos_mae']:.3f} | {ae_row['dos_wasserstein']:.3f} | {pca_row['dos_wasserstein']:.3f} |")
    lines += ["", ("Read with care: the test set is small (the rows above carry their site counts; a per-element row "
                   "under 30 sites is anecdotal). The labels are on -10..10 eV, not the paper's -15..5 eV: states "
                   "below -10 eV are not in the labels, so the autoencoder never sees them.")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
