"""Does ChargeDIFF's charge-density inpainting work? Masked vs unmasked samples of one model (issue 12).

For each region preset (default ``channel-1d-z`` and ``slab-2d-z``, :mod:`diffase.data.electronic.regions`, width
``--width`` of each confined axis) the model samples ``--n`` crystals with the region's density latent fixed to a
low target, and once without any mask: the same seeds, atom counts and conditions (default ``chemsys_groups``
tm3d + oxide, classifier-free guidance ``--guidance``), so the mask is the only difference.

Target "low": the region at ``--target-density`` e/Angstrom^3 (default 0.01, ``ChargeGuidedGenerator``'s "low")
against its background density outside, encoded by the model's VQ-VAE exactly as
:class:`~diffase.generators.charge_guided.ChargeGuidedGenerator` encodes a user's target (:func:`low_target`); the
latent voxels of the region (:meth:`~diffase.nn.vqvae3d.DensityVQVAE.latent_mask`) are held on it through the
sampling loop's ``known`` mechanism (``JointModel.sample(known_grids=...)``).

Per sample, on its decoded density (e/Angstrom^3, the 32^3 grid of its cell):

* region mean and outside mean (:func:`~diffase.data.electronic.regions.region_density`), measured on the points
  of the region that stay in it under the handedness flip m -> -m the sampler applies to a left-handed cell
  (:func:`measured_region`: 7 of the 8 points of each confined axis at width 0.25), so the measured region is
  where the mask was, flipped or not;
* three pass/fail tests of the region mean: below the target density (``--target-density``), below the median
  region mean of the unmasked samples (same model, seeds and region), below the sample's own outside mean;
* Li inserted at the density minima and the Li-Li network (4 Angstrom) dimensionality 0-3 exactly as
  ``diffase cathode`` screens (:func:`diffase.workflows.cathode.screen_item`, default
  :class:`~diffase.workflows.cathode_settings.CathodeSettings`): of every inserted Li, and of the Li with 4- or
  6-fold O coordination; crystals without a transition metal and O, or without an acceptable minimum, counted apart.

With ``--surrogate density-mp20``, the same region means on a structure-only density model's density of each
generated structure (:func:`surrogate_densities`; eps_msd median 0.42 % against GPAW on generated crystals): does the
generated *structure* have a low-density region where the mask asked, whatever density the model generated with it?

Counts beside fractions of all ``--n`` samples, masked vs unmasked with a two-proportion z-test
(:func:`diffase.analysis.sun.two_proportion_z_test`); seconds per sample of the sampling alone. Samples and
per-sample rows are kept under ``--out`` (a re-run reads them). Writes ``benchmarks/results/<name>.md`` and
``.json`` (``--name``, default ``chargediff_inpainting``).

    python benchmarks/chargediff_inpainting.py --model chargediff-mp20 --n 64
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from diffase.data import fields as F
from diffase.data.electronic.density import grid_in_cell
from diffase.data.electronic.regions import region_density, region_mask
from diffase.generators.charge_guided import LOW_DENSITY, ChargeGuidedGenerator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from site_label_predictor import machine, write_result

ROOT = Path(__file__).resolve().parents[1]
UNMASKED = "unmasked"
#: Li-network outcome categories of a sample, in table order.
LI_CATEGORIES = ("invalid sample", "not TM oxide", "no Li inserted", "0D", "1D", "2D", "3D")
#: The same for the Li kept (4- or 6-fold O): one more way to end without a network.
KEPT_CATEGORIES = (*LI_CATEGORIES[:3], "no 4/6-fold O Li", *LI_CATEGORIES[3:])
#: The Li-network dimensionality a region asks for: a channel 1D, a slab 2D.
REQUESTED_DIMENSIONALITY = {"channel-1d": 1, "slab-2d": 2}
#: The pass/fail tests of a region mean, in table order.
TESTS = ("below_target", "below_unmasked_median", "below_outside")


# --- the mask and the target -----------------------------------------------------------------------------
def measured_region(mask: np.ndarray) -> np.ndarray:
    """The points of a region ``mask`` (n, n, n) bool that stay in it under the flip m -> -m (mod n) of a grid whose
    cell the sampler turned right-handed (:func:`grid_in_cell` with L -> -L)."""
    mask = np.asarray(mask, dtype=bool)
    core = mask & grid_in_cell(mask, np.eye(3), -np.eye(3))
    if not core.any():
        raise ValueError("the region has no point that stays in it under m -> -m; widen it")
    return core


def low_target(model, preset: str, width: float, density: float) -> tuple[np.ndarray, np.ndarray]:
    """``known_grids`` entry of a region preset held at ``density`` e/Angstrom^3, exactly as a user of
    :class:`~diffase.generators.charge_guided.ChargeGuidedGenerator` gets it (``target=density``: the region at that
    density against the background density outside, encoded by the model's own VQ-VAE): the latent mask (n, n, n)
    bool and the latent values (n, n, n, d)."""
    generator = ChargeGuidedGenerator(model=model, region=preset, region_width=width, target=float(density))
    return generator.known_grids()[F.DENSITY_LATENT]


# --- sampling, kept on disk -------------------------------------------------------------------------------
def sample_set(model, path: Path, n: int, seed: int, levels: int, batch_size: int, conditions: dict | None,
               guidance: float | None, known_grids: dict | None, resample: tuple[int, int] | None = None) -> dict:
    """``n`` samples as arrays in ``path`` (.npz): per sample ``valid``, ``num_atoms``, ``cell`` (3, 3) Angstrom,
    ``density`` (N, N, N) float32 e/Angstrom^3; all atoms' ``atomic_numbers`` and ``frac_coords`` concatenated;
    ``seconds`` of sampling. ``resample``: RePaint's (jump_length, n_resample). Read back when the file exists."""
    if path.exists():
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    t0 = time.perf_counter()
    records = [r for batch in model.sample(n, conditions=conditions, guidance_scale=guidance if conditions else None,
                                           batch_size=batch_size, num_levels=levels, seed=seed,
                                           known_grids=known_grids, resample=resample) for r in batch]
    seconds = time.perf_counter() - t0
    arrays = {"valid": np.array([r["valid"] for r in records]),
              "num_atoms": np.array([len(r[F.ATOMIC_NUMBERS]) for r in records]),
              "cell": np.stack([r[F.CELL] for r in records]),
              "density": np.stack([r[F.CHARGE_DENSITY] for r in records]).astype(np.float32),
              "atomic_numbers": np.concatenate([r[F.ATOMIC_NUMBERS] for r in records]),
              "frac_coords": np.concatenate([r[F.FRAC_COORDS] for r in records]), "seconds": np.float64(seconds)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def set_structures(arrays: dict) -> list:
    """The pymatgen Structure of each sample of a :func:`sample_set` (None for an invalid one)."""
    from pymatgen.core import Lattice, Structure

    out, start = [], 0
    for valid, count, cell in zip(arrays["valid"], arrays["num_atoms"], arrays["cell"]):
        z, frac = arrays["atomic_numbers"][start:start + count], arrays["frac_coords"][start:start + count]
        start += count
        out.append(Structure(Lattice(cell), [int(x) for x in z], frac) if valid else None)
    return out


# --- per-sample analysis ------------------------------------------------------------------------------------
def li_row(structure, rho: np.ndarray, settings) -> dict:
    """Li insertion and network of one sample (``diffase cathode``'s screen): ``category`` (one of
    :data:`LI_CATEGORIES`, from every inserted Li), ``kept_category`` (:data:`KEPT_CATEGORIES`, from the Li with 4-
    or 6-fold O), counts."""
    from diffase.workflows.cathode import screen_item

    if structure is None:
        return {"category": "invalid sample", "kept_category": "invalid sample"}
    row, _ = screen_item("sample", structure, rho, settings)
    if not row["target_chemistry"]:
        category = kept = "not TM oxide"
    elif not row.get("n_li"):
        category = kept = "no Li inserted"
    else:
        category = f"{row['li_dimensionality_all']}D"
        kept = f"{row['li_dimensionality']}D" if row.get("n_li_kept") else "no 4/6-fold O Li"
    return {"category": category, "kept_category": kept, "formula": row["formula"], "n_li": row.get("n_li", 0),
            "n_li_kept": row.get("n_li_kept", 0)}


def li_rows(structures: list, densities: np.ndarray, path: Path, settings) -> list[dict]:
    """:func:`li_row` of every sample, appended to the JSON-lines ``path`` as each is done and read back from it."""
    done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    for i in range(len(done), len(structures)):
        t0 = time.perf_counter()
        row = {"sample": i, **li_row(structures[i], densities[i].astype(np.float64), settings),
               "seconds": round(time.perf_counter() - t0, 2)}
        with open(path, "a") as fh:
            fh.write(json.dumps(row) + "\n")
        done.append(row)
    return done


def surrogate_densities(structures: list, predictor, path: Path) -> np.ndarray:
    """(n, N, N, N) float32 density (e/Angstrom^3, the N^3 grid of each cell) that ``predictor`` (a
    :class:`~diffase.predictors.density_model.DensityPredictor`) gives each sample's structure; NaN for an invalid
    sample or one holding an element the predictor never saw. Saved to ``path`` (.npy) and read back from it."""
    if path.exists():
        return np.load(path)
    n = predictor.grid
    out = np.full((len(structures), n, n, n), np.nan, dtype=np.float32)
    for i, structure in enumerate(structures):
        rho = None if structure is None else predictor.predict_if_known(structure)
        if rho is not None:
            out[i] = rho
    np.save(path, out)
    return out


def region_means(densities: np.ndarray, valid: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(n, 2) region and outside mean density (e/Angstrom^3) of each sample; NaN for an invalid sample."""
    out = np.full((len(densities), 2), np.nan)
    for i, (rho, ok) in enumerate(zip(densities, valid)):
        if ok:
            r = region_density(rho, region)
            out[i] = r["region_mean_density"], r["outside_mean_density"]
    return out


def atoms_in_region(arrays: dict, region: np.ndarray) -> np.ndarray:
    """(n,) fraction of each valid sample's atoms whose nearest grid point of its cell lies in ``region`` (n, n, n)
    bool; NaN for an invalid sample. Does the generated structure leave the low-density region empty of atoms?"""
    grid = np.array(region.shape)
    ends = np.cumsum(arrays["num_atoms"])
    out = np.full(len(ends), np.nan)
    for i, (lo, hi) in enumerate(zip(np.concatenate([[0], ends[:-1]]), ends)):
        if arrays["valid"][i] and hi > lo:
            idx = np.rint(np.mod(arrays["frac_coords"][lo:hi], 1.0) * grid).astype(int) % grid
            out[i] = region[idx[:, 0], idx[:, 1], idx[:, 2]].mean()
    return out


def region_tests(means: np.ndarray, target: float, unmasked_median: float) -> dict[str, np.ndarray]:
    """Per-sample pass/fail (n,) bool of each of :data:`TESTS` from (n, 2) region / outside means; an invalid sample
    (NaN) fails every test."""
    inside, outside = means[:, 0], means[:, 1]
    with np.errstate(invalid="ignore"):
        return {"below_target": inside < target, "below_unmasked_median": inside < unmasked_median,
                "below_outside": inside < outside}


def count_cell(k: int, n: int) -> str:
    """``k/n (p %)``."""
    return f"{k}/{n} ({100 * k / n:.1f} %)" if n else f"{k}/0"


def z_cell(k1: int, n1: int, k2: int, n2: int) -> str:
    """Two-proportion z-test of k1/n1 against k2/n2 (z, two-sided p), or 'same' where undefined."""
    from diffase.analysis.sun import two_proportion_z_test

    z, p = two_proportion_z_test(k1, n1, k2, n2)
    return "same" if math.isnan(z) else f"z {z:+.2f}, p {p:.3f}"


# --- the report -----------------------------------------------------------------------------------------------
def surrogate_counts(masked: np.ndarray, unmasked: np.ndarray, region: np.ndarray) -> dict[str, dict]:
    """Per set (masked, unmasked): of the surrogate densities (:func:`surrogate_densities`), how many were predicted,
    their region / outside means (e/Angstrom^3) and how many have the region mean below the unmasked median, below
    the same crystal's outside mean, and below half of it."""
    means = {name: region_means(d, np.isfinite(d.reshape(len(d), -1)[:, 0]), region)
             for name, d in (("masked", masked), (UNMASKED, unmasked))}
    median = float(np.nanmedian(means[UNMASKED][:, 0]))
    out = {}
    for name, m in means.items():
        inside, outside = m[:, 0], m[:, 1]
        with np.errstate(invalid="ignore"):
            out[name] = {"predicted": int(np.isfinite(inside).sum()), "region_mean": _nan_stats(inside),
                         "outside_mean": _nan_stats(outside), "unmasked_median_region_mean": median,
                         "below_unmasked_median": int(np.sum(inside < median)),
                         "below_outside": int(np.sum(inside < outside)),
                         "below_half_outside": int(np.sum(inside < 0.5 * outside))}
    return out


def preset_result(preset: str, masked: dict, unmasked: dict, masked_li: list[dict], unmasked_li: list[dict],
                  region: np.ndarray, target: float, target_decoded: float,
                  surrogate: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Counts of one preset, masked and unmasked (JSON-friendly): region tests, Li categories, mean densities;
    with ``surrogate`` (masked, unmasked densities of :func:`surrogate_densities`) its :func:`surrogate_counts`."""
    m_means = region_means(masked["density"], masked["valid"], region)
    u_means = region_means(unmasked["density"], unmasked["valid"], region)
    median = float(np.nanmedian(u_means[:, 0])) if np.isfinite(u_means[:, 0]).any() else float("nan")
    out = {"preset": preset, "requested_dimensionality": REQUESTED_DIMENSIONALITY[preset.rsplit("-", 1)[0]],
           "target_density": target, "target_decoded_region_mean": target_decoded,
           "unmasked_median_region_mean": median, "region_points": int(region.sum())}
    for name, arrays, means, li in (("masked", masked, m_means, masked_li), (UNMASKED, unmasked, u_means, unmasked_li)):
        tests = region_tests(means, target, median)
        atoms = atoms_in_region(arrays, region)
        out[name] = {
            "atoms_in_region": _nan_stats(atoms), "no_atom_in_region": int(np.sum(atoms == 0)),
            "n": len(arrays["valid"]), "valid": int(arrays["valid"].sum()),
            "seconds_per_sample": float(arrays["seconds"]) / len(arrays["valid"]),
            "region_mean": _nan_stats(means[:, 0]), "outside_mean": _nan_stats(means[:, 1]),
            "tests": {t: int(tests[t].sum()) for t in TESTS},
            "li_all": {c: sum(r["category"] == c for r in li) for c in LI_CATEGORIES},
            "li_kept": {c: sum(r["kept_category"] == c for r in li) for c in KEPT_CATEGORIES},
            "per_sample": [{"sample": i, "region_mean": _num(means[i, 0]), "outside_mean": _num(means[i, 1]),
                            **{t: bool(tests[t][i]) for t in TESTS}, "li": li[i]["category"],
                            "li_kept": li[i]["kept_category"]} for i in range(len(li))]}
    if surrogate is not None:
        for name, counts in surrogate_counts(*surrogate, region).items():
            out[name]["surrogate"] = counts
    return out


def _nan_stats(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    return {"mean": float(x.mean()), "median": float(np.median(x))} if len(x) else {"mean": None, "median": None}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def report_lines(result: dict) -> list[str]:
    s = result["settings"]
    lines = [f"# ChargeDIFF inpainting: {result['model']}", "",
             f"Machine: {result['machine']}.", "",
             (f"Settings: {s['n']} samples per set, seed {s['seed']}, {s['levels']} sampling levels, batch "
             f"{s['batch_size']}, conditions {s['conditions'] or 'none'} (guidance scale {s['guidance']}); region "
             f"width {s['width']} of each confined axis; target: {s['target_density']} e/A^3 in the region (the "
             "background density outside) encoded by the model's VQ-VAE as ChargeGuidedGenerator does, held on the "
             f"region's latent voxels; RePaint resampling of the masked sets: {s.get('resample') or 'none'}; the "
             "unmasked set shares seeds, atom counts and conditions. Fractions over all samples of a set (an invalid sample, a mask token left, fails every "
             "test)."), "",
             ("Tests of the region mean density (measured on the region's points that stay in it under the sampler's "
             "handedness flip): **below target** = below the target density; **below unmasked median** = below the "
             "median region mean of the unmasked samples; **below outside** = below the same sample's mean outside "
             "the region. Li: inserted at the density minima and screened as `diffase cathode` does (Li-Li network "
             "< 4 A, dimensionality of the largest component); 'all Li' = every inserted Li, '4/6-fold O Li' = the "
             "Li with 4 or 6 O within 2.5 A."), ""]
    for r in result["presets"]:
        m, u = r["masked"], r[UNMASKED]
        want = f"{r['requested_dimensionality']}D"
        lines += [f"## {r['preset']} (asks for a {want} Li network)", "",
                  (f"Region: {r['region_points']} of 32768 grid points measured. Target {r['target_density']} e/A^3; "
                  f"the VQ-VAE decodes the target latent to a region mean of "
                  f"{_fmt(r['target_decoded_region_mean'])} e/A^3. Unmasked median region mean: "
                  f"{_fmt(r['unmasked_median_region_mean'])} e/A^3."), "",
                  "| | masked | unmasked | z-test masked vs unmasked |", "| --- | --- | --- | --- |",
                  f"| valid samples | {count_cell(m['valid'], m['n'])} | {count_cell(u['valid'], u['n'])} | |",
                  (f"| region mean e/A^3 (mean / median) | {_fmt(m['region_mean']['mean'])} / "
                  f"{_fmt(m['region_mean']['median'])} | {_fmt(u['region_mean']['mean'])} / "
                  f"{_fmt(u['region_mean']['median'])} | |"),
                  (f"| outside mean e/A^3 (mean / median) | {_fmt(m['outside_mean']['mean'])} / "
                  f"{_fmt(m['outside_mean']['median'])} | {_fmt(u['outside_mean']['mean'])} / "
                  f"{_fmt(u['outside_mean']['median'])} | |")]
        if "atoms_in_region" in m:
            lines += [(f"| atoms in the region, fraction of each crystal's atoms (mean / median; the region holds "
                       f"{r['region_points'] / 32768:.1%} of the grid) | {_fmt(m['atoms_in_region']['mean'])} / "
                       f"{_fmt(m['atoms_in_region']['median'])} | {_fmt(u['atoms_in_region']['mean'])} / "
                       f"{_fmt(u['atoms_in_region']['median'])} | |"),
                      (f"| no atom in the region | {count_cell(m['no_atom_in_region'], m['n'])} | "
                       f"{count_cell(u['no_atom_in_region'], u['n'])} | "
                       f"{z_cell(m['no_atom_in_region'], m['n'], u['no_atom_in_region'], u['n'])} |")]
        for t in TESTS:
            lines.append(f"| {t.replace('_', ' ')} | {count_cell(m['tests'][t], m['n'])} | "
                         f"{count_cell(u['tests'][t], u['n'])} | {z_cell(m['tests'][t], m['n'], u['tests'][t], u['n'])} |")
        for key, about, categories in (("li_all", "all Li", LI_CATEGORIES),
                                       ("li_kept", "4/6-fold O Li", KEPT_CATEGORIES)):
            for c in categories:
                mark = " (requested)" if c == want else ""
                lines.append(f"| {about}: {c}{mark} | {count_cell(m[key][c], m['n'])} | {count_cell(u[key][c], u['n'])} "
                             f"| {z_cell(m[key][c], m['n'], u[key][c], u['n'])} |")
        if "surrogate" in m:
            sm, su = m["surrogate"], u["surrogate"]
            about = f"{s['surrogate']} density of the generated structure"
            lines += [f"| {about}: predicted (elements it knows) | {count_cell(sm['predicted'], m['n'])} | "
                      f"{count_cell(su['predicted'], u['n'])} | |",
                      (f"| {about}: region mean e/A^3 (mean / median) | {_fmt(sm['region_mean']['mean'])} / "
                       f"{_fmt(sm['region_mean']['median'])} | {_fmt(su['region_mean']['mean'])} / "
                       f"{_fmt(su['region_mean']['median'])} | |")]
            for key, what in (("below_unmasked_median", f"region mean below the unmasked median "
                                                        f"({_fmt(sm['unmasked_median_region_mean'])})"),
                              ("below_outside", "region mean below its outside mean"),
                              ("below_half_outside", "region mean below half its outside mean")):
                lines.append(f"| {about}: {what} | {count_cell(sm[key], m['n'])} | {count_cell(su[key], u['n'])} | "
                             f"{z_cell(sm[key], m['n'], su[key], u['n'])} |")
        lines += [(f"| seconds per sample (sampling alone) | {m['seconds_per_sample']:.2f} | "
                  f"{u['seconds_per_sample']:.2f} | |"), ""]
    return lines


def main(argv=None) -> int:
    from diffase.data.electronic.regions import REGION_PRESETS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="chargediff-mp20", help="joint model with the density field (name or path)")
    p.add_argument("--n", type=int, default=64, help="samples per set (masked per preset, and unmasked)")
    p.add_argument("--out", default=None, help="folder of the samples and rows (default results/chargediff_inpainting/"
                                               "<model>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--levels", type=int, default=100, help="sampling levels (respaced from T = 1000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--presets", nargs="+", default=["channel-1d-z", "slab-2d-z"], choices=REGION_PRESETS)
    p.add_argument("--width", type=float, default=0.25, help="fraction of each confined axis inside the region")
    p.add_argument("--target-density", type=float, default=LOW_DENSITY, help="the 'low' target, e/Angstrom^3")
    p.add_argument("--chemsys", default="tm3d-oxide", help="chemsys_groups condition ('none' for no condition)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale of the condition")
    p.add_argument("--resample", default=None, help="J,R: RePaint resampling of the masked sets (jump length J, R "
                   "passes), as ChargeGuidedGenerator(resample=(J, R)); the unmasked set samples once")
    p.add_argument("--surrogate", default=None, help="a structure -> density model (e.g. density-mp20): also "
                   "measure the region on its density of each generated structure")
    p.add_argument("--name", default="chargediff_inpainting", help="stem of the result files")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from diffase.generators import load_model
    from diffase.generators.descriptor_decoding import density_decoder
    from diffase.workflows.cathode_settings import CathodeSettings

    model_name = Path(args.model).stem if str(args.model).endswith(".pt") else str(args.model)
    out = Path(args.out or ROOT / "results" / "chargediff_inpainting" / model_name)
    conditions = None if args.chemsys == "none" else {"chemsys_groups": args.chemsys.split("-")}
    settings = {"model": args.model, "n": args.n, "seed": args.seed, "levels": args.levels,
                "batch_size": args.batch_size, "presets": args.presets, "width": args.width,
                "target_density": args.target_density, "conditions": conditions,
                "guidance": args.guidance if conditions else None, "resample": args.resample}
    info = machine()
    print(f"machine: {info}\nsettings: {settings}\nout: {out}")
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "settings.json"
    if previous.exists() and json.loads(previous.read_text()) != settings:
        raise SystemExit(f"{out} holds samples made with other settings ({previous.read_text()}); use another --out")
    previous.write_text(json.dumps(settings))
    model = load_model(args.model, device="cpu")
    vqvae = density_decoder(model.meta)
    kw = {"n": args.n, "seed": args.seed, "levels": args.levels, "batch_size": args.batch_size,
          "conditions": conditions, "guidance": args.guidance}
    next(model.sample(1, num_levels=2, seed=0))  # warm-up, so the first set's time per sample is not inflated
    unmasked = sample_set(model, out / f"{UNMASKED}.npz", known_grids=None, **kw)
    print(f"unmasked: {unmasked['seconds'] / args.n:.2f} s per sample")
    unmasked_li = li_rows(set_structures(unmasked), unmasked["density"], out / f"{UNMASKED}.li.jsonl",
                          CathodeSettings())
    predictor = None
    if args.surrogate:
        from diffase.predictors.density_model import DensityPredictor

        predictor = DensityPredictor.load(args.surrogate)
        surrogate_stem = Path(args.surrogate).stem
        unmasked_surrogate = surrogate_densities(set_structures(unmasked), predictor,
                                                 out / f"{UNMASKED}.{surrogate_stem}.npy")
    presets = []
    for preset in args.presets:
        mask = region_mask(preset, vqvae.config.grid, width=args.width)
        latent, values = low_target(model, preset, args.width, args.target_density)
        masked = sample_set(model, out / f"{preset}.npz", known_grids={F.DENSITY_LATENT: (latent, values)},
                            resample=tuple(int(v) for v in args.resample.split(",")) if args.resample else None, **kw)
        print(f"{preset}: {masked['seconds'] / args.n:.2f} s per sample")
        masked_li = li_rows(set_structures(masked), masked["density"], out / f"{preset}.li.jsonl",
                            CathodeSettings(region=preset, region_width=args.width))
        region = measured_region(mask)
        decoded = vqvae.decode_field(torch.as_tensor(values, dtype=torch.float32)[None])[0].double().numpy()
        surrogate = None if predictor is None else (
            surrogate_densities(set_structures(masked), predictor, out / f"{preset}.{surrogate_stem}.npy"),
            unmasked_surrogate)
        presets.append(preset_result(preset, masked, unmasked, masked_li, unmasked_li, region, args.target_density,
                                     float(decoded[region].mean()), surrogate))
    result = {"model": model_name, "machine": info, "settings": {**settings, "surrogate": args.surrogate},
              "presets": presets}
    write_result(args.results, args.name, result, report_lines(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
