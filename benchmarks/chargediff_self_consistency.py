"""Self-consistency of ChargeDIFF's generated charge density (issue 12): eps_msd between the density a joint model
generates with a crystal and a GPAW recompute of that crystal (the paper: 2.2 % on 1,000 crystals with VASP).

1. Pool: ``--pool`` crystals generated unconditionally with 2..``--max-atoms`` atoms (counts drawn with ``--seed``)
   by :meth:`~diffase.generators.joint.JointModel.generate` into ``<out>/pool.extxyz``, each crystal's decoded
   density beside it as ``pool.extxyz.chgcar/CHGCAR-<sample>`` (rho x V on the 32^3 grid of the record's cell,
   the cell the density is laid on). Resumable.
2. Labels: in sample order, structurally valid crystals of at most ``--max-atoms`` atoms whose elements all have a
   GPAW setup + basis (the labeller's own check) are labelled until ``--n`` labels exist, with
   :func:`diffase.labeling.batch.label_structures` (what ``diffase label`` runs), ``fast`` preset, on the generated
   geometry (no relaxation) in its Niggli-reduced cell (GPAW refuses skewed cells), one GPAW process on one thread
   at nice 10, ``--timeout`` s per structure; failures are counted and skipped, a re-run resumes
   (``benchmarks/joint_descriptor_gpaw.py``'s loop).
3. Comparison on one grid: a label's ``rho32`` is the GPAW pseudo-density on the 32^3 fractional grid of the cell
   GPAW was given, which its CIF stores (rotated into pymatgen's frame). :func:`label_density_on` maps it onto the
   generated record's cell: the lattice mapping between the two cells (:meth:`pymatgen.core.Lattice.find_all_mappings`)
   whose sites coincide with the generated sites (same element within 0.01 Angstrom,
   ``joint_descriptor_gpaw.site_order``), the grid carried over exactly by :func:`grid_in_cell` (a unimodular
   change of basis: the Niggli cell GPAW got -> the generated cell).

Metrics per structure (:func:`diffase.labeling.compare.density_errors`, rho in e/Angstrom^3): eps_msd = sum (rho_gen
- rho_GPAW)^2 / sum rho_GPAW^2 and NMAE, then mean and median over structures, beside two references on the same
structures: the floor, the model's own VQ-VAE reconstructing the GPAW density (encode + quantise + decode), and
the uniform density with GPAW's electron count. Electron counts (mean rho x V) of both densities.

Writes ``benchmarks/results/chargediff_self_consistency-<model>.md`` and ``.json``.

    nice -n 10 python benchmarks/chargediff_self_consistency.py --model chargediff-mp20 \
        --out runs/chargediff-self-consistency --n 20 --pool 64 --timeout 900
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from diffase.data.electronic.dataset import label_structure, read_label
from diffase.data.electronic.density import (
    chgcar_to_density,
    grid_in_cell,
    read_density,
)
from diffase.labeling.compare import density_errors
from diffase.labeling.settings import LabelSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from joint_descriptor_gpaw import (
    gpaw_run_environment,
    label_samples,
    read_samples,
    site_order,
)
from site_label_predictor import machine, write_result

ROOT = Path(__file__).resolve().parents[1]


def generate_pool(model, path: Path, n: int, max_atoms: int, seed: int, levels: int, batch_size: int) -> dict:
    """``n`` unconditional crystals of 2..``max_atoms`` atoms (counts drawn with ``seed``) into the extxyz ``path``,
    their densities as CHGCARs beside it (:meth:`JointModel.generate`, resumable)."""
    counts = np.random.default_rng(seed).integers(2, max_atoms + 1, size=n).tolist()
    return model.generate(n, path, num_atoms=counts, batch_size=batch_size, seed=seed, num_levels=levels,
                          progress=False)


def generated_density(pool: Path, sample: int) -> np.ndarray:
    """The decoded density (32, 32, 32) e/Angstrom^3 of pool crystal ``sample`` (its CHGCAR, on the record's cell)."""
    path = pool.with_name(pool.name + ".chgcar") / f"CHGCAR-{sample}"
    return chgcar_to_density(read_density(path))


def label_density_on(generated: Structure, label: dict, tol: float = 0.01) -> np.ndarray:
    """A label's ``rho32`` (e/Angstrom^3) moved onto the 32^3 grid of ``generated``'s cell (module docstring, step 3).

    ``ValueError`` when no lattice mapping puts the label's sites on the generated ones (another crystal, or the
    same one shifted: the grids would not share their origin)."""
    labelled = label_structure(label)
    rho = np.asarray(label["rho32"], dtype=np.float64)
    if len(labelled) != len(generated) or labelled.composition != generated.composition:
        raise ValueError(f"label {label.get('material_id')}: {labelled.formula} is not the generated "
                         f"{generated.formula}")
    for aligned, _, _ in labelled.lattice.find_all_mappings(generated.lattice, ltol=1e-4, atol=0.01,
                                                             skip_rotation_matrix=True):
        # aligned: the generated cell's vectors in the label's frame; the label's sites in that basis
        frac = labelled.lattice.get_cartesian_coords(labelled.frac_coords) @ np.linalg.inv(aligned.matrix)
        moved = Structure(Lattice(aligned.matrix), labelled.species, frac)
        try:
            site_order(generated, moved, tol)
        except ValueError:
            continue
        return grid_in_cell(rho, labelled.lattice.matrix, aligned.matrix)
    raise ValueError(f"label {label.get('material_id')}: no cell mapping puts its {generated.formula} sites on the "
                     f"generated ones within {tol} Angstrom")


def structure_row(index: int, structure: Structure, rho_gen: np.ndarray, rho_ref: np.ndarray, vqvae,
                  dft_seconds: float, predictor=None) -> dict:
    """One labelled crystal: errors of the generated density, of the VQ-VAE's reconstruction of the GPAW density
    (the floor), of the uniform density and (``predictor``) of the structure-only surrogate's density of the
    generated structure against GPAW's; electron counts (e) of generated and GPAW densities."""
    recon = vqvae.reconstruct(torch.as_tensor(rho_ref, dtype=torch.float32)[None])[0].double().numpy()
    volume = structure.volume
    surrogate = predictor.predict_if_known(structure) if predictor is not None else None
    return {"sample": index, "formula": structure.formula, "atoms": len(structure), "volume": volume,
            "dft_seconds": dft_seconds, "generated": density_errors(rho_gen, rho_ref),
            "vqvae_floor": density_errors(recon, rho_ref),
            "uniform": density_errors(np.full_like(rho_ref, rho_ref.mean()), rho_ref),
            "surrogate": None if surrogate is None else density_errors(surrogate, rho_ref),
            "electrons_generated": float(rho_gen.mean() * volume), "electrons_gpaw": float(rho_ref.mean() * volume)}


def labelled_rows(pool: Path, folder: Path, settings: LabelSettings, n: int, max_atoms: int, vqvae,
                  retry_failed: bool = False, compute: bool = True,
                  shard: tuple[int, int] = (0, 1), predictor=None) -> tuple[list[dict], dict]:
    """Label the pool's candidates into ``folder`` until ``n`` labels exist (module docstring, step 2) and return
    the :func:`structure_row` of each labelled crystal, with the counts of ``label_samples`` plus ``frames``."""
    samples = read_samples(pool)
    generated = {s.index: s.structure for s in samples}
    # GPAW refuses cells far from reduced ("weird unit cell"): it gets the Niggli cell, mapped back below
    reduced = [replace(s, structure=s.structure.get_reduced_structure()) for s in samples]
    pairs, counts = label_samples(reduced, folder, settings, n, max_atoms, retry_failed, compute=compute,
                                  require_descriptor=False, shard=shard)
    rows = []
    for sample, path in pairs:
        label, structure = read_label(path), generated[sample.index]
        rows.append(structure_row(sample.index, structure, generated_density(pool, sample.index),
                                  label_density_on(structure, label), vqvae, float(label["dft_seconds"]),
                                  predictor))
    return rows, {**counts, "frames": len(samples)}


def summary(rows: list[dict]) -> dict:
    """Mean and median of eps_msd and NMAE over ``rows`` for each of :data:`ROW_LABELS` that some row has."""
    out = {}
    for key in ROW_LABELS:
        known = [r[key] for r in rows if r.get(key) is not None]
        if not known:
            continue
        eps = np.array([e["density_eps_msd"] for e in known])
        nmae = np.array([e["density_nmae"] for e in known])
        out[key] = {"n": len(known), "eps_msd_mean": float(eps.mean()), "eps_msd_median": float(np.median(eps)),
                    "nmae_mean": float(nmae.mean()), "nmae_median": float(np.median(nmae))}
    return out


ROW_LABELS = {"generated": "generated density vs GPAW", "vqvae_floor": "VQ-VAE reconstruction of the GPAW density "
              "(floor)", "uniform": "uniform density, GPAW's electron count",
              "surrogate": "density-mp20's prediction for the generated structure (structures with known elements)"}


def report_lines(r: dict) -> list[str]:
    c, s = r["counts"], r["settings"]
    lines = [f"# ChargeDIFF self-consistency: {r['model']}", "",
             (f"Machine: {r['machine']}. Wall time of this run: {r['wall_s']:.0f} s (labels made by earlier runs into "
             f"the same folder are read: {c['resumed']} of {c['labelled']})."), "",
             f"Pool: {c['frames']} valid crystals written of {s['pool']} generated (unconditional, 2-{s['max_atoms']} "
             f"atoms, seed {s['seed']}, {s['levels']} levels). Selection in sample order: structurally valid, every "
             f"element with a GPAW setup + basis, <= {s['max_atoms']} atoms, until {s['n']} labelled. Labelled: "
             f"**{c['labelled']}**; failed or timed out ({s['timeout_s']:.0f} s): {c['failed']}; passed over: "
             + (", ".join(f"{k}: {v}" for k, v in c["skipped"].items()) or "none")
             + (f". **Stopped short of {s['n']}**: {c['unlabelled_candidates']} candidates not labelled yet (resumable)."
                if c["unlabelled_candidates"] and c["labelled"] < s["n"] else
                f"; {c['unlabelled_candidates']} candidate(s) among them not labelled (a shard's calculation stopped "
                f"once the {s['n']}th label existed)." if c["unlabelled_candidates"] else "."), "",
             ("GPAW: `diffase label --preset fast` (PBE, LCAO dzp, h 0.2 A, spin-paired) on the generated geometry "
             "(unrelaxed, in its Niggli-reduced cell); rho32 = GPAW's pseudo-density Fourier-regridded to 32^3, the "
             "kind of density the model was trained on. Both densities on the 32^3 grid of the generated cell (the label's grid mapped exactly, "
             "sites checked). eps_msd = sum (rho - rho_GPAW)^2 / sum rho_GPAW^2, NMAE = sum |rho - rho_GPAW| / "
             "sum |rho_GPAW| per structure; then mean / median over structures."), "",
             "| | structures | eps_msd mean | eps_msd median | NMAE mean | NMAE median |",
             "| --- | --- | --- | --- | --- | --- |"]
    for key, label in ROW_LABELS.items():
        if key not in r["summary"]:
            continue
        x = r["summary"][key]
        lines.append(f"| {label} | {x['n']} | {100 * x['eps_msd_mean']:.2f} % | {100 * x['eps_msd_median']:.2f} % | "
                     f"{100 * x['nmae_mean']:.2f} % | {100 * x['nmae_median']:.2f} % |")
    lines += ["", "## Structures", "", ("| sample | formula | atoms | volume A^3 | DFT s | eps_msd generated | "
              "eps_msd VQ-VAE floor | electrons generated | electrons GPAW |"), "|" + " --- |" * 9]
    lines += [f"| {x['sample']} | {x['formula']} | {x['atoms']} | {x['volume']:.1f} | {x['dft_seconds']:.0f} | "
              f"{100 * x['generated']['density_eps_msd']:.2f} % | {100 * x['vqvae_floor']['density_eps_msd']:.2f} % | "
              f"{x['electrons_generated']:.2f} | {x['electrons_gpaw']:.2f} |" for x in r["structures"]]
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="chargediff-mp20", help="joint model with the density field (name or path)")
    p.add_argument("--n", type=int, default=20, help="labelled structures to reach")
    p.add_argument("--pool", type=int, default=64, help="crystals generated for the selection")
    p.add_argument("--max-atoms", type=int, default=6)
    p.add_argument("--out", default=str(ROOT / "runs" / "chargediff-self-consistency"),
                   help="working folder: pool.extxyz (+ CHGCARs) and labels/ (resumable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=int, default=100, help="sampling levels (respaced from T = 1000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds of GPAW per structure before it is skipped")
    p.add_argument("--retry-failed", action="store_true", help="try again the candidates an earlier run failed on")
    p.add_argument("--report-only", action="store_true", help="label nothing: report on the labels made so far")
    p.add_argument("--shard", default="0/1", help="K/M: label only the candidates whose sample index is K mod M "
                   "(M processes on one --out; then --report-only)")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    gpaw_run_environment()
    from diffase.generators import load_model
    from diffase.generators.descriptor_decoding import density_decoder

    start = time.perf_counter()
    header = f"{machine()}; GPAW on one thread at nice {os.nice(0)}"
    settings = {"n": args.n, "pool": args.pool, "max_atoms": args.max_atoms, "seed": args.seed,
                "levels": args.levels, "timeout_s": args.timeout, "preset": "fast", "out": args.out}
    print(f"machine: {header}\nmodel: {args.model}\nsettings: {settings}")
    model = load_model(args.model, device="cpu")
    vqvae = density_decoder(model.meta)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool = out / "pool.extxyz"
    t0 = time.perf_counter()
    made = generate_pool(model, pool, args.pool, args.max_atoms, args.seed, args.levels, args.batch_size)
    print(f"pool: {made} ({time.perf_counter() - t0:.0f} s in this call)")

    from diffase.predictors.density_model import DensityPredictor

    predictor = DensityPredictor.load("density-mp20")
    label_settings = LabelSettings.from_preset("fast", timeout=args.timeout)
    rows, counts = labelled_rows(pool, out / "labels", label_settings, args.n, args.max_atoms, vqvae,
                                 args.retry_failed, compute=not args.report_only,
                                 shard=tuple(int(v) for v in args.shard.split("/")), predictor=predictor)
    if not rows:
        print(f"no structure labelled ({counts})")
        return 1
    model_name = Path(args.model).stem if str(args.model).endswith(".pt") else str(args.model)
    result = {"model": model_name, "machine": header, "settings": settings,
              "label_settings": label_settings.as_dict(),
              "counts": {"frames": counts["frames"], "labelled": len(rows), "resumed": len(counts["resumed"]),
                         "tried_now": counts["tried"], "unlabelled_candidates": counts["unlabelled"],
                         "failed": len(counts["failed"]), "failed_names": counts["failed"],
                         "skipped": counts["skipped"]},
              "summary": summary(rows), "structures": rows, "wall_s": round(time.perf_counter() - start, 1)}
    write_result(args.results, f"chargediff_self_consistency-{model_name}", result, report_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
