"""Accuracy of jointly generated per-site descriptors against a GPAW recompute of the generated structures (issue 13).

Input: an extxyz of generated crystals whose frames carry the per-atom arrays a joint model writes
(``JointModel.generate`` / ``diffase generate --descriptors``): ``bader_charge`` (n,) e, positive = electron loss,
and/or ``atomic_dos`` (n, P) states/eV on the atomic-DOS autoencoder's grid (E - E_F, eV), with each frame's
``sample`` index in its info. Optionally ``--stability``: JSON ``{"<sample index>": E_hull eV/atom or null}``.

Selection, in sample order: structurally valid (:func:`diffase.analysis.validity.structure_valid`), every element
with a GPAW PAW setup and LCAO basis (the labeller's own check,
:func:`diffase.labeling.settings.unsupported_elements`), at most ``--max-atoms`` atoms, carrying a descriptor
array; candidates are labelled one after the other until ``--n`` labels exist, failures and timeouts skipped and
counted. Labelling is :func:`diffase.labeling.batch.label_structures` (what ``diffase label`` runs) with the
``fast`` preset on the generated geometry as it is (**no relaxation**), one GPAW process on one thread, at nice
10, into ``--out`` (``<out>/sample-<i>-0.npz``). Re-running resumes: an existing label is read, not recomputed,
and a candidate that failed before (``failures-0-of-1.jsonl``) is not tried again.

Site order: a label's per-site arrays follow the rows of its CIF text (the structure handed to GPAW), but
pymatgen's CIF parser (so :func:`diffase.data.electronic.dataset.label_structure`) regroups sites by element, which
reorders any structure whose sites are not already grouped so (generated ones usually are not). The label's sites
are therefore read in the CIF's row order (:func:`label_sites`, ASE's reader) and matched to the generated frame's
by periodic distance (same element, < 0.01 Angstrom; :func:`site_order`).

Metrics, per site (counts of structures and sites everywhere):

* Bader: |q_generated - q_GPAW|, e; MAE over all sites, per element, and over the stable subset (E_hull <= 0.1
  eV/atom) when ``--stability`` is given. Beside it the structure-blind guess: the per-element mean Bader charge
  of the DFT labels in ``--reference`` (format 2; :class:`diffase.predictors.baseline.ElementMeans`), on the same
  sites (sites of an element with no reference Bader charge are left out of both columns of that comparison).
* Atomic DOS: per-site Wasserstein distance (:func:`diffase.predictors.metrics.wasserstein_1d`, eV, unit-area
  curves over the window) and MAE (states/eV) of the decoded DOS against the GPAW site DOS (both per site, summed
  over spins, on the same grid; the labels carry a 0.0707 eV Gaussian, the autoencoder was trained on labels with
  the same one), beside the per-element mean site DOS of all DFT labels in ``--reference``; and the same after a
  further 0.3 eV Gaussian on both sides (:func:`diffase.data.electronic.dos.smear_sampled`), where the ``fast``
  preset's own DOS agrees with ``default`` to ~2 % (benchmarks/results/label_preset.md).

Writes ``benchmarks/results/joint_descriptor_gpaw-<model>.md`` and ``.json``.

    nice -n 10 python benchmarks/joint_descriptor_gpaw.py \
        --samples results/descriptor_ablation/joint-bader-mp20/gpaw_pool.extxyz \
        --stability results/descriptor_ablation/joint-bader-mp20/gpaw_pool.stability.json \
        --out runs/gpaw-joint-bader-mp20 --n 20 --max-atoms 6 --timeout 900
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase.io import read as ase_read
from ase.io import write as ase_write
from pymatgen.core import Element, Structure
from scipy.optimize import linear_sum_assignment

from diffase.analysis.validity import structure_valid
from diffase.data import fields as F
from diffase.data.electronic.dataset import is_predicted, read_label
from diffase.data.electronic.dos import DosWindow, smear_sampled
from diffase.data.structures import to_structure
from diffase.generators.descriptor_decoding import AUTOENCODER_ENTRY
from diffase.hub import read_checkpoint
from diffase.labeling.batch import file_stem, label_structures
from diffase.labeling.settings import LabelSettings, unsupported_elements
from diffase.nn.dos_autoencoder import autoencoder_from_checkpoint
from diffase.predictors.baseline import ElementMeans
from diffase.predictors.metrics import wasserstein_1d

sys.path.insert(0, str(Path(__file__).resolve().parent))
from site_label_predictor import machine, write_result  # noqa: E402

STABLE_E_HULL = 0.1  #: eV/atom, the stable subset's threshold
BROAD_SIGMA = 0.3  #: eV, the extra Gaussian of the broadened DOS comparison
SITE_TOLERANCE = 0.01  #: Angstrom, largest distance between a generated site and its label site


@dataclass
class Sample:
    """One generated crystal: its ``sample`` index, structure, and generated descriptors (None when absent):
    ``bader`` (n,) e, ``dos`` (n, P) states/eV."""

    index: int
    structure: Structure
    bader: np.ndarray | None
    dos: np.ndarray | None


def read_samples(path: str | Path) -> list[Sample]:
    """The frames of a generated extxyz with their per-atom descriptor arrays, in file order."""
    samples = []
    for i, atoms in enumerate(ase_read(str(path), index=":")):
        bader, dos = atoms.arrays.get(F.BADER_CHARGE), atoms.arrays.get(F.ATOMIC_DOS)
        plain = atoms.copy()
        for key in (F.BADER_CHARGE, F.ATOMIC_DOS, F.ADOS_LATENT, F.DUMMY_DESCRIPTOR):
            plain.arrays.pop(key, None)
        samples.append(Sample(int(atoms.info.get("sample", i)), to_structure(plain, name=f"{path}[{i}]"),
                              None if bader is None else np.asarray(bader, np.float64),
                              None if dos is None else np.asarray(dos, np.float64).reshape(len(atoms), -1)))
    return samples


def read_stability(path: str | Path | None) -> dict[int, float | None]:
    """``{sample index: E_hull eV/atom or None}`` from ``{"<index>": value or null}`` (empty without a path)."""
    if path is None:
        return {}
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "e_hull" in data and isinstance(data["e_hull"], dict):
        data = data["e_hull"]
    return {int(k): (None if v is None else float(v)) for k, v in data.items()}


def candidate_reason(sample: Sample, settings: LabelSettings, max_atoms: int,
                     require_descriptor: bool = True) -> str | None:
    """Why ``sample`` cannot be a candidate (a short key), or None when it can; ``require_descriptor=False``
    accepts a sample without descriptor arrays (a grid field such as the density is compared instead)."""
    if require_descriptor and sample.bader is None and sample.dos is None:
        return "no descriptor arrays"
    if len(sample.structure) > max_atoms:
        return f"more than {max_atoms} atoms"
    if unsupported_elements({el.symbol for el in sample.structure.composition.elements}, settings):
        return "element without GPAW setup/basis"
    if not structure_valid(sample.structure):
        return "structurally invalid"
    return None


def label_name(sample: Sample) -> str:
    """Name of a sample's label (``read_structures`` names the one frame of ``sample-<i>.extxyz`` so)."""
    return f"sample-{sample.index}-0"


