"""Reconstruction benchmark of guest inpainting against the classical baseline (issue: inpainting).

Cases: structures from a CIF table (MP-20 val by default) containing a guest species; the species is removed
and the same number of atoms re-inserted. Methods, on the same hosts:

* ``diffusion``: k inpainting samples per host (paper sampler), top-1 = lowest CHGNet single-point energy;
  ``any-of-k`` = any sample matches.
* ``diffusion+refine``: the same samples after a guest-only CHGNet relaxation (host + cell fixed), top-1 by
  energy (the MLIP-assisted refinement, beyond the paper).
* ``voronoi``: Voronoi sites (all symmetry copies) + greedy insertion by CHGNet energy + guest-only relaxation.
* ``hybrid``: the refined diffusion samples and the Voronoi candidate pooled, top-1 by energy.

Metrics per group and method: reconstruction rate (StructureMatcher stol=0.3, ltol=0.2, angle_tol=5,
primitive_cell=False, generated vs original), guest RMSE of matched top-1 structures (Angstrom; the matcher's
RMS scaled by sqrt(n_sites / n_guests), i.e. attributing all displacement to the guests since hosts are fixed),
CHGNet Fmax of the top-1 structure (eV/Angstrom) and Delta E of its full relaxation (FIRE + FrechetCellFilter,
fmax 0.1; eV/atom), median and 75% quantile, and wall seconds per host.

Every stage is cached under ``--out`` (JSON lines, CIFs), so the script resumes where it stopped.

    python benchmarks/inpainting_reconstruction.py --per-species 20 --samples 4
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Structure  # noqa: E402

from diffase.data.io import read_table  # noqa: E402
from diffase.generators.guests import check_capacity  # noqa: E402
from diffase.generators.inpainting import GuestCandidate, InpaintingSettings, inpaint_guests  # noqa: E402
from diffase.generators.voronoi import voronoi_insertion  # noqa: E402
from diffase.runtime import configure_threads  # noqa: E402

MATCHER = StructureMatcher(stol=0.3, ltol=0.2, angle_tol=5, primitive_cell=False)
SPECIES = ("Li", "Na", "Mg", "Ca")
METHODS = ("diffusion", "diffusion+refine", "voronoi", "hybrid")


# --- cases --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _rows(table: Path) -> list:
    return read_table(table)


def select_cases(table: Path, species: str, n: int, seed: int, *, max_sites: int, supercell=None,
                 extra_species: str | None = None) -> list[dict]:
    """Up to ``n`` (original, host, guests) cases whose host keeps other elements and has room for the guests."""
    rows = list(_rows(table))
    rng = random.Random(seed)
    rng.shuffle(rows)
    cases = []
    for name, s in rows:
        removed = [species] + ([extra_species] if extra_species else [])
        if any(sp not in s.composition.chemical_system.split("-") for sp in removed) or len(s) > max_sites:
            continue
        if supercell:
            s = s.copy()
            s.make_supercell(supercell)
        host = s.copy()
        host.remove_species(removed)
        if len(host) == 0 or len(host.composition) < 1:
            continue
        guests = {sp: int(s.composition[sp]) for sp in removed}
        try:
            check_capacity(host, guests)
        except ValueError:
            continue
        cases.append({"id": f"{name}-{'x'.join(map(str, supercell or []))}{'-'.join(removed)}", "original": s,
                      "host": host, "guests": guests})
        if len(cases) == n:
            break
    return cases


# --- metrics --------------------------------------------------------------------------------------------
def match(original: Structure, generated: Structure, n_guests: int) -> tuple[bool, float | None]:
    """(matched, guest RMSE in Angstrom or None)."""
    rms = MATCHER.get_rms_dist(original, generated)
    if rms is None:
        return False, None
    scale = (original.volume / len(original)) ** (1 / 3)
    return True, float(rms[0] * scale * np.sqrt(len(original) / n_guests))


def _mlip():
    from diffase.calculators import load_mlip

    return load_mlip("chgnet", "cpu")


def energies(structures) -> list[tuple[float, float]]:
    """(energy per atom eV/atom, Fmax eV/Angstrom) of each structure (CHGNet single points, batched)."""
    from diffase.simulate.single_point import single_points

    return [(p.energy_per_atom, p.fmax) for p in single_points(structures, _mlip())]


def refine_guests(c: GuestCandidate) -> Structure:
    from diffase.simulate.relax import relax

    host_atoms = [i for i in range(len(c.structure)) if i not in set(c.guest_indices)]
    return relax(c.structure, _mlip(), fixed=host_atoms, relax_cell=False, fmax=0.1, steps=300,
                 min_distance=None).structure


def full_relax_delta(s: Structure) -> float:
    from diffase.simulate.relax import relax

    r = relax(s, _mlip(), fmax=0.1, steps=500, relax_cell=True, min_distance=None)
    return r.final_energy_per_atom - r.initial_energy_per_atom


# --- stages ------------------------------------------------------------------------------------------------
class Store:
    """JSON-lines cache of per-case results of one stage."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = {}
        if path.exists():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                self.rows[row["id"]] = row

    def add(self, row: dict) -> None:
        self.rows[row["id"]] = row
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")


