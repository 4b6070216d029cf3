"""Write the EMA weights of a run's ``last.pt`` (the weights at its last step) as a shippable checkpoint.

The training loop's ``best.pt`` holds the EMA weights with the lowest validation loss; a model chosen by another
criterion at the end of a run (dos-mp20: the held-out validation materials' generation protocol) is the EMA of
``last.pt``. Usage: ``python scripts/ema_checkpoint.py runs/dos-mp20/last.pt models/dos-mp20.pt``.
"""

from __future__ import annotations

import sys

import torch

from diffase.hub import read_checkpoint

RESUME_KEYS = ("ema_state_dict", "optimizer", "warmup", "plateau", "rng", "path", "step", "epoch", "batch_in_epoch",
               "wall_time_s", "best_val")


def main(src: str, dst: str) -> None:
    ckpt = read_checkpoint(src)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema_state_dict"].items() if k.startswith("module.")}
    out = {k: v for k, v in ckpt.items() if k not in RESUME_KEYS}
    out["state_dict"] = ema
    out["train"] = {**ckpt["train"], "weights": "EMA at the last step (scripts/ema_checkpoint.py)"}
    torch.save(out, dst)
    print(f"{dst}: EMA weights of {src} at step {ckpt['train']['step']}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
