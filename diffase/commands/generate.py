"""``diffase generate``: sample crystals with a joint (types, coordinates, lattice) model, streamed to disk.

Example: ``diffase generate --n 100 --out gen.extxyz --condition band_gap=2.0 --guidance 1.0``.

``<out>.settings.json`` records the model (name and checkpoint SHA-256), conditions, guidance, atom count,
levels, batch size and seed; a re-run into the same file with any of them changed is refused before the model
is loaded, naming them (:mod:`diffase.resume`); ``--n`` may change. At the end the crystals in the file are
counted structurally valid or not, as the evaluation does (:func:`diffase.analysis.validity.structure_valid`).

``--descriptors`` (a model with descriptor fields, e.g. Bader charges or atomic-DOS latents): the per-site
descriptors are per-atom extxyz arrays (``bader_charge`` e, ``atomic_dos`` states/eV on the autoencoder's grid,
``ados_latent``, ``dummy_descriptor``; the library writes them for every such model) and a per-crystal summary
``<out>.descriptors.csv`` is written at the end (:mod:`diffase.analysis.descriptor_summary`: formula, n_atoms,
total charge, DOS at E_F, ...). A structure-only model is refused with this flag.
"""

from __future__ import annotations

DEFAULT_JOINT_MODEL = "joint-mp20"


def _condition(text: str) -> tuple[str, object]:
    import argparse

    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"--condition expects NAME=VALUE (e.g. band_gap=2.0), got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        return name, value  # e.g. chemical_system=Li-Fe-O


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate crystals with a joint diffusion model",
                       description="Sample crystals batch by batch; each finished batch is appended to --out "
                                   "(extxyz), so an interrupted run keeps what it made and resumes when run again "
                                   "with the same arguments.")
    p.add_argument("--n", type=int, default=100, help="number of crystals")
    p.add_argument("--out", default="generated.extxyz", help="output extxyz file (appended batch by batch)")
    p.add_argument("--model", default=DEFAULT_JOINT_MODEL, help="checkpoint name or path (see `diffase models`)")
    p.add_argument("--condition", type=_condition, action="append", default=[], metavar="NAME=VALUE",
                   help="condition the model was trained with; repeat for several")
    p.add_argument("--guidance", type=float, default=None,
                   help="guidance scale: 0 unconditional, 1 conditional (default when a condition is given), >1 stronger")
    p.add_argument("--num-atoms", type=int, default=None, help="atoms per crystal (default: training distribution)")
    p.add_argument("--steps", type=int, default=None, help="sampling levels (default: the model's 1000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--descriptors", action="store_true",
                   help="model with descriptor fields: per-site descriptors as per-atom extxyz arrays plus a "
                        "per-crystal summary <out>.descriptors.csv")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from diffase.data.structures import MIN_DISTANCE
    from diffase.generators import load_model
    from diffase.generators.joint import JointModel
    from diffase.resume import check_resume, model_fingerprint, write_settings

    if args.n < 1 or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be >= 1, got {args.n} and {args.batch_size}")
    out = Path(args.out)
    settings_path = out.with_name(out.name + ".settings.json")
    settings = {**model_fingerprint(args.model), "conditions": dict(args.condition), "guidance": args.guidance,
                "num_atoms": args.num_atoms, "steps": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    resuming = check_resume(settings_path, settings, what="generate")  # before the model is even loaded
    model = load_model(args.model, device=args.device)
    if not isinstance(model, JointModel):
        raise ValueError(f"{args.model} is not a joint (types, coordinates, lattice) model; "
                         "`diffase generate` needs one (see `diffase models`)")
    if args.descriptors and not model.descriptor_keys:
        raise ValueError(f"--descriptors: {args.model} generates the structure only (no descriptor fields); use a "
                         "joint model trained with descriptor_fields (e.g. bader_charge, ados_latent) or drop the flag")
    write_settings(settings_path, settings)
    try:
        result = model.generate(args.n, out, batch_size=args.batch_size, seed=args.seed, num_atoms=args.num_atoms,
                                conditions=dict(args.condition) or None, guidance_scale=args.guidance,
                                num_levels=args.steps)
    except (ValueError, FileExistsError):  # refused before the first batch: leave nothing of this call behind
        if not resuming and not out.with_name(out.name + ".progress.json").exists():
            settings_path.unlink()
        raise
    n_valid, n_read = structurally_valid(out)
    print(f"wrote {result['written']} crystals to {result['path']} ({result['invalid']} invalid samples with "
          f"undecided atom types skipped); structurally valid: {n_valid} of {n_read} (no two atoms closer than "
          f"{MIN_DISTANCE} Angstrom, cell volume >= 0.1 Angstrom^3, as the evaluation counts)")
    if args.descriptors:
        summary = write_descriptor_summary(model, out)
        print(f"per-site descriptors in the per-atom arrays of {out}; per-crystal summary: {summary}")
    return 0


def write_descriptor_summary(model, out) -> object:
    """Write ``<out>.descriptors.csv`` (:func:`diffase.analysis.descriptor_summary.descriptor_rows`) and return
    its path."""
    import pandas as pd

    from diffase.analysis.descriptor_summary import descriptor_rows
    from diffase.generators.descriptor_decoding import AUTOENCODER_ENTRY, dos_decoder

    grid = dos_decoder(model.meta).config.grid() if AUTOENCODER_ENTRY in model.meta else None
    path = out.with_name(out.name + ".descriptors.csv")
    pd.DataFrame(descriptor_rows(out, grid)).to_csv(path, index=False)
    return path


def structurally_valid(path) -> tuple[int, int]:
    """``(valid, all)`` crystals of an extxyz file by :func:`diffase.analysis.validity.structure_valid`."""
    from diffase.analysis.validity import structure_valid
    from diffase.data.io import read_structures

    structures = [s for _, s in read_structures(path)] if path.exists() and path.stat().st_size else []
    return sum(structure_valid(s) for s in structures), len(structures)