def run_diffusion(cases, out: Path, args, model) -> None:
    """Sample k guests arrangements per host, save CIFs; skip hosts whose samples exist."""
    todo = [c for c in cases if not all((out / "samples" / f"{c['id']}-{k}.cif").exists() for k in range(args.samples))]
    if not todo:
        return
    settings = InpaintingSettings(args.levels, args.resample, args.jump, args.corrector, args.snr, args.batch_size)
    timing = Store(out / "diffusion_time.jsonl")
    seconds = {}  # wall time of each batch shared evenly among its samples
    t0 = time.perf_counter()
    for batch in inpaint_guests([c["host"] for c in todo], [c["guests"] for c in todo], n_samples=args.samples,
                                model=model, settings=settings, seed=args.seed, device="cpu", progress=True):
        share = (time.perf_counter() - t0) / len(batch)
        for cand in batch:
            case = todo[cand.host_index]
            cand.structure.to(filename=str(out / "samples" / f"{case['id']}-{cand.sample_index}.cif"))
            seconds[case["id"]] = seconds.get(case["id"], 0.0) + share
        for case_id in {todo[c.host_index]["id"] for c in batch}:
            timing.add({"id": case_id, "seconds": seconds[case_id]})
        t0 = time.perf_counter()


def evaluate_case(case, out: Path, args, cache: Store) -> dict:
    if case["id"] in cache.rows:
        return cache.rows[case["id"]]
    original, n_guests = case["original"], sum(case["guests"].values())
    row = {"id": case["id"], "n_sites": len(original), "n_guests": n_guests}
    # diffusion samples: raw and guest-refined
    host_len = len(case["host"])
    samples = [Structure.from_file(out / "samples" / f"{case['id']}-{k}.cif") for k in range(args.samples)]
    cands = [GuestCandidate(s, 0, k, "diffusion", list(range(host_len, len(s)))) for k, s in enumerate(samples)]
    raw = energies(samples)
    t = time.perf_counter()
    refined = [refine_guests(c) for c in cands]
    refine_seconds = (time.perf_counter() - t) / len(cands)
    ref_e = energies(refined)
    # baseline
    t = time.perf_counter()
    try:
        vor = voronoi_insertion(case["host"], case["guests"], lambda ss: [e for e, _ in energies(ss)])[0]
        vor_s = refine_guests(vor)
        vor_e = energies([vor_s])[0]
    except ValueError as err:
        vor_s, vor_e, row["voronoi_error"] = None, (float("inf"), float("nan")), str(err)
    row["voronoi_seconds"] = time.perf_counter() - t
    row["refine_seconds_per_sample"] = refine_seconds

    def summarise(structures, scores, key):
        best = int(np.argmin([e for e, _ in scores]))
        ok, rmse = match(original, structures[best], n_guests)
        row[key] = {"match": ok, "rmse": rmse, "fmax": scores[best][1], "energy": scores[best][0],
                    "delta_e": full_relax_delta(structures[best])}
        return best

    summarise(samples, raw, "diffusion")
    row["diffusion"]["any_match"] = any(match(original, s, n_guests)[0] for s in samples)
    summarise(refined, ref_e, "diffusion+refine")
    row["diffusion+refine"]["any_match"] = any(match(original, s, n_guests)[0] for s in refined)
    if vor_s is not None:
        summarise([vor_s], [vor_e], "voronoi")
        scores = ref_e + [vor_e]
        best = int(np.argmin([e for e, _ in scores]))
        row["hybrid"] = dict(row["voronoi"] if best == len(refined) else row["diffusion+refine"])
        row["hybrid"]["from"] = "voronoi" if best == len(refined) else "diffusion"
    else:
        row["voronoi"] = {"match": False, "rmse": None, "fmax": None, "energy": None, "delta_e": None}
        row["hybrid"] = dict(row["diffusion+refine"], **{"from": "diffusion"})
    cache.add(row)
    return row


# --- report ------------------------------------------------------------------------------------------------
def q(values, p):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.quantile(values, p)) if values else float("nan")


def any_of_pool(row: dict, method: str) -> bool:
    """Whether any candidate ``method`` ranked matched (hybrid: the refined samples and the Voronoi one)."""
    if method == "hybrid":
        return row["diffusion+refine"]["any_match"] or row["voronoi"]["match"]
    return row[method]["any_match"]


