"""Ablation of ChargeDIFF's density field (issue 12): AXL vs AXLC trained on the same crystals with the same budget.

Both models are sampled with the same seeds (``--n`` each, unconditional unless ``--conditions``) and every sample
is evaluated as ``benchmarks/descriptor_ablation.py`` does, except that stability covers every structurally valid
sample (not only the unique-novel ones), so the stable fraction is over all samples:

* validity: SMACT (smact14, Pauling test) and structural (distances >= 0.5 A, volume), :mod:`diffase.analysis.validity`;
* uniqueness among the samples and novelty against the 11,249 MP-20 training crystals (:func:`sun_metrics`);
* stability: CHGNet relaxation (FIRE, fmax 0.1 eV/A, <= ``--relax-steps``) and E_hull against MP elemental
  references + CHGNet single points of the MP-20 train + validation crystals in the same chemical systems
  (``joint_sun.mp20_hull``); stable = E_hull <= 0.1 eV/atom; a cell below 3 A^3/atom counts unstable without a
  relaxation. Each sample's E_hull is cached (``descriptor_ablation.cached_e_above_hull``) as soon as it is known,
  so an interrupted run resumes where it stopped.

Counts beside fractions, AXLC against AXL with a two-proportion z-test (:func:`two_proportion_z_test`). One call
evaluates one model into ``<out>/<label>/`` (``samples.extxyz``, ``stability.json``, ``row.json``) and then writes the
table of the rows present, ``benchmarks/results/chargediff_ablation.md`` / ``.json``; ``--table`` only writes it.

    python benchmarks/chargediff_ablation.py --model runs/chargediff-axl-ablation/best.pt --label AXL
    python benchmarks/chargediff_ablation.py --model chargediff-mp20 --label AXLC
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from descriptor_ablation import MIN_VOLUME_PER_ATOM, cached_e_above_hull
from site_label_predictor import machine

ROOT = Path(__file__).resolve().parents[1]
#: Row labels in table order; the first is the control of the z-tests.
LABELS = ("AXL", "AXLC")
METRICS = ("composition_valid", "structure_valid", "valid", "unique", "novel", "unique_novel", "stable", "sun")
STABLE_E_HULL = 0.1  #: eV/atom


def evaluate(model, out: Path, n: int, seed: int, levels: int, batch_size: int, conditions: dict | None,
             guidance: float | None, reference: list, hull) -> dict:
    """Generate ``n`` samples into ``out/samples.extxyz`` (resumable) and count each of :data:`METRICS`;
    ``hull(structures) -> E_hull list`` (eV/atom) is called once per structurally valid sample not yet in
    ``out/stability.json``."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    from diffase.analysis.sun import sun_metrics
    from diffase.analysis.validity import validity

    out.mkdir(parents=True, exist_ok=True)
    samples = out / "samples.extxyz"
    kw = {"conditions": conditions, "guidance_scale": guidance} if conditions else {}
    resumed = samples.with_name(samples.name + ".progress.json").exists()  # then only part of it is timed here
    t0 = time.perf_counter()
    res = model.generate(n, samples, batch_size=batch_size, seed=seed, num_levels=levels, progress=False, **kw)
    t_gen = time.perf_counter() - t0
    frames = read(str(samples), index=":") if samples.exists() else []
    by_sample = {int(a.info["sample"]): AseAtomsAdaptor.get_structure(a) for a in frames}
    structures = [by_sample.get(i) for i in range(n)]  # None: a sample that kept a mask token
    if len(by_sample) + res["invalid"] != n:
        raise ValueError(f"{samples}: {len(by_sample)} frames + {res['invalid']} invalid != n = {n}")
    valid = validity(structures)
    stability = cached_e_above_hull(hull, out / "stability.json")
    index = {id(s): i for i, s in enumerate(structures) if s is not None}
    present = [i for i, s in enumerate(structures) if s is not None]
    t0 = time.perf_counter()
    e_hull = np.full(n, np.nan)
    e_hull[present] = stability([structures[i] for i in present], present, skip=~valid["structure"][present])
    metrics = sun_metrics(structures, reference, seed=seed,
                          e_above_hull=lambda batch: stability(batch, [index[id(s)] for s in batch]))
    t_eval = time.perf_counter() - t0
    masks = metrics["masks"]
    with np.errstate(invalid="ignore"):
        stable = e_hull <= STABLE_E_HULL
    counts = {**{k: int(np.asarray(masks[k]).sum()) for k in METRICS if k in masks}, "stable": int(stable.sum())}
    return {"n": n, "counts": counts, "n_relaxed": int(np.isfinite(e_hull).sum()),
            "n_structure_valid": int(valid["structure"].sum()), "generation_s": round(t_gen, 1),
            "seconds_per_sample": None if resumed else round(t_gen / n, 3),
            "evaluation_s": round(t_eval, 1),
            "e_above_hull": [None if math.isnan(x) else float(x) for x in e_hull]}


