"""DOSMatGen's JSON list format: crystals with their per-site DOS, read into diffase's structures and arrays.

A file holds a JSON list of records, one per crystal::

    {"structure_id": "mp-1234", "positions": [[x, y, z], ...], "cell": [[ax, ay, az], [bx, by, bz], [cx, cy, cz]],
     "atomic_numbers": [Z, ...], "y": [[dos of site 0 ...], [dos of site 1 ...], ...]}

``positions`` are Cartesian (Angstrom), ``cell`` rows are the lattice vectors (Angstrom), ``y`` is the site DOS
(n_sites, n_energies) in states/eV, rows in the order of ``atomic_numbers``. The file carries no energy grid: pass
the grid the data were made on (E - E_F, eV) to :func:`diffase.data.electronic.dos_targets.resolve_target` as
``energies`` when it is not the model's. diffase's own label folders are read by
:func:`diffase.data.electronic.dataset.read_label`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from diffase.data.structures import to_structure

KEYS = ("structure_id", "positions", "cell", "atomic_numbers", "y")


def read_dosmatgen_json(path: str | Path) -> list[dict]:
    """The records of a DOSMatGen JSON file as ``{"structure_id": str, "structure": Structure, "site_dos": (n, P)
    float64 states/eV}``, in file order. A record with a missing key or inconsistent shapes raises ``ValueError``
    naming the file, the record and the problem."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(  # noqa: TRY004 - a malformed file is bad input (ValueError), like every reader here
f"{path}: a DOSMatGen file holds a JSON list of records, got a {type(data).__name__}")
    out = []
    for i, rec in enumerate(data):
        where = f"{path}, record {i} ({rec.get('structure_id', '?') if isinstance(rec, dict) else '?'})"
        missing = [k for k in KEYS if not isinstance(rec, dict) or k not in rec]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (a record needs {', '.join(KEYS)})")
        numbers = np.asarray(rec["atomic_numbers"], dtype=np.int64)
        positions = np.asarray(rec["positions"], dtype=np.float64)
        dos = np.atleast_2d(np.asarray(rec["y"], dtype=np.float64))
        if positions.shape != (len(numbers), 3) or dos.shape[0] != len(numbers):
            raise ValueError(f"{where}: {len(numbers)} atomic numbers, positions {positions.shape} and y {dos.shape} "
                             "disagree; positions need one (x, y, z) row and y one DOS row per atom")
        structure = Structure(Lattice(np.asarray(rec["cell"], dtype=np.float64)), numbers.tolist(), positions,
                              coords_are_cartesian=True)
        out.append({"structure_id": str(rec["structure_id"]), "structure": to_structure(structure, name=where),
                    "site_dos": dos})
    return out


def write_dosmatgen_json(path: str | Path, records: list[dict]) -> Path:
    """Write ``{"structure_id", "structure", "site_dos"}`` records (as :func:`read_dosmatgen_json` returns them) in
    DOSMatGen's JSON list format."""
    path = Path(path)
    rows = [{"structure_id": r["structure_id"], "positions": r["structure"].cart_coords.tolist(),
             "cell": r["structure"].lattice.matrix.tolist(),
             "atomic_numbers": [site.specie.Z for site in r["structure"]],
             "y": np.asarray(r["site_dos"], dtype=np.float64).tolist()} for r in records]
    path.write_text(json.dumps(rows))
    return path
