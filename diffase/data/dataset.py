"""Training datasets: crystals parsed once, cached as flat numpy arrays, served as records.

Parsing 11k CIFs with pymatgen takes about a minute, so :func:`load_records` caches the parsed crystals in
``~/.cache/diffase/records/`` (an ``.npz`` keyed by the source file's path, size and mtime).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffase.data import fields as F
from diffase.data.io import read_structures
from diffase.data.structures import structure_to_record


def _cache_path(source: Path, reduce: bool, limit: int | None) -> Path:
    stat = source.stat()
    key = f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{reduce}|{limit}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    root = Path(os.environ.get("DIFFASE_CACHE", Path.home() / ".cache" / "diffase")) / "records"
    return root / f"{source.name.split('.')[0]}-{digest}.npz"


def _pack(records: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    return {
        "names": np.array(names),
        "counts": np.array([len(r[F.ATOMIC_NUMBERS]) for r in records], dtype=np.int64),
        F.ATOMIC_NUMBERS: np.concatenate([r[F.ATOMIC_NUMBERS] for r in records]),
        F.POSITIONS: np.concatenate([r[F.POSITIONS] for r in records]),
        F.CELL: np.stack([r[F.CELL] for r in records]),
    }


def _unpack(npz) -> tuple[list[dict], list[str]]:
    arrays = {key: npz[key] for key in npz.files}  # each NpzFile access re-reads the array: read once
    bounds = np.cumsum(np.concatenate([[0], arrays["counts"]]))
    records = [
        {
            F.ATOMIC_NUMBERS: arrays[F.ATOMIC_NUMBERS][lo:hi],
            F.POSITIONS: arrays[F.POSITIONS][lo:hi],
            F.CELL: arrays[F.CELL][g],
        }
        for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))
    ]
    return records, [str(n) for n in arrays["names"]]


def load_records(source, *, reduce: bool = True, limit: int | None = None, cache: bool = True) -> tuple[list[dict], list[str]]:
    """Crystal records and names from any source :func:`~diffase.data.io.read_structures` accepts.

    ``reduce=True`` replaces each cell by its Niggli-reduced equivalent (same crystal, fewer periodic
    images to enumerate). File sources are cached unless ``cache=False``.
    """
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    cache_file = _cache_path(path, reduce, limit) if (cache and path is not None) else None
    if cache_file is not None and cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as arrays:
            return _unpack(arrays)
    pairs = read_structures(source, limit=limit)
    names, records = [], []
    for name, s in tqdm(pairs, desc="preparing crystals", disable=len(pairs) < 1000):
        records.append(structure_to_record(s.get_reduced_structure() if reduce else s, name=name))
        names.append(name)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp.npz")
        np.savez(tmp, **_pack(records, names))
        tmp.replace(cache_file)
    return records, names


class CrystalDataset(torch.utils.data.Dataset):
    """A list of crystal records as a torch ``Dataset``; use :func:`diffase.data.batch.collate` to batch."""

    def __init__(self, records: list[dict], names: list[str] | None = None):
        self.records = records
        self.names = names or [str(i) for i in range(len(records))]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    @property
    def elements(self) -> list[int]:
        """Sorted atomic numbers present in the dataset."""
        return sorted({int(z) for r in self.records for z in r[F.ATOMIC_NUMBERS]})
