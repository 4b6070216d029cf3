"""Wall time of the GPAW labeller (``diffase label``) for 2-, 8- and 14-atom MP-20 cells, per atom and per k-point.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/label_gpaw.py [--data ../shared/data] [--ids mp-22862,mp-7801,...]``

Runs :func:`diffase.labeling.batch.label_structures` with the default settings (those of shared/data/electronic)
on each cell in a fresh folder, one at a time, serial GPAW, and writes ``benchmarks/results/label_gpaw.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure

from diffase.data.electronic.dataset import read_label
from diffase.labeling.batch import label_structures
from diffase.labeling.gpaw_runner import find_gpaw_python
from diffase.labeling.settings import LabelSettings

ROOT = Path(__file__).resolve().parents[1]
#: NaCl (2 atoms), CaGeN2 (8), Sc(CuS)3 (14), all from the MP-20 validation split.
DEFAULT_IDS = "mp-22862,mp-7801,mp-1219520"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpaw = subprocess.run([find_gpaw_python(), "-c", "import gpaw; print(gpaw.__version__)"], capture_output=True,
                          text=True).stdout.strip()
    return (f"{cpu}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f} at start; "
            f"GPAW {gpaw} via {find_gpaw_python()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--ids", default=DEFAULT_IDS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "label_gpaw.md"))
    args = parser.parse_args()

    table = pd.read_csv(Path(args.data) / "mp20" / "val.csv.gz").set_index("material_id")
    settings = LabelSettings()
    header = machine()
    print(header)
    print("settings:", settings.as_dict())
    rows = []
    for material_id in args.ids.split(","):
        structure = Structure.from_str(table.loc[material_id, "cif"], fmt="cif")
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            children0 = os.times().children_user + os.times().children_system
            report = label_structures([structure], out, settings=settings)
            wall = time.perf_counter() - t0
            children_cpu = os.times().children_user + os.times().children_system - children0
            if report.failed:
                raise SystemExit(f"{material_id} failed: see {out}/failures-0-of-1.jsonl")
            label = read_label(Path(out) / "0.npz")
        kpts = int(label["n_ibz_kpts"])
        rows.append({
            "material": f"{material_id} {structure.composition.reduced_formula}",
            "atoms": len(structure),
            "k-mesh": "x".join(str(k) for k in label["kpts"]),
            "irreducible k": kpts,
            "wall s": wall,
            "GPAW worker s": float(label["dft_seconds"]),
            "CPU s (worker)": children_cpu,
            "wall s / atom": wall / len(structure),
            "wall s / irreducible k": wall / kpts,
            "CPU s / atom": children_cpu / len(structure),
            "CPU s / irreducible k": children_cpu / kpts,
            "gap eV": float(label["gap"]),
            "Bader": " ".join(f"{q:+.2f}" for q in label["bader"]),
        })
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    text = (f"# GPAW labeller wall time\n\nMachine: {header}\n\nSettings: {settings.as_dict()}\n\n"
            f"Wall time covers the whole `label_structures` call for one structure: worker start, GPAW SCF, density, "
            f"DOS projections, Hirshfeld, all-electron density, Bader and writing the label. CPU s is the worker "
            f"subprocess's CPU time; wall above it means the core was shared.\n\n"
            + frame.to_markdown(index=False, floatfmt=".1f") + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
