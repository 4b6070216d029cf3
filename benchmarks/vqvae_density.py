"""Held-out reconstruction of the charge-density VQ-VAE beside baselines, its codebook use and its speed.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/vqvae_density.py [--model models/vqvae-density.pt]
[--data ../shared/data/electronic] [--chgcars ../shared/data/pmg]``

Re-reads the densities the checkpoint was trained on, takes its stored split (by material), and scores on the test
materials (:func:`diffase.train.vqvae_trainer.reconstruction_table`): eps_msd = sum (drho)^2 / sum rho^2 and NMAE =
sum |drho| / sum |rho| per material (:func:`diffase.labeling.compare.density_errors`), mean and median, for the
VQ-VAE (quantised), its pre-quantisation latent decoded, the log scale's clip alone, an 8^3 block average with
periodic trilinear upsampling, each material's uniform mean density and the voxel-wise training mean. The same
table on the training materials says how much is fit. Then the pymatgen test CHGCARs (VASP, other codes and
cells than the GPAW training labels), regridded to 32^3, and the time to encode + decode one grid. Prints the
machine and settings and writes ``benchmarks/results/vqvae_density.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from site_label_predictor import machine  # benchmarks/ is on sys.path when this file runs as a script

from diffase.data.electronic.density_sets import read_chgcar_folder, read_density_set
from diffase.hub import read_checkpoint
from diffase.nn.vqvae3d import DensityVQVAE
from diffase.train.vqvae_trainer import reconstruction_table

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"vqvae": "VQ-VAE (quantised latent)", "pre_quantisation": "pre-quantisation latent, decoded",
        "log_clip": "log-scale clip alone (floor)", "pool_upsample": "8^3 block mean + trilinear upsample",
        "uniform": "uniform, own mean density", "training_mean": "voxel-wise training mean"}


def markdown(table: dict, title: str) -> list[str]:
    lines = [f"### {title} ({table['n_materials']} materials)", "",
             "| | n | eps_msd mean | eps_msd median | NMAE mean | NMAE median |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, label in ROWS.items():
        r = table["errors"][key]
        lines.append(f"| {label} | {r['n']} | {100 * r['eps_msd_mean']:.3f} % | {100 * r['eps_msd_median']:.3f} % | "
                     f"{100 * r['nmae_mean']:.2f} % | {100 * r['nmae_median']:.2f} % |")
    c = table["codebook"]
    lines += ["", (f"Codebook on these latents: perplexity {c['perplexity']:.1f}, {c['codes_used']} codes used of the "
                   f"book ({100 * c['fraction_used']:.1f} %), over {c['latent_voxels']} latent voxels."), ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "vqvae-density.pt"))
    parser.add_argument("--data", default=None, help="density folder (default: the one stored in the checkpoint)")
    parser.add_argument("--chgcars", default=str(ROOT.parent / "shared" / "data" / "pmg"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "vqvae_density.md"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("DIFFASE_NUM_THREADS", "1")))
    info = machine()
    ckpt = read_checkpoint(args.model)
    net = DensityVQVAE.from_checkpoint(ckpt)
    train_info = ckpt["train"]
    data = args.data or train_info["data"]
    print(f"machine: {info}\nmodel: {args.model} ({train_info['step']} steps, {train_info['n_parameters']} "
          f"parameters, config {net.config.to_dict()})\ndata: {data}")
    entries = {e.name: e for e in read_density_set(data, grid=net.config.grid)}
    split = {part: [entries[name] for name in train_info["split"][part]] for part in ("train", "val", "test")}
    train_mean = np.mean([e.rho for e in split["train"]], axis=0).astype(np.float64)
    tables = {part: reconstruction_table(net, split[part], train_mean) for part in ("test", "train")}
    chgcars = read_chgcar_folder(args.chgcars, net.config.grid)
    tables["chgcar"] = reconstruction_table(net, chgcars, train_mean)
    rho = torch.as_tensor(split["test"][0].rho)[None]
    net.reconstruct(rho)
    t0 = time.perf_counter()
    repeats = 20
    for _ in range(repeats):
        net.reconstruct(rho)
    per_grid = (time.perf_counter() - t0) / repeats
    lines = ["# Charge-density VQ-VAE: held-out reconstruction", "",
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/vqvae_density.py --model {Path(args.model).name}`", "",
             f"- Machine: {info}",
             (f"- Model: `{Path(args.model).name}`, {train_info['step']} steps, "
              f"{train_info['n_parameters']} parameters, config `{net.config.to_dict()}`"),
             (f"- Data: `{data}`: {len(entries)} densities, split by material (seed "
              f"{train_info['objective']['split_seed']}): {len(split['train'])} train / {len(split['val'])} val / "
              f"{len(split['test'])} test"), "",
             ("eps_msd = sum (rho_rec - rho)^2 / sum rho^2, NMAE = sum |rho_rec - rho| / sum |rho| over the 32^3 grid "
              "of each material (rho in e/Angstrom^3, the label as stored, negative ringing included), then mean / "
              "median over materials."), ""]
    lines += markdown(tables["test"], "Held-out test materials")
    lines += markdown(tables["train"], "Training materials (a fit: these grids were trained on)")
    lines += markdown(tables["chgcar"], "pymatgen test CHGCARs (VASP; " + ", ".join(e.name for e in chgcars) + ")")
    lines += [(f"Speed: encode + quantise + decode of one 32^3 grid: {1000 * per_grid:.1f} ms (mean of {repeats}, "
               "batch 1)."), ""]
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
