"""DOSMatGen's Tables 1-2 protocol on held-out DFT site DOS: does conditioning on the site DOS steer generation?

For each held-out labelled material (the test materials of site-labels-mp20's split by material, which the
site-DOS model ``--model`` never trained on, from any label folder; the surrogate never saw them either):

* y: its DFT site DOS (states/eV, spin-summed, 512 points over E - E_F in [-10, 10] eV);
* y_hat: the surrogate (``--surrogate``, site-labels-mp20) on the true structure;
* template-guided generation from the true structure noised to t_start (0.2 / 0.5 / 1.0), every site
  conditioned on y (resampled to the model's grid), ``--samples`` crystals per material, at guidance scales
  ``--scales`` (0 = the same network unconditional, 1 = conditional, 2 = CFG with DOSMatGen's w = 1), plus the
  unconditional prior ``--baseline`` (joint-mp20) from the same templates and seeds, and, with ``--classifier``
  (a site-DOS regressor on noisy crystals, dos-regressor-mp20), that prior under classifier guidance towards
  the same site DOS at ``--classifier-scales`` (rows "joint-mp20 + <classifier> (classifier scale s)");
* y_gen_hat: the surrogate on each generated crystal, rows in the site order of the template (the sampler keeps
  it); MAE(y_gen_hat, y), MAE(y_gen_hat, y_hat) (states/eV, over sites and the 512 energies, then crystals);
  structure match to the true structure (StructureMatcher stol 0.5, ltol 0.3, angle_tol 10) and composition
  match (same reduced formula), over all generated crystals (an invalid crystal, with a mask token left, is a
  miss and has no MAE).

Then (``--prior-n``) the prior check: unconditional samples of the fine-tuned model vs joint-mp20, same seeds,
by validity, uniqueness and novelty against the MP-20 training crystals (S.U.N. without the stability step).

Run from the repository root (one CPU thread):
``python benchmarks/dos_conditioning.py --model models/dos-mp20.pt`` -> benchmarks/results/dos_conditioning.md
(+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _evaluable(structure) -> bool:
    """Structurally valid (distances >= 0.5 A, own images included) with every cell height >= 0.5 A: a collapsed
    cell makes the surrogate's and StructureMatcher's neighbour searches run out of memory."""
    from diffase.analysis.validity import structure_valid

    lat = structure.lattice.get_niggli_reduced_lattice()
    m = lat.matrix
    heights = [lat.volume / np.linalg.norm(np.cross(m[(i + 1) % 3], m[(i + 2) % 3])) for i in range(3)]
    return min(heights) >= 0.5 and structure_valid(structure)


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dos-mp20")
    p.add_argument("--baseline", default="joint-mp20", help="unconditional prior compared at the same templates")
    p.add_argument("--surrogate", default="site-labels-mp20")
    p.add_argument("--labels", default=str(DATA / "electronic"))
    p.add_argument("--t-start", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    p.add_argument("--classifier", default=None, help="site-DOS regressor guiding --baseline (classifier guidance)")
    p.add_argument("--classifier-scales", type=float, nargs="+", default=[1.0])
    p.add_argument("--samples", type=int, default=4, help="generated crystals per held-out material and setting")
    p.add_argument("--levels", type=int, default=200, help="sampling levels (respaced from T = 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prior-n", type=int, default=128, help="unconditional samples per model for the prior check "
                                                            "(0 = skip)")
    p.add_argument("--split", default="test", choices=["test", "val"],
                   help="held-out part: test (the benchmark) or val (to choose a checkpoint without the test part)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dos_conditioning"))
    args = p.parse_args()
    torch.set_num_threads(1)
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (12 * 2**30, 12 * 2**30))  # a runaway neighbour search fails here, alone

    from pymatgen.analysis.structure_matcher import StructureMatcher

    from diffase.data.electronic.dataset import (
        ElectronicDataset,
        label_structure,
        read_label,
    )
    from diffase.data.structures import record_to_structure
    from diffase.errors import UnknownElementError
    from diffase.generators import load_model
    from diffase.generators.node_condition import resample_dos
    from diffase.predictors.model import SiteLabelPredictor

    t_all = time.perf_counter()
    model = load_model(args.model, device="cpu")
    baseline = load_model(args.baseline, device="cpu")
    surrogate = SiteLabelPredictor.load(args.surrogate)
    spec = model.node_condition
    if spec is None or spec.get("kind") != "site_dos":
        raise SystemExit(f"{args.model} is not conditioned on the site DOS")
    held = (model.meta.get("train", {}).get("held_out") or {}).get(args.split)
    if not held:
        raise SystemExit(f"{args.model} records no held-out {args.split} materials (train.held_out.{args.split})")
    files = {read_label(f)["material_id"]: f for f in ElectronicDataset(args.labels).files}
    materials = []
    for mid in held:
        label = read_label(files[mid])
        structure = label_structure(label)
        y = np.asarray(label["dos"], dtype=np.float64)
        y_hat = surrogate.predict(structure)["site_dos"].astype(np.float64)
        cond = resample_dos(label["dos_grid"], y, spec["e_min"], spec["e_max"], int(spec["n_points"]))
        materials.append({"id": mid, "structure": structure, "y": y, "y_hat": y_hat, "cond": cond,
                          "formula": structure.composition.reduced_formula})
    surrogate_mae = float(np.mean([_mae(m["y_hat"], m["y"]) for m in materials]))
    print(f"{len(materials)} held-out materials; surrogate MAE(y_hat, y) = {surrogate_mae:.3f} states/eV")

    matcher = StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)
    templates = [m["structure"] for m in materials for _ in range(args.samples)]
    owners = [i for i in range(len(materials)) for _ in range(args.samples)]

    def evaluate(records) -> dict:
        mae_y, mae_yhat, matches, comps, invalid, no_surrogate, broken = [], [], 0, 0, 0, 0, 0
        for rec, i in zip(records, owners):
            m = materials[i]
            if not rec["valid"]:
                invalid += 1
                continue
            gen = record_to_structure(rec)
            comps += gen.composition.reduced_formula == m["formula"]
            if not _evaluable(gen):  # overlapping atoms or a collapsed cell: no match, no surrogate DOS
                broken += 1
                continue
            matches += bool(matcher.fit(gen, m["structure"]))
            try:
                y_gen_hat = surrogate.predict(gen)["site_dos"].astype(np.float64)
            except UnknownElementError:
                no_surrogate += 1
                continue
            mae_y.append(_mae(y_gen_hat, m["y"]))
            mae_yhat.append(_mae(y_gen_hat, m["y_hat"]))
        n = len(records)
        return {"n": n, "n_mae": len(mae_y), "invalid": invalid, "no_surrogate": no_surrogate,
                "structure_invalid": broken,
                "mae_gen_y": float(np.mean(mae_y)) if mae_y else float("nan"),
                "median_mae_gen_y": float(np.median(mae_y)) if mae_y else float("nan"),
                "mae_gen_yhat": float(np.mean(mae_yhat)) if mae_yhat else float("nan"),
                "match_rate": matches / n, "comp_match_rate": comps / n}

    rows = []
    for t_start in args.t_start:
        settings = [(args.baseline, None, None)] + [(args.model, s, None) for s in args.scales]
        settings += [(args.baseline, None, c) for c in (args.classifier_scales if args.classifier else [])]
        for name, scale, classifier_scale in settings:
            t0 = time.perf_counter()
            label = Path(name).stem
            if classifier_scale is not None:
                gen = baseline.sample_from(templates, t_start=t_start, num_levels=args.levels, seed=args.seed,
                                           node_conditions=[materials[i]["cond"] for i in owners],
                                           classifier=args.classifier, classifier_scale=classifier_scale,
                                           batch_size=len(templates))
                label += f" + {Path(args.classifier).stem} (classifier scale {classifier_scale:g})"
            elif scale is None:
                gen = baseline.sample_from(templates, t_start=t_start, num_levels=args.levels, seed=args.seed,
                                           batch_size=len(templates))
            else:
                gen = model.sample_from(templates, t_start=t_start, num_levels=args.levels, seed=args.seed,
                                        node_conditions=[materials[i]["cond"] for i in owners],
                                        guidance_scale=scale, batch_size=len(templates))
            records = [r for batch in gen for r in batch]
            seconds = time.perf_counter() - t0
            row = {"t_start": t_start, "model": label, "guidance_scale": scale,
                   "classifier_scale": classifier_scale, **evaluate(records),
                   "seconds": round(seconds, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    prior = None
    if args.prior_n:
        from diffase.analysis.sun import sun_metrics
        from diffase.data.dataset import load_records

        train, _ = load_records(DATA / "mp20" / "train.csv.gz")
        reference = [record_to_structure(r) for r in train]
        prior = {}
        for name, m in ((args.baseline, baseline), (args.model, model)):
            t0 = time.perf_counter()
            records = [r for batch in m.sample(args.prior_n, num_levels=100, seed=args.seed, batch_size=64)
                       for r in batch]
            structures = [record_to_structure(r) if r["valid"] else None for r in records]
            metrics = sun_metrics(structures, reference)
            decoded = [r for r in records if r["valid"]]
            outside = [bool(surrogate.baseline.unseen([int(z) for z in r["atomic_numbers"]])) for r in decoded]
            prior[Path(name).stem] = {**metrics["fractions"], "n": metrics["n"],
                                      "outside_label_elements": float(np.mean(outside)) if outside else float("nan"),
                                      "distinct_elements": len({int(z) for r in decoded for z in r["atomic_numbers"]}),
                                      "seconds": round(time.perf_counter() - t0, 1)}
            print(Path(name).stem, json.dumps(prior[Path(name).stem]), flush=True)

    train_meta = model.meta.get("train", {})
    result = {
        "model": str(args.model), "baseline": str(args.baseline), "surrogate": str(args.surrogate),
        "classifier": args.classifier,
        "model_step": train_meta.get("step"), "label_sources": train_meta.get("node_condition_label_sources"),
        "split": args.split, "held_out": [m["id"] for m in materials], "surrogate_mae_yhat_y": surrogate_mae,
        "samples_per_material": args.samples, "levels": args.levels, "n_corrector": 1, "seed": args.seed,
        "node_condition": spec, "rows": rows, "prior": prior,
        "machine": f"{platform.machine()} {platform.processor() or ''} CPU, 1 torch thread "
                   f"(shared 2-core machine, load {os.getloadavg()[0]:.2f} at the end), torch {torch.__version__}",
        "wall_s": round(time.perf_counter() - t_all, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(report(result, len(materials)))
    print(report(result, len(materials)))


def report(r: dict, n_materials: int) -> str:
    src = r["label_sources"] or {}
    lines = [
        "# Site-DOS conditioning (DOSMatGen Tables 1-2 protocol), held-out DFT labels",
        "",
        (f"Model `{Path(r['model']).stem}` (step {r['model_step']}; trained on site DOS of {src.get('dft', 0)} DFT "
        f"and {sum(v for k, v in src.items() if k != 'dft')} predicted labels), unconditional prior "
        f"`{Path(r['baseline']).stem}`, surrogate `{Path(r['surrogate']).stem}`. {n_materials} held-out materials "
        f"(the {r['split']} part of site-labels-mp20's split by material: neither the surrogate nor the site-DOS model "
        f"trained on their labels; joint-mp20's prior did see their structures if they are in MP-20 train), "
        f"{r['samples_per_material']} generated crystals per material and setting, all sites conditioned on the "
        f"DFT site DOS; {r['levels']} sampling levels (respaced from T = 1000), 1 corrector step, seed {r['seed']}. "
        f"Machine: {r['machine']}; whole run {r['wall_s']:.0f} s."),
        "",
        (f"Surrogate error on the true structures: **MAE(y_hat, y) = {r['surrogate_mae_yhat_y']:.3f} states/eV** "
        "(site DOS, 512 points over E - E_F in [-10, 10] eV, spin-summed)."),
        "",
        ("MAE in states/eV over sites and energies (median: over crystals), averaged over the generated crystals the surrogate can read "
        "(n MAE); match rates over all generated crystals (n); a crystal with a mask token left (invalid) or with "
        "atoms closer than 0.5 A or a cell height under 0.5 A (structure invalid) is a miss without a MAE. Scale 0 = the fine-tuned network with every site "
        "'not given'; 1 = conditional; 2 = CFG (DOSMatGen's w = scale - 1 = 1)."
        + (f" Classifier guidance: the unconditional prior `{Path(r['baseline']).stem}` with its coordinate and "
           f"lattice scores shifted by -scale x the gradient of `{Path(r['classifier']).stem}`'s site-DOS loss "
           "(sum over sites of the mean squared log1p-DOS error) on the noisy crystal." if r.get("classifier") else "")),
        "",
        ("| t_start | model | guidance scale | MAE(y_gen_hat, y) | median | MAE(y_gen_hat, y_hat) | structure match | "
        "composition match | n | n MAE | invalid | structure invalid | s |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        scale = "-" if row["guidance_scale"] is None else f"{row['guidance_scale']:g}"
        lines.append(f"| {row['t_start']:g} | {row['model']} | {scale} | {row['mae_gen_y']:.3f} | "
                     f"{row['median_mae_gen_y']:.3f} | "
                     f"{row['mae_gen_yhat']:.3f} | {row['match_rate']:.3f} | {row['comp_match_rate']:.3f} | "
                     f"{row['n']} | {row['n_mae']} | {row['invalid']} | {row['structure_invalid']} | {row['seconds']:.0f} |")
    if r["prior"]:
        lines += ["", "## Does the prior survive? Unconditional samples, same seeds",
                  "",
                  ("Validity (SMACT + distances), uniqueness and novelty against the 11,249 MP-20 training crystals "
                  "(S.U.N. without the stability step), 100 sampling levels, atom counts from each model's "
                  "histogram. 'Outside the labels': share of decoded crystals holding an element the surrogate (and "
                  "so every site-DOS label, DFT or predicted) never saw."), "",
                  ("| model | n | composition valid | structure valid | valid | unique | novel | with an element "
                   "outside the labels | distinct elements | s |"),
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, f in r["prior"].items():
            lines.append(f"| {name} | {f['n']} | {f['composition_valid']:.3f} | {f['structure_valid']:.3f} | "
                         f"{f['valid']:.3f} | {f['unique']:.3f} | {f['novel']:.3f} | {f['outside_label_elements']:.3f} | "
                         f"{f['distinct_elements']} | {f['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
