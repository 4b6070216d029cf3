"""``diffase cathode``: Li insertion at the charge-density minima of crystals, Li-network and O-coordination
filters, MLIP relaxation and NEB barriers of the best few (:mod:`diffase.workflows.cathode`; its docstring lists the
output folder).

Example: ``diffase cathode /work/shared/data/electronic --only mp-675025,mp-754126 --neb 2 --out cathode/``.
Inputs are folders of crystals with densities: diffase label folders (``rho32``), folders of CHGCAR / AECCAR /
cube files (regridded to 32^3) or ChargeDIFF's ``structure/`` + ``charge_density/`` layout. Re-running the same
command resumes; a re-run with other settings is refused before anything is written.

Or generate them: ``diffase cathode --generate 64 --model chargediff-mp20 --region channel-1d-z --chemsys-groups
tm3d,oxide --out cathode/`` screens the valid crystals of a :class:`~diffase.generators.charge_guided.
ChargeGuidedGenerator` (low density in ``--region``, named ``gen-<sample>``) as they are made. A re-run generates
them again (the same crystals for the same seed and device) and skips those already screened; generation settings
that give other crystals under the same names are refused (use a new ``--out``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    from dataclasses import fields
    from types import SimpleNamespace

    from diffase.workflows.cathode_settings import CathodeSettings  # light: no pymatgen import

    d = SimpleNamespace(**{f.name: f.default for f in fields(CathodeSettings)})  # read without __post_init__, whose check imports numpy and pymatgen
    p = sub.add_parser("cathode", help="insert Li at density minima, filter by Li network and O coordination, "
                                       "relax, NEB of the best",
                       description="ChargeDIFF's cathode workflow on crystals with a charge density: Li at the "
                                   "density minima (pymatgen-analysis-defects), transition-metal oxides with 4- or "
                                   "6-fold O-coordinated Li and a percolating Li network kept, relaxed with an MLIP, "
                                   "NEB barriers of the best; streamed and resumable.")
    p.add_argument("inputs", nargs="*", help="folders: diffase labels (rho32), CHGCAR/AECCAR/cube files, or "
                                             "ChargeDIFF's structure/ + charge_density/ layout (or --generate)")
    g = p.add_argument_group("generate the crystals instead (ChargeGuidedGenerator around --region)")
    g.add_argument("--generate", type=int, default=None, metavar="N", help="generate N crystals with a density model")
    g.add_argument("--model", default="chargediff-mp20", help="joint model with the density field (name or path)")
    g.add_argument("--chemsys-groups", default=None, help="element groups to condition on, e.g. tm3d,oxide")
    g.add_argument("--target", default="low", help="density wanted in the region: low, high or e/A^3 (default low)")
    g.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default 1 with conditions)")
    g.add_argument("--num-levels", type=int, default=None, help="sampler levels (default: the model's)")
    g.add_argument("--resample", default=None, metavar="J,R", help="RePaint jump length and passes, e.g. 10,3")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated item names to run (label material ids or file "
                                                "names); default: every item")
    p.add_argument("--split", default="train", help="split of a ChargeDIFF layout (default train)")
    p.add_argument("--region", default=d.region, help="density region measured and drawn: channel-1d-x/y/z or "
                                                      f"slab-2d-x/y/z (default {d.region})")
    p.add_argument("--region-width", type=float, default=d.region_width,
                   help=f"fraction of each confined axis inside the region (default {d.region_width})")
    p.add_argument("--cutoff", type=float, default=d.li_li_cutoff,
                   help=f"Li-Li distance linking the network, Angstrom (default {d.li_li_cutoff})")
    p.add_argument("--li-o-cutoff", type=float, default=d.li_o_cutoff,
                   help=f"Li-O distance counted as coordination, Angstrom (default {d.li_o_cutoff})")
    p.add_argument("--coordinations", default=",".join(map(str, d.coordinations)),
                   help="O coordination numbers a kept Li site may have (default 4,6)")
    p.add_argument("--min-dimensionality", type=int, default=d.min_dimensionality, choices=(0, 1, 2, 3),
                   help=f"least Li-network dimensionality of a survivor (default {d.min_dimensionality})")
    p.add_argument("--max-avg-density", type=float, default=d.max_avg_density,
                   help=f"largest density averaged around an insertion site, e/A^3 (default {d.max_avg_density})")
    p.add_argument("--min-host-distance", type=float, default=d.min_host_distance,
                   help=f"closest host atom to an inserted Li, Angstrom (default {d.min_host_distance})")
    p.add_argument("--min-li-distance", type=float, default=d.min_li_distance,
                   help=f"closest pair of inserted Li, Angstrom (default {d.min_li_distance})")
    p.add_argument("--max-li", type=int, default=None, help="inserted Li per cell at most (default: no limit)")
    p.add_argument("--neb", type=int, default=3, metavar="N", help="NEB barriers of the best N survivors (default 3)")
    p.add_argument("--neb-hops", type=int, default=d.neb_hops, help="shortest distinct hops per crystal (default 1)")
    p.add_argument("--neb-min-length", type=float, default=d.neb_min_length,
                   help=f"NEB supercell lattice lengths at least, Angstrom (default {d.neb_min_length})")
    p.add_argument("--neb-images", type=int, default=d.neb_images, help=f"NEB images (default {d.neb_images})")
    p.add_argument("--neb-steps", type=int, default=d.neb_steps, help=f"NEB FIRE steps (default {d.neb_steps})")
    p.add_argument("--neb-fmax", type=float, default=d.neb_fmax, help="NEB force threshold, eV/A (default 0.1)")
    p.add_argument("--relax-steps", type=int, default=d.relax_steps,
                   help=f"FIRE steps per relaxation (default {d.relax_steps})")
    p.add_argument("--fmax", type=float, default=d.fmax, help="relaxation force threshold, eV/A (default 0.1)")
    p.add_argument("--relax-host", action="store_true",
                   help="relax each host with the MLIP before inserting Li and take its density from "
                        "--host-density-model (as ChargeDIFF relaxes generated crystals and recomputes the density)")
    p.add_argument("--host-density-model", default=d.host_density_model,
                   help=f"structure -> density model for --relax-host (default {d.host_density_model})")
    p.add_argument("--calculator", default="chgnet", help="MLIP: chgnet (default) or mattersim")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.set_defaults(func=run)


def parse_counts(text: str, flag: str = "--coordinations") -> tuple[int, ...]:
    """``'4,6'`` -> (4, 6); anything else than positive integers is refused."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated integers such as 4,6, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} needs at least one number, e.g. 4,6")
    return values


