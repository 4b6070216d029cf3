"""Inpainting throughput with many hosts per call (issue 14, item 1): hosts per minute of the sampling stage.

Hosts: the first ``--hosts`` MP-20 validation crystals with Li and at most 20 atoms, Li removed and put back
(as ``inpainting_reconstruction.py``), ``--samples`` samples each, model score-mp20. For each sampler setting
(``quick``: T = 200, r = 3, j = 10, M = 1; ``paper``: M = 5) it times

* one host per call (``inpaint_guests`` on each host in turn, the model loaded once, as a loop over
  ``apply_transformation`` would), on the first ``--single`` hosts, and
* all hosts in one call, the samples of all hosts sharing network batches of at most ``--max-atoms`` atoms.

Only the sampling is timed: the MLIP relaxation of the candidates is per candidate whether the hosts share a
call or not (``benchmarks/results/inpainting.md`` has its cost). A batch-size sweep (``--sweep-levels`` noise
levels, M = 1, no resampling, all hosts) shows the seconds per network call and host for each atom limit,
which is what picks ``--max-atoms`` on a machine. Writes a Markdown table to ``--out``.

    python benchmarks/multi_host_throughput.py --hosts 20 --single 3 --settings quick,paper
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from diffase.data.batch import batch_slices
from diffase.data.io import read_table
from diffase.generators import load_model
from diffase.generators.inpainting import (
    InpaintingSettings,
    inpaint_guests,
)
from diffase.runtime import configure_threads

SETTINGS = {"quick": InpaintingSettings(n_corrector=1), "paper": InpaintingSettings()}
SWEEP_ATOMS = (32, 64, 128, 256, None)


def li_hosts(table: Path, n: int) -> list[tuple[str, object, dict[str, int]]]:
    """``(id, host, {"Li": count})`` of the first ``n`` crystals of ``table`` with Li and <= 20 atoms."""
    out = []
    for name, s in read_table(table):
        if "Li" in s.composition and len(s) <= 20 and len(s.composition) > 1:
            host = s.copy()
            host.remove_species(["Li"])
            out.append((name, host, {"Li": int(s.composition["Li"])}))
            if len(out) == n:
                break
    return out


def time_call(hosts, guests, settings: InpaintingSettings, model, n_samples: int, host_ids=None) -> float:
    """Wall seconds of one ``inpaint_guests`` call that samples every host."""
    t0 = time.perf_counter()
    for _ in inpaint_guests(hosts, guests, n_samples=n_samples, model=model, settings=settings, seed=0,
                            device="cpu", host_ids=host_ids):
        pass
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", default=str(Path(__file__).resolve().parents[2] / "shared/data/mp20/val.csv.gz"))
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--single", type=int, default=3, help="hosts timed one per call")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--settings", default="quick,paper")
    p.add_argument("--max-atoms", type=int, default=128)
    p.add_argument("--sweep-levels", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/multi_host_throughput.md")
    args = p.parse_args()
    configure_threads(1)
    model = load_model("score-mp20", "cpu")
    cases = li_hosts(Path(args.table), args.hosts)
    hosts, guests = [c[1] for c in cases], [c[2] for c in cases]
    atoms = sum(len(h) + sum(g.values()) for h, g in zip(hosts, guests))
    header = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, 1 thread, load "
              f"average {os.getloadavg()[0]:.1f} at start. Model score-mp20 on CPU; {len(hosts)} MP-20 val hosts "
              f"(Li removed, {atoms / len(hosts):.1f} atoms per crystal with the Li on average), {args.samples} "
              f"samples each, seed 0. Script: `benchmarks/multi_host_throughput.py`.")
    print(header, flush=True)
    time_call(hosts[:1], guests[:1], InpaintingSettings(num_levels=4, n_resample=1, n_corrector=1), model, 1)  # warm-up

    lines = ["# Inpainting throughput: hosts per call", "", header, "",
             f"## Batch size (all {len(hosts)} hosts in one call; {args.sweep_levels} levels, M = 1, r = 1)", "",
             "| atoms per batch at most | batches | wall s | ms per noise level and host |", "|---|---|---|---|"]
    sweep = InpaintingSettings(num_levels=args.sweep_levels, n_resample=1, n_corrector=1)
    sizes = [len(h) + sum(g.values()) for h, g in zip(hosts, guests) for _ in range(args.samples)]
    for max_atoms in SWEEP_ATOMS:
        settings = InpaintingSettings(**{**sweep.to_dict(), "max_atoms": max_atoms, "batch_size": 1024})
        seconds = time_call(hosts, guests, settings, model, args.samples)
        lines.append(f"| {max_atoms or 'no limit'} | {len(batch_slices(sizes, 1024, max_atoms))} | {seconds:.1f} | "
                     f"{seconds / args.sweep_levels / len(hosts) * 1000:.1f} |")
        print(lines[-1], flush=True)

    lines += ["", "## Hosts per minute of the sampling stage", "",
              "| setting | hosts per call | atoms per batch at most | hosts timed | wall s | s per host | hosts/min |",
              "|---|---|---|---|---|---|---|"]
    for name in args.settings.split(","):
        base = SETTINGS[name]
        single = [time_call([hosts[i]], [guests[i]], base, model, args.samples, host_ids=[i])
                  for i in range(args.single)]
        lines.append(f"| {name} | 1 | (one host) | {args.single} | {sum(single):.0f} | {sum(single) / args.single:.1f} "
                     f"| {60 * args.single / sum(single):.2f} |")
        print(lines[-1], flush=True)
        batched = InpaintingSettings(**{**base.to_dict(), "max_atoms": args.max_atoms, "batch_size": 1024})
        seconds = time_call(hosts, guests, batched, model, args.samples)
        lines.append(f"| {name} | {len(hosts)} | {args.max_atoms} | {len(hosts)} | {seconds:.0f} | "
                     f"{seconds / len(hosts):.1f} | {60 * len(hosts) / seconds:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Load average at the end: {os.getloadavg()[0]:.1f}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
