"""Sets of (structure, charge density) pairs on an N^3 grid, read from the layouts users have.

Every reader returns a list of :class:`DensityEntry` (``name``, ``structure``, ``rho`` (N, N, N) in e/Angstrom^3 on
the fractional points ``(i/N, j/N, k/N)`` of the structure's stored cell, as :mod:`diffase.data.electronic.density`):

* :func:`read_label_densities`: a diffase label folder (``rho32`` of each DFT label; predicted densities of
  ``diffase predict-labels --model density-mp20`` only when asked for, marked by their ``source``);
* :func:`read_chgcar_folder`: a folder of VASP CHGCAR / AECCAR files (``.gz`` too) or cube files, Fourier-regridded
  to N^3 by :func:`~diffase.data.electronic.density.regrid`, which keeps the electron count;
* :func:`read_anchor_layout`: ChargeDIFF's layout, ``structure/{split}.csv`` (``material_id``, ``cif`` columns) and
  ``charge_density/<material_id>.npy`` (an N^3 array per material);
* :func:`read_density_set` picks one of the three from what the folder holds; :func:`read_density_sets` reads
  several folders, each material once.

:func:`reduced_density_record` turns an entry into the crystal record the joint pipeline trains on: the structure in
its Niggli-reduced cell and the density regridded exactly onto that cell.
"""

from __future__ import annotations

import csv
import gzip
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from diffase.data import fields as F
from diffase.data.electronic.dataset import (
    PREDICTED_KEY,
    ElectronicDataset,
    is_predicted,
    label_structure,
    read_label,
)
from diffase.data.electronic.density import (
    DEFAULT_GRID,
    chgcar_to_density,
    grid_in_cell,
    read_density,
    regrid,
)
from diffase.data.material_sets import read_each_material_once
from diffase.data.structures import structure_to_record

#: Unit conventions of an anchor-layout ``.npy``: e/Angstrom^3, or VASP's rho x V (e; divided by the volume here).
ANCHOR_UNITS = ("e/A^3", "e")
#: :func:`read_chgcar_folder` reads the files whose lower-cased name contains one of these, or ends in ``.cube``.
_DENSITY_FILE_TAGS = ("chgcar", "aeccar")


@dataclass
class DensityEntry:
    """One material: its ``name``, ``structure`` (stored cell) and density ``rho`` (N, N, N) e/Angstrom^3."""

    name: str
    structure: Structure
    rho: np.ndarray
    source: str = "dft"  #: "dft", or the predictor's name for a predicted density (``diffase predict-labels``)

    @property
    def electrons(self) -> float:
        """Electrons in the cell, ``mean(rho) * volume`` (e)."""
        return float(self.rho.mean() * self.structure.lattice.volume)


def read_label_densities(folder: str | Path, *, predicted: bool = False) -> list[DensityEntry]:
    """The ``rho32`` densities of the DFT labels in a diffase label folder (``index.csv`` order); with
    ``predicted`` also those of predicted labels (``diffase predict-labels --model density-mp20``), each entry's
    ``source`` naming its predictor."""
    entries = []
    for path in ElectronicDataset(folder).files:
        label = read_label(path)
        if "rho32" not in label or (is_predicted(label) and not predicted):
            continue
        source = str(label[PREDICTED_KEY]) if is_predicted(label) else "dft"
        entries.append(DensityEntry(label["material_id"], label_structure(label), label["rho32"].astype(np.float32),
                                    source))
    if not entries:
        what = "label with a density (rho32)" if predicted else "DFT label with a density (rho32)"
        raise ValueError(f"{folder}: no {what}" + ("" if predicted else " (predicted densities are read only "
                                                   "where a reader is asked for them)"))
    return entries


def _is_density_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (any(tag in name for tag in _DENSITY_FILE_TAGS) or name.endswith(".cube"))


def read_chgcar_folder(folder: str | Path, grid: int = DEFAULT_GRID) -> list[DensityEntry]:
    """Densities of the CHGCAR / AECCAR / cube files in ``folder`` (not recursive), each regridded to ``grid``^3.

    The name of an entry is its file name. Regridding is Fourier interpolation, which keeps ``mean(rho)``, hence
    the electron count, to round-off; a spin-polarised CHGCAR contributes its total (up + down) density."""
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if _is_density_file(p)) if folder.is_dir() else []
    if not paths:
        raise ValueError(f"{folder}: no CHGCAR*, AECCAR* or *.cube file found")
    entries = []
    for path in paths:
        volumetric = read_density(path)
        rho = regrid(chgcar_to_density(volumetric), grid, lattice=volumetric.structure.lattice.matrix)
        entries.append(DensityEntry(path.name, volumetric.structure, rho.astype(np.float32)))
    return entries


