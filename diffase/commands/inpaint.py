"""``diffase inpaint``: put guest atoms into a host, stream every candidate to disk, rank them.

Output folder layout (``--out``):

* ``candidates/<method>-<sample>.cif``: each candidate after relaxation, written as soon as it is done;
* ``candidates.extxyz``: the same structures with their scores in the frame headers;
* ``results.jsonl``: one line of scores per finished candidate (what a resumed run skips);
* ``ranking.csv`` and ``best-<k>.cif``: the final ranking (lowest MLIP energy per atom first).

Several hosts (``diffase inpaint a.cif b.cif``, a folder of structure files, or a CSV/extxyz holding many)
run in one process: their diffusion samples share network batches (``--batch-atoms`` atoms at most), each
host gets its own folder ``<out>/<name>/`` with the layout above, and ``<out>/summary.csv`` lists every
host with its best energy or the reason it was skipped. A host that cannot be read or used (disordered, an
element the model never saw, no room) is reported and skipped; the others go on. A single host writes
straight into ``--out`` as before.

Re-running the same command resumes (host by host; a host's samples are seeded by its position in the
list of hosts, which its ``settings.json`` records): finished candidates are not redone and finished
diffusion samples are not sampled again. Sample ``i`` is seeded by ``(seed, i)`` alone, so a resumed run, or one grown from 2 to 3
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
    p.add_argument("host", nargs="+", help="host structure file(s) (CIF, POSCAR, extxyz, CSV with a cif column, "
                                         "...) or folders of them")
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
    p.add_argument("--batch-size", type=int, default=32, help="crystals per network call (default 32)")
    p.add_argument("--batch-atoms", type=int, default=None,
                   help="atoms per network call (default: no limit); on a GPU set it as large as memory allows")
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
    and every transformation argument but the device and batch sizes (speed, not samples); the number of
    samples too, except for ``--method diffusion``, whose samples are seeded one by one so a folder can grow. ``--method voronoi``
    uses no score model, so none is recorded (nor required)."""
    from diffase.resume import model_fingerprint, structure_fingerprint

    ignored = {"device", "model", "batch_size", "max_atoms"} | ({"n_samples"} if t.method == "diffusion" else set())
    return {"host_formula": host.composition.reduced_formula, "host_sha256": structure_fingerprint(host),
            **(model_fingerprint(t.model) if t.method != "voronoi" else {}),  # the baseline uses no score model
            **{k: v for k, v in t.as_dict().items() if not k.startswith("@") and k not in ignored}}


def read_hosts(sources: list[str]) -> list[tuple[str, object]]:
    """``(name, Structure or the error that refused it)`` for every crystal in ``sources`` (files, folders of
    files, multi-structure files), names unique and usable as folder names. With one source file, its reading
    error is raised as it is (one host: the run stops before any work)."""
    from diffase.data.io import read_structures
    from diffase.errors import DiffaseError

    files = []
    for source in map(Path, sources):
        files += sorted(f for f in source.iterdir() if f.is_file() and not f.name.startswith(".")) \
            if source.is_dir() else [source]
    hosts: list[tuple[str, object]] = []
    for f in files:
        try:
            hosts += read_structures(f, keep_refused=True)  # a bad row of a table is refused alone
        except (DiffaseError, OSError, ValueError) as err:
            if len(files) == 1:
                raise
            hosts.append((f.stem, err))
    used: set[str] = set()  # folder names, compared case-insensitively (macOS, Windows)
    named = []
    for name, item in hosts:
        base = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(name)) or "host"
        name, k = base, 1
        while name.lower() in used:
            k += 1
            name = f"{base}-{k}"
        used.add(name.lower())
        named.append((name, item))
    return named


