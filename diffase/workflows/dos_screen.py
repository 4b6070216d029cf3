"""DOS screening: generate crystals for a DOS target, relax them with an MLIP, keep the low formation energies, rank
by DOS similarity, optionally check the best with GPAW; streamed to a folder and resumable.

Stages (:func:`dos_screen`), each appending to its own file as soon as a piece is done:

1. generate: :class:`~diffase.generators.dos_conditioned.DOSConditionedGenerator` batch by batch ->
   ``generated/<sample>.cif`` and one ``generated.jsonl`` line per sample (``sample``, ``batch``, ``valid``,
   ``error``, ``cif``); batch b draws from ``(seed, b)`` alone, so a resumed run samples only the missing batches;
2. relax: each valid sample with the MLIP (CHGNet by default; FIRE + FrechetCellFilter, ``relax_steps`` 100 and fmax
   0.1 eV/Angstrom by default: a screen, not a converged relaxation) -> ``relaxed/<sample>.cif`` and one
   ``relaxed.jsonl`` line (``energy_per_atom``, ``formation_energy_per_atom`` eV/atom against the elemental
   references: pymatgen's ``get_form_energy_per_atom`` through :func:`~diffase.analysis.stability.hull_stability`;
   ``steps``, ``converged``, ``error``);
3. rank (redone by every run, cheap): the relaxed crystals with a formation energy <= ``max_formation_energy`` are
   scored by the generator's surrogate (``dos_mae``: states/eV on the model's grid, lower is better, at the
   conditioned sites); a crystal that matches a better-ranked one (pymatgen ``StructureMatcher`` defaults) gets
   no rank but ``duplicate_of`` -> ``ranking.csv`` (every relaxed crystal, ``kept`` and ``rank`` for those kept) and
   ``plots/rank-<k>.png`` (target vs generated site DOS, one panel per conditioned site, at most 8);
4. optional GPAW check of the ``gpaw_check`` best: :mod:`diffase.labeling` (the ``diffase label`` settings,
   default preset) -> ``gpaw/sample-<i>.npz`` (a label file), its site DOS compared with the target
   (``gpaw_dos_mae``) and drawn in the plot. Without GPAW this stage is skipped with a message saying how to
   install it.

``settings.json`` records what identifies a run (target content, sites, generator settings, model and surrogate
checkpoint hashes, template, MLIP and relaxation settings, elemental references): a re-run with any of them changed
is refused before anything is written (:mod:`diffase.resume`). The threshold, ``top`` and ``gpaw_check`` only act
in stages 3-4 and may change between runs.

Energies: CHGNet energies are on the MP2020-compatible scale, as are the MP elemental references
(``2023-02-07-mp-elemental-reference-entries.json.gz``); see :mod:`diffase.analysis.stability`.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from diffase.analysis.stability import (
    hull_stability,
    load_elemental_references,
    mlip_entry,
)
from diffase.data.electronic.dos_targets import on_window
from diffase.data.io import json_line
from diffase.errors import InvalidStructureError
from diffase.generators.dos_conditioned import (
    DOSConditionedGenerator,
    dos_similarity,
    records_to_structures,
)
from diffase.resume import (
    SETTINGS_FILE,
    check_resume,
    file_sha256,
    model_fingerprint,
    structure_fingerprint,
    write_settings,
)

#: Columns of ``ranking.csv``.
RANKING_COLUMNS = ("rank", "sample", "formula", "n_atoms", "formation_energy_per_atom_eV", "energy_per_atom_eV",
                   "kept", "duplicate_of", "dos_mae_states_per_eV", "gpaw_dos_mae_states_per_eV", "relax_steps",
                   "converged", "cif", "error")
#: Generator arguments that decide which crystals are made (the target enters by its content).
GENERATOR_SETTINGS = ("sites", "n_samples", "guidance_scale", "t_start", "fix_species", "num_atoms", "seed", "total",
                      "sigma", "num_levels", "batch_size")


def run_settings(generator: DOSConditionedGenerator, template: Structure | None, *, calculator, relax_steps: int,
                 fmax: float, elemental_references: str | Path) -> dict:
    """What identifies a screening run in its ``settings.json`` (module docstring)."""
    target = generator.dos_target(len(template) if template is not None else None)
    digest = hashlib.sha256(np.ascontiguousarray(target.site_dos, dtype=np.float64).tobytes())
    digest.update(json.dumps(list(target.sites)).encode())
    return {"target_sha256": digest.hexdigest(), "target_source": target.source,
            **{k: getattr(generator, k) for k in GENERATOR_SETTINGS},
            **model_fingerprint(generator.joint_model()),
            **{f"surrogate_{k}": v for k, v in model_fingerprint(generator.predictor()).items()},
            "template_sha256": structure_fingerprint(template) if template is not None else None,
            "calculator": calculator if isinstance(calculator, str) else type(calculator).__name__,
            "relax_steps": relax_steps, "fmax": fmax, "elemental_references_sha256": file_sha256(elemental_references)}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _append(path: Path, rows: list[dict]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(json_line(r) + "\n" for r in rows))


def generate_stage(generator: DOSConditionedGenerator, templates, out: Path, say: Callable[[str], None]) -> None:
    """Stage 1: sample the batches not yet in ``generated.jsonl``."""
    done = _lines(out / "generated.jsonl")
    start = max((r["batch"] for r in done), default=-1) + 1
    n_jobs = len(generator.jobs(templates))
    if start * generator.batch_size >= n_jobs:
        return
    if done:
        say(f"resuming generation at batch {start} ({len(done)} of {n_jobs} samples already generated)")
    (out / "generated").mkdir(exist_ok=True)
    for b, _, records in generator.iter_batches(templates, start_batch=start):
        rows = []
        for k, structure in enumerate(records_to_structures(records), start=b * generator.batch_size):
            row = {"sample": k, "batch": b, "valid": structure is not None,
                   "error": None if structure is not None else "invalid sample (an atom type was left masked)"}
            if structure is not None:
                row["cif"] = f"generated/sample-{k:04d}.cif"
                structure.to(filename=str(out / row["cif"]))
            rows.append(row)
        _append(out / "generated.jsonl", rows)  # a batch is recorded whole, after its CIFs
        say(f"generated batch {b}: {sum(r['valid'] for r in rows)} of {len(rows)} valid")


def relax_stage(out: Path, potential, references, *, relax_steps: int, fmax: float,
                say: Callable[[str], None]) -> None:
    """Stage 2: relax every valid generated crystal not yet in ``relaxed.jsonl``; its formation energy per atom."""
    from diffase.simulate.relax import relax

    done = {r["sample"] for r in _lines(out / "relaxed.jsonl")}
    todo = [r for r in _lines(out / "generated.jsonl") if r["valid"] and r["sample"] not in done]
    if done and todo:
        say(f"resuming relaxation: {len(done)} done, {len(todo)} to go")
    (out / "relaxed").mkdir(exist_ok=True)
    for r in todo:
        row = {"sample": r["sample"]}
        try:
            result = relax(Structure.from_file(out / r["cif"]), potential, fmax=fmax, steps=relax_steps,
                           optimizer="FIRE", relax_cell=True)
            entry = mlip_entry(result.structure, result.final_energy)
            row.update(energy_per_atom=result.final_energy_per_atom,
                       formation_energy_per_atom=hull_stability([entry], references)[0].formation_energy,
                       steps=result.steps, converged=result.converged, cif=f"relaxed/sample-{r['sample']:04d}.cif")
            result.structure.to(filename=str(out / row["cif"]))
        except (InvalidStructureError, ValueError) as err:  # overlapping atoms, an element without a reference
            row["error"] = str(err)
        _append(out / "relaxed.jsonl", [row])
        say(f"relaxed sample {r['sample']}: " + (f"E_f = {row['formation_energy_per_atom']:.3f} eV/atom"
                                                 if "error" not in row else row["error"]))


def rank_stage(generator: DOSConditionedGenerator, templates, out: Path, *, max_formation_energy: float,
               top: int) -> list[dict]:
    """Stage 3: score the kept crystals with the surrogate and rank the distinct ones (lowest ``dos_mae`` first);
    returns every relaxed row, the ranked ones first in rank order, each with its ``structure`` and, if kept, its
    score (and ``duplicate_of``: the sample a duplicate matches)."""
    jobs = generator.jobs(templates)
    rows = _lines(out / "relaxed.jsonl")
    for row in rows:
        row["kept"] = "error" not in row and row["formation_energy_per_atom"] <= max_formation_energy
        row["structure"] = Structure.from_file(out / row["cif"]) if "cif" in row else None
    kept = [r for r in rows if r["kept"]]
    for row, score in zip(kept, generator.score([jobs[r["sample"]] for r in kept], [r["structure"] for r in kept])):
        row.update(score=score, dos_mae=score["dos_mae"] if score["valid"] else None, score_error=score["error"])
    ranked = sorted((r for r in kept if r["dos_mae"] is not None), key=lambda r: r["dos_mae"])
    matcher = StructureMatcher()  # pymatgen defaults, as the inpainting ranking
    distinct: list[dict] = []
    for row in ranked:
        twin = next((d for d in distinct if matcher.fit(d["structure"], row["structure"])), None)
        if twin is None:
            distinct.append(row)
        else:
            row["duplicate_of"] = twin["sample"]
    for k, row in enumerate(distinct, 1):
        row["rank"] = k
    return distinct + [r for r in rows if not r.get("rank")]


def gpaw_stage(ranked: list[dict], jobs, out: Path, n_best: int, say: Callable[[str], None]) -> None:
    """Stage 4: GPAW labels of the ``n_best`` ranked crystals (kept between runs) and their ``gpaw_dos_mae``."""
    from diffase.data.electronic.dataset import read_label, write_label
    from diffase.labeling.gpaw_runner import (
        GPAWNotFoundError,
        find_gpaw_python,
        label_from_raw,
        run_single_point,
    )
    from diffase.labeling.settings import LabelSettings

    best = [r for r in ranked if r.get("rank")][:n_best]
    if not best:
        return
    try:
        find_gpaw_python()
    except GPAWNotFoundError as err:
        say(f"skipping the GPAW check of the {len(best)} best: {err}")
        return
    settings = LabelSettings()
    (out / "gpaw").mkdir(exist_ok=True)
    for row in best:
        path = out / "gpaw" / f"sample-{row['sample']:04d}.npz"
        if not path.exists():
            say(f"GPAW check of rank {row['rank']} (sample {row['sample']}, {row['structure'].formula})")
            try:
                raw = run_single_point(row["structure"], settings, log_path=path.with_suffix(".txt"))
            except Exception as err:  # noqa: BLE001 - one failed DFT run must not lose the ranking
                say(f"GPAW failed on sample {row['sample']}: {err}")
                continue
            write_label(path, label_from_raw(f"sample-{row['sample']:04d}", row["structure"], raw, settings))
        label = read_label(path)
        target = jobs[row["sample"]].target
        row["gpaw_site_dos"] = on_window(label["dos"], target.window, label["dos_grid"], what="the GPAW site DOS")
        row["gpaw_dos_mae"] = dos_similarity(target, row["gpaw_site_dos"])


def write_ranking(out: Path, rows: list[dict]) -> Path:
    """``ranking.csv``: every relaxed crystal, the kept ones by rank."""
    path = out / "ranking.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(RANKING_COLUMNS)
        for r in rows:
            s = r["structure"]
            writer.writerow([r.get("rank", ""), r["sample"], s.composition.reduced_formula if s else "",
                             len(s) if s else "", _fmt(r.get("formation_energy_per_atom")),
                             _fmt(r.get("energy_per_atom")), int(r["kept"]), r.get("duplicate_of", ""),
                             _fmt(r.get("dos_mae")), _fmt(r.get("gpaw_dos_mae")), r.get("steps", ""),
                             r.get("converged", ""),
                             r.get("cif", ""), r.get("error") or r.get("score_error") or ""])
    return path


def overlay_curves(row: dict, target) -> tuple[dict[str, np.ndarray], list[str]]:
    """The curves of one ranked crystal's plot, named for the legend (``target`` is the target, ``generated ...``
    the generated crystal's DOS), and the panel labels (site and generated element; the target's element too when
    it differs)."""
    score, s = row["score"], row["structure"]
    if target.total is not None:
        n = len(s)
        curves = {"target": target.total[None] / n, "generated (surrogate)": score["predicted_total_dos"][None] / n}
        if "gpaw_site_dos" in row:
            curves["generated (GPAW)"] = row["gpaw_site_dos"].sum(0)[None] / n
        return curves, ["total / atom"]
    curves = {"target": target.site_dos, "generated (surrogate)": score["predicted_site_dos"]}
    if "gpaw_site_dos" in row:
        curves["generated (GPAW)"] = row["gpaw_site_dos"][list(target.sites)]
    given = target.structure  # the target's own crystal, when known: name its element where the sample differs
    return curves, [f"site {i} {s[i].specie.symbol}" + (f"\n(target {given[i].specie.symbol})" if given is not None
                    and i < len(given) and given[i].specie != s[i].specie else "") for i in target.sites]


def write_plots(out: Path, rows: list[dict], jobs, top: int) -> list[Path]:
    """``plots/rank-<k>.png`` of the ``top`` ranked crystals (matplotlib, Agg: no display needed)."""
    from diffase.data.electronic.plots import plot_site_dos

    (out / "plots").mkdir(exist_ok=True)
    paths = []
    for row in [r for r in rows if r.get("rank")][:top]:
        target = jobs[row["sample"]].target
        curves, labels = overlay_curves(row, target)
        paths.append(plot_site_dos(target.window.grid(), curves, out / "plots" / f"rank-{row['rank']}.png",
                                   site_labels=labels))
    return paths


def dos_screen(generator: DOSConditionedGenerator, out_dir: str | Path, *, template: Structure | None = None,
               elemental_references: str | Path, calculator="chgnet", relax_steps: int = 100, fmax: float = 0.1,
               max_formation_energy: float = 0.0, top: int = 5, gpaw_check: int = 0, device: str = "auto",
               say: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) a DOS screen into ``out_dir`` (module docstring); returns the rows of ``ranking.csv`` (kept
    crystals by rank first) with their ``structure``, scores and energies.

    ``calculator``: an MLIP name (``"chgnet"``) or an ASE calculator. ``elemental_references``: a JSON(.gz)
    ``{symbol: ComputedEntry}``, e.g. the MP elemental references. ``max_formation_energy`` eV/atom.
    """
    from diffase.calculators import resolve_potential

    out = Path(out_dir)
    templates = None if template is None else [template]
    jobs = generator.jobs(templates)  # bad target, sites, species, model: refused before any output
    references = load_elemental_references(elemental_references)
    settings = run_settings(generator, template, calculator=calculator, relax_steps=relax_steps, fmax=fmax,
                            elemental_references=elemental_references)
    check_resume(out / SETTINGS_FILE, settings, what="dos-screen")
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out / SETTINGS_FILE, settings)
    generate_stage(generator, templates, out, say)
    relax_stage(out, resolve_potential(calculator, device), references, relax_steps=relax_steps, fmax=fmax, say=say)
    rows = rank_stage(generator, templates, out, max_formation_energy=max_formation_energy, top=top)
    write_ranking(out, rows)  # before the slow GPAW check: an interrupted check keeps the ranking
    write_plots(out, rows, jobs, top)
    if gpaw_check:
        gpaw_stage(rows, jobs, out, gpaw_check, say)
        write_ranking(out, rows)
        write_plots(out, rows, jobs, top)
    return rows


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
