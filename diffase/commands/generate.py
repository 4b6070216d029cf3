"""``diffase generate``: sample crystals with a joint (types, coordinates, lattice) model, streamed to disk.

Example: ``diffase generate --n 100 --out gen.extxyz --condition band_gap=2.0 --guidance 1.0``.
"""

from __future__ import annotations

import sys

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
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase.generators import load_model
    from diffase.generators.joint import JointModel

    model = load_model(args.model, device=args.device)
    if not isinstance(model, JointModel):
        raise SystemExit(f"{args.model} is not a joint (types, coordinates, lattice) model; "
                         "`diffase generate` needs one (see `diffase models`)")
    conditions = dict(args.condition) or None
    try:
        result = model.generate(args.n, args.out, batch_size=args.batch_size, seed=args.seed,
                                num_atoms=args.num_atoms, conditions=conditions, guidance_scale=args.guidance,
                                num_levels=args.steps)
    except (ValueError, FileExistsError) as err:  # bad input: say what and how to fix, no traceback
        print(f"diffase generate: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result['written']} crystals to {result['path']} ({result['invalid']} invalid samples skipped)")
    return 0
