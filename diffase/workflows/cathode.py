"""Cathode design on crystals with a charge density (ChargeDIFF's workflow): insert Li at the density minima, keep
target chemistries with 4- or 6-fold O-coordinated Li and a percolating Li network, relax them with an MLIP and
compute Li migration barriers of the best few; streamed to a folder and resumable.

Input: any iterable of crystals with their density on an N^3 grid (e/Angstrom^3 on the fractional points of the
stored cell): :class:`~diffase.data.electronic.density_sets.DensityEntry` objects (what the label, CHGCAR and anchor
readers return), ``(name, Structure, rho)`` triples or ``(Structure, rho)`` pairs (named ``item-<k>``), e.g. a
generator's output. Items are screened one by one as they arrive; each stage appends to its own file as soon as a
piece is done:

0. with ``relax_host`` (off by default), each target chemistry's host is first relaxed with the MLIP and its
   density taken from ``host_density_model`` on the relaxed host (:func:`relax_host`) -> ``hosts/<name>.cif``; the
   screen below then runs on that host and density;
1. screen (:func:`screen_item`): target chemistry (a transition metal and ``anion``), the density's mean inside and
   outside the ``region`` (a :mod:`~diffase.data.electronic.regions` preset: the channel a generator was asked to
   keep low), Li at the density minima (:mod:`~diffase.workflows.li_insertion`), the Li sites whose O count within
   ``li_o_cutoff`` is one of ``coordinations`` kept, the dimensionality of their Li-Li network (``li_li_cutoff``,
   :mod:`~diffase.analysis.li_network`) at least ``min_dimensionality`` -> one ``screened.jsonl`` line per item,
   ``lithiated/<name>.cif`` (the kept Li; every inserted Li when none was kept) and ``plots/<name>-li-network.png``;
   for every target chemistry ``plots/<name>-density.png`` (density slices with the region outlined and that Li
   marked);
2. relax each survivor at once with the MLIP (:func:`diffase.simulate.relax`: FIRE + FrechetCellFilter) and redo
   the network analysis on the relaxed crystal -> ``relaxed.jsonl`` line, ``relaxed/<name>.cif``;
3. NEB (after the last item, redone by every run, cheap when done): the ``n_neb`` best relaxed survivors (highest
   relaxed Li-network dimensionality, then lowest mean density at the Li sites) get the barriers of their
   ``neb_hops`` shortest distinct Li vacancy hops (:func:`diffase.simulate.migration_barriers` on the
   Niggli-reduced relaxed cell; a crystal's ``barrier`` is the lowest of them) -> ``neb.jsonl``,
   ``plots/<name>-neb.png``;
4. the table of every item -> ``results.csv`` and ``results.md``.

``settings.json`` records the screening, relaxation and NEB settings and the MLIP (:mod:`diffase.resume`): a re-run
with other settings is refused before anything is written. Items are identified by name and content (structure
fingerprint + SHA-256 of the density): a re-run skips the items already screened, relaxed or NEB-computed, and
refuses an item whose name was screened before with other content. ``n_neb`` may change between runs.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from diffase.analysis.li_network import (
    anion_coordination,
    network_dimensionality,
    plot_ion_network,
)
from diffase.data.electronic.regions import region_axes, region_density, region_mask
from diffase.data.io import json_line
from diffase.errors import DisorderedStructureError, InvalidStructureError, SettingsMismatchError
from diffase.resume import SETTINGS_FILE, check_resume, structure_fingerprint, write_settings
from diffase.workflows.cathode_settings import CathodeSettings
from diffase.workflows.li_insertion import IonInsertion, insert_at_density_minima

#: Columns of ``results.csv`` / ``results.md`` (energies eV/atom, barriers eV, densities e/Angstrom^3).
TABLE_COLUMNS = ("name", "formula", "n_atoms", "target_chemistry", "host_relax_converged", "host_volume_change",
                 "region_density_ratio", "n_groups", "n_li",
                 "n_li_kept", "li_coordinations", "li_dimensionality_all", "li_dimensionality", "survivor",
                 "energy_per_atom", "relaxed_li_dimensionality", "relax_converged", "neb_rank", "barrier",
                 "delta_energy", "limiting_barrier", "saddle", "hop_length", "neb_converged", "reason")


def density_items(items: Iterable) -> Iterator[tuple[str, Structure, np.ndarray]]:
    """``(name, structure, rho)`` of each input item (module docstring), checked: an ordered crystal and a finite
    3-axis grid; a bad item raises (:class:`~diffase.errors.InvalidStructureError`, naming it)."""
    for k, item in enumerate(items):
        if hasattr(item, "structure") and hasattr(item, "rho"):
            name, structure, rho = item.name, item.structure, item.rho
        elif isinstance(item, (tuple, list)) and len(item) == 3:
            name, structure, rho = item
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            (structure, rho), name = item, f"item-{k:04d}"
        else:
            raise InvalidStructureError(f"input item {k} is neither (Structure, density) nor (name, Structure, "
                                        f"density) nor a DensityEntry: {type(item).__name__}")
        if not isinstance(structure, Structure):
            raise InvalidStructureError(f"input item {name}: expected a pymatgen Structure, got "
                                        f"{type(structure).__name__}")
        if not structure.is_ordered:
            raise DisorderedStructureError(f"input item {name} ({structure.composition.reduced_formula}) has "
                                           "partially occupied sites; order it first")
        rho = np.asarray(rho, dtype=np.float64)
        if rho.ndim != 3 or min(rho.shape) < 2 or not np.isfinite(rho).all():
            raise InvalidStructureError(f"input item {name}: the density must be a finite (n1, n2, n3) grid in "
                                        f"e/Angstrom^3, got shape {rho.shape}")
        yield str(name), structure, rho


def item_fingerprint(structure: Structure, rho: np.ndarray) -> str:
    """SHA-256 of an item's content: :func:`~diffase.resume.structure_fingerprint` and the density as float32."""
    digest = hashlib.sha256(structure_fingerprint(structure).encode())
    digest.update(np.ascontiguousarray(rho, dtype=np.float32).tobytes())
    return digest.hexdigest()


