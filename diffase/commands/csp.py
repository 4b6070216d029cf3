"""``diffase csp``: host-guided crystal structure prediction (CHGGen) for one composition.

Example: ``diffase csp Li5Si2 --n 50 --guest Li --v0 16 --elemental-references mp-elemental.json.gz``.

Each crystal is printed and written to ``--out`` as soon as it is relaxed (layout in
:mod:`diffase.workflows.csp_output`); at the end ``summary.md``/``summary.csv`` (unconditional vs inpainting),
``ranking.csv``, ``success_rates.png`` and ``ed_histogram.png`` are written. Re-running the same command
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def register(sub) -> None:
    p = sub.add_parser("csp", help="host-guided crystal structure prediction (CHGGen) for a composition",
                       description="Generate crystals of a composition in random cells, relax them, symmetrise "
                                   "their guest-free frameworks, inpaint the guests back, relax again, and compare "
                                   "the symmetry success rate and decomposition energy of both routes.")
    p.add_argument("composition", help="composition, e.g. Li5Si2")
    p.add_argument("--n", type=int, default=50, help="unconditional crystals to generate (default 50)")
    p.add_argument("--guest", required=True, help="guest species removed and inpainted back, e.g. Li (or Li,Na)")
    p.add_argument("--v0", type=float, default=None,
                   help="volume per atom, Angstrom^3 (default: mean elemental volume of the composition)")
    p.add_argument("--out", default=None, help="output folder (default csp-<composition>; re-run to resume)")
    p.add_argument("--formula-units", type=_int_list, default=None, metavar="Z[,Z...]",
                   help="formula units per cell to draw from (default: every Z with at most --max-atoms atoms)")
    p.add_argument("--max-atoms", type=int, default=20, help="largest cell when --formula-units is not given")
    p.add_argument("--continuous-ratios", action="store_true",
                   help="axis ratios uniform in [0.5, 1.5] instead of the paper's five values")
    p.add_argument("--inpaint-runs", type=int, default=3, help="inpainting runs per framework (default 3; 0 = none)")
    p.add_argument("--exclude", default="P1,P-1", help="space groups counted as failures (default P1,P-1)")
    hull = p.add_argument_group("reference hull for E_d (none given: E_d is not computed)")
    hull.add_argument("--elemental-references", help="JSON(.gz) {symbol: ComputedEntry}, e.g. MP elemental references")
    hull.add_argument("--reference-entries", help="JSON list of ComputedEntry (e.g. MP entries, MP2020 corrected)")
    hull.add_argument("--reference-structures", nargs="+", metavar="PATH",
                      help="known crystals (CSV tables with a CIF column, extxyz, ...): those in the chemical system "
                           "are relaxed with the MLIP and added (cached in OUT/reference_entries.json)")
    hull.add_argument("--reference-compounds-only", action="store_true",
                      help="relax only the compounds among --reference-structures (elements from the other sources)")
    p.add_argument("--model", default="score-mp20", help="score model name or checkpoint path")
    p.add_argument("--calculator", default="chgnet", help="MLIP for relaxation: chgnet (default) or mattersim")
    p.add_argument("--levels", type=int, default=200, help="noise levels of unconditional sampling (default 200)")
    p.add_argument("--corrector", type=int, default=5, help="Langevin corrector steps per level (default 5)")
    p.add_argument("--snr", type=float, default=0.2, help="corrector snr of unconditional sampling (default 0.2)")
    p.add_argument("--inpaint-levels", type=int, default=200, help="noise levels of inpainting (default 200)")
    p.add_argument("--resample", type=int, default=3, help="RePaint resamplings of inpainting (default 3)")
    p.add_argument("--jump", type=int, default=10, help="RePaint jump length (default 10)")
    p.add_argument("--inpaint-corrector", type=int, default=5, help="corrector steps of inpainting (default 5)")
    p.add_argument("--inpaint-snr", type=float, default=0.4, help="corrector snr of inpainting (CHGGen: 0.4)")
    p.add_argument("--batch-size", type=int, default=32, help="crystals per network call")
    p.add_argument("--min-distance", type=float, default=1.0, help="screen: shortest allowed distance, Angstrom")
    p.add_argument("--fmax", type=float, default=0.1, help="relaxation force threshold, eV/Angstrom")
    p.add_argument("--relax-steps", type=int, default=500, help="FIRE step limit (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.set_defaults(func=run)


def _line(row: dict) -> str:
    if not row.get("valid"):
        return f"{row['id']:>10} {row['stage']:<13} {row['formula']:<10} screened out: {row.get('error', '')[:80]}"
    e_d = row.get("decomposition_energy")
    return (f"{row['id']:>10} {row['stage']:<13} {row['formula']:<10} {row['spacegroup_symbol']:<10} "
            f"E {row['energy_relaxed']:8.4f} eV/atom  dE {row['delta_e']:+7.3f}"
            + (f"  E_d {e_d:+.3f}" if e_d is not None else ""))


def run(args) -> int:
    import os
    import warnings
    from pathlib import Path

    os.environ.setdefault("SPGLIB_WARNING", "OFF")  # spglib's C warnings at large tolerances are expected here
    warnings.filterwarnings("ignore", message="No Pauling electronegativity")  # pymatgen, noble-gas references

    from pymatgen.core import Composition

    from diffase.analysis.symmetry import parse_space_groups
    from diffase.generators.inpainting import InpaintingSettings
    from diffase.resume import SETTINGS_FILE, check_resume
    from diffase.runtime import configure_threads
    from diffase.workflows.csp import CSPSettings, parse_composition, run_csp, run_settings
    from diffase.workflows.csp_report import markdown_table, write_report
    from diffase.workflows.hull_references import reference_entries

    configure_threads(args.threads)
    settings = CSPSettings(
        n=args.n, guest=args.guest, v0=args.v0, formula_units=args.formula_units, max_atoms=args.max_atoms,
        continuous_ratios=args.continuous_ratios, num_levels=args.levels, n_corrector=args.corrector, snr=args.snr,
        batch_size=args.batch_size, excluded=tuple(sorted(parse_space_groups(args.exclude))),
        n_inpaint=args.inpaint_runs,
        inpainting=InpaintingSettings(num_levels=args.inpaint_levels, n_resample=args.resample, jump_length=args.jump,
                                      n_corrector=args.inpaint_corrector, snr=args.inpaint_snr,
                                      batch_size=args.batch_size),
        min_distance=args.min_distance, fmax=args.fmax, relax_steps=args.relax_steps, seed=args.seed)
    comp = parse_composition(Composition(args.composition), args.guest)
    out = Path(args.out or f"csp-{comp.reduced_formula}")
    for path in (args.elemental_references, args.reference_entries, *(args.reference_structures or ())):
        if path and not Path(path).exists():
            raise FileNotFoundError(f"no such reference file: {path}")
    # a resume with other settings is refused before the reference hull is relaxed or anything is written
    check_resume(out / SETTINGS_FILE, run_settings(comp, settings, model=args.model, calculator=args.calculator),
                 what="CSP", only_given=True)
    out.mkdir(parents=True, exist_ok=True)
    elements = [el.symbol for el in comp.elements]
    refs = reference_entries(elements, elemental=args.elemental_references, entries=args.reference_entries,
                             structures=args.reference_structures, compounds_only=args.reference_compounds_only,
                             calculator=args.calculator, device=args.device,
                             cache=out / "reference_entries.json", fmax=args.fmax)
    if not refs:
        print("no reference hull given (--elemental-references / --reference-entries / --reference-structures): "
              "E_d is not computed", file=sys.stderr)
    print(f"{comp.reduced_formula}: {args.n} unconditional crystals, {args.inpaint_runs} inpainting run(s) per "
          f"symmetric framework, guest {args.guest}; writing to {out}/", flush=True)
    rows = run_csp(comp, out, settings, model=args.model, calculator=args.calculator, reference_entries=refs,
                   device=args.device, progress=sys.stderr.isatty(), on_result=lambda r: print(_line(r), flush=True))
    summary = write_report(rows, out, settings.excluded)
    print(markdown_table(summary))
    print(f"written to {out}/ (summary.md, summary.csv, ranking.csv, success_rates.png"
          + (", ed_histogram.png" if (out / "ed_histogram.png").exists() else "") + ", structures/)")
    return 0