def table(groups: dict[str, list[dict]], diffusion_seconds: dict[str, float], args) -> str:
    lines = ["| cases | method | n | reconstructed (top-1) | any candidate | guest RMSE median (A) | Fmax median / p75 (eV/A) "
             "| dE relax median / p75 (eV/atom) | s / host |", "|---|---|---|---|---|---|---|---|---|"]
    for group, rows in groups.items():
        if not rows:
            continue
        for method in METHODS:
            res = [r[method] for r in rows]
            rate = np.mean([x["match"] for x in res])
            anyk = f"{np.mean([any_of_pool(r, method) for r in rows]):.1%}" if method != "voronoi" else ""
            rmse = q([x["rmse"] for x in res if x["match"]], 0.5)
            diff_s = np.mean([diffusion_seconds.get(r["id"], np.nan) for r in rows])
            refine_s = np.mean([r["refine_seconds_per_sample"] * args.samples for r in rows])
            vor_s = np.mean([r["voronoi_seconds"] for r in rows])
            seconds = {"diffusion": diff_s, "diffusion+refine": diff_s + refine_s, "voronoi": vor_s,
                       "hybrid": diff_s + refine_s + vor_s}[method]
            lines.append(
                f"| {group} | {method} | {len(rows)} | {rate:.1%} | {anyk} | {rmse:.3f} | "
                f"{q([x['fmax'] for x in res], 0.5):.3f} / {q([x['fmax'] for x in res], 0.75):.3f} | "
                f"{q([x['delta_e'] for x in res], 0.5):.4f} / {q([x['delta_e'] for x in res], 0.75):.4f} | {seconds:.1f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default=str(Path(__file__).resolve().parents[2] / "shared/data/mp20/val.csv.gz"))
    p.add_argument("--mpts52", default=str(Path(__file__).resolve().parents[2] / "shared/data/mpts52/train.csv.gz"))
    p.add_argument("--per-species", type=int, default=20)
    p.add_argument("--hard", type=int, default=10, help="cases per harder group (supercell, MPTS-52, two species)")
    p.add_argument("--groups", default="Li,Na,Mg,Ca,Li-2x2x1,mpts52-Li,Li+Na")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--model", default="score-mp20")
    p.add_argument("--levels", type=int, default=200)
    p.add_argument("--resample", type=int, default=3)
    p.add_argument("--jump", type=int, default=10)
    p.add_argument("--corrector", type=int, default=5)
    p.add_argument("--snr", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/inpainting")
    args = p.parse_args()
    configure_threads(1)
    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)

    from diffase.generators import load_model

    model = load_model(args.model, "cpu")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads 1, load average {os.getloadavg()[0]:.1f}")
    print(f"model: {model.meta.get('path', args.model)} (step {model.meta.get('train', {}).get('step')})")
    settings = f"T={args.levels}, r={args.resample}, j={args.jump}, M={args.corrector}, snr={args.snr}, k={args.samples} samples/host"
    print("sampler:", settings)

    groups = {}
    for g in args.groups.split(","):
        if g in SPECIES:
            groups[g] = select_cases(Path(args.table), g, args.per_species, args.seed, max_sites=20)
        elif g == "Li-2x2x1":
            groups[g] = select_cases(Path(args.table), "Li", args.hard, args.seed + 1, max_sites=12, supercell=[2, 2, 1])
        elif g == "mpts52-Li":
            groups[g] = [c for c in select_cases(Path(args.mpts52), "Li", 4 * args.hard, args.seed, max_sites=52)
                         if len(c["original"]) > 24][: args.hard]
        elif g == "Li+Na":
            groups[g] = select_cases(Path(args.table), "Li", args.hard, args.seed, max_sites=20, extra_species="Na")
        print(f"{g}: {len(groups[g])} cases")
    every = [c for cases in groups.values() for c in cases]
    run_diffusion(every, out, args, model)
    diffusion_seconds = {r["id"]: r["seconds"] for r in Store(out / "diffusion_time.jsonl").rows.values()}
    cache = Store(out / "evaluation.jsonl")
    results = {}
    for g, cases in groups.items():
        results[g] = []
        for i, c in enumerate(cases):
            results[g].append(evaluate_case(c, out, args, cache))
            print(f"\r{g}: evaluated {i + 1}/{len(cases)}", end="", file=sys.stderr)
        print(file=sys.stderr)
    results["all groups"] = [r for rows in results.values() for r in rows]
    report = table(results, diffusion_seconds, args)
    header = (f"# Guest reconstruction benchmark\n\nmodel `{args.model}` (step {model.meta.get('train', {}).get('step')}); "
              f"sampler {settings}; CHGNet 0.4 on CPU, 1 thread; machine {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores; data {Path(args.table).name} (+ {Path(args.mpts52).name} for mpts52-Li), "
              f"seed {args.seed}.\n\n")
    (out.parent / "inpainting.md").write_text(header + report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
