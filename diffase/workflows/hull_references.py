"""The reference hull of a CSP run: which entries the decomposition energy E_d of a generated crystal is
measured against, gathered from files a user has at hand.

Three sources, combined (all on one energy scale, see :mod:`diffase.analysis.stability`):

* ``elemental``: a ``{symbol: ComputedEntry}`` JSON such as the MP elemental references
  ``2023-02-07-mp-elemental-reference-entries.json.gz`` (CHGGen's hull was MP 2023-02-07);
* ``entries``: a JSON list (or dict) of ``ComputedEntry`` objects, e.g. MP entries of the chemical system
  with the MP2020 corrections applied;
* ``structures``: known crystals (files :func:`diffase.data.io.read_structures` reads, e.g. the MP-20 CSV
  tables, or ``Structure`` objects); those inside the chemical system are relaxed with the MLIP and enter
  with MLIP energies, so compounds are compared on the MLIP's own scale. Relaxing them takes a while, so the
  entries can be cached in a JSON file (``cache``) and are read back from it on the next run.

Only entries whose elements all lie in the requested chemical system are kept.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ase.calculators.calculator import Calculator
from monty.json import MontyDecoder, MontyEncoder
from pymatgen.core import Composition, Structure
from pymatgen.entries.computed_entries import ComputedEntry

from diffase.analysis.stability import load_elemental_references, mlip_entries
from diffase.calculators import MLIP
from diffase.data.io import TABLE_SUFFIXES, read_structures

_FORMULA_LINE = re.compile(r"_chemical_formula_sum\s+'?([^'\n]+)'?")


def _read_json(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return json.load(fh, cls=MontyDecoder)


def _elements(composition: Composition) -> set[str]:
    return {el.symbol for el in composition.elements}


def known_structures(sources: str | Path | Sequence[str | Path | Structure], elements: Iterable[str], *,
                     compounds_only: bool = False) -> list[tuple[str, Structure]]:
    """``(name, Structure)`` of every crystal in ``sources`` whose elements lie in ``elements`` (with
    ``compounds_only``: two or more of them). CSV tables with a CIF column are filtered by each CIF's
    formula line first, so only the hits are parsed (the MPTS-52 table has 19,100 rows)."""
    import pandas as pd

    system = set(elements)

    def wanted(found: set[str]) -> bool:
        return bool(found) and found <= system and (len(found) > 1 or not compounds_only)

    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    out = []
    for k, item in enumerate(items):
        if isinstance(item, Structure):
            if wanted(_elements(item.composition)):
                out.append((str(k), item))
        elif str(item).lower().endswith(TABLE_SUFFIXES):
            table = pd.read_csv(item)
            ids = table["material_id"].astype(str) if "material_id" in table else table.index.astype(str)
            for name, cif in zip(ids, table["cif"]):
                line = _FORMULA_LINE.search(cif)
                if line and wanted(_elements(Composition(line.group(1)))):
                    out.append((name, Structure.from_str(cif, fmt="cif")))
        else:
            out += [(n, s) for n, s in read_structures(item) if wanted(_elements(s.composition))]
    return out


def reference_entries(elements: Iterable[str], *, elemental: str | Path | None = None,
                      entries: str | Path | None = None,
                      structures: str | Path | Sequence[str | Path | Structure] | None = None,
                      compounds_only: bool = False, calculator: str | Calculator | MLIP = "chgnet",
                      device: str = "auto", cache: str | Path | None = None, **relax_kw) -> list[ComputedEntry]:
    """Reference entries of the chemical system ``elements`` from the sources above (module docstring).

    ``compounds_only``: relax only the compounds among ``structures`` (elements then come from
    ``elemental``). ``relax_kw`` go to :func:`diffase.simulate.relax.relax` (e.g. ``fmax``, ``steps``).
    Returns an empty list when no source is given.
    """
    system = set(elements)
    out: list[ComputedEntry] = []
    if elemental is not None:
        out += load_elemental_references(elemental, sorted(system))
    if entries is not None:
        data = _read_json(Path(entries))
        out += [e for e in (data.values() if isinstance(data, dict) else data) if _elements(e.composition) <= system]
    if structures is not None:
        cache_path = Path(cache) if cache is not None else None
        if cache_path is not None and cache_path.exists():
            out += _read_json(cache_path)
        else:
            named = known_structures(structures, system, compounds_only=compounds_only)
            relaxed = mlip_entries([s for _, s in named], calculator, ids=[n for n, _ in named], device=device,
                                   **relax_kw) if named else []
            if cache_path is not None:
                cache_path.write_text(json.dumps(relaxed, cls=MontyEncoder))
            out += relaxed
    return out
