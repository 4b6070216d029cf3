"""What a score checkpoint has learned, measured on MP-20 validation crystals (numbers for the model card).

1. DSM loss (lambda = sigma^2, the training loss) at fixed noise levels; predicting zero scores gives ~3 (the
   expected squared norm of a 3D unit Gaussian), so values well below 3 are what the network knows.
2. Denoising: the true positions noised to the level nearest sigma_0 (Angstrom; expected RMS displacement
   sigma sqrt(3)), then the reverse sampler run from that level (M corrector steps, snr 0.2); RMS displacement
   to the true positions after.
3. Regeneration: every position generated from the prior for the true cell and composition (no known atoms;
   T levels, M corrector steps); match rate to the true crystal (StructureMatcher stol 0.5, ltol 0.3,
   angle_tol 10, the CSP convention) — a hard test for a positions-only model, reported honestly.

    python benchmarks/score_model_quality.py --model score-mp20
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402

from diffase.data import fields as F  # noqa: E402
from diffase.data.dataset import load_records  # noqa: E402
from diffase.data.structures import record_to_structure  # noqa: E402
from diffase.diffusion.ve import minimum_image  # noqa: E402
from diffase.generators import load_model  # noqa: E402
from diffase.runtime import configure_threads  # noqa: E402
from diffase.train.objective import dsm_by_sigma  # noqa: E402


def rms_to_truth(records, generated) -> float:
    sq, n = 0.0, 0
    for rec, gen in zip(records, generated):
        cell = np.broadcast_to(rec[F.CELL], (len(rec[F.POSITIONS]), 3, 3))
        d = minimum_image(torch.tensor(gen[F.POSITIONS] - rec[F.POSITIONS]), torch.tensor(cell)).numpy()
        sq += float((d**2).sum())
        n += len(d)
    return (sq / n) ** 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="score-mp20")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/mp20/val.csv.gz"))
    p.add_argument("--n-loss", type=int, default=512)
    p.add_argument("--n-denoise", type=int, default=64)
    p.add_argument("--n-regen", type=int, default=64)
    p.add_argument("--levels", type=int, default=200)
    p.add_argument("--corrector", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/score_model_quality.md")
    args = p.parse_args()
    configure_threads(1)
    model = load_model(args.model, "cpu")
    records, _ = load_records(args.data, limit=max(args.n_loss, args.n_denoise, args.n_regen))
    lines = [f"# Score model quality: `{args.model}`", "",
             f"checkpoint step {model.meta.get('train', {}).get('step')}, data {Path(args.data).name}; "
             f"machine {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread", ""]

    sigmas = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    losses = dsm_by_sigma(model.net, model.process, records[: args.n_loss], sigmas)
    lines += [f"## DSM loss by noise level ({args.n_loss} crystals; zero-score baseline ~3.0)", "",
              "| sigma (A) | " + " | ".join(f"{s:g}" for s in sigmas) + " |", "|---" * (len(sigmas) + 1) + "|",
              "| loss | " + " | ".join(f"{losses[s]:.3f}" for s in sigmas) + " |", ""]
    print("\n".join(lines))

    lines += [f"## Denoising ({args.n_denoise} crystals, M={args.corrector}, snr 0.2)", "",
              "| sigma_0 (A) | start level | RMS to truth at start (A, expected) | after (A) | s |", "|---|---|---|---|---|"]
    subset = records[: args.n_denoise]
    sig = model.process.sigmas.numpy()
    for sigma0 in (0.1, 0.3):
        level = int(np.argmin(np.abs(sig - sigma0)))
        t = time.perf_counter()
        out = [rec for _, batch in model.sample_positions(subset, start_level=level, n_corrector=args.corrector,
                                                                  seeds=range(len(subset)))
               for rec in batch]
        seconds = time.perf_counter() - t
        lines.append(f"| {sigma0:g} | {level} | {sig[level] * 3 ** 0.5:.3f} | {rms_to_truth(subset, out):.3f} | "
                     f"{seconds:.0f} |")
        print(lines[-1])

    subset = records[: args.n_regen]
    t = time.perf_counter()
    out = [rec for _, batch in model.sample_positions(subset, num_levels=args.levels, n_corrector=args.corrector,
                                                                  seeds=range(len(subset)))
           for rec in batch]
    seconds = time.perf_counter() - t
    matcher = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)
    matches = [matcher.fit(record_to_structure(a), record_to_structure(b)) for a, b in zip(subset, out)]
    lines += ["", f"## Regeneration of all positions for the true cell and composition ({args.n_regen} crystals, "
              f"T={args.levels}, M={args.corrector}, no resampling)", "",
              f"match rate {np.mean(matches):.1%} ({sum(matches)}/{len(matches)}), {seconds / len(subset):.1f} s per crystal"]
    print(lines[-1])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
