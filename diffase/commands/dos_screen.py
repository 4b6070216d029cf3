"""``diffase dos-screen``: crystals whose site DOS matches a target, relaxed, filtered by formation energy and ranked
by DOS similarity (:mod:`diffase.workflows.dos_screen`; its docstring lists the output folder).

Example: ``diffase dos-screen --target mp-1234.npz --sites 0 --template Au3Ni.cif --t-start 0.5 --samples 50
--elemental-references 2023-02-07-mp-elemental-reference-entries.json.gz --out screen/``. Re-running the same
command resumes; a re-run with other settings is refused before anything is written.

Targets (``--target``): a label file (``.npz``, :mod:`diffase.data.electronic.dataset`), a pymatgen ``CompleteDos``
(``.json``/``.json.gz``, or a ``vasprun.xml``), a DOSMatGen JSON list (``--record`` picks a ``structure_id``; its
crystal sets the number of atoms when there is no template), or an array (``.npy`` or text, n_sites x n_energies)
with ``--energies`` (its grid, E - E_F in eV: ``E_MIN:E_MAX:N`` or a text file) unless it is on the model's grid.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("dos-screen", help="generate crystals for a site-DOS target, relax, filter and rank them",
                       description="Generate crystals conditioned on a site DOS (DOSMatGen), relax them with an "
                                   "MLIP, keep formation energies below a threshold, rank by the surrogate's DOS "
                                   "similarity, optionally check the best with GPAW; streamed and resumable.")
    p.add_argument("--target", required=True, help="label .npz, CompleteDos .json(.gz), vasprun.xml, DOSMatGen "
                                                    ".json list, or an array (.npy / text)")
    p.add_argument("--record", default=None, help="structure_id of a DOSMatGen file's record (default: the first)")
    p.add_argument("--energies", default=None,
                   help="energy grid of an array target: E_MIN:E_MAX:N (write --energies=-10:10:400) or a text file")
    p.add_argument("--sites", default=None, help="comma-separated site indices to condition (default: every "
                                                 "target row); the other sites are free")
    p.add_argument("--total", action="store_true", help="the target is a total DOS: every site gets total/n_atoms")
    p.add_argument("--template", default=None, help="template structure file (CIF, POSCAR, ...)")
    p.add_argument("--t-start", type=float, default=None, help="template start time in (0, 1] (paper: 0.2, 0.5, 1)")
    p.add_argument("--num-atoms", type=int, default=None, help="atoms of a de novo crystal")
    p.add_argument("--fix-species", default=None,
                   help="sites whose element is kept: '0,2' (template's elements) or '0:Ni,2:Au'")
    p.add_argument("--samples", type=int, default=50, help="crystals to generate (default 50)")
    p.add_argument("--guidance-scale", type=float, default=2.0, help="CFG scale s (DOSMatGen's w = s - 1; 2.0)")
    p.add_argument("--model", default="dos-mp20", help="joint model with site-DOS conditions (name or path)")
    p.add_argument("--surrogate", default="site-labels-mp20", help="structure -> site DOS model used for ranking")
    p.add_argument("--levels", type=int, default=None, help="sampler levels (default: the model's)")
    p.add_argument("--batch-size", type=int, default=64, help="crystals per network call (changes the samples)")
    p.add_argument("--elemental-references", required=True,
                   help="JSON(.gz) {symbol: ComputedEntry}, e.g. 2023-02-07-mp-elemental-reference-entries.json.gz")
    p.add_argument("--max-formation-energy", type=float, default=0.0,
                   help="keep crystals with a formation energy <= this, eV/atom (default 0)")
    p.add_argument("--calculator", default="chgnet", help="MLIP for relaxation: chgnet (default) or mattersim")
    p.add_argument("--relax-steps", type=int, default=100, help="FIRE steps per relaxation (default 100: a screen)")
    p.add_argument("--fmax", type=float, default=0.1, help="relaxation force threshold, eV/Angstrom")
    p.add_argument("--top", type=int, default=5, help="overlay plots of the best N (default 5)")
    p.add_argument("--gpaw-check", type=int, default=0, metavar="N",
                   help="recompute the site DOS of the best N with GPAW (skipped with a message without GPAW)")
    p.add_argument("--out", required=True, help="output folder (re-run to resume)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.set_defaults(func=run)


def energy_grid(text: str | None):
    """``E_MIN:E_MAX:N`` -> N evenly spaced energies; a path -> the numbers in that text file; None -> None."""
    import numpy as np

    if text is None:
        return None
    parts = text.split(":")
    if len(parts) == 3 and not Path(text).exists():
        return np.linspace(float(parts[0]), float(parts[1]), int(parts[2]))
    return np.loadtxt(text).ravel()


def read_target(path: str, record: str | None):
    """``(target, its crystal or None)`` from a target file (module docstring)."""
    import numpy as np

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such target file: {p}")
    name = p.name.lower()
    if name.endswith(".npz"):
        return str(p), None
    if name.endswith((".xml", ".xml.gz")):
        from pymatgen.io.vasp import Vasprun

        return Vasprun(str(p), parse_potcar_file=False).complete_dos, None
    if name.endswith((".json", ".json.gz")):
        from monty.serialization import loadfn

        data = loadfn(str(p))
        if isinstance(data, list):
            from diffase.data.electronic.dosmatgen_json import read_dosmatgen_json

            items = read_dosmatgen_json(p)
            chosen = [r for r in items if record is None or r["structure_id"] == record]
            if not chosen:
                raise ValueError(f"{p} has no record {record!r}; its ids: {', '.join(r['structure_id'] for r in items[:10])}")
            return chosen[0]["site_dos"], chosen[0]["structure"]
        from pymatgen.electronic_structure.dos import CompleteDos

        return (data if isinstance(data, CompleteDos) else CompleteDos.from_dict(data)), None
    return (np.load(p) if name.endswith(".npy") else np.loadtxt(p)), None


def fix_species(text: str | None):
    """``'0,2'`` -> [0, 2]; ``'0:Ni,2:Au'`` -> {0: 'Ni', 2: 'Au'}; None -> None."""
    if not text:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if all(":" in t for t in items):
        return {int(t.split(":")[0]): t.split(":")[1] for t in items}
    return [int(t) for t in items]


def run(args) -> int:
    from diffase.data.io import read_structures
    from diffase.generators.dos_conditioned import DOSConditionedGenerator
    from diffase.runtime import configure_threads
    from diffase.workflows.dos_screen import dos_screen

    configure_threads(args.threads)
    target, crystal = read_target(args.target, args.record)
    template = read_structures(args.template)[0][1] if args.template else None
    num_atoms = args.num_atoms if args.num_atoms is not None or template is not None or crystal is None else len(crystal)
    sites = [int(i) for i in args.sites.split(",")] if args.sites else None
    generator = DOSConditionedGenerator(
        target, sites=sites, n_samples=args.samples, guidance_scale=args.guidance_scale, model=args.model,
        t_start=args.t_start, fix_species=fix_species(args.fix_species), num_atoms=num_atoms,
        surrogate=args.surrogate, seed=args.seed, energies=energy_grid(args.energies), total=args.total,
        num_levels=args.levels, batch_size=args.batch_size, device=args.device)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    rows = dos_screen(generator, args.out, template=template, elemental_references=args.elemental_references,
                      calculator=args.calculator, relax_steps=args.relax_steps, fmax=args.fmax,
                      max_formation_energy=args.max_formation_energy, top=args.top, gpaw_check=args.gpaw_check,
                      device=args.device, say=say)
    ranked = [r for r in rows if r.get("rank")]
    print(f"{len(rows)} relaxed, {sum(r['kept'] for r in rows)} with E_f <= {args.max_formation_energy} eV/atom, "
          f"{len(ranked)} ranked -> {Path(args.out) / 'ranking.csv'}")
    print(f"{'rank':>4} {'sample':>6} {'formula':>12} {'E_f (eV/at)':>11} {'DOS MAE':>8} {'GPAW MAE':>8}")
    for r in ranked[: args.top]:
        gpaw = f"{r['gpaw_dos_mae']:.3f}" if r.get("gpaw_dos_mae") is not None else ""
        print(f"{r['rank']:>4} {r['sample']:>6} {r['structure'].composition.reduced_formula:>12} "
              f"{r['formation_energy_per_atom']:>11.3f} {r['dos_mae']:>8.3f} {gpaw:>8}")
    return 0 if ranked else 1