def is_target_chemistry(structure: Structure, anion: str = "O") -> bool:
    """True when the crystal holds a transition metal and ``anion``."""
    elements = structure.composition.elements
    return any(el.symbol == anion for el in elements) and any(el.is_transition_metal for el in elements)


def screen_item(name: str, structure: Structure, rho: np.ndarray,
                settings: CathodeSettings) -> tuple[dict, IonInsertion | None]:
    """Stage 1 on one item (module docstring): its ``screened.jsonl`` row (``survivor`` and, if not, ``reason``)
    and the insertion with only the kept Li (every inserted Li when none was kept; None when the chemistry is
    refused or no Li was inserted)."""
    s = settings
    row = {"name": name, "formula": structure.composition.reduced_formula, "n_atoms": len(structure),
           "target_chemistry": is_target_chemistry(structure, s.anion), "survivor": False,
           **region_density(rho, region_mask(s.region, rho.shape, width=s.region_width))}
    if not row["target_chemistry"]:
        return {**row, "reason": f"not a transition-metal {s.anion} compound"}, None
    insertion = insert_at_density_minima(
        structure, rho, s.species, max_avg_density=s.max_avg_density, avg_radius=s.avg_radius,
        min_host_distance=s.min_host_distance, min_ion_distance=s.min_li_distance, max_ions=s.max_li)
    row.update(n_groups=insertion.n_groups, n_li=len(insertion.sites))
    if not insertion.sites:
        return {**row, "reason": f"no density minimum >= {s.min_host_distance} A from the host with average "
                                 f"density <= {s.max_avg_density} e/A^3"}, None
    row["li_dimensionality_all"] = network_dimensionality(insertion.structure, s.species, s.li_li_cutoff)
    counts = anion_coordination(insertion.structure, s.species, s.anion, s.li_o_cutoff)
    row["li_coordinations"] = [counts[i] for i in insertion.ion_indices]
    kept = [k for k, i in enumerate(insertion.ion_indices) if counts[i] in s.coordinations]
    row["n_li_kept"] = len(kept)
    if not kept:
        return {**row, "reason": f"no inserted {s.species} with {_counts(s.coordinations)}-fold {s.anion} "
                                 f"coordination (within {s.li_o_cutoff} A)"}, insertion
    kept_insertion = insertion.keep(kept)
    row["li_dimensionality"] = network_dimensionality(kept_insertion.structure, s.species, s.li_li_cutoff)
    row["mean_li_density"] = float(np.mean([p.avg_density for p in kept_insertion.sites]))
    if row["li_dimensionality"] < s.min_dimensionality:
        return {**row, "reason": f"{s.species} network {row['li_dimensionality']}D, below "
                                 f"{s.min_dimensionality}D"}, kept_insertion
    return {**row, "survivor": True}, kept_insertion


def mlip_relax(structure: Structure, settings: CathodeSettings, potential):
    """Cell and positions of ``structure`` relaxed with the MLIP as every cathode stage relaxes (FIRE +
    FrechetCellFilter, ``settings.fmax`` eV/Angstrom, ``settings.relax_steps``): a
    :class:`~diffase.simulate.relax.RelaxResult`."""
    from diffase.simulate.relax import relax

    return relax(structure, potential, fmax=settings.fmax, steps=settings.relax_steps, optimizer="FIRE",
                 relax_cell=True)


