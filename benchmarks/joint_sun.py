"""Evaluate a joint (types, coordinates, lattice) model: validity, uniqueness, novelty, stability, S.U.N.

Steps (each resumable; outputs under --out, default ``results/joint_sun/<model>``):

1. generate ``--n`` crystals with ``JointModel.generate`` (streamed extxyz; ``--levels`` sampling levels);
2. validity (SMACT smact14 + distances), uniqueness, novelty against the MP-20 training crystals;
3. stability of (a seeded subset of ``--max-stability``) unique-novel samples: CHGNet relaxation (FIRE,
   fmax 0.1 eV/A, at most ``--relax-steps`` steps) and energy above the hull of the MP elemental references
   plus CHGNet single points of the MP-20 train and validation crystals (20,296) in those chemical systems
   (:class:`diffase.analysis.stability.MLIPHull`); S.U.N. counts E_hull <= 0.1 eV/atom;
4. a JSON and a markdown table (``benchmarks/results/joint_sun-<model>.md``).

Example: ``python benchmarks/joint_sun.py --model models/joint-mp20.pt --n 1000 --levels 100``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch
from ase.io import read

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="joint-mp20")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--levels", type=int, default=100, help="sampling levels (respaced from T=1000)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-stability", type=int, default=100, help="unique-novel samples relaxed with CHGNet")
    p.add_argument("--relax-steps", type=int, default=200)
    p.add_argument("--out", default=None)
    p.add_argument("--skip-stability", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)

    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    from diffase.analysis.sun import sun_metrics
    from diffase.data.dataset import load_records
    from diffase.data.structures import record_to_structure
    from diffase.generators import load_model

    name = Path(args.model).stem
    out = Path(args.out or ROOT / "results" / "joint_sun" / name)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device="cpu")
    gen_path = out / f"samples-n{args.n}-levels{args.levels}-seed{args.seed}.extxyz"
    state_file = gen_path.with_name(gen_path.name + ".progress.json")
    batches_before = json.loads(state_file.read_text())["batches"] if state_file.exists() else 0
    t0 = time.perf_counter()
    res = model.generate(args.n, gen_path, batch_size=args.batch_size, seed=args.seed, num_levels=args.levels)
    t_gen = time.perf_counter() - t0
    # a resumed run timed only part of the generation: report no time rather than a partial one
    gen_time = f"generation {t_gen:.0f} s" if batches_before == 0 else (
        f"generation not timed here ({batches_before} batches were already written by an earlier call)")
    frames = read(str(gen_path), index=":") if gen_path.exists() else []
    structures: list[Structure | None] = [AseAtomsAdaptor.get_structure(a) for a in frames]
    structures += [None] * res["invalid"]  # samples that kept a mask token: invalid, never an element
    print(f"generated {len(frames)} + {res['invalid']} invalid in {t_gen:.0f} s (this call)")

    train, _ = load_records(DATA / "mp20" / "train.csv.gz")
    reference = [record_to_structure(r) for r in train]

    hull = None if args.skip_stability else mp20_hull(reference, args.relax_steps)

    t0 = time.perf_counter()
    metrics = sun_metrics(structures, reference, e_above_hull=hull, max_stability=args.max_stability,
                          seed=args.seed)
    t_eval = time.perf_counter() - t0
    f = metrics["fractions"]
    summary = {
        "model": str(args.model), "train_step": model.meta.get("train", {}).get("step"),
        "n": metrics["n"], "levels": args.levels, "n_corrector": 1, "seed": args.seed,
        "fractions": f, "n_stability_evaluated": metrics["n_stability"],
        "e_above_hull_evaluated": [x for x in metrics["e_above_hull"].tolist() if not math.isnan(x)],
        "generation_s": round(t_gen, 1) if batches_before == 0 else None, "evaluation_s": round(t_eval, 1),
        "machine": f"{platform.machine()} CPU, 1 torch thread (shared 2-core machine)",
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    intro = (f"{metrics['n']} samples, {args.levels} sampling levels (respaced from T = 1000), 1 corrector "
             f"step, seed {args.seed}; novelty against the 11,249 MP-20 training crystals; every fraction over "
             f"all {metrics['n']} samples; {gen_time}, evaluation {t_eval:.0f} s on one CPU thread.")
    lines = [f"# Joint model evaluation: {name}", "", intro, "", "| metric | value |", "| --- | --- |"]
    for key in ("composition_valid", "structure_valid", "valid", "unique", "novel", "unique_novel",
                "stable_among_unique_novel", "sun", "vsun"):
        if key in f:
            lines.append(f"| {key} | {f[key]:.3f} |")
    if "sun" in f:
        note = (f"Stability: CHGNet relaxation (FIRE, fmax 0.1 eV/A, <= {args.relax_steps} steps) of "
                f"{metrics['n_stability']} unique-novel, structurally valid samples (seeded random subset), "
                "E_hull against MP "
                "elemental references + CHGNet single-point energies of the MP-20 train + validation crystals "
                "(20,296) in the same chemical systems; this hull misses phases outside MP-20, so E_hull is "
                "optimistic; stable = E_hull <= 0.1 eV/atom; S.U.N. = (unique, novel, structurally valid "
                "fraction) x stable fraction of the subset.")
        lines += ["", note]
    (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "results" / f"joint_sun-{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def mp20_hull(train: list, relax_steps: int, energies: dict | None = None):
    """The E_hull function of this evaluation: CHGNet relaxation (FIRE, fmax 0.1 eV/A, at most ``relax_steps``
    steps) of each crystal, against the MP elemental references plus CHGNet single points of the MP-20 train
    (``train``, pymatgen Structures) and validation crystals in the chemical systems the batch spans.
    ``energies``: a dict that keeps the references' single-point entries between calls (index -> entry)."""
    from diffase.analysis.stability import (
        MLIPHull,
        load_elemental_references,
        mlip_entries,
    )
    from diffase.data.dataset import load_records
    from diffase.data.structures import record_to_structure

    ref_file = DATA / "pmg" / "2023-02-07-mp-elemental-reference-entries.json.gz"
    val, _ = load_records(DATA / "mp20" / "val.csv.gz")
    hull_crystals = list(train) + [record_to_structure(r) for r in val]  # 20,296 of MP-20's 27,136 + 9,047
    hull_systems = [frozenset(s.composition.chemical_system.split("-")) for s in hull_crystals]
    energies = {} if energies is None else energies

    def hull(batch):
        """E_hull of the evaluated subset (eV/atom; NaN where the relaxation failed); references only for the
        chemical systems it spans."""
        systems = {frozenset(s.composition.chemical_system.split("-")) for s in batch}
        subs = {frozenset(x) for sys in systems for x in _subsets(sys)}
        known = [i for i, sys in enumerate(hull_systems) if sys in subs]
        todo = [i for i in known if i not in energies]
        print(f"CHGNet single points of {len(todo)} MP-20 crystals ({len(known) - len(todo)} known) in "
              f"{len(systems)} chemical systems")
        energies.update(zip(todo, mlip_entries([hull_crystals[i] for i in todo], "chgnet", relax=False,
                                               device="cpu")))
        refs = load_elemental_references(ref_file, sorted(set().union(*systems)))
        refs += [energies[i] for i in known]
        mlip_hull = MLIPHull(refs, "chgnet", relax=True, device="cpu", steps=relax_steps, fmax=0.1)
        values = []
        for i, s in enumerate(batch):  # one failure (e.g. overlapping atoms) must not stop the others
            try:
                values.append(mlip_hull([s])[0])
            except Exception as err:  # noqa: BLE001 - recorded as "not stable"
                print(f"stability failed for {s.composition.reduced_formula}: {err}")
                values.append(float("nan"))
            print(f"stability {i + 1}/{len(batch)}: {s.composition.reduced_formula} {values[-1]:.3f} eV/atom",
                  flush=True)
        return values

    return hull


def _subsets(system):
    from itertools import combinations

    items = sorted(system)
    return [c for k in range(1, len(items) + 1) for c in combinations(items, k)]


if __name__ == "__main__":
    main()
