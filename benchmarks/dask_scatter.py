"""Speed-up of Dask scatter (:func:`diffase.parallel.scatter_map`): CHGNet relaxations on 1 vs 2 single-threaded
workers of a ``LocalCluster``.

Usage: ``nice -n 10 python benchmarks/dask_scatter.py [--data ../shared/data] [--count 8] [--workers 1,2]``

Takes the first ``--count`` MP-20 validation structures with 4 to 8 sites, moves every atom by a seeded random
0.1 Angstrom, and relaxes them with CHGNet (FIRE, cell relaxed, fmax 0.05 eV/Angstrom, at most 300 steps) through
:func:`~diffase.parallel.relax_task` on a fresh ``LocalCluster(n_workers=W, threads_per_worker=1)`` for each W.
Each worker loads CHGNet once before the clock starts (the start-up, cluster plus model, is timed apart), so the
relax time is the scatter itself. Writes ``benchmarks/results/dask_scatter.md``. On a machine shared with other
jobs the wall times depend on their load, which the table records (1-minute load average before and after).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    import dask
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f} at start; "
            f"torch {torch.__version__}, dask {dask.__version__}, Python {platform.python_version()}")


def rattled_structures(data: Path, count: int, seed: int = 0) -> tuple[list[str], list[Structure]]:
    table = pd.read_csv(data / "mp20" / "val.csv.gz")
    rows = table[(table.nsites >= 4) & (table.nsites <= 8)].head(count)
    rng = np.random.default_rng(seed)
    structures = []
    for cif in rows.cif:
        s = Structure.from_str(cif, fmt="cif")
        step = rng.normal(size=(len(s), 3))
        s = Structure(s.lattice, s.species, s.cart_coords + 0.1 * step / np.linalg.norm(step, axis=1, keepdims=True),
                      coords_are_cartesian=True)
        structures.append(s)
    return list(rows.material_id), structures


def load_chgnet() -> str:
    from diffase.calculators import load_mlip
    from diffase.parallel import pin_threads

    pin_threads()
    return repr(load_mlip("chgnet", "cpu"))


def main() -> None:
    from dask.distributed import Client, LocalCluster

    from diffase.parallel import relax_task, scatter_map

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dask_scatter.md"))
    args = parser.parse_args()

    ids, structures = rattled_structures(Path(args.data), args.count)
    relax_kw = dict(calculator="chgnet", device="cpu", fmax=0.05, steps=300)
    header = machine()
    print(header, flush=True)
    rows, energies = [], {}
    for workers in map(int, args.workers.split(",")):
        t0 = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(load_chgnet)
            startup = time.perf_counter() - t0
            load_before = os.getloadavg()[0]
            t1 = time.perf_counter()
            docs = scatter_map(client, relax_task, structures, **relax_kw)
            wall = time.perf_counter() - t1
        failed = [d for d in docs if "error" in d]
        energies[workers] = np.array([d.get("final_energy", np.nan) for d in docs])
        rows.append({"workers": workers, "structures": len(docs), "failed": len(failed),
                     "steps": sum(d.get("steps", 0) for d in docs), "startup_s": startup, "relax_wall_s": wall,
                     "structures_per_min": 60 * len(docs) / wall, "load_before": load_before,
                     "load_after": os.getloadavg()[0]})
        print(rows[-1], flush=True)
    base = rows[0]["relax_wall_s"]
    for row in rows:
        row["speed_up"] = base / row["relax_wall_s"]
    first = energies[rows[0]["workers"]]
    max_diff = max(float(np.nanmax(np.abs(e - first))) for e in energies.values())

    lines = [
        "# Dask scatter: CHGNet relaxations on single-threaded LocalCluster workers",
        "",
        f"Machine: {header}. **Shared and busy**: other engineers' jobs ran at the same time (the load averages "
        "below, on 2 logical cores), so every wall time here is longer than on an idle machine and the speed-up is "
        "a lower bound of what 2 idle cores give.",
        "",
        f"Workload: {len(structures)} MP-20 validation structures with 4-8 sites ({', '.join(ids)}), every atom moved "
        "0.1 Angstrom in a seeded random direction, relaxed with CHGNet 0.3.0 through `diffase.parallel.relax_task` "
        f"({relax_kw}; FIRE, cell relaxed) and `scatter_map` on `LocalCluster(n_workers=W, threads_per_worker=1)`, "
        "the benchmark run with `nice -n 10`. Start-up (cluster plus one CHGNet load per worker) is timed apart; "
        "relax wall is submit-to-last-result.",
        "",
        "| workers | structures | failed | optimizer steps | start-up (s) | relax wall (s) | structures/min | "
        "speed-up vs 1 worker | load avg before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['structures']} | {r['failed']} | {r['steps']} | {r['startup_s']:.1f} | "
                     f"{r['relax_wall_s']:.1f} | {r['structures_per_min']:.1f} | {r['speed_up']:.2f} | "
                     f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
    lines += ["", f"Largest difference of a final energy between worker counts: {max_diff:.2e} eV (the same "
              "relaxations, whichever worker ran them).", "",
              f"Command: `nice -n 10 python benchmarks/dask_scatter.py --count {args.count} --workers {args.workers}`",
              ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