def relax_host(structure: Structure, settings: CathodeSettings, potential,
               density_model) -> tuple[dict, Structure | None, np.ndarray | None]:
    """Stage 0 on one host (module docstring): its row fields (``host_energy_per_atom`` eV/atom,
    ``host_relax_converged``, ``host_volume_change`` as a fraction of the input volume, ``host_max_displacement``
    Angstrom), the relaxed host and its density (e/Angstrom^3, ``density_model``'s grid); None and None with a
    ``reason`` when the relaxation refuses the crystal or the density model does not know one of its elements."""
    try:
        result = mlip_relax(structure, settings, potential)
    except (InvalidStructureError, ValueError) as err:  # overlapping atoms
        return {"reason": f"host relaxation refused: {err}"}, None, None
    host = result.structure
    row = {"host_energy_per_atom": result.final_energy_per_atom, "host_relax_converged": result.converged,
           "host_volume_change": host.volume / structure.volume - 1.0,
           "host_max_displacement": result.max_displacement}
    rho = density_model.predict_if_known(host)
    if rho is None:
        return {**row, "reason": f"{settings.host_density_model} knows no density for an element of "
                                 f"{host.composition.reduced_formula}"}, None, None
    return row, host, rho


def _counts(values) -> str:
    return "- or ".join(str(v) for v in values)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json_line(row) + "\n")


def density_picture(structure: Structure, rho: np.ndarray, settings: CathodeSettings, path: Path,
                    li_frac: np.ndarray | None) -> Path:
    """Density slices of an item with its region outlined: planes across a channel (or through a slab's
    thickness), at the first kept Li site's height and half way along the cell."""
    from diffase.data.electronic.plots import plot_density_slices

    confined = region_axes(settings.region)
    axis = ({0, 1, 2} - set(confined)).pop() if len(confined) == 2 else (confined[0] + 1) % 3
    heights = sorted({round(float(li_frac[axis]) % 1.0, 3), 0.5} if li_frac is not None else {0.0, 0.5})
    return plot_density_slices(structure, rho, path, axis=axis, fractions=heights,
                               region=region_mask(settings.region, rho.shape, width=settings.region_width))


def cathode_settings_record(settings: CathodeSettings, calculator) -> dict:
    """What identifies a cathode run in ``settings.json``: every setting and the MLIP's name."""
    return {**asdict(settings), "coordinations": list(settings.coordinations),
            "calculator": calculator if isinstance(calculator, str) else type(calculator).__name__}


def screen_and_relax(items: Iterable, out: Path, settings: CathodeSettings, potential_factory: Callable,
                     say: Callable[[str], None], density_model_factory: Callable) -> None:
    """Stages 0-2, item by item as the iterable yields them (module docstring); ``potential_factory`` gives the
    MLIP and ``density_model_factory`` the host density model of ``relax_host``, each called only when needed."""
    screened = {r["name"]: r for r in _lines(out / "screened.jsonl")}
    relaxed = {r["name"] for r in _lines(out / "relaxed.jsonl")}
    if screened:
        say(f"resuming: {len(screened)} item(s) already screened, {len(relaxed)} relaxed")
    for sub in ("hosts", "lithiated", "relaxed", "plots"):
        (out / sub).mkdir(exist_ok=True)
    for name, structure, rho in density_items(items):
        sha = item_fingerprint(structure, rho)
        row = screened.get(name)
        if row is not None and row["input_sha256"] != sha:
            raise SettingsMismatchError(f"{out} screened an item named {name} with other content before; give "
                                        "distinct names or use a new output folder")
        if row is None:
            host: dict = {}
            if settings.relax_host and is_target_chemistry(structure, settings.anion):
                host, relaxed_host, rho = relax_host(structure, settings, potential_factory(),
                                                     density_model_factory())
                if relaxed_host is not None:
                    structure = relaxed_host
                    structure.to(filename=str(out / "hosts" / f"{name}.cif"))
            if "reason" in host:
                row, insertion = {"name": name, "formula": structure.composition.reduced_formula,
                                  "n_atoms": len(structure), "target_chemistry": True, "survivor": False,
                                  **host}, None
            else:
                row, insertion = screen_item(name, structure, rho, settings)
                row.update(host)
            row["input_sha256"] = sha
            if insertion is not None and insertion.sites:
                insertion.structure.to(filename=str(out / "lithiated" / f"{name}.cif"))
                row["cif"] = f"lithiated/{name}.cif"
                plot_ion_network(insertion.structure, out / "plots" / f"{name}-li-network.png",
                                 species=settings.species, cutoff=settings.li_li_cutoff)
            if row["target_chemistry"] and rho is not None:
                first = insertion.sites[0].frac_coords if insertion is not None and insertion.sites else None
                density_picture(insertion.structure if insertion is not None else structure, rho, settings,
                                out / "plots" / f"{name}-density.png", first)
            _append(out / "screened.jsonl", row)
            screened[name] = row
            say(f"{name} ({row['formula']}): " + ("survivor, " + f"{row['n_li_kept']} Li, "
                f"{row['li_dimensionality']}D network" if row["survivor"] else f"dropped: {row['reason']}"))
        if row["survivor"] and name not in relaxed:
            _append(out / "relaxed.jsonl", relax_row(out, row, settings, potential_factory()))
            relaxed.add(name)


