"""One end-to-end run of ``DOSConditionedGenerator`` on a held-out DFT label, against the same network unconditional.

The label (default ``mp-864957``, MnSbRu2: a test material of site-labels-mp20's split by material, so neither the
surrogate nor dos-mp20, which holds that split out, trained on it) gives the target (its GPAW site DOS, every site
or ``--sites``) and the template (its structure, noised to ``--t-start``). The generator runs at each guidance scale
of ``--scales`` with the same seeds (0 = the same network with the DOS dropped: unconditional; 2 = CFG, DOSMatGen's
w = 1) and ranks its crystals by ``dos_mae``: the surrogate's site DOS of the generated crystal against the target at
the conditioned sites, states/eV on the model's grid, lower is better. Printed per scale: wall time, valid crystals,
best / median ``dos_mae``, how many crystals keep the label's formula, and the surrogate on the true structure (the floor the surrogate's own error sets).

Run from the repository root, one CPU thread:
``python benchmarks/dos_generator_example.py`` (``--label``, ``--samples``, ``--t-start``, ``--levels``, ``--model``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from site_label_predictor import machine  # benchmarks/ is on sys.path when this file runs as a script

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--label", default=str(DATA / "electronic" / "mp-864957.npz"))
    p.add_argument("--sites", default=None, help="comma-separated sites to condition (default: all)")
    p.add_argument("--model", default="dos-mp20")
    p.add_argument("--surrogate", default="site-labels-mp20")
    p.add_argument("--t-start", type=float, default=0.5)
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 2.0])
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--levels", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("DIFFASE_NUM_THREADS") or 1))

    from diffase import DOSConditionedGenerator
    from diffase.data.electronic.dataset import label_structure, read_label
    from diffase.data.electronic.dos_targets import on_window
    from diffase.generators.dos_conditioned import dos_similarity
    from diffase.resume import model_fingerprint

    label = read_label(args.label)
    structure = label_structure(label)
    sites = [int(i) for i in args.sites.split(",")] if args.sites else None
    print(f"machine: {machine()}")
    print(f"label {label['material_id']} {structure.composition.reduced_formula} ({len(structure)} atoms), sites "
          f"{sites or 'all'}, template t_start {args.t_start}, {args.samples} samples, {args.levels} levels, "
          f"seed {args.seed}, model {args.model} (sha256 {model_fingerprint(args.model)['model_sha256'][:12]}), "
          f"surrogate {args.surrogate}")
    for scale in args.scales:
        g = DOSConditionedGenerator(args.label, sites=sites, n_samples=args.samples, guidance_scale=scale,
                                    model=args.model, t_start=args.t_start, surrogate=args.surrogate, seed=args.seed,
                                    num_levels=args.levels, device="cpu")
        if scale == args.scales[0]:
            target = g.dos_target()
            pred = g.predictor().predict(structure)["site_dos"]
            floor = dos_similarity(target, on_window(pred, target.window, g.predictor().dos_grid))
            print(f"surrogate on the true structure: dos_mae {floor:.3f} states/eV (model grid "
                  f"{target.window.n_points} points, {target.window.e_min}..{target.window.e_max} eV)")
        t0 = time.perf_counter()
        results = g.candidates([structure])
        seconds = time.perf_counter() - t0
        maes = np.array([r["dos_mae"] for r in results if r["valid"]])
        best = f"best {maes.min():.3f}, median {np.median(maes):.3f}" if len(maes) else "none valid"
        formula = structure.composition.reduced_formula
        same = sum(r["valid"] and r["structure"].composition.reduced_formula == formula for r in results)
        print(f"guidance_scale {scale}: {seconds:.1f} s, {len(maes)}/{len(results)} valid, dos_mae {best} states/eV, "
              f"{same}/{len(results)} with the label's formula {formula}")


if __name__ == "__main__":
    main()