def failed_names(out: Path) -> set[str]:
    """Names of structures a previous run into ``out`` failed on."""
    names = set()
    for path in out.glob("failures-*.jsonl"):
        names |= {json.loads(line)["name"] for line in path.read_text().splitlines() if line.strip()}
    return names


def gpaw_run_environment() -> None:
    """Settings of a GPAW benchmark process: warnings off, one thread everywhere, nice 10 (inherited by the GPAW
    child process), INFO logging with times."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    os.nice(max(0, 10 - os.nice(0)))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")


def label_samples(samples: list[Sample], out: Path, settings: LabelSettings, n: int, max_atoms: int,
                  retry_failed: bool = False, compute: bool = True, require_descriptor: bool = True,
                  shard: tuple[int, int] = (0, 1)) -> tuple[list[tuple[Sample, Path]], dict]:
    """Label candidates in sample order until ``n`` labels exist in ``out``; return (sample, label path) pairs and
    counts (``skipped``: reason -> count, ``failed`` and ``resumed`` names, ``tried``, ``unlabelled``: candidates
    left without a label when ``compute`` is False or, with ``shard`` = (k, m), another process's candidates not
    labelled yet). A candidate that failed in an earlier run is counted failed without a new try unless
    ``retry_failed``. ``shard``: this process computes only the candidates whose sample index is k modulo m, so m
    processes can fill one folder together (each stops once it sees ``n`` labels there)."""
    (out / "inputs").mkdir(parents=True, exist_ok=True)
    done, skipped, failed, resumed, tried, unlabelled = [], {}, [], [], 0, 0
    previously_failed = set() if retry_failed else failed_names(out)
    for sample in sorted(samples, key=lambda s: s.index):
        if len(done) >= n:
            break
        if reason := candidate_reason(sample, settings, max_atoms, require_descriptor):
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        name = label_name(sample)
        path = out / f"{file_stem(name)}.npz"
        if path.exists():
            resumed.append(name)
            done.append((sample, path))
            continue
        if name in previously_failed:
            failed.append(name)
            continue
        if not compute or sample.index % shard[1] != shard[0]:
            unlabelled += 1
            continue
        tried += 1
        source = out / "inputs" / f"sample-{sample.index}.extxyz"
        ase_write(str(source), sample.structure.to_ase_atoms(), format="extxyz")
        report = label_structures(source, out, settings=settings)
        if report.labelled:
            done.append((sample, path))
        else:
            failed.append(name)
    return done, {"skipped": skipped, "failed": failed, "resumed": resumed, "tried": tried, "unlabelled": unlabelled}


def label_sites(label: dict) -> Structure:
    """The sites of a label in the order of its per-site arrays: the rows of its CIF as written (ASE's CIF reader
    keeps them; pymatgen's regroups them by element)."""
    return to_structure(ase_read(io.StringIO(label["cif"]), format="cif"), name=str(label["material_id"]))


def site_order(generated: Structure, labelled: Structure, tol: float = SITE_TOLERANCE) -> np.ndarray:
    """Index of each generated site's site in ``labelled``, (n,) int: the same element at the nearest periodic
    position (fractional coordinates in the generated cell; an assignment, so no site is used twice).

    Raises ``ValueError`` when the two differ in atom count, cell or composition, or a site has no partner within
    ``tol`` Angstrom."""
    if len(generated) != len(labelled):
        raise ValueError(f"{generated.formula}: {len(generated)} generated sites, {len(labelled)} labelled")
    if not np.allclose(generated.lattice.abc + generated.lattice.angles, labelled.lattice.abc + labelled.lattice.angles,
                       atol=1e-3):
        raise ValueError(f"{generated.formula}: the label's cell differs from the generated one")
    distance = generated.lattice.get_all_distances(generated.frac_coords, labelled.frac_coords)
    same = np.array([[a.specie == b.specie for b in labelled] for a in generated])
    cost = np.where(same, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    order = cols[np.argsort(rows)]
    worst = cost[np.arange(len(generated)), order].max()
    if worst > tol:
        raise ValueError(f"{generated.formula}: a generated site has no labelled site of its element within {tol} "
                         f"Angstrom (worst {worst:.3g} Angstrom)")
    return order


def paired_sites(pairs: list[tuple[Sample, Path]], stability: dict[int, float | None]) -> dict[str, np.ndarray]:
    """Per-site arrays over all labelled samples, in sample then site order: ``sample``, ``z``, ``e_hull`` (NaN when
    unknown), ``bader`` / ``bader_ref`` (e; NaN where not generated), ``dos`` / ``dos_ref`` (states/eV; NaN rows
    where not generated), and the label's ``dos_grid`` (P,) and ``dft_seconds`` per structure."""
    rows = {key: [] for key in ("sample", "z", "e_hull", "bader", "bader_ref", "dos", "dos_ref")}
    grid, seconds = None, {}
    for sample, path in pairs:
        label = read_label(path)
        order = site_order(sample.structure, label_sites(label))
        n = len(sample.structure)
        grid = label["dos_grid"].astype(np.float64) if grid is None else grid
        seconds[sample.index] = float(label["dft_seconds"])
        e_hull = stability.get(sample.index)
        rows["sample"].append(np.full(n, sample.index))
        rows["z"].append(np.array(sample.structure.atomic_numbers))
        rows["e_hull"].append(np.full(n, np.nan if e_hull is None else e_hull))
        rows["bader"].append(np.full(n, np.nan) if sample.bader is None else sample.bader)
        rows["bader_ref"].append(label["bader"].astype(np.float64)[order])
        p = label["dos"].shape[1]
        rows["dos"].append(np.full((n, p), np.nan) if sample.dos is None else sample.dos)
        rows["dos_ref"].append(label["dos"].astype(np.float64)[order])
    sites = {key: np.concatenate(value) for key, value in rows.items()}
    sites["dos_grid"] = grid
    sites["dft_seconds"] = seconds
    return sites


def reference_means(folder: str | Path) -> tuple[ElementMeans, int, int]:
    """Per-element mean site DOS (all DFT labels) and Bader charge (labels with one, format 2) of ``folder``;
    with the number of DFT labels and of those with Bader charges."""
    numbers, dos, charges = [], [], []
    n_bader = 0
    for path in sorted(Path(folder).glob("*.npz")):
        label = read_label(path)
        if is_predicted(label):
            continue
        numbers.append(np.array(label_sites(label).atomic_numbers))
        dos.append(label["dos"])
        charges.append(label["bader"])
        n_bader += int(np.isfinite(label["bader"]).all())
    return ElementMeans.fit(numbers, dos, charges), len(numbers), n_bader


def baseline_sites(means: ElementMeans, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The per-element mean guess for each site: DOS (n, P) and Bader charge (n,); NaN for an element with no
    reference site (DOS) or no reference Bader charge (charge)."""
    known = np.isin(z, means.elements)
    rows = np.searchsorted(means.elements, z).clip(0, len(means.elements) - 1)
    dos = np.where(known[:, None], means.dos[rows], np.nan)
    charge = np.where(known & (means.n_charge[rows] > 0), means.charge[rows], np.nan)
    return dos, charge


def dos_window(grid: np.ndarray) -> DosWindow:
    return DosWindow(float(grid[0]), float(grid[-1]), len(grid))


def bader_row(group: str, sites: dict, keep: np.ndarray, baseline: np.ndarray) -> dict:
    """MAE (e) of the generated Bader charges and of the per-element-mean guess over the sites ``keep`` that hold a
    generated charge; the comparison columns use the sites that also have a guess."""
    keep = keep & np.isfinite(sites["bader"])
    paired = keep & np.isfinite(baseline)
    error = np.abs(sites["bader"] - sites["bader_ref"])
    return {
        "group": group, "structures": int(len(np.unique(sites["sample"][keep]))), "sites": int(keep.sum()),
        "bader_mae": _mean(error[keep]),
        "paired_sites": int(paired.sum()), "bader_mae_paired": _mean(error[paired]),
        "baseline_mae_paired": _mean(np.abs(baseline - sites["bader_ref"])[paired]),
    }


def dos_row(group: str, sites: dict, keep: np.ndarray, baseline: np.ndarray, sigma: float | None = None) -> dict:
    """Mean per-site Wasserstein distance (eV) and MAE (states/eV) of the generated DOS and of the per-element-mean
    guess against the GPAW site DOS over the sites ``keep`` with a generated DOS (both sides further smeared by
    a Gaussian ``sigma`` eV when given)."""
    grid = sites["dos_grid"]
    keep = keep & np.isfinite(sites["dos"]).all(axis=1)
    paired = keep & np.isfinite(baseline).all(axis=1)

    def errors(dos, mask):
        dos, ref = dos[mask], sites["dos_ref"][mask]
        if sigma is not None and len(dos):
            dos, ref = (smear_sampled(grid, d, dos_window(grid), sigma=sigma) for d in (dos, ref))
        return wasserstein_1d(dos, ref, grid), np.abs(dos - ref).mean(axis=1)

    w_model, mae_model = errors(sites["dos"], keep)
    w_pair, mae_pair = errors(sites["dos"], paired)
    w_base, mae_base = errors(baseline, paired)
    return {
        "group": group, "structures": int(len(np.unique(sites["sample"][keep]))), "sites": int(keep.sum()),
        "wasserstein": _mean(w_model), "mae": _mean(mae_model), "ref_mean_dos": _mean(sites["dos_ref"][keep]),
        "paired_sites": int(paired.sum()), "wasserstein_paired": _mean(w_pair), "mae_paired": _mean(mae_pair),
        "baseline_wasserstein_paired": _mean(w_base), "baseline_mae_paired": _mean(mae_base),
    }


def _mean(values: np.ndarray) -> float | None:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else None


def site_groups(sites: dict, with_stability: bool) -> list[tuple[str, np.ndarray]]:
    """(name, site mask): all sites, the stable subset (when stability is known), then each element by Z."""
    groups = [("all", np.ones(len(sites["z"]), bool))]
    if with_stability:
        groups.append((f"E_hull <= {STABLE_E_HULL}", sites["e_hull"] <= STABLE_E_HULL))
    groups += [(Element.from_Z(int(z)).symbol, sites["z"] == z) for z in np.unique(sites["z"])]
    return groups


def sign_check(sites: dict) -> dict:
    """Whether the generated charges follow the labels' sign convention (positive = electron loss): the fraction of
    sites with |q_GPAW| > 0.1 e where the signs agree, and the Pearson correlation over all sites."""
    keep = np.isfinite(sites["bader"])
    q, ref = sites["bader"][keep], sites["bader_ref"][keep]
    clear = np.abs(ref) > 0.1
    return {"sites_with_abs_ref_over_0.1": int(clear.sum()),
            "same_sign": int((np.sign(q[clear]) == np.sign(ref[clear])).sum()),
            "pearson_r": float(np.corrcoef(q, ref)[0, 1]) if len(q) > 1 and q.std() > 0 and ref.std() > 0 else None,
            "mean_abs_total_generated": _mean([abs(q[sites["sample"][keep] == s].sum())
                                               for s in np.unique(sites["sample"][keep])]),
            "mean_abs_total_gpaw": _mean([abs(ref[sites["sample"][keep] == s].sum())
                                          for s in np.unique(sites["sample"][keep])])}


def structure_row(sample: Sample, sites: dict, stability: dict[int, float | None]) -> dict:
    """One labelled structure: formula, atoms, E_hull, DFT seconds, its Bader MAE (e) and mean W1 (eV)."""
    mine = sites["sample"] == sample.index
    return {"sample": sample.index, "formula": sample.structure.formula, "atoms": len(sample.structure),
            "e_hull": stability.get(sample.index), "dft_seconds": sites["dft_seconds"][sample.index],
            "bader_mae": _mean(np.abs(sites["bader"] - sites["bader_ref"])[mine]),
            "wasserstein": _mean(wasserstein_1d(sites["dos"][mine], sites["dos_ref"][mine], sites["dos_grid"]))}


def check_grid(sites: dict, autoencoder: str) -> None:
    """The labels' DOS grid must be the autoencoder's (the decoded DOS is on the latter)."""
    ckpt = read_checkpoint(autoencoder)
    grid = autoencoder_from_checkpoint(ckpt.get(AUTOENCODER_ENTRY, ckpt)).config.grid()
    if grid.shape != sites["dos_grid"].shape or not np.allclose(grid, sites["dos_grid"], atol=1e-3):
        raise ValueError(f"the autoencoder's grid ({grid[0]}..{grid[-1]} eV, {len(grid)} points) is not the labels' "
                         f"({sites['dos_grid'][0]}..{sites['dos_grid'][-1]} eV, {len(sites['dos_grid'])} points)")


def table(rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """Markdown table of ``rows`` with (header, key) ``columns``; None prints as '-'."""
    def cell(value):
        return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
    return (["| " + " | ".join(h for h, _ in columns) + " |", "|" + " --- |" * len(columns)]
            + ["| " + " | ".join(cell(r[k]) for _, k in columns) + " |" for r in rows])


BADER_COLUMNS = [("sites", "group"), ("structures", "structures"), ("sites (n)", "sites"),
                 ("generated MAE e", "bader_mae"), ("sites with a guess", "paired_sites"),
                 ("generated MAE e (same sites)", "bader_mae_paired"), ("element-mean guess MAE e", "baseline_mae_paired")]
DOS_COLUMNS = [("sites", "group"), ("structures", "structures"), ("sites (n)", "sites"),
               ("generated W1 eV", "wasserstein"), ("generated MAE states/eV", "mae"),
               ("mean GPAW DOS states/eV", "ref_mean_dos"), ("sites with a guess", "paired_sites"),
               ("generated W1 (same sites)", "wasserstein_paired"), ("guess W1", "baseline_wasserstein_paired"),
               ("generated MAE (same sites)", "mae_paired"), ("guess MAE", "baseline_mae_paired")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", required=True, help="extxyz of generated crystals with per-atom descriptor arrays")
    p.add_argument("--stability", default=None, help='JSON {"<sample index>": E_hull eV/atom or null}')
    p.add_argument("--model", default=None, help="name in the output files (default: the samples' folder name)")
    p.add_argument("--n", type=int, default=20, help="labelled structures to reach")
    p.add_argument("--max-atoms", type=int, default=6)
    p.add_argument("--out", required=True, help="label folder (resumable)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds of GPAW per structure before it is skipped")
    p.add_argument("--retry-failed", action="store_true",
                   help="try again the candidates an earlier run failed on (e.g. timeouts on a busy machine)")
    p.add_argument("--report-only", action="store_true",
                   help="compute nothing: report on the labels already in --out (e.g. when time ran out)")
    p.add_argument("--reference", default="../shared/data/electronic", help="DFT label folder of the element means")
    p.add_argument("--dos-autoencoder", default="ados-autoencoder",
                   help="checkpoint whose grid the decoded DOS is on (an autoencoder, or a joint model holding one)")
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    gpaw_run_environment()
    model = args.model or Path(args.samples).resolve().parent.name
    start = time.perf_counter()
    header = f"{machine()}; GPAW on one thread at nice {os.nice(0)}"

    settings = LabelSettings.from_preset("fast", timeout=args.timeout)
    samples = read_samples(args.samples)
    stability = read_stability(args.stability)
    pairs, counts = label_samples(samples, Path(args.out), settings, args.n, args.max_atoms, args.retry_failed,
                                  compute=not args.report_only)
    if not pairs:
        print(f"no structure labelled ({counts})")
        return 1
    sites = paired_sites(pairs, stability)
    means, n_labels, n_bader_labels = reference_means(args.reference)
    guess_dos, guess_q = baseline_sites(means, sites["z"])
    groups = site_groups(sites, bool(stability))
    has_bader, has_dos = np.isfinite(sites["bader"]).any(), np.isfinite(sites["dos"]).all(axis=1).any()
    if has_dos:
        check_grid(sites, args.dos_autoencoder)
    result = {
        "model": model, "samples": args.samples, "stability": args.stability, "machine": header,
        "settings": {"preset": "fast", "n": args.n, "max_atoms": args.max_atoms, "timeout_s": args.timeout,
                     "geometry": "generated, unrelaxed", "label_folder": args.out,
                     "label_settings": settings.as_dict(), "reference": args.reference,
                     "reference_labels": n_labels, "reference_labels_with_bader": n_bader_labels},
        "counts": {"frames": len(samples), "labelled": len(pairs), "resumed": len(counts["resumed"]),
                   "tried_now": counts["tried"], "unlabelled_candidates": counts["unlabelled"],
                   "failed": len(counts["failed"]), "failed_names": counts["failed"],
                   "skipped": counts["skipped"], "sites": int(len(sites["z"])),
                   "with_e_hull": int(sum(stability.get(s.index) is not None for s, _ in pairs))},
        "bader": [bader_row(name, sites, mask, guess_q) for name, mask in groups] if has_bader else None,
        "bader_sign": sign_check(sites) if has_bader else None,
        "dos": [dos_row(name, sites, mask, guess_dos) for name, mask in groups] if has_dos else None,
        "dos_broadened": ([dos_row(name, sites, mask, guess_dos, BROAD_SIGMA) for name, mask in groups[:2]]
                          if has_dos else None),
        "structures": [structure_row(s, sites, stability) for s, _ in pairs],
    }
    result["wall_s"] = round(time.perf_counter() - start, 1)
    write_result(args.results, f"joint_descriptor_gpaw-{model}", result, report_lines(result))
    return 0


def report_lines(r: dict) -> list[str]:
    c, s = r["counts"], r["settings"]
    seconds = [x["dft_seconds"] for x in r["structures"]]
    lines = [f"# Generated descriptors against a GPAW recompute: {r['model']}", "",
             f"Machine: {r['machine']}. Wall time of this run: {r['wall_s']:.0f} s (labels made by earlier runs into "
             f"the same folder are read, not recomputed: {c['resumed']} of {c['labelled']}).", "",
             f"Samples: `{r['samples']}` ({c['frames']} frames); stability: `{r['stability']}`. Selection in sample "
             f"order: structurally valid, every element with a GPAW setup + dzp basis, at most {s['max_atoms']} atoms, "
             f"until {s['n']} labelled. Labelled: **{c['labelled']} structures, {c['sites']} sites**; "
             f"failed or timed out ({s['timeout_s']:.0f} s): {c['failed']}; passed over: "
             + (", ".join(f"{k}: {v}" for k, v in c["skipped"].items()) or "none")
             + f". E_hull known for {c['with_e_hull']} of the {c['labelled']} labelled structures."
             + (f" **Stopped short of {s['n']}**: {c['unlabelled_candidates']} candidates not labelled yet (the run "
                "is resumable: the same command without --report-only goes on)." if c["unlabelled_candidates"] else ""),
             "",
             f"GPAW: `diffase label --preset fast` settings (PBE, LCAO dzp, h 0.2 A, SCF k-density 8 cap 4, site DOS "
             f"from a non-self-consistent pass at k-density 15 cap 6, Fermi-Dirac 0.1 eV, spin-paired) on the "
             f"**generated geometry, unrelaxed**; one process, one thread. DFT seconds per structure: median "
             f"{np.median(seconds):.0f}, max {max(seconds):.0f}. The fast preset's own Bader error against `default` "
             "is a median 0.046 e over 31 structures (benchmarks/results/label_preset.md), a floor for what can be "
             "resolved here. E_hull (when given) is that of the sample after the ablation's CHGNet relaxation; "
             "GPAW ran on the unrelaxed geometry.", "",
             f"Structure-blind guess: per-element mean of the DFT labels in `{s['reference']}` "
             f"({s['reference_labels']} labels; Bader charges from the {s['reference_labels_with_bader']} format-2 "
             "ones, site DOS from all), on the same sites.", ""]
    if r["bader"]:
        sign = r["bader_sign"]
        lines += ["## Bader charges (e, positive = electron loss on both sides)", ""] + table(r["bader"], BADER_COLUMNS)
        lines += ["", f"Sign convention check: on the {sign['sites_with_abs_ref_over_0.1']} sites with |q_GPAW| > 0.1 e "
                  f"the generated sign agrees on {sign['same_sign']}; Pearson r over all sites "
                  f"{_fmt(sign['pearson_r'])}. Mean |total charge| per crystal: generated "
                  f"{_fmt(sign['mean_abs_total_generated'])} e, GPAW {_fmt(sign['mean_abs_total_gpaw'])} e.", ""]
    if r["dos"]:
        lines += ["## Atomic DOS (decoded generated DOS vs GPAW site DOS, E - E_F in [-10, 10] eV, 512 points)", "",
                  "Both per site and summed over spins; the labels at a 0.0707 eV Gaussian, the decoder trained on "
                  "labels at that width, so no broadening in this table. W1: Wasserstein distance of the unit-area "
                  "curves, eV; MAE over the grid, states/eV. A floor for the decoded DOS: the autoencoder alone "
                  "reconstructs held-out DFT site DOS at W1 0.584 eV and MAE 0.463 states/eV (59 sites, "
                  "models/ados-autoencoder.md).", ""] + table(r["dos"], DOS_COLUMNS)
        lines += ["", f"Both sides further smeared by a {BROAD_SIGMA} eV Gaussian:", ""]
        lines += table(r["dos_broadened"], DOS_COLUMNS)
        lines += [""]
    lines += ["## Structures", "", "| sample | formula | atoms | E_hull eV/atom | DFT s | Bader MAE e | W1 eV |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {x['sample']} | {x['formula']} | {x['atoms']} | {_fmt(x['e_hull'])} | {x['dft_seconds']:.0f} | "
              f"{_fmt(x['bader_mae'])} | {_fmt(x['wasserstein'])} |" for x in r["structures"]]
    return lines


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
