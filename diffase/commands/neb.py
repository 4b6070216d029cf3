"""``diffase neb``: vacancy-hop migration barriers of a species with a climbing-image NEB."""

from __future__ import annotations

from diffase.commands.relax import add_calculator_arguments


def register(sub) -> None:
    p = sub.add_parser("neb", help="migration barriers of a species by vacancy hops (climbing-image NEB)",
                       description="For each symmetrically distinct hop of SPECIES up to --max-hop-length: a "
                                   "supercell with every length >= --min-length, one vacancy, endpoints relaxed, "
                                   "IDPP images, climbing-image NEB. Give a relaxed structure; its cell is kept.")
    p.add_argument("structure", help="one relaxed crystal (CIF, POSCAR, extxyz, ...)")
    p.add_argument("--species", default="Li", help="migrating element (default Li)")
    add_calculator_arguments(p)
    p.add_argument("--max-hop-length", type=float, default=4.0, help="Angstrom (default 4.0)")
    p.add_argument("--max-hops", type=int, default=10)
    p.add_argument("--images", type=int, default=7, help="intermediate images (default 7)")
    p.add_argument("--min-length", type=float, default=10.0, help="supercell lattice lengths, Angstrom (default 10)")
    p.add_argument("--fmax", type=float, default=0.05, help="NEB force threshold, eV/Angstrom (default 0.05)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--plot", default=None, help="PNG of the energy profiles")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase.calculators import load_mlip
    from diffase.data.io import read_structures
    from diffase.simulate.neb import neb_barrier, plot_neb, vacancy_hops

    [(_, structure)] = read_structures(args.structure, limit=1)
    potential = load_mlip(args.calculator, args.device, checkpoint=args.checkpoint, num_threads=args.threads)
    results = []
    print(f"{'hop':>3} {'length A':>8} {'barrier eV':>10} {'dE eV':>7} {'atoms':>5} {'steps':>5}  conv")
    for k, hop in enumerate(vacancy_hops(structure, args.species, max_hop_length=args.max_hop_length,
                                         max_hops=args.max_hops)):
        r = neb_barrier(hop, potential, n_images=args.images, min_length=args.min_length, fmax=args.fmax,
                        steps=args.steps)
        results.append(r)
        print(f"{k:>3} {r.hop_length:>8.3f} {r.barrier:>10.3f} {r.delta_energy:>7.3f} {r.n_atoms:>5} "
              f"{r.steps:>5}  {r.converged}", flush=True)
    if args.plot:
        print(f"wrote {plot_neb(results, args.plot)}")
    return 0