def run(args) -> int:
    from pymatgen.core import Structure
    from tqdm.auto import tqdm

    from diffase.errors import DiffaseError, NoValidCandidateError
    from diffase.resume import SETTINGS_FILE, check_resume, write_settings
    from diffase.runtime import configure_threads
    from diffase.transformations import (
        InpaintIntercalantTransformation,
        no_valid_candidate_reason,
        rank_results,
    )

    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    configure_threads(args.threads)
    # every check before any output folder exists: host files, arguments, guests vs hosts, model, resume
    named = read_hosts(args.host)
    t = InpaintIntercalantTransformation(
        args.guest, count=args.count, concentration=args.concentration, n_samples=args.samples, method=args.method,
        relax=not args.no_relax, calculator=args.calculator, model=args.model, refine_guests=args.refine_guests,
        num_levels=args.levels, n_resample=args.resample, jump_length=args.jump, n_corrector=args.corrector,
        snr=args.snr, fmax=args.fmax, seed=args.seed, device=args.device, batch_size=args.batch_size,
        max_atoms=args.batch_atoms)
    accepted, hosts, refused = t.screen_hosts([item for _, item in named])
    out = Path(args.out)
    single = len(named) == 1
    folders = [out if single else out / named[i][0] for i in accepted]
    # a host's samples are seeded by its position in the list: a resume with the host elsewhere is refused
    settings = [{**run_settings(h, t), **({} if single else {"host_index": i})} for i, h in zip(accepted, hosts)]
    for folder, s in zip(folders, settings):
        check_resume(folder / SETTINGS_FILE, s, what="inpaint")
    for folder, s in zip(folders, settings):
        (folder / "candidates").mkdir(parents=True, exist_ok=True)
        write_settings(folder / SETTINGS_FILE, s)
    for i, err in refused.items():
        print(f"skipping host {named[i][0]}: {err}", file=sys.stderr, flush=True)

    done = [{(r["method"], r["sample_index"]) for r in _finished(f / "results.jsonl")} for f in folders]
    skip = [(k, s) for k, d in enumerate(done) for method, s in d if method == "diffusion"]
    if any(done):
        print(f"resuming: {sum(map(len, done))} candidate(s) already done", file=sys.stderr)

    interactive = sys.stderr.isatty()
    print(f"{len(hosts)} host(s) + {args.count or args.concentration} {args.guest}: {args.method}, "
          f"{args.samples} sample(s), T={args.levels} r={args.resample} j={args.jump} M={args.corrector} "
          f"snr={args.snr}, model {args.model}; writing to {out}/", file=sys.stderr, flush=True)
    failed = []

    def report_failure(method: str, err: Exception) -> None:
        failed.append(method)
        print(f"the {method} half of --method hybrid failed: {err}; ranking the other half's candidates",
              file=sys.stderr, flush=True)

    bar = tqdm(desc="relaxing candidates", unit="cand", disable=not interactive)
    stopped = ""  # why candidate generation stopped early, if it did
    try:
        for cand in t.iter_candidates(hosts, skip=skip, host_ids=accepted, progress=interactive,
                                     on_failure=report_failure):
            k = cand.host_index
            if (cand.method, cand.sample_index) in done[k]:
                continue
            result = t.evaluate(cand)
            write_candidate(folders[k], cand, result)
            done[k].add((cand.method, cand.sample_index))
            bar.update()
            if not interactive:  # a log file gets one line per finished candidate instead of a progress bar
                score = (f"{result['energy_per_atom']:.4f} eV/atom" if result["valid"]
                         else f"screened out ({result.get('error', 'invalid')})")
                where = "" if single else f"{named[accepted[k]][0]}: "
                print(f"{where}candidate {cand.method}-{cand.sample_index:03d}: {score}", file=sys.stderr, flush=True)
    except DiffaseError as err:  # every method failed: with several hosts, each is reported below
        if single:
            raise
        stopped = str(err)
        print(f"sampling stopped: {err}", file=sys.stderr, flush=True)
    bar.close()

    summary = []
    for k, folder in enumerate(folders):
        rows = _finished(folder / "results.jsonl")
        for r in rows:
            r["structure"] = Structure.from_file(folder / "candidates" / r["cif"])
        ranked = rank_results(rows)
        formula = hosts[k].composition.reduced_formula
        if not ranked:  # results.jsonl and candidates/ stay for inspection; nothing to rank
            reason = (stopped if stopped and not rows else no_valid_candidate_reason(rows, formula)) + (
                f" ({' and '.join(sorted(set(failed)))} failed, see above)" if failed else "")
            if single:
                raise NoValidCandidateError(reason)
            summary.append((named[accepted[k]][0], formula, len(rows), 0, None, reason))
            continue
        write_ranking(folder, ranked, args.top)
        summary.append((named[accepted[k]][0], formula, len(rows), len(ranked), ranked[0]["energy_per_atom"], ""))
        if single:
            print_ranking(ranked, rows, args, formula, failed)
            print(f"written to {out}/ (ranking.csv, best-1..{min(args.top, len(ranked))}.cif, candidates/)")
    if single:
        return 0
    summary += [(named[i][0], "", 0, 0, None, str(err)) for i, err in refused.items()]
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["host", "formula", "candidates", "distinct", "best_energy_per_atom_eV", "error"])
        writer.writerows([name, f, n, d, "" if e is None else f"{e:.5f}", err] for name, f, n, d, e, err in summary)
    n_ok = sum(e is not None for *_, e, _ in summary)
    print(f"{n_ok} of {len(named)} host(s) gave candidates; {len(named) - n_ok} skipped or without a valid "
          f"candidate; summary in {out / 'summary.csv'}")
    for name, formula, n, d, e, err in summary:
        print(f"  {name}: " + (f"{formula}, {d} distinct of {n}, best {e:.4f} eV/atom" if e is not None else err))
    return 0 if n_ok else 1


