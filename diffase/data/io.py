"""Reading crystals from the formats materials scientists keep them in, and streaming them back to disk.

Readers return a list of ``(name, Structure)`` pairs; every structure passes :func:`to_structure`, so
disordered or non-periodic inputs fail here with a clear message rather than deep inside a model.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms
from ase.io import read as ase_read
from ase.io import write as ase_write
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.data.structures import StructureLike, to_structure
from diffase.errors import DiffaseError, InvalidStructureError, StructureReadError

TABLE_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz")
ASE_SUFFIXES = (".extxyz", ".xyz", ".traj", ".vasp", ".json")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in TABLE_SUFFIXES + (".db", ".cif") + ASE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    if name.startswith(("poscar", "contcar")):
        return ".vasp"
    return path.suffix.lower()


def read_table(
    path: str | Path,
    *,
    cif_column: str = "cif",
    id_column: str | None = "material_id",
    limit: int | None = None,
    keep_refused: bool = False,
) -> list[tuple[str, Structure]]:
    """Read a CSV table with one CIF text per row (e.g. the MP-20 / MPTS-52 tables).

    ``id_column`` names each structure (row number if absent); ``limit`` keeps the first rows only;
    ``keep_refused``: see :func:`read_structures`.
    """
    table = pd.read_csv(path, nrows=limit)
    if cif_column not in table.columns:
        raise ValueError(f"{path}: no column {cif_column!r}; columns are {list(table.columns)}")
    ids = table[id_column].astype(str) if id_column in table.columns else table.index.astype(str)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's CIF rounding chatter
        for name, cif in zip(ids, table[cif_column]):
            out.append((name, _crystal(Structure.from_str(cif, fmt="cif"), name, keep_refused)))
    return out


def read_ase_db(path: str | Path, *, limit: int | None = None, keep_refused: bool = False) -> list[tuple[str, Structure]]:
    """Read every row of an ASE database (``.db``); ``keep_refused``: see :func:`read_structures`."""
    from ase.db import connect

    out = []
    for row in connect(str(path)).select(limit=limit):
        name = str(row.get("name", row.id))
        out.append((name, _crystal(row.toatoms(), name, keep_refused)))
    return out


def read_structures(source, *, limit: int | None = None, keep_refused: bool = False, **table_kw) -> list[tuple[str, Structure]]:
    """Read crystals from a path or an in-memory collection.

    ``source`` may be: a CSV table with a CIF column (``.csv``/``.csv.gz``), an ASE database (``.db``),
    a CIF/POSCAR file, any file ASE reads with several frames (``.extxyz``, ``.traj``), a single
    ``Structure``/``Atoms``, or a list of them. Returns ``(name, Structure)`` pairs.

    A file that cannot be read (empty, truncated, corrupt, non-finite numbers, no crystal in it) raises
    :class:`~diffase.errors.StructureReadError` naming the file and the problem; a crystal diffase cannot
    use (disordered, unknown element...) raises its own error, with the file name in front; with
    ``keep_refused`` it is returned in place of its ``Structure`` instead, so one bad row of a table does not
    stop the others.
    """
    if isinstance(source, (Structure, Atoms)):
        source = [source]
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        items = list(source)[:limit] if limit else list(source)
        return [(str(i), to_structure(s, name=f"item {i}")) for i, s in enumerate(items)]
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such structure file: {path}")
    try:
        named = _read_file(path, limit, keep_refused, table_kw)
    except InvalidStructureError as err:  # unusable numbers (NaN coordinates, no volume): a reading problem
        raise StructureReadError(f"{path}: {err}") from err
    except DiffaseError as err:  # disordered, unknown element...: keeps its class, gains where it came from
        raise type(err)(f"{path}: {err}") from err
    except Exception as err:  # a parser's own failure (ZeroDivisionError on a truncated CIF, ...): name the file
        problem = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        raise StructureReadError(f"cannot read a crystal from {path} (empty, truncated or not a "
                                 f"{_suffix(path) or 'known'} file?): {problem}") from err
    if not named:
        raise StructureReadError(f"{path} contains no crystal")
    return named


def _read_file(path: Path, limit: int | None, keep_refused: bool, table_kw: dict) -> list[tuple[str, Structure]]:
    """The crystals of one file, by its suffix (see :func:`read_structures`)."""
    suffix = _suffix(path)
    if suffix in TABLE_SUFFIXES:
        return read_table(path, limit=limit, keep_refused=keep_refused, **table_kw)
    if suffix == ".db":
        return read_ase_db(path, limit=limit, keep_refused=keep_refused)
    if suffix == ".cif":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return [(path.stem, _crystal(Structure.from_file(path), path.name, keep_refused))]
    frames = ase_read(str(path), index=f":{limit}" if limit else ":")
    frames = frames if isinstance(frames, list) else [frames]
    return [(f"{path.stem}-{i}", _crystal(a, f"{path.name}[{i}]", keep_refused)) for i, a in enumerate(frames)]


def _crystal(item, name: str, keep_refused: bool):
    """``to_structure(item)``; with ``keep_refused`` the :class:`~diffase.errors.DiffaseError` that refuses it
    is returned instead of raised."""
    try:
        return to_structure(item, name=name)
    except DiffaseError as err:
        if not keep_refused:
            raise
        return err


def finite_or_none(value):
    """``value`` itself, or None for a NaN/infinite float (JSON has neither: None reads back as "not measured")."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def json_line(record: dict) -> str:
    """One JSON line of a flat record, non-finite numbers written as null; ``allow_nan=False`` makes any
    non-finite value that slips through (nested) an error instead of invalid JSON (``Infinity``)."""
    return json.dumps({k: finite_or_none(v) for k, v in record.items()}, allow_nan=False)


def append_extxyz(path: str | Path, structures: Iterable[StructureLike], infos: Iterable[dict] | None = None) -> None:
    """Append crystals to an extxyz file, one frame each, with ``infos`` (JSON-friendly scalars) in the header.

    Used to stream finished batches so an interrupted run keeps what it made.
    """
    frames = []
    infos = list(infos) if infos is not None else None
    for i, s in enumerate(structures):
        atoms = s if isinstance(s, Atoms) else AseAtomsAdaptor.get_atoms(s)
        atoms = atoms.copy()
        atoms.calc = None
        if infos is not None:
            atoms.info.update({k: v for k, v in infos[i].items() if isinstance(v, (int, float, str, bool))})
        frames.append(atoms)
    if frames:
        ase_write(str(path), frames, format="extxyz", append=True)
