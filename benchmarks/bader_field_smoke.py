"""Smoke-scale measurement of the Bader-charge field (issue 13): what a small A/X/L + Bader joint model trained
on the few labelled crystals generates, with and without the charge-neutrality projection.

Model: the run of ``recipes/experimental/joint-bader-tiny.json`` (train = validation = the format-2 labels of
../shared/data/electronic; a fit to ~31 crystals, not a generalising model, and not shipped). Samples: ``--n``
crystals, atom counts drawn from the training histogram, all 1000 levels, one corrector step, seed ``--seed``;
the same seed again with the neutrality projection removed (same random draws, so the difference is the
constraint). Reports validity, the total charge per crystal, and per element the mean generated Bader charge
next to the label mean (sign agreement is the least a charge field must get right). Writes Markdown to ``--out``.

    python benchmarks/bader_field_smoke.py --model runs/joint-bader-tiny/best.pt --n 128
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections import defaultdict
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch
from pymatgen.core import Element

from diffase.data import fields as F
from diffase.data.descriptor_records import load_descriptor_records
from diffase.generators.joint import JointModel
from diffase.runtime import configure_threads


def per_element(records) -> dict[str, list[float]]:
    out = defaultdict(list)
    for rec in records:
        for z, q in zip(rec[F.ATOMIC_NUMBERS], rec[F.BADER_CHARGE]):
            out[Element.from_Z(int(z)).symbol].append(float(q))
    return out


def electronegative_takes_electrons(records) -> tuple[int, int]:
    """Crystals (with >= 2 elements of known Pauling electronegativity) in which the most electronegative element
    has the lowest mean charge, and how many such crystals there are."""
    hits = count = 0
    for rec in records:
        by_el = defaultdict(list)
        for z, q in zip(rec[F.ATOMIC_NUMBERS], rec[F.BADER_CHARGE]):
            by_el[int(z)].append(float(q))
        chi = {z: Element.from_Z(z).X for z in by_el}
        if len(by_el) < 2 or any(np.isnan(x) for x in chi.values()):
            continue
        count += 1
        hits += int(max(chi, key=chi.get) == min(by_el, key=lambda z: np.mean(by_el[z])))
    return hits, count


def share(pair: tuple[int, int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def sample_all(model: JointModel, n: int, seed: int, batch_size: int) -> tuple[list[dict], float]:
    start = time.perf_counter()
    records = [r for batch in model.sample(n, seed=seed, batch_size=batch_size) for r in batch]
    return records, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/joint-bader-tiny/best.pt")
    p.add_argument("--labels", default="../shared/data/electronic")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/bader_field_smoke.md")
    args = p.parse_args()
    configure_threads(1)
    ckpt = torch.load(args.model, weights_only=True)
    model = JointModel.from_checkpoint(ckpt, device="cpu")
    labels, _, skipped = load_descriptor_records(args.labels, [F.BADER_CHARGE])

    constrained, secs = sample_all(model, args.n, args.seed, args.batch_size)
    model.fields["bader_charge"].projection = None
    free, free_secs = sample_all(model, args.n, args.seed, args.batch_size)

    def totals(records):
        return np.array([abs(r[F.BADER_CHARGE].sum()) for r in records])

    lines = [
        "# Bader-charge field: smoke-scale measurement (not a shipped model)", "",
        (f"Model `{args.model}`: step {ckpt['train']['step']}, {ckpt['train']['n_train']} training crystals "
         f"(= validation crystals; {skipped} label files without Bader charges skipped), "
         f"{ckpt['train']['n_parameters']:,} parameters, best validation loss {ckpt['train']['best_val_loss']:.3f}, "
         f"{ckpt['train']['wall_time_s']:.0f} s of training on one CPU thread."),
        (f"Samples: {args.n} crystals, 1000 levels, 1 corrector step, seed {args.seed}; machine {platform.machine()}, "
         f"one torch thread, other jobs on the 2 cores; {secs:.0f} s with the projection, {free_secs:.0f} s without."),
        "",
        "| | with charge neutrality | without (same seed) |",
        "| --- | --- | --- |",
        (f"| valid (no mask token left) | {sum(r['valid'] for r in constrained)}/{args.n} | "
         f"{sum(r['valid'] for r in free)}/{args.n} |"),
        (f"| abs(total charge) per crystal, median / max (e) | {np.median(totals(constrained)):.2e} / "
         f"{totals(constrained).max():.2e} | {np.median(totals(free)):.3f} / {totals(free).max():.3f} |"),
        (f"| std of site charges (e) | {np.std(np.concatenate([r[F.BADER_CHARGE] for r in constrained])):.3f} | "
         f"{np.std(np.concatenate([r[F.BADER_CHARGE] for r in free])):.3f} |"),
        (f"| crystals whose most electronegative element has the lowest mean charge | "
         f"{share(electronegative_takes_electrons([r for r in constrained if r['valid']]))} | "
         f"{share(electronegative_takes_electrons([r for r in free if r['valid']]))} |"),
        "",
        ("The labels themselves (DFT Bader charges of the training crystals): the most electronegative element has the "
         f"lowest mean charge in {share(electronegative_takes_electrons(labels))} crystals."),
        "",
        "Per element (valid samples with the projection; elements with at least 5 generated sites):",
        "",
        "| element | generated sites | mean generated q (e) | label sites | mean label q (e) | same sign |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    gen = per_element([r for r in constrained if r["valid"]])
    ref = per_element(labels)
    agree = total = 0
    for el in sorted(gen, key=lambda e: -len(gen[e])):
        if len(gen[el]) < 5:
            continue
        if el in ref:
            same = np.sign(np.mean(gen[el])) == np.sign(np.mean(ref[el]))
            agree, total = agree + int(same), total + 1
            lines.append(f"| {el} | {len(gen[el])} | {np.mean(gen[el]):+.3f} | {len(ref[el])} | "
                         f"{np.mean(ref[el]):+.3f} | {'yes' if same else 'no'} |")
        else:
            lines.append(f"| {el} | {len(gen[el])} | {np.mean(gen[el]):+.3f} | 0 | | |")
    lines += ["", f"Sign of the per-element mean charge as in the labels: {agree} of {total} elements.", "",
              ("Read with care: the model saw only these labelled crystals (validation = training), so agreement "
              "with their per-element means measures fit, not generalisation; no structure quality (validity, "
              "stability, novelty) and no DFT recompute of generated charges is measured here. With and without "
              "the projection the samples share seeds but not trajectories (the projection changes what the network "
              "sees), so their differences other than the total charge are not attributable to the constraint alone.")]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
