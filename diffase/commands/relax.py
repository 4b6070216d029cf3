"""``diffase relax``: relax crystals with an MLIP and stream them to an extxyz file."""

from __future__ import annotations


def add_calculator_arguments(p) -> None:
    """Options shared by the simulation commands: which MLIP, where, how many threads."""
    p.add_argument("--calculator", default="chgnet", help="chgnet | mattersim (default: chgnet)")
    p.add_argument("--checkpoint", default=None,
                   help="MatterSim checkpoint (.pth); default: $DIFFASE_MATTERSIM_CHECKPOINT")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")


def register(sub) -> None:
    p = sub.add_parser("relax", help="relax crystals with an MLIP (CHGNet by default)",
                       description="Relax positions and cell (FIRE or BFGS + FrechetCellFilter) of every crystal "
                                   "in INPUT; each relaxed crystal is appended to --out as soon as it is done, "
                                   "with energies (eV), Fmax (eV/Angstrom), steps and convergence in its header.")
    p.add_argument("input", help="crystals: CIF, POSCAR, extxyz, ASE .db, CSV with a 'cif' column, ...")
    p.add_argument("--out", required=True, help="extxyz file to append relaxed crystals to")
    add_calculator_arguments(p)
    p.add_argument("--fmax", type=float, default=0.1, help="force threshold, eV/Angstrom (default 0.1)")
    p.add_argument("--steps", type=int, default=500, help="optimizer step limit (default 500)")
    p.add_argument("--optimizer", default="FIRE", help="FIRE | BFGS | LBFGS")
    p.add_argument("--fixed-cell", action="store_true", help="relax positions only")
    p.add_argument("--limit", type=int, default=None, help="relax only the first N crystals")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase.calculators import load_mlip
    from diffase.data.io import read_structures
    from diffase.simulate.relax import relax_many

    named = read_structures(args.input, limit=args.limit)
    potential = load_mlip(args.calculator, args.device, checkpoint=args.checkpoint, num_threads=args.threads)
    print(f"{'name':<24} {'atoms':>5} {'E0 eV/at':>10} {'E eV/at':>10} {'Fmax0':>7} {'Fmax':>7} {'steps':>5}  conv")

    def report(name, r) -> None:
        print(f"{name:<24} {r.n_atoms:>5} {r.initial_energy_per_atom:>10.4f} {r.final_energy_per_atom:>10.4f} "
              f"{r.initial_fmax:>7.3f} {r.final_fmax:>7.3f} {r.steps:>5}  {r.converged}", flush=True)

    relax_many([s for _, s in named], potential, out=args.out, names=[n for n, _ in named], on_result=report,
               fmax=args.fmax, steps=args.steps, optimizer=args.optimizer, relax_cell=not args.fixed_cell)
    print(f"wrote {len(named)} relaxed crystals to {args.out}")
    return 0
