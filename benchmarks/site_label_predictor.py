"""Held-out errors of a site-label predictor (site DOS + Bader charges) beside its baselines, and its speed.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/site_label_predictor.py [--model models/site-labels-mp20.pt]
[--data ../shared/data] [--speed-structures 200] [--cv-folds 5] [--recipe recipes/site-labels-mp20.json]``

Scores the model on the test materials stored in its checkpoint (held out by material when it was trained),
re-read from the label folder, beside (a) the per-element mean DOS and mean Bader charge of its training
materials and (b) those means with each crystal's charges shifted to sum to zero (the network's own neutrality
projection). Errors per element: site-DOS MAE (states/eV) and relative to the mean |DOS|, 1-D Wasserstein
distance of the unit-area DOS (eV), Bader MAE (e). Then times ``predict`` on the first MP-20 validation
structures whose elements the model knows. Then, since one test split of ~20 materials is a small sample,
cross-validates the recipe: ``--cv-folds`` models trained with the recipe's settings, fold k of the materials
held out by each (:func:`~diffase.predictors.split.cross_validation_split`), the per-site errors of all folds
pooled. Prints the machine and settings and writes ``benchmarks/results/site_label_predictor.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import pandas as pd
import torch

from diffase.data.io import read_structures
from diffase.hub import read_checkpoint
from diffase.predictors.metrics import element_table
from diffase.predictors.model import SiteLabelPredictor
from diffase.train.recipe import load_recipe
from diffase.train.site_trainer import SiteTrainConfig, held_out_errors, held_out_tables, load_site_labels, train_site_model

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = {"element": "element", "n_sites": "sites", "dos_mae": "DOS MAE", "dos_relative_mae": "DOS rel. MAE",
           "dos_wasserstein": "W1 eV", "n_bader": "Bader sites", "bader_mae": "Bader MAE e"}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{cpu}, {os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f} at start, "
            f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)")


def write_result(folder: str | Path, stem: str, result: dict, lines: list[str]) -> None:
    """A benchmark's result as ``<folder>/<stem>.json`` and its report ``lines`` as ``<stem>.md``; prints them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    (folder / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


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


def cross_validate(recipe_path: str, labels: Path, items: dict, n_folds: int) -> tuple[dict, list[str], float]:
    """Pooled per-element tables of ``n_folds`` recipe runs, each holding out one fold; per fold "tested materials
    (step of the weights kept)"; total wall seconds."""
    recipe = load_recipe(recipe_path)
    numbers, errors, tested, n_materials = [], {}, [], 0
    t0 = time.perf_counter()
    for fold in range(n_folds):
        config = replace(SiteTrainConfig(**recipe.config), cv_fold=fold, cv_folds=n_folds)
        with tempfile.TemporaryDirectory() as out:
            best = train_site_model(labels, out, model_config=recipe.model_config, config=config, device="cpu",
                                    progress=False)
            ckpt = read_checkpoint(best)
        test = [items[name] for name in ckpt["train"]["split"]["test"]]
        z, fold_errors = held_out_errors(SiteLabelPredictor.from_checkpoint(ckpt), test)
        numbers.append(z)
        n_materials += len(test)
        tested.append(f"{len(test)} (step {ckpt['train']['step']})")
        for name, e in fold_errors.items():
            errors.setdefault(name, []).append(e)
        print(f"fold {fold}: {len(test)} test materials, {len(z)} sites, step {ckpt['train']['step']}")
    z = np.concatenate(numbers)
    pooled = {name: element_table(z, {k: np.concatenate([e[k] for e in runs]) for k in runs[0]})
              for name, runs in errors.items()}
    return {"n_test_materials": n_materials, "n_test_sites": len(z), **pooled}, tested, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "site-labels-mp20.pt"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--speed-structures", type=int, default=200)
    parser.add_argument("--cv-folds", type=int, default=5, help="0: no cross-validation")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "site-labels-mp20.json"))
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

    cv_text = []
    if args.cv_folds:
        cv, tested, seconds = cross_validate(args.recipe, Path(args.data) / "electronic", items, args.cv_folds)
        cv_table = side_by_side(cv)
        print(cv_table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        cv_text = [
            f"## Cross-validation of the recipe ({args.cv_folds} folds)", "",
            f"`{Path(args.recipe).name}` trained {args.cv_folds} times on the {len(items)} labels, each run holding out "
            f"one fold of the materials (dealt to folds in a seeded order, seed {load_recipe(args.recipe).config.get('split_seed', 0)}; "
            "a material is tested only if each of its elements is in another fold) and choosing its weights on 10 % "
            f"of the rest (the weights of its best validation loss within the recipe's steps are kept); per-site errors "
            f"of all folds pooled: {cv['n_test_materials']} materials tested (per fold: {', '.join(tested)}), "
            f"{cv['n_test_sites']} sites, {seconds:.0f} s in all.", "",
            cv_table.to_markdown(index=False, floatfmt=".3f"), ""]

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
        *cv_text,
    ]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