def relax_row(out: Path, row: dict, settings: CathodeSettings, potential) -> dict:
    """Stage 2 on one survivor: its ``relaxed.jsonl`` row (energy eV/atom, relaxed network; ``error`` if the
    relaxation refused the crystal) and ``relaxed/<name>.cif``."""
    name, s = row["name"], settings
    result_row = {"name": name}
    try:
        result = mlip_relax(Structure.from_file(out / row["cif"]), s, potential)
    except (InvalidStructureError, ValueError) as err:  # overlapping atoms after insertion
        return {**result_row, "error": str(err)}
    relaxed = result.structure
    relaxed.to(filename=str(out / "relaxed" / f"{name}.cif"))
    counts = anion_coordination(relaxed, s.species, s.anion, s.li_o_cutoff)
    return {**result_row, "cif": f"relaxed/{name}.cif", "energy_per_atom": result.final_energy_per_atom,
            "steps": result.steps, "converged": result.converged, "max_displacement": result.max_displacement,
            "relaxed_li_dimensionality": network_dimensionality(relaxed, s.species, s.li_li_cutoff),
            "relaxed_li_coordinations": list(counts.values())}


def neb_candidates(out: Path, n_neb: int) -> list[dict]:
    """The ``n_neb`` best relaxed survivors: highest relaxed Li-network dimensionality, then lowest mean density at
    their Li sites (e/Angstrom^3), then name."""
    screened = {r["name"]: r for r in _lines(out / "screened.jsonl")}
    rows = [r for r in _lines(out / "relaxed.jsonl") if "error" not in r]
    rows.sort(key=lambda r: (-r["relaxed_li_dimensionality"], screened[r["name"]]["mean_li_density"], r["name"]))
    return rows[:n_neb]


def neb_stage(out: Path, settings: CathodeSettings, n_neb: int, potential_factory: Callable,
              say: Callable[[str], None]) -> None:
    """Stage 3: NEB barriers of the best ``n_neb`` relaxed survivors not yet in ``neb.jsonl``."""
    from diffase.simulate.neb import NEBResult, migration_barriers, plot_neb

    done = {r["name"] for r in _lines(out / "neb.jsonl")}
    s = settings
    for rank, r in enumerate(neb_candidates(out, n_neb), 1):
        if r["name"] in done:
            continue
        say(f"NEB of {r['name']} (rank {rank})")
        row: dict = {"name": r["name"], "neb_rank": rank}
        try:
            # Niggli-reduced: supercells are sized by lattice lengths, which in a skewed cell (a rhombohedral
            # primitive cell at 27 degrees) overstate the widths and can leave a hop ending on its own image
            results: list[NEBResult] = migration_barriers(
                Structure.from_file(out / r["cif"]).get_reduced_structure(), s.species, potential_factory(),
                max_hop_length=s.li_li_cutoff,
                max_hops=s.neb_hops, n_images=s.neb_images, min_length=s.neb_min_length, fmax=s.neb_fmax,
                steps=s.neb_steps)
        except (InvalidStructureError, ValueError) as err:  # no hop shorter than the cutoff after relaxation
            row["error"] = str(err)
        else:
            hops = [{"hop_length": x.hop_length, "barrier": x.barrier, "delta_energy": x.delta_energy,
                     "converged": x.converged, "steps": x.steps, "supercell": list(x.supercell),
                     "n_atoms": x.n_atoms, "path": x.path.tolist(), "energies": x.energies.tolist()}
                    for x in results]
            row.update(best_hop(hops), hops=hops)
            plot_neb(results, out / "plots" / f"{r['name']}-neb.png",
                     title=f"{r['name']} ({Structure.from_file(out / r['cif']).composition.reduced_formula}): "
                           f"{s.species} vacancy hops")
            say(f"  barrier {row['barrier']:.3f} eV, largest climb {row['limiting_barrier']:.3f} eV, saddle "
                f"{row['saddle']} ({row['hop_length']:.2f} A hop, converged {row['converged']})")
        _append(out / "neb.jsonl", row)


