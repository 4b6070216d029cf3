"""Held-out errors of a site-label predictor (site DOS + Bader charges) beside its baselines, and its speed.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/site_label_predictor.py [--model models/site-labels-mp20.pt]
[--data ../shared/data] [--speed-structures 200]``

Scores the model on the test materials stored in its checkpoint (held out by material when it was trained),
re-read from the label folder, beside (a) the per-element mean DOS and mean Bader charge of its training
materials and (b) those means with each crystal's charges shifted to sum to zero (the network's own neutrality
projection). Errors per element: site-DOS MAE (states/eV) and relative to the mean |DOS|, 1-D Wasserstein
distance of the unit-area DOS (eV), Bader MAE (e). Then times ``predict`` on the first MP-20 validation
structures whose elements the model knows. Prints the machine and settings and writes
``benchmarks/results/site_label_predictor.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from diffase.data.io import read_structures
from diffase.hub import read_checkpoint
from diffase.predictors.model import SiteLabelPredictor
from diffase.train.site_trainer import held_out_tables, load_site_labels

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"element": "element", "n_sites": "sites", "dos_mae": "DOS MAE", "dos_relative_mae": "DOS rel. MAE",
           "dos_wasserstein": "W1 eV", "n_bader": "Bader sites", "bader_mae": "Bader MAE e"}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f} at start, "
            f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)")


def side_by_side(tables: dict) -> pd.DataFrame:
    """One row per element: counts, then each error for model / baseline / neutral baseline."""
    frames = {name: pd.DataFrame(tables[name]).set_index("element") for name in ("model", "baseline", "baseline_neutral")}
    out = frames["model"][["n_sites", "n_bader"]].rename(columns={"n_sites": "sites", "n_bader": "Bader sites"})
    for key in ("dos_mae", "dos_relative_mae", "dos_wasserstein"):
        out[f"{COLUMNS[key]} model"] = frames["model"][key]
        out[f"{COLUMNS[key]} baseline"] = frames["baseline"][key]
    out["Bader MAE model"] = frames["model"]["bader_mae"]
    out["Bader MAE baseline"] = frames["baseline"]["bader_mae"]
    out["Bader MAE neutral baseline"] = frames["baseline_neutral"]["bader_mae"]
    return out.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "site-labels-mp20.pt"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--speed-structures", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "site_label_predictor.md"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("DIFFASE_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))
    header = machine()
    print(header)
    ckpt = read_checkpoint(args.model)
    predictor = SiteLabelPredictor.from_checkpoint(ckpt)
    train = ckpt["train"]
    print(f"model {args.model}: {train['n_labels']} labels when trained (split train/val/test {train['n_train']}/"
          f"{train['n_val']}/{train['n_test']}), step {train['step']}")

    items = {it["name"]: it for it in load_site_labels(Path(args.data) / "electronic")}
    test = [items[name] for name in train["split"]["test"]]
    tables = held_out_tables(predictor, test)
    table = side_by_side(tables)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    structures = [s for _, s in read_structures(Path(args.data) / "mp20" / "val.csv.gz", limit=4 * args.speed_structures)
                  if not predictor.baseline.unseen([site.specie.Z for site in s])][: args.speed_structures]
    predictor.predict(structures[0])  # warm-up
    t0 = time.perf_counter()
    for s in structures:
        predictor.predict(s)
    seconds = time.perf_counter() - t0
    n_atoms = sum(len(s) for s in structures)
    speed = (f"{len(structures)} MP-20 validation structures ({n_atoms} atoms) one at a time: {seconds:.2f} s, "
             f"{len(structures) / seconds:.1f} structures/s")
    print(speed)

    text = [
        "# Site-label predictor: held-out errors beside per-element baselines", "",
        f"Ran on: {header}", "",
        f"Model: `{Path(args.model).name}` ({train['n_parameters']:,} parameters, step {train['step']}, epoch "
        f"{train['epoch']}), trained on `{train['data']}` holding {train['n_labels']} DFT labels "
        f"({train['n_labels_with_bader']} with Bader charges). Split by material, seed "
        f"{train['config']['split_seed']}: {train['n_train']} train / {train['n_val']} validation / {train['n_test']} "
        "test materials, every test element also in training. Command: `python benchmarks/site_label_predictor.py`.",
        "",
        f"Test: {tables['n_test_materials']} materials, {tables['n_test_sites']} sites; Bader charges only in the format-2 "
        "labels. DOS MAE in states/eV over the 512-point grid (-10..10 eV around E_F); rel. MAE = MAE / mean |DOS| of "
        "the same sites; W1 = 1-D Wasserstein distance between the unit-area DOS curves, eV; Bader MAE in e. "
        "Baseline = per-element means of the training materials; neutral baseline = the same charges shifted so each "
        "crystal's sum is zero (the DOS columns of both baselines are the same).", "",
        table.to_markdown(index=False, floatfmt=".3f"), "",
        f"Speed: {speed}.", "",
    ]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
