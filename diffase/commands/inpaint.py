"""``diffase inpaint``: put guest atoms into a host, stream every candidate to disk, rank them.

Output folder layout (``--out``):

* ``candidates/<method>-<sample>.cif``: each candidate after relaxation, written as soon as it is done;
* ``candidates.extxyz``: the same structures with their scores in the frame headers;
* ``results.jsonl``: one line of scores per finished candidate (what a resumed run skips);
* ``ranking.csv`` and ``best-<k>.cif``: the final ranking (lowest MLIP energy per atom first).

Re-running the same command resumes: finished candidates are not redone and finished diffusion samples are
not sampled again. Sample ``i`` is seeded by ``(seed, i)`` alone, so a resumed run, or one grown from 2 to 3
samples, gives the same samples as a fresh run with the final ``--samples``. ``settings.json`` records what
identifies the run (host content, guest, count, method, model and its checkpoint hash, sampler and relaxation
settings): a re-run with any of them changed is refused, naming them, before anything is sampled or written
(:mod:`diffase.resume`). Bad input (host file, guest, count, host with overlapping atoms, sampler settings,
missing model) is refused before the folder is created; a run with no valid candidate exits 1 with the reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

SCALARS = ("method", "sample_index", "energy_per_atom", "fmax_before_relax", "relax_delta_e", "max_displacement",
           "relax_steps", "converged", "refined", "valid", "error")


def register(sub) -> None:
    p = sub.add_parser("inpaint", help="insert guest atoms into a host crystal and rank the candidates",
                       description="Generate guest arrangements in a host (score-based inpainting, Voronoi "
                                   "baseline or both), relax them with an MLIP and rank by energy.")
    p.add_argument("host", help="host structure file (CIF, POSCAR, extxyz, ...)")
    p.add_argument("--guest", required=True, help="guest element, e.g. Zn")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--count", type=int, help="guests per host cell")
    group.add_argument("--concentration", type=float, help="guests per host formula unit (e.g. 0.5)")
    p.add_argument("--samples", type=int, default=8, help="diffusion samples (default 8)")
    p.add_argument("--method", choices=("diffusion", "voronoi", "hybrid"), default="diffusion")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--top", type=int, default=5, help="how many best candidates to write as best-<k>.cif")
    p.add_argument("--no-relax", action="store_true", help="rank by single-point energy, no relaxation")
    p.add_argument("--refine-guests", action=argparse.BooleanOptionalAction, default=None,
                   help="guest-only MLIP relaxation before the full one (default: baseline only)")
    p.add_argument("--calculator", default="chgnet", help="MLIP: chgnet (default) or mattersim")
    p.add_argument("--model", default="score-mp20", help="score model name or checkpoint path")
    p.add_argument("--levels", type=int, default=200, help="noise levels T (paper: 200)")
    p.add_argument("--resample", type=int, default=3, help="RePaint resamplings r (paper: 3)")
    p.add_argument("--jump", type=int, default=10, help="RePaint jump length j (paper: 10)")
    p.add_argument("--corrector", type=int, default=5, help="Langevin corrector steps M (paper: 5)")
    p.add_argument("--snr", type=float, default=0.2, help="corrector signal-to-noise ratio (paper 0.2, CHGGen 0.4)")
    p.add_argument("--fmax", type=float, default=0.1, help="relaxation force threshold, eV/Angstrom")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.set_defaults(func=run)


def _finished(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_settings(host, t) -> dict:
    """What identifies an inpainting run in its ``settings.json``: the host's content (formula and
    :func:`~diffase.resume.structure_fingerprint`, not its file name), the model (name and checkpoint SHA-256)
    and every transformation argument but the device; the number of samples too, except for
    ``--method diffusion``, whose samples are seeded one by one so a folder can grow. ``--method voronoi``
    uses no score model, so none is recorded (nor required)."""
    from diffase.resume import model_fingerprint, structure_fingerprint

    ignored = {"device", "model"} | ({"n_samples"} if t.method == "diffusion" else set())
    return {"host_formula": host.composition.reduced_formula, "host_sha256": structure_fingerprint(host),
            **(model_fingerprint(t.model) if t.method != "voronoi" else {}),  # the baseline uses no score model
            **{k: v for k, v in t.as_dict().items() if not k.startswith("@") and k not in ignored}}


def run(args) -> int:
    from pymatgen.core import Structure
    from tqdm.auto import tqdm

    from diffase.data.io import append_extxyz, json_line, read_structures
    from diffase.errors import NoValidCandidateError
    from diffase.resume import SETTINGS_FILE, check_resume, write_settings
    from diffase.runtime import configure_threads
    from diffase.transformations import InpaintIntercalantTransformation, no_valid_candidate_reason, rank_results

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    configure_threads(args.threads)
    # every check before the output folder exists: host file, arguments, guests vs host, model, resume
    host = read_structures(args.host)[0][1]
    t = InpaintIntercalantTransformation(
        args.guest, count=args.count, concentration=args.concentration, n_samples=args.samples, method=args.method,
        relax=not args.no_relax, calculator=args.calculator, model=args.model, refine_guests=args.refine_guests,
        num_levels=args.levels, n_resample=args.resample, jump_length=args.jump, n_corrector=args.corrector,
        snr=args.snr, fmax=args.fmax, seed=args.seed, device=args.device)
    t.check_model_elements(*t.prepare(host))
    out = Path(args.out)
    settings = run_settings(host, t)
    check_resume(out / SETTINGS_FILE, settings, what="inpaint")
    (out / "candidates").mkdir(parents=True, exist_ok=True)
    write_settings(out / SETTINGS_FILE, settings)

    log_path = out / "results.jsonl"
    done = {(r["method"], r["sample_index"]) for r in _finished(log_path)}
    finished_samples = [s for method, s in done if method == "diffusion"]
    if done:
        print(f"resuming: {len(done)} candidate(s) already in {log_path}", file=sys.stderr)

    interactive = sys.stderr.isatty()
    print(f"{host.composition.reduced_formula} + {args.count or args.concentration} {args.guest}: {args.method}, "
          f"{args.samples} sample(s), T={args.levels} r={args.resample} j={args.jump} M={args.corrector} "
          f"snr={args.snr}, model {args.model}; writing to {out}/", file=sys.stderr, flush=True)
    failed = []

    def report_failure(method: str, err: Exception) -> None:
        failed.append(method)
        print(f"the {method} half of --method hybrid failed: {err}; ranking the other half's candidates",
              file=sys.stderr, flush=True)

    bar = tqdm(desc="relaxing candidates", unit="cand", disable=not interactive)
    for cand in t.iter_candidates(host, skip_samples=finished_samples, progress=interactive,
                                  on_failure=report_failure):
        if (cand.method, cand.sample_index) in done:
            continue
        result = t.evaluate(cand)
        cif = out / "candidates" / f"{cand.method}-{cand.sample_index:03d}.cif"
        result["structure"].to(filename=str(cif))
        scalars = {k: result[k] for k in SCALARS if k in result}
        line = json_line({**scalars, "cif": cif.name})
        append_extxyz(out / "candidates.extxyz", [result["structure"]], [json.loads(line)])
        with open(log_path, "a") as fh:
            fh.write(line + "\n")
        done.add((cand.method, cand.sample_index))
        bar.update()
        if not interactive:  # a log file gets one line per finished candidate instead of a progress bar
            score = (f"{result['energy_per_atom']:.4f} eV/atom" if result["valid"]
                     else f"screened out ({result.get('error', 'invalid')})")
            print(f"candidate {cand.method}-{cand.sample_index:03d}: {score}", file=sys.stderr, flush=True)
    bar.close()

    rows = _finished(log_path)
    for r in rows:
        r["structure"] = Structure.from_file(out / "candidates" / r["cif"])
    ranked = rank_results(rows)
    if not ranked:  # results.jsonl and candidates/ stay for inspection; nothing to rank
        raise NoValidCandidateError(no_valid_candidate_reason(rows, host.composition.reduced_formula)
                                    + (f" ({' and '.join(failed)} failed, see above)" if failed else ""))
    with open(out / "ranking.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "cif", "method", "sample_index", "energy_per_atom_eV", "fmax_before_relax_eV_A",
                         "relax_delta_e_eV_atom", "max_displacement_A", "n_duplicates"])
        for k, r in enumerate(ranked, 1):
            writer.writerow([k, r["cif"], r["method"], r["sample_index"], f"{r['energy_per_atom']:.5f}",
                             _fmt(r.get("fmax_before_relax")), _fmt(r.get("relax_delta_e")),
                             _fmt(r.get("max_displacement")), r["n_duplicates"]])
    for k, r in enumerate(ranked[: args.top], 1):
        r["structure"].to(filename=str(out / f"best-{k}.cif"))
    n_invalid = sum(not r["valid"] for r in rows)
    print(f"{host.composition.reduced_formula} + {args.count or args.concentration} {args.guest}: {len(rows)} candidates "
          f"({n_invalid} with overlapping atoms), {len(ranked)} distinct"
          + (f"; the {failed[0]} half of the hybrid method failed" if failed else ""))
    print(f"{'rank':>4} {'method':>9} {'sample':>6} {'E (eV/atom)':>12} {'Fmax0 (eV/A)':>12} {'dE relax':>9}")
    for k, r in enumerate(ranked[: args.top], 1):
        print(f"{k:>4} {r['method']:>9} {r['sample_index']:>6} {r['energy_per_atom']:>12.4f} "
              f"{_fmt(r.get('fmax_before_relax')):>12} {_fmt(r.get('relax_delta_e')):>9}")
    print(f"written to {out}/ (ranking.csv, best-1..{min(args.top, len(ranked))}.cif, candidates/)")
    return 0


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
