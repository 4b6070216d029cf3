"""``diffase label``: DFT (GPAW) electronic labels for structures: 32^3 density, site DOS, Bader charges, gap, E_F."""

from __future__ import annotations

#: Command-line option -> LabelSettings field, for the options that replace a field of the chosen preset.
SETTING_OPTIONS = {"mode": "mode", "basis": "basis", "ecut": "ecut", "h": "h", "kpoint_density": "kpoint_density",
                   "kpoint_cap": "kpoint_cap", "smearing": "smearing_width", "grid": "grid", "timeout": "timeout"}


def register(sub) -> None:
    p = sub.add_parser(
        "label", help="compute electronic labels (density, site DOS, Bader charges) with GPAW",
        description="Run one GPAW single point per structure and write OUT/<name>.npz plus OUT/index.csv. "
                    "Re-running the same command skips finished structures; failures go to "
                    "OUT/failures-<i>-of-<n>.jsonl and are retried next time; a folder made with other settings "
                    "is refused. GPAW comes from Debian (apt-get install gpaw gpaw-data) or from "
                    "$DIFFASE_GPAW_PYTHON. The default preset reproduces shared/data/electronic.")
    p.add_argument("structures", help="CSV with a 'cif' column, extxyz, ASE .db, CIF, POSCAR ...")
    p.add_argument("--out", required=True, help="label folder")
    p.add_argument("--preset", choices=("default", "fast"), default="default",
                   help="default: SCF and site DOS on k-point density 15 (cap 6), h 0.2 A; fast: SCF on density 8 "
                        "(cap 4), h 0.25 A, site DOS from a non-self-consistent pass on the default mesh (errors "
                        "against default: benchmarks/results/label_preset.md). The options below replace fields.")
    p.add_argument("--shard", default="0/1", help="i/n: this run takes every n-th structure from i (0-based)")
    p.add_argument("--workers", type=int, default=1,
                   help="single-threaded worker processes on this machine, splitting this run's shard")
    p.add_argument("--limit", type=int, default=None, help="read only the first N structures")
    p.add_argument("--mode", choices=("lcao", "pw"), default=None, help="GPAW mode (preset: lcao)")
    p.add_argument("--basis", default=None, help="LCAO basis set (preset: dzp)")
    p.add_argument("--ecut", type=float, default=None, help="plane-wave cut-off, eV (mode pw; preset: 400)")
    p.add_argument("--h", type=float, default=None, help="real-space grid spacing, Angstrom")
    p.add_argument("--kpoint-density", type=float, default=None,
                   help="SCF k-points per 1/Angstrom of reciprocal vector length (no 2 pi)")
    p.add_argument("--kpoint-cap", type=int, default=None, help="at most this many SCF k-points per direction")
    p.add_argument("--smearing", type=float, default=None, help="Fermi-Dirac width, eV (preset: 0.1)")
    p.add_argument("--grid", type=int, default=None, help="stored density grid N (N^3; preset: 32)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per structure before it counts as failed")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    from pathlib import Path

    from diffase.errors import SettingsMismatchError
    from diffase.labeling.batch import check_resume, label_structures, parse_shard
    from diffase.labeling.gpaw_runner import GPAWNotFoundError
    from diffase.labeling.settings import LabelSettings
    from diffase.labeling.workers import label_structures_in_parallel

    shard = parse_shard(args.shard)
    if args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}")
        return 2
    overrides = {field: getattr(args, option) for option, field in SETTING_OPTIONS.items()
                 if getattr(args, option) is not None}
    settings = LabelSettings.from_preset(args.preset, **overrides)
    out = Path(args.out)
    try:
        check_resume(out, settings)  # before the log file or anything else is written
    except SettingsMismatchError as exc:
        print(f"error: {exc}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(), logging.FileHandler(out / f"label-{shard[0]}-of-{shard[1]}.log")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)
    try:
        if args.workers > 1:
            report = label_structures_in_parallel(args.structures, out, workers=args.workers, settings=settings,
                                                  shard=shard, limit=args.limit)
        else:
            report = label_structures(args.structures, out, settings=settings, shard=shard, limit=args.limit)
    except GPAWNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{len(report.labelled)} labelled, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"-> {out}")
    return 1 if report.failed and not (report.labelled or report.skipped) else 0