def read_anchor_layout(root: str | Path, split: str = "train", *, units: str = "e/A^3") -> list[DensityEntry]:
    """ChargeDIFF's layout: rows of ``root/structure/{split}.csv`` (``material_id``, ``cif``; ``.csv.gz`` too) with
    their ``root/charge_density/<material_id>.npy`` grids. ``units``: ``"e/A^3"`` (the arrays are densities) or
    ``"e"`` (VASP's rho x V, divided by the cell volume here)."""
    if units not in ANCHOR_UNITS:
        raise ValueError(f"units must be one of {ANCHOR_UNITS}, got {units!r}")
    root = Path(root)
    table = next((p for p in (root / "structure" / f"{split}.csv", root / "structure" / f"{split}.csv.gz")
                  if p.is_file()), None)
    if table is None:
        raise FileNotFoundError(f"no {root / 'structure' / f'{split}.csv'}: ChargeDIFF's layout is "
                                "structure/{split}.csv + charge_density/<material_id>.npy")
    with (gzip.open(table, "rt") if table.suffix == ".gz" else open(table, newline="")) as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"material_id", "cif"} <= set(rows[0]):
        raise ValueError(f"{table} needs 'material_id' and 'cif' columns, has {sorted(rows[0])}")
    entries = []
    for row in rows:
        path = root / "charge_density" / f"{row['material_id']}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{table} lists {row['material_id']} but {path} does not exist")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # CIF rounding chatter
            structure = Structure.from_str(row["cif"], fmt="cif")
        rho = np.load(path, allow_pickle=False).astype(np.float64)
        if rho.ndim != 3:
            raise ValueError(f"{path}: a density grid has 3 axes, got shape {rho.shape}")
        if units == "e":
            rho = rho / structure.lattice.volume
        entries.append(DensityEntry(row["material_id"], structure, rho.astype(np.float32)))
    return entries


def read_density_set(path: str | Path, *, split: str = "train", grid: int = DEFAULT_GRID,
                     predicted: bool = False) -> list[DensityEntry]:
    """Densities of a label folder (``*.npz``; ``predicted``: predicted densities too), an anchor layout
    (``structure/`` + ``charge_density/``) or a folder of CHGCAR-like files, whichever ``path`` is; every grid must
    be ``grid``^3 (label and anchor grids are not regridded: refused with the shape found)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no folder at {path}: give a label folder, a ChargeDIFF layout or a CHGCAR folder")
    if (path / "structure").is_dir() and (path / "charge_density").is_dir():
        entries = read_anchor_layout(path, split)
    elif any(path.glob("*.npz")):
        entries = read_label_densities(path, predicted=predicted)
    else:
        entries = read_chgcar_folder(path, grid)
    wrong = [e.name for e in entries if e.rho.shape != (grid,) * 3]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} densities are not on a {grid}^3 grid (e.g. {wrong[0]}: "
                         f"{next(e.rho.shape for e in entries if e.name == wrong[0])}); regrid them "
                         "(diffase.data.electronic.density.regrid)")
    return entries


def read_density_sets(folders: str | Path | Sequence[str | Path], *, grid: int = DEFAULT_GRID,
                      exclude: Collection[str] = (), only: Collection[str] | None = None,
                      limit: int | None = None) -> tuple[list[DensityEntry], dict]:
    """The densities of several density sets (:func:`read_density_set` each, predicted densities included), read in
    order, each material once (:func:`~diffase.data.material_sets.read_each_material_once`: ``exclude``, ``only``,
    ``limit`` as there). Returns the entries and counts ``{"sources": {"dft": n, "<predictor>": n}, "skipped": 0,
    "excluded": n, "duplicates": n, "folders": {folder: n read}}``."""
    def entries_of(folder):
        return [(e.name, e.source, e) for e in read_density_set(folder, grid=grid, predicted=True)]

    entries, _, counts = read_each_material_once(folders, entries_of, exclude=exclude, only=only, limit=limit)
    return entries, counts


def reduced_density_record(entry: DensityEntry) -> dict:
    """The crystal record of an entry in its Niggli-reduced cell (as the joint pipeline feeds every crystal; same
    site order) with ``charge_density`` (N, N, N) e/Angstrom^3 on the grid of that cell: the reduction is a
    unimodular change of basis, so every grid point of the reduced cell is one of the stored cell and the values
    are moved, not interpolated (:func:`~diffase.data.electronic.density.grid_in_cell`)."""
    reduced = entry.structure.get_reduced_structure()
    record = structure_to_record(reduced, name=entry.name)
    record[F.CHARGE_DENSITY] = grid_in_cell(entry.rho, entry.structure.lattice.matrix, reduced.lattice.matrix)
    return record