def best_hop(hops: list[dict]) -> dict:
    """A crystal's NEB summary from its ``neb.jsonl`` hops: the hop with the lowest
    :func:`~diffase.simulate.neb.limiting_barrier` (eV), its forward ``barrier`` and ``delta_energy`` (eV),
    ``saddle`` (:func:`~diffase.simulate.neb.has_saddle`), ``hop_length`` (Angstrom) and ``converged``."""
    from diffase.simulate.neb import has_saddle, limiting_barrier

    best = min(hops, key=lambda h: limiting_barrier(h["energies"]))
    return {"barrier": best["barrier"], "delta_energy": best["delta_energy"],
            "limiting_barrier": limiting_barrier(best["energies"]), "saddle": has_saddle(best["energies"]),
            "hop_length": best["hop_length"], "converged": best["converged"]}


def table_rows(out: Path) -> list[dict]:
    """Every screened item joined with its relaxation and NEB rows (columns :data:`TABLE_COLUMNS`)."""
    relaxed = {r["name"]: r for r in _lines(out / "relaxed.jsonl")}
    nebs = {r["name"]: r for r in _lines(out / "neb.jsonl")}
    rows = []
    for r in _lines(out / "screened.jsonl"):
        x, n = relaxed.get(r["name"], {}), nebs.get(r["name"], {})
        n = {**n, **best_hop(n["hops"])} if n.get("hops") else n  # also folders written before the summary was
        reason = r.get("reason") or x.get("error") or n.get("error") or ""
        rows.append({**{k: r.get(k) for k in TABLE_COLUMNS}, "energy_per_atom": x.get("energy_per_atom"),
                     "relaxed_li_dimensionality": x.get("relaxed_li_dimensionality"),
                     "relax_converged": x.get("converged"), "neb_rank": n.get("neb_rank"),
                     "barrier": n.get("barrier"), "delta_energy": n.get("delta_energy"),
                     "limiting_barrier": n.get("limiting_barrier"), "saddle": n.get("saddle"),
                     "hop_length": n.get("hop_length"),
                     "neb_converged": n.get("converged"), "reason": reason})
    return rows


def write_table(out: Path, rows: list[dict]) -> tuple[Path, Path]:
    """``results.csv`` and ``results.md`` (the same columns; floats to 4 decimals)."""
    cells = [[_cell(r[k]) for k in TABLE_COLUMNS] for r in rows]
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_COLUMNS)
        writer.writerows(cells)
    md = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + " --- |" * len(TABLE_COLUMNS)]
    md += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in cells]
    (out / "results.md").write_text("\n".join(md) + "\n")
    return out / "results.csv", out / "results.md"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def cathode_screen(items: Iterable, out_dir: str | Path, settings: CathodeSettings | None = None, *,
                   n_neb: int = 3, calculator="chgnet", device: str = "cpu",
                   say: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the cathode workflow on ``items`` into ``out_dir`` (module docstring); returns the table's
    rows. ``calculator``: an MLIP name (``"chgnet"``, loaded once, on the first survivor) or an ASE calculator."""
    from diffase.calculators import resolve_potential

    settings = settings or CathodeSettings()
    if n_neb < 0:
        raise ValueError(f"n_neb must be >= 0, got {n_neb}")
    loaded: dict = {}  # the MLIP and the host density model, each loaded on first use

    def potential():
        if "potential" not in loaded:
            loaded["potential"] = resolve_potential(calculator, device)
        return loaded["potential"]

    def density_model():
        if "density" not in loaded:
            from diffase.predictors.density_model import DensityPredictor

            loaded["density"] = DensityPredictor.load(settings.host_density_model)
        return loaded["density"]

    if settings.relax_host:
        density_model()  # an unknown model name is refused before anything is written
    out = Path(out_dir)
    record = cathode_settings_record(settings, calculator)
    check_resume(out / SETTINGS_FILE, record, what="cathode")
    out.mkdir(parents=True, exist_ok=True)
    write_settings(out / SETTINGS_FILE, record)
    try:
        screen_and_relax(items, out, settings, potential, say, density_model)
        if n_neb:
            neb_stage(out, settings, n_neb, potential, say)
    finally:  # an interrupted or failed run still leaves the table of what it finished
        rows = table_rows(out)
        write_table(out, rows)
    return rows