def generated_items(args):
    """The ``(name, Structure, rho)`` items of ``--generate``, made lazily; the model, conditions and region are
    loaded and checked here, before the output folder exists."""
    from diffase.generators.charge_guided import ChargeGuidedGenerator

    if args.inputs:
        raise ValueError("give input folders or --generate N, not both")
    groups = [g.strip() for g in (args.chemsys_groups or "").split(",") if g.strip()]
    try:
        target = float(args.target)
    except ValueError:
        target = args.target  # "low" / "high"; anything else is refused by the generator
    generator = ChargeGuidedGenerator(
        n_samples=args.generate, conditions={"chemsys_groups": groups} if groups else None, region=args.region,
        target=target,
        guidance_scale=args.guidance_scale, model=args.model, num_levels=args.num_levels,
        resample=parse_counts(args.resample, "--resample") if args.resample else None,
        region_width=args.region_width, seed=args.seed, device=args.device)
    generator.known_grids()
    return generator.density_items()


def read_inputs(inputs: list[str], only: str | None, split: str) -> list:
    """Density entries of every input folder (:func:`~diffase.data.electronic.density_sets.read_density_set`),
    restricted to the ``only`` names when given; unknown names are refused, naming them."""
    from diffase.data.electronic.density_sets import read_density_set

    entries = [e for folder in inputs for e in read_density_set(folder, split=split)]
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        missing = sorted(set(wanted) - {e.name for e in entries})
        if missing:
            raise ValueError(f"--only names {', '.join(missing)} not found in {', '.join(inputs)}")
        entries = [e for e in entries if e.name in wanted]
    return entries


def run(args) -> int:
    from diffase.runtime import configure_threads
    from diffase.workflows.cathode import cathode_screen
    from diffase.workflows.cathode_settings import CathodeSettings

    configure_threads(args.threads)
    settings = CathodeSettings(
        region=args.region, region_width=args.region_width, li_li_cutoff=args.cutoff, li_o_cutoff=args.li_o_cutoff,
        coordinations=parse_counts(args.coordinations), min_dimensionality=args.min_dimensionality,
        max_avg_density=args.max_avg_density, min_host_distance=args.min_host_distance,
        min_li_distance=args.min_li_distance, max_li=args.max_li, relax_steps=args.relax_steps, fmax=args.fmax,
        neb_hops=args.neb_hops, neb_min_length=args.neb_min_length, neb_steps=args.neb_steps,
        neb_fmax=args.neb_fmax, neb_images=args.neb_images, relax_host=args.relax_host,
        host_density_model=args.host_density_model)
    if args.generate is None and not args.inputs:
        raise ValueError("give input folders, or --generate N to generate the crystals")
    # every check before the output folder exists
    entries = generated_items(args) if args.generate is not None else read_inputs(args.inputs, args.only, args.split)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rows = cathode_screen(entries, args.out, settings, n_neb=args.neb, calculator=args.calculator,
                          device=args.device, say=say)
    survivors = [r for r in rows if r["survivor"]]
    print(f"{len(rows)} screened, {sum(bool(r['target_chemistry']) for r in rows)} target chemistry, "
          f"{len(survivors)} survivors, {sum(r['barrier'] is not None for r in rows)} NEB barriers -> "
          f"{Path(args.out) / 'results.csv'}")
    for r in sorted((r for r in rows if r["barrier"] is not None), key=lambda r: r["neb_rank"]):
        saddle = "" if r["saddle"] else f" (no saddle: the sites differ by {r['delta_energy']:+.3f} eV)"
        print(f"  {r['neb_rank']}. {r['name']} {r['formula']}: {r['relaxed_li_dimensionality']}D Li network, "
              f"barrier {r['barrier']:.3f} eV, largest climb {r['limiting_barrier']:.3f} eV{saddle} "
              f"({r['hop_length']:.2f} A hop, converged {r['neb_converged']})")
    return 0 if survivors else 1
