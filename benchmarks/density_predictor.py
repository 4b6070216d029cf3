"""Held-out density errors of a density predictor beside the fitted superposition of atomic Gaussians, and its speed.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/density_predictor.py [--model models/density-mp20.pt]
[--data ../shared/data] [--speed-structures 20] [--cv-folds 5] [--recipe recipes/density-mp20.json]``

Scores the model on the test materials stored in its checkpoint (held out by material when it was trained), on
the full 32^3 grid of each label, beside (a) the superposition of per-element Gaussians fitted to its training
materials alone (the network's starting point) and (b) the network: eps_msd = sum (rho - rho_ref)^2 / sum rho_ref^2
(the ChargeDIFF paper's formula) and NMAE = sum |rho - rho_ref| / sum |rho_ref|, per material
(:func:`diffase.labeling.compare.density_errors`). Then times ``predict`` (the 32^3 grid) on the first MP-20
validation structures whose elements the model knows. Then, since one test split of ~20 materials is a small
sample, cross-validates the recipe: ``--cv-folds`` models trained with the recipe's settings, fold k of the
materials held out by each (:func:`~diffase.predictors.split.cross_validation_split`), the per-material errors of
all folds pooled, with the number of materials where the network beats the baseline, a two-sided sign test and a
Wilcoxon signed-rank test of the paired eps_msd. Prints the machine and settings and writes
``benchmarks/results/density_predictor.md`` (and the pooled rows as ``density_predictor_cv.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import binomtest, wilcoxon
from site_label_predictor import machine

from diffase.data.io import read_structures
from diffase.hub import read_checkpoint
from diffase.predictors.density_model import DensityPredictor
from diffase.train.density_trainer import (
    DensityTrainConfig,
    held_out_density_errors,
    load_density_labels,
    summarise,
    train_density_model,
)
from diffase.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def paired_tests(rows: list[dict]) -> dict:
    """Materials where the network's eps_msd is below the baseline's, the two-sided sign test p and the Wilcoxon
    signed-rank p of the paired eps_msd."""
    model = np.array([r["model_eps_msd"] for r in rows])
    base = np.array([r["baseline_eps_msd"] for r in rows])
    better = int((model < base).sum())
    return {"n": len(rows), "better": better, "worse": int((model > base).sum()),
            "sign_p": binomtest(better, int((model != base).sum())).pvalue, "wilcoxon_p": wilcoxon(model, base).pvalue}


def summary_table(rows: list[dict]) -> pd.DataFrame:
    """Mean and median eps_msd (%) and NMAE (%) of the network and of the baseline."""
    s = summarise(rows)
    return pd.DataFrame([
        {"predictor": name, "materials": s["n_test_materials"],
         "eps_msd mean %": 100 * s[f"mean_{key}_eps_msd"], "eps_msd median %": 100 * s[f"median_{key}_eps_msd"],
         "NMAE mean %": 100 * s[f"mean_{key}_nmae"], "NMAE median %": 100 * s[f"median_{key}_nmae"]}
        for name, key in (("network (superposition + probe correction)", "model"),
                          ("fitted superposition of atomic Gaussians", "baseline"))])


def material_table(rows: list[dict]) -> pd.DataFrame:
    """One row per material: eps_msd and NMAE (%) of the network and the baseline."""
    return pd.DataFrame([{"material": r["material"], "formula": r["formula"], "atoms": r["n_atoms"],
                          "eps_msd % network": 100 * r["model_eps_msd"], "eps_msd % baseline": 100 * r["baseline_eps_msd"],
                          "NMAE % network": 100 * r["model_nmae"], "NMAE % baseline": 100 * r["baseline_nmae"]}
                         for r in rows])


def tests_line(t: dict) -> str:
    return (f"network eps_msd below the baseline's in **{t['better']} of {t['n']}** materials (above in {t['worse']}); "
            f"two-sided sign test p = {t['sign_p']:.2g}, Wilcoxon signed-rank p = {t['wilcoxon_p']:.2g}")


def cross_validate(recipe_path: str, labels: Path, n_folds: int) -> tuple[list[dict], list[str], float]:
    """Pooled per-material rows of ``n_folds`` recipe runs, each holding out one fold (the rows the trainer
    computed on the full grids of its test materials); per fold "tested materials (step of the weights kept)";
    total wall seconds."""
    recipe = load_recipe(recipe_path)
    rows, tested = [], []
    t0 = time.perf_counter()
    for fold in range(n_folds):
        config = replace(DensityTrainConfig(**recipe.config), cv_fold=fold, cv_folds=n_folds)
        with tempfile.TemporaryDirectory() as out:
            ckpt = read_checkpoint(train_density_model(labels, out, model_config=recipe.model_config, config=config,
                                                       device="cpu", progress=False))
        rows += ckpt["held_out"]["rows"]
        tested.append(f"{len(ckpt['held_out']['rows'])} (step {ckpt['train']['step']})")
        print(f"fold {fold}: {tested[-1]}, {time.perf_counter() - t0:.0f} s", flush=True)
    return rows, tested, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "density-mp20.pt"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--speed-structures", type=int, default=20)
    parser.add_argument("--cv-folds", type=int, default=5, help="0: no cross-validation")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "density-mp20.json"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "density_predictor.md"))
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("DIFFASE_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or 1))
    header = machine()
    print(header)
    ckpt = read_checkpoint(args.model)
    predictor = DensityPredictor.from_checkpoint(ckpt)
    train = ckpt["train"]
    print(f"model {args.model}: {train['n_labels']} labels when trained (split train/val/test {train['n_train']}/"
          f"{train['n_val']}/{train['n_test']}), step {train['step']}")

    labels = Path(args.data) / "electronic"
    items = {it["name"]: it for it in load_density_labels(labels)}
    rows = held_out_density_errors(predictor, [items[name] for name in train["split"]["test"]])
    split_tests = paired_tests(rows)
    print(summary_table(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(tests_line(split_tests))

    structures = [s for _, s in read_structures(Path(args.data) / "mp20" / "val.csv.gz", limit=10 * args.speed_structures)
                  if not predictor.unseen([site.specie.Z for site in s])][: args.speed_structures]
    predictor.predict(structures[0])  # warm-up
    t0 = time.perf_counter()
    for s in structures:
        predictor.predict(s)
    seconds = time.perf_counter() - t0
    speed = (f"{len(structures)} MP-20 validation structures ({sum(len(s) for s in structures)} atoms), the 32^3 grid "
             f"of each, one at a time: {seconds:.2f} s, {seconds / len(structures):.3f} s per structure")
    print(speed)

    cv_text = []
    if args.cv_folds:
        cv_rows, tested, cv_seconds = cross_validate(args.recipe, labels, args.cv_folds)
        Path(args.out).with_name("density_predictor_cv.json").write_text(json.dumps(cv_rows, indent=1))
        cv_tests = paired_tests(cv_rows)
        print(summary_table(cv_rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(tests_line(cv_tests))
        cv_text = [
            f"## Cross-validation of the recipe ({args.cv_folds} folds)", "",
            (f"`{Path(args.recipe).name}` trained {args.cv_folds} times on the {len(items)} labels, each run holding out "
            "one fold of the materials (dealt to folds in a seeded order, seed "
            f"{load_recipe(args.recipe).config.get('split_seed', 0)}; a material is tested only if each of its "
            "elements is in another fold), fitting its superposition to its own training materials and choosing its "
            "weights on 10 % of the rest (best validation loss within the recipe's steps); errors on the full grid "
            f"of each tested material, pooled: {len(cv_rows)} materials (per fold: {', '.join(tested)}), "
            f"{cv_seconds:.0f} s in all."), "",
            summary_table(cv_rows).to_markdown(index=False, floatfmt=".3f"), "",
            tests_line(cv_tests) + ".", "",
            "<details><summary>Per material (all folds)</summary>", "",
            material_table(cv_rows).to_markdown(index=False, floatfmt=".3f"), "", "</details>", ""]

    text = [
        "# Density predictor: held-out errors beside the fitted superposition of atomic Gaussians", "",
        f"Ran on: {header}", "",
        (f"Model: `{Path(args.model).name}` ({train['n_parameters']:,} parameters, step {train['step']}, epoch "
        f"{train['epoch']}), trained on `{train['data']}` holding {train['n_labels']} DFT labels. Split by material, "
        f"seed {train['config']['split_seed']}: {train['n_train']} train / {train['n_val']} validation / "
        f"{train['n_test']} test materials, every test element also in training; superposition fitted to "
        f"{train['n_fit_points']:,} grid points of the training materials. Command: "
        "`python benchmarks/density_predictor.py`."), "",
        ("Errors on the full 32^3 grid of each test label (valence pseudo-density, e/A^3): eps_msd = sum (rho - "
        "rho_ref)^2 / sum rho_ref^2 (ChargeDIFF's formula), NMAE = sum |rho - rho_ref| / sum |rho_ref|, both in %, "
        "mean and median over materials. Baseline = the per-element superposition of 8 Gaussians fitted by least "
        "squares to the training materials (the network's starting point)."), "",
        f"## Test split ({len(rows)} materials)", "",
        summary_table(rows).to_markdown(index=False, floatfmt=".3f"), "",
        tests_line(split_tests) + ".", "",
        material_table(rows).to_markdown(index=False, floatfmt=".3f"), "",
        f"Speed: {speed}.", "",
        *cv_text,
    ]
    Path(args.out).write_text("\n".join(text))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
