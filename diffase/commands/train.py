"""``diffase train``: train or resume a score model (single device; see diffase.train.lightning for DDP)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="train (or resume) the equivariant score model",
                       description="Train the score model with denoising score matching. Re-running with the "
                                   "same --out resumes from its last.pt.")
    p.add_argument("train", help="training crystals: CSV with a 'cif' column, extxyz, ASE .db, ...")
    p.add_argument("val", help="validation crystals, same formats")
    p.add_argument("--out", required=True, help="run folder (last.pt, best.pt, log.csv)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps in total")
    p.add_argument("--max-val", type=int, default=2000, help="validation crystals per evaluation")
    p.add_argument("--limit-train", type=int, default=None, help="use only the first N training rows")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: half the cores)")
    p.add_argument("--devices", type=int, default=1, help=">1: Lightning DDP over this many GPUs")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffase.train.score_trainer import TrainConfig

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, max_steps=args.max_steps,
                         max_val=args.max_val)
    if args.devices > 1:
        from diffase.train.lightning import train_score_model_lightning

        best = train_score_model_lightning(args.train, args.val, args.out, config=config, devices=args.devices,
                                           limit_train=args.limit_train)
    else:
        from diffase.train.score_trainer import train_score_model

        best = train_score_model(args.train, args.val, args.out, config=config, device=args.device,
                                 num_threads=args.threads, limit_train=args.limit_train)
    print(f"best checkpoint: {best}")
    return 0
