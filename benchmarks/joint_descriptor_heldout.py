"""Held-out check of a joint descriptor model: its descriptors for DFT-labelled materials it never saw.

For each held-out material of the model's split (``train.held_out`` in the checkpoint: the test split, and with
``--parts test val`` the validation one too, of the site-label predictor named by the recipe's ``hold_out_from``;
no training crystal is among them) with a DFT label in ``--labels``, the structure
is fixed (types, coordinates and lattice end exactly as given: ``JointModel.sample_from``) and the descriptor field
alone is generated, ``--draws`` times with different seeds. Errors per site against the DFT label: Bader charge
absolute error (e) and, for the atomic-DOS field, the decoded DOS's mean absolute error (states/eV) and
Wasserstein distance (eV) on the label grid (:func:`diffase.predictors.metrics.site_errors`). Beside them the same
errors of a structure-blind guess (the mean label of the site's element over the DFT training materials) and of
the site-label predictor whose split is reused (``site-labels-mp20``, which wrote the models' predicted training
labels and was never trained on these materials either): a joint model trained on its labels can at best match it.
This measures the descriptor head given the true structure; de novo generation is measured by
``benchmarks/joint_descriptor_gpaw.py`` (GPAW recompute of generated crystals).

Example: ``python benchmarks/joint_descriptor_heldout.py --model joint-bader-mp20``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from site_label_predictor import (
    machine,  # benchmarks/ is on sys.path when this file runs as a script
)

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT.parent / "shared" / "data" / "electronic"


def element_means(labels: list[dict], key: str) -> dict[int, np.ndarray]:
    """Mean of ``key`` ("bader" (n,) or "dos" (n, P)) per element over the labels' sites."""
    rows: dict[int, list] = {}
    for label in labels:
        for z, value in zip(label["numbers"], np.asarray(label[key], dtype=np.float64)):
            rows.setdefault(int(z), []).append(value)
    return {z: np.mean(v, axis=0) for z, v in rows.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--labels", default=str(LABELS))
    p.add_argument("--draws", type=int, default=4, help="generations per material (seeds 0..draws-1)")
    p.add_argument("--levels", type=int, default=100)
    p.add_argument("--surrogate", default="site-labels-mp20", help="site-label predictor to compare with")
    p.add_argument("--parts", nargs="+", choices=("test", "val"), default=["test"],
                   help="held-out parts to evaluate; add val when the validation materials chose nothing (weights "
                        "taken at the last step)")
    args = p.parse_args()
    torch.set_num_threads(1)

    from diffase.data.electronic.dataset import (
        ElectronicDataset,
        label_structure,
        read_label,
    )
    from diffase.generators import load_model
    from diffase.predictors.metrics import site_errors
    from diffase.predictors.model import SiteLabelPredictor

    model = load_model(args.model, device="cpu")
    surrogate = SiteLabelPredictor.load(args.surrogate)
    train_meta = model.meta.get("train", {})
    held = (train_meta.get("held_out") or {})
    if not held.get("test"):
        raise SystemExit(f"{args.model} records no held-out test materials (train it with hold_out_from)")
    never = {*held["test"], *held.get("val", [])}
    labels = [read_label(f) for f in ElectronicDataset(args.labels).files]
    labels = [dict(lab, numbers=np.asarray(label_structure(lab).atomic_numbers)) for lab in labels]
    wanted = {mid for part in args.parts for mid in held.get(part, [])}
    tests = [lab for lab in labels if lab["material_id"] in wanted
             and set(lab["numbers"].tolist()) <= set(model.elements)]
    train_labels = [lab for lab in labels if lab["material_id"] not in never]
    bader = "bader_charge" in model.descriptor_keys
    key = "bader" if bader else "dos"
    if bader:
        tests = [lab for lab in tests if np.isfinite(lab["bader"]).all()]
        train_labels = [lab for lab in train_labels if np.isfinite(lab["bader"]).all()]
    means = element_means(train_labels, key)
    tests = [lab for lab in tests if all(int(z) in means for z in lab["numbers"])]
    print(f"machine: {machine()}; model {args.model}; {len(tests)} held-out materials ({'+'.join(args.parts)}); "
          f"{len(train_labels)} DFT training labels for the per-element means")
    grid = np.asarray(labels[0]["dos_grid"], dtype=np.float64)
    t0 = time.perf_counter()
    per_site = {"model": [], "element_mean": [], "surrogate": []}
    elements = []
    for lab in tests:
        structure = label_structure(lab).get_reduced_structure()  # the site order of the label is kept
        draws = []
        for seed in range(args.draws):
            [records] = list(model.sample_from([structure], fix_lattice=True, fix_types=True, fix_coords=True,
                                               num_levels=args.levels, seed=seed))
            draws.append(records[0])
        ref_q = np.asarray(lab["bader"], dtype=np.float64) if bader else np.zeros(len(structure))
        ref_dos = np.asarray(lab["dos"], dtype=np.float64)
        guess_q = np.array([means[int(z)] for z in lab["numbers"]]) if bader else np.zeros(len(structure))
        guess_dos = ref_dos if bader else np.stack([means[int(z)] for z in lab["numbers"]])
        for rec in draws:
            q = rec["bader_charge"] if bader else np.zeros(len(structure))
            dos = ref_dos if bader else rec["atomic_dos"]
            per_site["model"].append(site_errors(dos, ref_dos, q, ref_q, grid))
        per_site["element_mean"].append(site_errors(guess_dos, ref_dos, guess_q, ref_q, grid))
        predicted = surrogate.predict(structure)
        per_site["surrogate"].append(site_errors(ref_dos if bader else predicted["site_dos"], ref_dos,
                                                 predicted["bader_charge"] if bader else ref_q, ref_q, grid))
        elements += [str(s.specie) for s in structure]
    wall = time.perf_counter() - t0

    summary = {"model": args.model, "train_step": train_meta.get("step"), "parts": args.parts, "n_materials": len(tests),
               "n_sites": len(elements), "draws": args.draws, "levels": args.levels,
               "materials": [lab["material_id"] for lab in tests], "wall_s": round(wall, 1), "machine": machine()}
    metrics = ("bader_abs_error",) if bader else ("dos_mae", "dos_wasserstein")
    intro = (f"{len(tests)} held-out materials ({' + '.join(args.parts)} split) ({len(elements)} sites) with DFT labels, {args.draws} draws each "
             f"({args.levels} sampling levels), against the DFT labels; the structure-blind guess is the element's "
             f"mean over {len(train_labels)} DFT training labels. {wall:.0f} s. Machine: {machine()}; no GPU.")
    lines = [f"# Held-out descriptors of {Path(args.model).stem}: structure fixed, descriptor generated", "", intro, "",
             "| error per site | generated (all draws) | element mean | " + args.surrogate + " |",
             "| --- | --- | --- | --- |"]
    for m in metrics:
        cells = []
        summary[m] = {}
        for name, errors in per_site.items():
            values = np.concatenate([e[m] for e in errors])
            summary[m][name] = {"mean": float(np.nanmean(values)), "median": float(np.nanmedian(values)),
                                "n_sites": int(values.size)}
            cells.append(f"{np.nanmean(values):.3f} / {np.nanmedian(values):.3f} (n = {values.size})")
        lines.append(f"| {m} mean / median | " + " | ".join(cells) + " |")
    out = ROOT / "benchmarks" / "results" / f"joint_descriptor_heldout-{Path(args.model).stem}"
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
