"""``diffase train``: train or resume a score or joint model, from a recipe file or from flags."""

from __future__ import annotations

#: Flags that replace the recipe's (or the trainer's default) loop settings when given.
_OVERRIDES = ("epochs", "batch_size", "lr", "max_steps", "max_val")


def register(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) a model, e.g. from a recipe in recipes/",
                       description="Train the score model (default) or the model a --recipe names. Re-running "
                                   "with the same --out resumes. Flags given replace the recipe's values.")
    p.add_argument("train", nargs="?", help="training crystals: CSV with a 'cif' column, extxyz, ASE .db, ... "
                                            "(default: the recipe's)")
    p.add_argument("val", nargs="?", help="validation crystals, same formats (default: the recipe's)")
    p.add_argument("--recipe", help="recipe JSON (model, data, network, loop settings), e.g. recipes/score-mp20.json")
    p.add_argument("--out", help="run folder (last.pt, best.pt, log.csv; default: the recipe's)")
    p.add_argument("--epochs", type=int, help="default: the recipe's, else 30")
    p.add_argument("--batch-size", type=int, help="global batch, whatever --devices (default: the recipe's, else 32)")
    p.add_argument("--lr", type=float, help="default: the recipe's, else 1e-3")
    p.add_argument("--max-steps", type=int, help="stop after this many optimiser steps in total")
    p.add_argument("--max-val", type=int, help="validation crystals per evaluation (default: the recipe's, else 2000)")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; with --devices > 1, cpu runs DDP "
                                                    "over CPU processes (gloo), anything else over GPUs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: half the cores)")
    p.add_argument("--devices", type=int, default=1, help=">1: Lightning DDP over this many devices (score model)")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase.train.recipe import Recipe, load_recipe, train_recipe

    recipe = load_recipe(args.recipe) if args.recipe else Recipe(model="score")
    overrides = {k: getattr(args, k) for k in _OVERRIDES if getattr(args, k) is not None}
    best = train_recipe(recipe, train=args.train, val=args.val, out=args.out, overrides=overrides,
                        devices=args.devices, device=args.device, num_threads=args.threads,
                        limit_train=args.limit_train)
    print(f"best checkpoint: {best}")
    return 0