def table_lines(rows: dict[str, dict]) -> list[str]:
    """The markdown report of the rows by label (counts / n (%), z-test of each label against the first)."""
    from diffase.analysis.sun import two_proportion_z_test

    present = [label for label in LABELS if label in rows] + sorted(set(rows) - set(LABELS))
    if not present:
        raise ValueError("no rows to tabulate")
    control = rows[present[0]]
    s = control["settings"]
    lines = ["# ChargeDIFF ablation (issue 12): AXL vs AXLC on the same crystals and budget", "",
             f"{s['n']} samples per model, seed {s['seed']} (the same for both), {s['levels']} sampling levels, "
             f"conditions {s['conditions'] or 'none (unconditional)'}"
             + (f", guidance scale {s['guidance']}" if s["conditions"] else "")
             + f". Count / n (%), and the two-proportion z-test against {present[0]} (z, two-sided p).", "",
             "| model | checkpoint | train step | " + " | ".join(METRICS) + " | relaxed |",
             "| --- | --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- |"]
    for label in present:
        r = rows[label]
        cells = []
        for m in METRICS:
            k, n = r["counts"][m], r["n"]
            cell = f"{k}/{n} ({100 * k / n:.1f} %)"
            if label != present[0]:
                z, p = two_proportion_z_test(k, n, control["counts"][m], control["n"])
                cell += " same" if math.isnan(z) else f", z {z:+.2f}, p {p:.2f}"
            cells.append(cell)
        lines.append(f"| {label} | `{r['model']}` | {r['train_step']} | " + " | ".join(cells) + f" | {r['n_relaxed']} |")
    lines += ["", "Seconds per sample (generation alone, batch " + str(s["batch_size"]) + "): "
              + ", ".join(f"{label} {rows[label]['seconds_per_sample']}" for label in present) + ".", "",
              "composition_valid = SMACT (smact14, Pauling test, alloys accepted); structure_valid = all distances >= "
              "0.5 A and volume >= 0.1 A^3; valid = both; unique among the samples, novel = matching no MP-20 "
              f"training crystal (StructureMatcher); stable = E_hull <= {STABLE_E_HULL} eV/atom after a CHGNet "
              f"relaxation (FIRE, fmax 0.1 eV/A, <= {s['relax_steps']} steps) of every structurally valid sample (a cell "
              f"below {MIN_VOLUME_PER_ATOM} A^3/atom counts unstable without one), against MP elemental references + "
              "CHGNet single points of the MP-20 train + validation crystals in the same chemical systems (optimistic: "
              "phases outside MP-20 are missing); sun = stable, unique and novel. Machine: " + control["machine"] + ".", ""]
    return lines


def write_table(out: Path, results: Path) -> list[str]:
    rows = {r["label"]: r for r in (json.loads(p.read_text()) for p in sorted(out.glob("*/row.json")))}
    lines = table_lines(rows)
    results.mkdir(parents=True, exist_ok=True)
    (results / "chargediff_ablation.md").write_text("\n".join(lines))
    (results / "chargediff_ablation.json").write_text(json.dumps([rows[k] for k in sorted(rows)], indent=1) + "\n")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="joint model (name or checkpoint path)")
    p.add_argument("--label", help=f"row label ({' / '.join(LABELS)}; the first is the control)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "results" / "chargediff_ablation"), help="folder of the rows (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=int, default=100, help="sampling levels (respaced from T = 1000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--conditions", default=None, help='JSON conditions for both models, e.g. \'{"band_gap": 2.0}\'')
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (with --conditions)")
    p.add_argument("--relax-steps", type=int, default=100)
    p.add_argument("--table", action="store_true", help="only write the table of the rows under --out")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out, results = Path(args.out), Path(args.results)
    if args.table:
        print("\n".join(write_table(out, results)))
        return 0
    if not (args.model and args.label):
        p.error("--model and --label are required (or --table)")
    from joint_sun import mp20_hull

    from diffase.data.dataset import load_records
    from diffase.data.structures import record_to_structure
    from diffase.generators import load_model

    conditions = json.loads(args.conditions) if args.conditions else None
    settings = {"n": args.n, "seed": args.seed, "levels": args.levels, "batch_size": args.batch_size,
                "conditions": conditions, "guidance": args.guidance if conditions else None,
                "relax_steps": args.relax_steps}
    info = machine()
    print(f"machine: {info}\nmodel: {args.model} ({args.label})\nsettings: {settings}")
    model = load_model(args.model, device="cpu")
    train, _ = load_records(ROOT.parent / "shared" / "data" / "mp20" / "train.csv.gz")
    reference = [record_to_structure(r) for r in train]
    row_dir = out / args.label
    saved = row_dir / "settings.json"
    if saved.exists() and json.loads(saved.read_text()) != {**settings, "model": args.model}:
        raise SystemExit(f"{row_dir} was evaluated with other settings ({saved.read_text()}); use another --out")
    row_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({**settings, "model": args.model}))
    row = evaluate(model, row_dir, args.n, args.seed, args.levels, args.batch_size, conditions, settings["guidance"],
                   reference, mp20_hull(reference, args.relax_steps))
    row.update(label=args.label, model=args.model, settings=settings, machine=info,
               train_step=model.meta.get("train", {}).get("step"))
    (row_dir / "row.json").write_text(json.dumps(row, indent=1))
    print("\n".join(write_table(out, results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
