"""Smoke-scale measurement of the atomic-DOS latent field (issue 13): what a joint model fine-tuned with the ADOS
field generates, with and without the latent range restriction.

Model: the run of ``recipes/experimental/joint-ados-finetune.json`` (train = validation = the labels of
../shared/data/electronic: a fit, validation = training; not shipped). Samples: ``--n`` crystals, atom counts from
the training histogram, all 1000 levels, one corrector step, seed ``--seed``; the same seed again with the range
restriction removed. Reports validity, the share of latent entries (and of sites with every entry) in [-1, 1],
the share of decoded DOS values >= 0, and per element the mean decoded DOS of generated sites against the mean
label DOS of that element (MAE over the grid, states/eV), beside an element-blind reference (the mean label DOS of
all sites against each element's mean). Writes Markdown to ``--out``.

    python benchmarks/ados_field_smoke.py --model runs/joint-ados-finetune/best.pt --n 128
"""

from __future__ import annotations

import argparse
import os
import platform
import warnings
from collections import defaultdict
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from bader_field_smoke import sample_all  # sibling script
from pymatgen.core import Element

from diffase.data import fields as F
from diffase.data.descriptor_records import load_descriptor_records
from diffase.generators.joint import JointModel
from diffase.runtime import configure_threads


def per_element(records, key) -> dict[str, np.ndarray]:
    """Element symbol -> (sites, P) rows of ``key``."""
    out = defaultdict(list)
    for rec in records:
        for z, row in zip(rec[F.ATOMIC_NUMBERS], rec[key]):
            out[Element.from_Z(int(z)).symbol].append(row)
    return {el: np.asarray(rows) for el, rows in out.items()}


def range_shares(records) -> tuple[int, int, int, int]:
    """Latent entries in [-1, 1], all entries, sites with every entry in range, all sites."""
    z = np.concatenate([r[F.ADOS_LATENT] for r in records])
    inside = np.abs(z) <= 1.0
    return int(inside.sum()), int(inside.size), int(inside.all(1).sum()), len(z)


def share(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / max(b, 1):.1f} %)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/joint-ados-finetune/best.pt")
    p.add_argument("--labels", default="../shared/data/electronic")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-sites", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/ados_field_smoke.md")
    args = p.parse_args()
    configure_threads(1)
    ckpt = torch.load(args.model, weights_only=True)
    model = JointModel.from_checkpoint(ckpt, device="cpu")
    labels, _, skipped = load_descriptor_records(args.labels, [F.SITE_DOS])
    info = ckpt["train"]
    settings = (f"Machine {platform.machine()} ({platform.processor() or 'cpu'}), torch {torch.__version__}, one torch "
                f"thread, load average {os.getloadavg()[0]:.1f} (other jobs on the 2 cores). Model `{args.model}`: step "
                f"{info['step']}, {info['n_train']} training crystals (= validation crystals: a fit, validation = "
                f"training), {info['n_parameters']:,} parameters, best validation loss {info['best_val_loss']:.3f}, "
                f"{info['wall_time_s']:.0f} s of training; autoencoder `{ckpt['dos_autoencoder']['name']}` "
                f"(sha256 {ckpt['dos_autoencoder']['sha256'][:12]}).")
    print(settings)

    restricted, secs = sample_all(model, args.n, args.seed, args.batch_size)
    model.fields["ados_latent"].projection = None
    free, free_secs = sample_all(model, args.n, args.seed, args.batch_size)
    dos = np.concatenate([r[F.ATOMIC_DOS] for r in restricted])
    lines = [
        "# Atomic-DOS latent field: smoke-scale measurement (not a shipped model)", "", settings,
        (f"Samples: {args.n} crystals, 1000 levels, 1 corrector step, seed {args.seed}; {secs:.0f} s with the "
         f"restriction, {free_secs:.0f} s without."), "",
        "| | with latent range restriction | without (same seed) |", "| --- | --- | --- |",
        (f"| valid (no mask token left) | {share(sum(r['valid'] for r in restricted), args.n)} | "
         f"{share(sum(r['valid'] for r in free), args.n)} |"),
        f"| latent entries in [-1, 1] | {share(*range_shares(restricted)[:2])} | {share(*range_shares(free)[:2])} |",
        (f"| sites with every latent entry in [-1, 1] | {share(*range_shares(restricted)[2:])} | "
         f"{share(*range_shares(free)[2:])} |"),
        f"| decoded DOS values >= 0 | {share(int((dos >= 0).sum()), dos.size)} | |", "",
    ]
    gen = per_element([r for r in restricted if r["valid"]], F.ATOMIC_DOS)
    ref = per_element(labels, F.SITE_DOS)
    blind = np.concatenate(list(ref.values())).mean(0)
    lines += [(f"Per element (valid samples with the restriction; elements with >= {args.min_sites} generated "
               f"sites; labels: {sum(len(v) for v in ref.values())} sites of {len(labels)} crystals, {skipped} files "
               "skipped):"), "",
              ("| element | generated sites | label sites | MAE generated vs label mean (states/eV) | "
               "MAE element-blind mean vs label mean (states/eV) |"), "| --- | --- | --- | --- | --- |"]
    wins = total = 0
    for el in sorted(gen, key=lambda e: -len(gen[e])):
        if len(gen[el]) < args.min_sites or el not in ref:
            continue
        target = ref[el].mean(0)
        mae, mae_blind = np.abs(gen[el].mean(0) - target).mean(), np.abs(blind - target).mean()
        wins, total = wins + int(mae < mae_blind), total + 1
        lines.append(f"| {el} | {len(gen[el])} | {len(ref[el])} | {mae:.3f} | {mae_blind:.3f} |")
    lines += ["", (f"Generated per-element mean closer to the label mean than the element-blind mean: {wins} of "
                   f"{total} elements."), "",
              ("Read with care: the model saw only these labelled crystals (validation = training), so agreement with "
               "their per-element means measures fit, not generalisation; the decoded DOS carries the autoencoder's "
               "own reconstruction error (models/ados-autoencoder.md); no DFT recompute of generated structures and no "
               "structure quality (stability, novelty) is measured here. With and without the restriction the samples "
               "share seeds, not trajectories.")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