def write_candidate(folder: Path, cand, result: dict) -> None:
    """Append one evaluated candidate to a host's folder: its CIF, an extxyz frame and a results.jsonl line."""
    from diffase.data.io import append_extxyz, json_line

    cif = folder / "candidates" / f"{cand.method}-{cand.sample_index:03d}.cif"
    result["structure"].to(filename=str(cif))
    line = json_line({**{k: result[k] for k in SCALARS if k in result}, "cif": cif.name})
    append_extxyz(folder / "candidates.extxyz", [result["structure"]], [json.loads(line)])
    with open(folder / "results.jsonl", "a") as fh:
        fh.write(line + "\n")


def write_ranking(folder: Path, ranked: list[dict], top: int) -> None:
    """``ranking.csv`` and ``best-<k>.cif`` (k <= ``top``) of one host's ranked candidates."""
    with open(folder / "ranking.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "cif", "method", "sample_index", "energy_per_atom_eV", "fmax_before_relax_eV_A",
                         "relax_delta_e_eV_atom", "max_displacement_A", "n_duplicates"])
        for k, r in enumerate(ranked, 1):
            writer.writerow([k, r["cif"], r["method"], r["sample_index"], f"{r['energy_per_atom']:.5f}",
                             _fmt(r.get("fmax_before_relax")), _fmt(r.get("relax_delta_e")),
                             _fmt(r.get("max_displacement")), r["n_duplicates"]])
    for k, r in enumerate(ranked[:top], 1):
        r["structure"].to(filename=str(folder / f"best-{k}.cif"))


def print_ranking(ranked: list[dict], rows: list[dict], args, formula: str, failed: list[str]) -> None:
    """The single-host summary on stdout: counts, then the ``--top`` best candidates."""
    n_invalid = sum(not r["valid"] for r in rows)
    print(f"{formula} + {args.count or args.concentration} {args.guest}: {len(rows)} candidates "
          f"({n_invalid} with overlapping atoms), {len(ranked)} distinct"
          + (f"; the {failed[0]} half of the hybrid method failed" if failed else ""))
    print(f"{'rank':>4} {'method':>9} {'sample':>6} {'E (eV/atom)':>12} {'Fmax0 (eV/A)':>12} {'dE relax':>9}")
    for k, r in enumerate(ranked[: args.top], 1):
        print(f"{k:>4} {r['method']:>9} {r['sample_index']:>6} {r['energy_per_atom']:>12.4f} "
              f"{_fmt(r.get('fmax_before_relax')):>12} {_fmt(r.get('relax_delta_e')):>9}")


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
