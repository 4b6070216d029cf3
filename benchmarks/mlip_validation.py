"""CHGNet against DFT frames (energy/atom and force MAE) and relaxation throughput on this machine.

Usage: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mlip_validation.py [--data ../shared/data]
[--frames-per-set 50] [--n10 10] [--n40 5]``

1. DFT frames: from each extxyz set in ``dft_frames/`` (MatterSim benchmark sets: MPtrj random and
   highest-stress, Alexandria random, MPF T/P sets), ``--frames-per-set`` frames evenly spaced through the
   file, evaluated with diffase's batched single points. The files store uncorrected DFT energies while
   CHGNet predicts MP2020-corrected ones, so energies are compared twice: as stored (with the mean signed
   error, the bias), and after applying pymatgen's MaterialsProject2020Compatibility to the DFT energy
   (check_potcar=False; GGA+U with MP's U values assumed for oxides and fluorides of Co, Cr, Fe, Mn, Mo, Ni,
   V, W; frames the scheme rejects are left out of that column only).
2. Relaxation: ``--n10`` 10-atom cells (MP-20 validation) and ``--n40`` 40-atom cells (MPTS-52), positions
   rattled by 0.05 Angstrom (seeded), relaxed with :func:`diffase.simulate.relax` (FIRE, FrechetCellFilter,
   fmax 0.1 eV/Angstrom, at most 500 steps: the inpainting paper's settings), one at a time on one thread.

Writes ``benchmarks/results/mlip_validation.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ase.io import read
from pymatgen.core import Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.calculators import load_mlip
from diffase.simulate import relax, single_points

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    with open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")),
                   platform.processor())
    import chgnet

    return (f"{platform.node()} | {cpu} | {os.cpu_count()} logical cores | load average "
            f"{', '.join(f'{x:.2f}' for x in os.getloadavg())} at start | torch {torch.__version__} "
            f"({torch.get_num_threads()} thread) | chgnet {chgnet.__version__} | Python {platform.python_version()}")


#: Materials Project U values (eV), applied to oxides and fluorides of these elements.
MP_U = {"Co": 3.32, "Cr": 3.7, "Fe": 5.3, "Mn": 3.9, "Mo": 4.38, "Ni": 6.2, "V": 3.25, "W": 6.2}


def mp2020_energy(atoms, compat: MaterialsProject2020Compatibility) -> float | None:
    """DFT energy of a frame (eV) with the MP2020 corrections added; None where the scheme rejects it."""
    structure = AseAtomsAdaptor.get_structure(atoms)
    elements = {el.symbol for el in structure.composition.elements}
    plus_u = bool(elements & {"O", "F"}) and bool(elements & set(MP_U))
    params = {"run_type": "GGA+U" if plus_u else "GGA",
              "hubbards": {el: MP_U[el] for el in elements & set(MP_U)} if plus_u else {}}
    entry = compat.process_entry(ComputedStructureEntry(structure, atoms.get_potential_energy(), parameters=params))
    return None if entry is None else entry.energy


def frames_table(data: Path, per_set: int, mlip) -> tuple[list[str], int]:
    rows, n_total = [], 0
    compat = MaterialsProject2020Compatibility(check_potcar=False)
    for path in sorted((data / "dft_frames").glob("*.xyz")):
        frames = read(path, index=":")
        picked = [frames[int(i)] for i in np.linspace(0, len(frames) - 1, per_set).round()]
        t0 = time.perf_counter()
        preds = single_points(picked, mlip, batch_size=8)
        dt = time.perf_counter() - t0
        de = np.array([p.energy_per_atom - a.get_potential_energy() / len(a) for p, a in zip(preds, picked)])
        corrected = [(p, mp2020_energy(a, compat)) for p, a in zip(preds, picked)]
        dc = np.array([p.energy_per_atom - e / p.n_atoms for p, e in corrected if e is not None])
        df = np.concatenate([(p.forces - a.get_forces()).ravel() for p, a in zip(preds, picked)])
        n_atoms = sum(len(a) for a in picked)
        n_total += len(picked)
        rows.append(f"| {path.stem} | {len(picked)} of {len(frames)} | {n_atoms} | {np.abs(de).mean() * 1000:.1f} | "
                    f"{de.mean() * 1000:+.1f} | {np.abs(dc).mean() * 1000:.1f} ({len(dc)}) | "
                    f"{np.abs(df).mean() * 1000:.1f} | {dt / len(picked):.2f} |")
        print(rows[-1], flush=True)
    return rows, n_total


def relax_rows(data: Path, n10: int, n40: int, mlip) -> list[str]:
    mp20 = pd.read_csv(data / "mp20" / "val.csv.gz")
    mpts = pd.read_csv(data / "mpts52" / "train.csv.gz")
    sets = [("MP-20 val", mp20[mp20.nsites == 10].head(n10)), ("MPTS-52", mpts[mpts.nsites == 40].head(n40))]
    rows = []
    for source, table in sets:
        if table.empty:
            continue
        steps, converged, seconds = [], 0, 0.0
        for k, cif in enumerate(table.cif):
            atoms = Structure.from_str(cif, fmt="cif").to_ase_atoms()
            atoms.rattle(stdev=0.05, seed=k)
            t0 = time.perf_counter()
            result = relax(atoms, mlip, fmax=0.1, steps=500, optimizer="FIRE")
            seconds += time.perf_counter() - t0
            steps.append(result.steps)
            converged += result.converged
        n_atoms = int(table.nsites.iloc[0])
        rows.append(f"| {n_atoms} | {source} ({', '.join(table.material_id)}) | {len(table)} | {converged} | "
                    f"{np.mean(steps):.0f} | {seconds / sum(steps):.2f} | {60 * len(table) / seconds:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--frames-per-set", type=int, default=50)
    parser.add_argument("--n10", type=int, default=10)
    parser.add_argument("--n40", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mlip_validation.md")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    mlip = load_mlip("chgnet", device="cpu", num_threads=1)  # one torch thread (diffase.runtime)
    info = machine()
    print(info, flush=True)

    t0 = time.perf_counter()
    frame_rows, n_frames = frames_table(args.data, args.frames_per_set, mlip)
    relaxation = relax_rows(args.data, args.n10, args.n40, mlip)
    total = time.perf_counter() - t0

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([
        "# CHGNet validation: DFT frames and relaxation throughput",
        "",
        f"Machine: {info}.",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python benchmarks/mlip_validation.py --frames-per-set "
        f"{args.frames_per_set} --n10 {args.n10} --n40 {args.n40}`; CHGNet 0.3.0 weights (from the chgnet wheel), "
        f"CPU, 1 torch thread; total wall time {total / 60:.1f} min. Other jobs shared the CPU during the run "
        "(see the load average), so the timings are upper bounds for an idle core.",
        "",
        f"## DFT frames ({n_frames} frames, evenly spaced through each file)",
        "",
        "The files store uncorrected DFT energies; CHGNet predicts MP2020-corrected ones. 'as stored' compares "
        "with the file; 'DFT + MP2020' adds pymatgen's MaterialsProject2020Compatibility corrections to the DFT "
        "energy first (check_potcar=False; GGA+U with MP's U values assumed for oxides/fluorides of Co, Cr, Fe, "
        "Mn, Mo, Ni, V, W; in brackets: frames the scheme accepted). The MPtrj and Alexandria frames are MP-like "
        "PBE(+U); the mpf/random TP sets are MatterSim's finite temperature/pressure sets.",
        "",
        "| set | frames used | atoms | energy MAE as stored (meV/atom) | bias as stored, CHGNet - DFT (meV/atom) | "
        "energy MAE vs DFT + MP2020 (meV/atom) | force MAE (meV/Angstrom, per component) | s per frame (batch of 8) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *frame_rows,
        "",
        "## Relaxation throughput",
        "",
        "Positions rattled by 0.05 Angstrom (seed = index), then FIRE + FrechetCellFilter, fmax 0.1 eV/Angstrom, "
        "at most 500 steps, one structure at a time.",
        "",
        "| atoms | cells | n | converged | mean steps | s per step | structures/min |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *relaxation,
        "",
    ]))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
