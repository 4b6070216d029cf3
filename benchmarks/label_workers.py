"""Throughput of ``diffase label --workers N``: structures per hour at 1 and 2 single-threaded workers.

Usage: ``nice -n 10 python benchmarks/label_workers.py [--data ../shared/data] [--count 6] [--preset fast]``

Labels the ``--count`` 2-atom structures of shared/data/electronic that come first by name, with each worker count
in a fresh folder, through :func:`diffase.labeling.workers.label_structures_in_parallel` (so process start-up is
included), and writes ``benchmarks/results/label_workers.md``. Wall time is what a user waits; on a machine
shared with other jobs it depends on their load, which the table records (1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
from label_gpaw import machine  # benchmarks/ is on sys.path when this file runs as a script

from diffase.data.electronic.dataset import label_structure, read_label
from diffase.labeling.settings import LabelSettings
from diffase.labeling.workers import label_structures_in_parallel

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_workers.md"))
    args = parser.parse_args()

    labels = [read_label(p) for p in sorted((Path(args.data) / "electronic").glob("*.npz"))]
    structures = [label_structure(label) for label in labels if len(label["hirshfeld"]) == 2][: args.count]
    settings = LabelSettings.from_preset(args.preset)
    header = machine()
    print(header, flush=True)
    rows = []
    for workers in map(int, args.workers.split(",")):
        with tempfile.TemporaryDirectory() as out:
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            children0 = os.times().children_user + os.times().children_system
            report = label_structures_in_parallel(structures, out, workers=workers, settings=settings)
            wall = time.perf_counter() - t0
        rows.append({"workers": workers, "structures": len(report.labelled), "failed": len(report.failed),
                     "wall s": wall, "structures / hour": 3600 * len(report.labelled) / wall,
                     "CPU s (workers, their GPAW)": os.times().children_user + os.times().children_system - children0,
                     "load before": load_before, "load after": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    text = (f"# `diffase label --workers N`: throughput\n\nRan on: {header}\n\nPreset `{args.preset}`, "
            f"{len(structures)} two-atom structures from shared/data/electronic ("
            + ", ".join(s.composition.reduced_formula for s in structures) + "), each worker count in a fresh folder, "
            "start-up included. The machine was shared with other users' jobs (load averages in the table), so the "
            "wall times and the ratio between them are noisy. The workers share nothing but the output folder, so "
            "their gain is bounded by the cores that are free.\n\n"
            + pd.DataFrame(rows).astype({"workers": str, "structures": str, "failed": str}).to_markdown(
                index=False, floatfmt=".1f") + "\n")
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
