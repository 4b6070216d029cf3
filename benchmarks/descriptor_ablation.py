"""Issue 13 ablation: does generating a physical descriptor with the structure raise UN / SUN / VSUN?

Four joint models trained on the same crystals with the same budget (their recipes differ only in the generated
descriptor field): the structure-only control, Bader charges, atomic-DOS latents and a random per-site dummy.
Each is sampled unconditionally and conditioned on a band gap (classifier-free guidance), and every sample is
evaluated as ``benchmarks/joint_sun.py`` does: SMACT + structural validity, uniqueness, novelty against the
11,249 MP-20 training crystals, and stability of EVERY unique, novel, structurally valid sample (CHGNet
relaxation, E_hull against MP elemental references + CHGNet single points of the MP-20 train + validation
crystals in the same chemical systems; stable = E_hull <= 0.1 eV/atom). No subset: SUN and VSUN are counts, so
each descriptor model is compared to the control with a two-proportion z-test
(:func:`diffase.analysis.sun.two_proportion_z_test`).

One call evaluates one (model, setting) row, resumable (samples, then each sample's E_hull, are kept under
``--out``); ``--table`` assembles ``benchmarks/results/descriptor_ablation.md`` / ``.json`` from the rows there.
``--gpaw-pool N``: also write ``gpaw_pool.extxyz``, N unconditional samples of 2-6 atoms with their descriptors,
for the GPAW recompute (``benchmarks/joint_descriptor_gpaw.py``), first, and their E_hull
(``gpaw_pool.stability.json``) after the row.

Example (one row): ``python benchmarks/descriptor_ablation.py --model joint-bader-mp20 --setting uncond``
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from site_label_predictor import (
    machine,  # benchmarks/ is on sys.path when this file runs as a script
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "descriptor_ablation"
#: The models of the ablation in table order: (label, model name or path); the first is the control.
MODELS = (("structure only", "runs/joint-structure-ablation/ema-last.pt"), ("Bader charge", "joint-bader-mp20"),
          ("atomic DOS latent", "joint-ados-mp20"), ("dummy scalar", "runs/joint-dummy-ablation/ema-last.pt"))
METRICS = ("valid", "unique_novel", "sun", "vsun")
#: Angstrom^3 per atom below which a sample counts as unstable without a relaxation (diamond has 5.7, Be 8.1).
MIN_VOLUME_PER_ATOM = 3.0


def settings(args) -> dict:
    """Sampling settings of a row: ``uncond`` or ``band_gap`` (conditioned on ``--band-gap`` eV)."""
    base = {"n": args.n, "num_levels": args.levels, "seed": args.seed, "batch_size": args.batch_size}
    if args.setting == "band_gap":
        return {**base, "conditions": {"band_gap": args.band_gap}, "guidance_scale": args.guidance}
    return base


def row_dir(model: str, setting: str) -> Path:
    return OUT / Path(model).parent.name if model.endswith(".pt") else OUT / model


def evaluate_row(args) -> dict:
    from ase.io import read
    from joint_sun import (
        mp20_hull,  # benchmarks/ is on sys.path when this file runs as a script
    )
    from pymatgen.io.ase import AseAtomsAdaptor

    from diffase.analysis.sun import sun_metrics
    from diffase.data.dataset import load_records
    from diffase.data.structures import record_to_structure
    from diffase.generators import load_model

    out = row_dir(args.model, args.setting) / args.setting
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device="cpu")
    if args.gpaw_pool:  # first: the GPAW recompute can start while this row is evaluated
        write_gpaw_pool(model, args)
    kw = settings(args)
    samples = out / "samples.extxyz"
    t0 = time.perf_counter()
    res = model.generate(kw.pop("n"), samples, batch_size=kw.pop("batch_size"), seed=kw.pop("seed"),
                         progress=False, **kw)
    t_gen = time.perf_counter() - t0
    frames = read(str(samples), index=":") if samples.exists() else []
    structures = [AseAtomsAdaptor.get_structure(a) for a in frames] + [None] * res["invalid"]
    index = {id(s): int(a.info["sample"]) for s, a in zip(structures, frames)}

    train, _ = load_records(ROOT.parent / "shared" / "data" / "mp20" / "train.csv.gz")
    reference = [record_to_structure(r) for r in train]
    hull = mp20_hull(reference, args.relax_steps)
    stability = cached_e_above_hull(hull, out / "stability.json")

    t0 = time.perf_counter()
    metrics = sun_metrics(structures, reference, e_above_hull=lambda batch: stability(
        batch, [index[id(s)] for s in batch]), seed=args.seed)
    t_eval = time.perf_counter() - t0
    masks = metrics["masks"]
    row = {"model": args.model, "setting": args.setting, "settings": settings(args), "n": metrics["n"],
           "counts": {k: int(np.asarray(masks[k]).sum()) for k in METRICS},
           "n_stability_evaluated": metrics["n_stability"], "relax_steps": args.relax_steps,
           "train_step": model.meta.get("train", {}).get("step"),
           "generation_s": round(t_gen, 1), "evaluation_s": round(t_eval, 1), "machine": machine()}
    (out / "row.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))
    if args.gpaw_pool:
        pool_stability(row_dir(args.model, "uncond") / "gpaw_pool.extxyz", hull)
    return row


def cached_e_above_hull(hull, path: Path):
    """``stability(structures, samples, skip=None)``: E_hull (eV/atom, NaN where not computed) of each structure
    through ``hull``, kept in the JSON ``path`` by ``sample`` index as soon as it is known (null for NaN) and read
    from there on a re-run; a structure marked in ``skip``, or a cell denser than MIN_VOLUME_PER_ATOM, gets NaN
    without a calculation (such a cell's MLIP graph takes minutes and gigabytes)."""
    done = json.loads(path.read_text()) if path.exists() else {}

    def stability(structures, samples, skip=None):
        for s, sample, skipped in zip(structures, samples, skip if skip is not None else [False] * len(structures)):
            key = str(int(sample))
            if key not in done:
                value = hull([s])[0] if not skipped and s.volume / len(s) >= MIN_VOLUME_PER_ATOM else float("nan")
                done[key] = None if math.isnan(value) else value
                path.write_text(json.dumps(done))
        return [np.nan if done[str(int(i))] is None or s.volume / len(s) < MIN_VOLUME_PER_ATOM
                else done[str(int(i))] for s, i in zip(structures, samples)]

    return stability


def pool_stability(pool: Path, hull) -> None:
    """E_hull of each GPAW-pool sample by its ``sample`` index, in ``gpaw_pool.stability.json``
    (:func:`cached_e_above_hull`; null for a structurally invalid sample, not evaluated)."""
    from ase.io import read
    from pymatgen.io.ase import AseAtomsAdaptor

    from diffase.analysis.validity import validity

    frames = read(str(pool), index=":")
    structures = [AseAtomsAdaptor.get_structure(a) for a in frames]
    valid = validity(structures)["structure"]
    cached_e_above_hull(hull, pool.with_name("gpaw_pool.stability.json"))(
        structures, [a.info["sample"] for a in frames], skip=~valid)


def write_gpaw_pool(model, args) -> None:
    """``gpaw_pool.extxyz``: ``--gpaw-pool`` unconditional samples with 2-6 atoms (cheap to recompute with GPAW),
    their descriptors as per-atom arrays; seed ``--seed`` + 1 so they are not the table's samples."""
    rng = np.random.default_rng(args.seed + 1)
    counts = rng.integers(2, 7, size=args.gpaw_pool).tolist()
    path = row_dir(args.model, "uncond") / "gpaw_pool.extxyz"
    model.generate(args.gpaw_pool, path, num_atoms=counts, batch_size=args.batch_size, seed=args.seed + 1,
                   num_levels=args.levels, progress=False)
    print(f"GPAW pool: {path}")


def write_table() -> None:
    from diffase.analysis.sun import two_proportion_z_test

    rows = {(r["model"], r["setting"]): r for r in (json.loads(p.read_text()) for p in OUT.glob("*/*/row.json"))}
    if not rows:
        raise SystemExit(f"no rows under {OUT}: evaluate some first (--model ... --setting ...)")
    title = "# Descriptor ablation (issue 13): UN / SUN / VSUN of four joint models with the same crystals and budget"
    lines = [title, ""]
    for setting in ("uncond", "band_gap"):
        present = [(label, name) for label, name in MODELS if (name, setting) in rows]
        if not present:
            continue
        first = rows[(present[0][1], setting)]
        about = "unconditional" if setting == "uncond" else (
            f"conditioned on band gap = {first['settings']['conditions']['band_gap']} eV, guidance scale "
            f"{first['settings']['guidance_scale']}")
        intro = (f"{first['n']} samples per model, {first['settings']['num_levels']} sampling levels, seed "
                 f"{first['settings']['seed']}; count / n (fraction), and the two-proportion z-test against the "
                 "structure-only control (z, two-sided p; 'same' where both are 0 or 1).")
        lines += [f"## {about}", "", intro, "",
                  "| model | train step | " + " | ".join(METRICS) + " | stability evaluated |",
                  "| --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- |"]
        control = rows.get((MODELS[0][1], setting))
        for label, name in present:
            r = rows[(name, setting)]
            cells = []
            for m in METRICS:
                k, n = r["counts"][m], r["n"]
                cell = f"{k}/{n} ({k / n:.3f})"
                if control is not None and name != MODELS[0][1]:
                    z, p = two_proportion_z_test(k, n, control["counts"][m], control["n"])
                    cell += " (same)" if math.isnan(z) else f" z {z:+.2f}, p {p:.2f}"
                cells.append(cell)
            lines.append(f"| {label} | {r['train_step']} | " + " | ".join(cells) + f" | {r['n_stability_evaluated']} |")
        lines.append("")
    some = next(iter(rows.values()))
    lines += [f"Stability: CHGNet relaxation (FIRE, fmax 0.1 eV/A, <= {some['relax_steps']} steps) of every unique, "
              f"novel, structurally valid sample (a cell below {MIN_VOLUME_PER_ATOM} A^3/atom counts as unstable "
              "without one); E_hull against MP elemental references + CHGNet single points of "
              "the MP-20 train + validation crystals in the same chemical systems (optimistic: phases outside "
              "MP-20 are missing); stable = E_hull <= 0.1 eV/atom. valid = SMACT and structurally valid; "
              "unique_novel = unique among the samples and matching no MP-20 training crystal; sun = stable and "
              "unique_novel; vsun = sun and valid. Machine: " + some["machine"] + "; no GPU; 2 cores shared "
              "with other jobs.", ""]
    (ROOT / "benchmarks" / "results" / "descriptor_ablation.md").write_text("\n".join(lines))
    (ROOT / "benchmarks" / "results" / "descriptor_ablation.json").write_text(
        json.dumps(sorted(rows.values(), key=lambda r: (r["setting"], r["model"])), indent=1))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="joint model (name or checkpoint path)")
    p.add_argument("--setting", choices=("uncond", "band_gap"), default="uncond")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--levels", type=int, default=100, help="sampling levels (respaced from T = 1000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--band-gap", type=float, default=2.0, help="target of the conditioned setting, eV")
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale")
    p.add_argument("--relax-steps", type=int, default=100)
    p.add_argument("--gpaw-pool", type=int, default=0, help="also write this many small samples for GPAW")
    p.add_argument("--table", action="store_true", help="only assemble the table from the rows written")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.table:
        write_table()
        return
    if not args.model:
        p.error("--model is required (or --table)")
    print(f"machine: {machine()}; settings: {settings(args)}")
    evaluate_row(args)


if __name__ == "__main__":
    main()
