"""``diffase label``: DFT (GPAW) electronic labels for structures: 32^3 density, site DOS, Bader charges, gap, E_F."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "label", help="compute electronic labels (density, site DOS, Bader charges) with GPAW",
        description="Run one GPAW single point per structure and write OUT/<name>.npz plus OUT/index.csv. "
                    "Re-running the same command skips finished structures; failures go to "
                    "OUT/failures-<i>-of-<n>.jsonl and are retried next time. GPAW comes from Debian "
                    "(apt-get install gpaw gpaw-data) or from $DIFFASE_GPAW_PYTHON. Defaults reproduce "
                    "shared/data/electronic.")
    p.add_argument("structures", help="CSV with a 'cif' column, extxyz, ASE .db, CIF, POSCAR ...")
    p.add_argument("--out", required=True, help="label folder")
    p.add_argument("--shard", default="0/1", help="i/n: this worker takes every n-th structure from i (0-based)")
    p.add_argument("--limit", type=int, default=None, help="read only the first N structures")
    p.add_argument("--mode", choices=("lcao", "pw"), default="lcao")
    p.add_argument("--basis", default="dzp", help="LCAO basis set")
    p.add_argument("--ecut", type=float, default=400.0, help="plane-wave cut-off, eV (mode pw)")
    p.add_argument("--h", type=float, default=0.2, help="real-space grid spacing, Angstrom")
    p.add_argument("--kpoint-density", type=float, default=15.0,
                   help="k-points per 1/Angstrom of reciprocal vector length (no 2 pi)")
    p.add_argument("--kpoint-cap", type=int, default=6, help="at most this many k-points per direction")
    p.add_argument("--smearing", type=float, default=0.1, help="Fermi-Dirac width, eV")
    p.add_argument("--grid", type=int, default=32, help="stored density grid N (N^3)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per structure before it counts as failed")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    from pathlib import Path

    from diffase.labeling.batch import label_structures, parse_shard
    from diffase.labeling.gpaw_runner import GPAWNotFoundError
    from diffase.labeling.settings import LabelSettings

    shard = parse_shard(args.shard)
    settings = LabelSettings(mode=args.mode, basis=args.basis, ecut=args.ecut, h=args.h,
                             kpoint_density=args.kpoint_density, kpoint_cap=args.kpoint_cap,
                             smearing_width=args.smearing, grid=args.grid, timeout=args.timeout)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(), logging.FileHandler(out / f"label-{shard[0]}-of-{shard[1]}.log")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)
    try:
        report = label_structures(args.structures, out, settings=settings, shard=shard, limit=args.limit)
    except GPAWNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    print(f"{len(report.labelled)} labelled, {len(report.skipped)} already done, {len(report.failed)} failed "
          f"-> {out}")
    return 1 if report.failed and not (report.labelled or report.skipped) else 0
