"""Crystal records that carry per-site descriptor labels (Bader charges, ...) for training joint models.

Read from an electronic label folder (:class:`~diffase.data.electronic.dataset.ElectronicDataset`: version-2
files written by ``diffase label`` hold Bader charges; version-1 files hold NaN there). Each crystal is put in
its Niggli-reduced cell, as the joint pipeline feeds every crystal; the reduction keeps the site order, and the
descriptors travel with their sites as pymatgen site properties. Grid fields are not carried: a density grid is
laid along the stored cell and would need regridding with the reduction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diffase.data import fields as F
from diffase.data.electronic.dataset import ElectronicDataset
from diffase.data.structures import record_to_structure, structure_to_record


def load_descriptor_records(folder: str | Path, keys: Sequence[str], *, limit: int | None = None
                            ) -> tuple[list[dict], list[str], int]:
    """Records (Niggli-reduced, with ``keys`` as (n_atoms, ...) arrays) and names of the label files in ``folder``
    whose every key is known at every site, and the number of files skipped for lacking them.

    ``keys``: node fields of the labels, e.g. ``["bader_charge"]`` (e). ``limit``: keep at most this many
    records. Raises ``ValueError`` when no file has them all.
    """
    bad = [k for k in keys if F.field_kind(k) != "node"]
    if bad:
        raise ValueError(f"descriptor labels are per-site (node) fields; {bad} are not")
    dataset = ElectronicDataset(folder)
    records, names, skipped = [], [], 0
    for i in range(len(dataset)):
        if limit is not None and len(records) >= limit:
            break
        item = dataset[i]
        if not all(np.isfinite(item[k]).all() for k in keys):
            skipped += 1
            continue
        structure = record_to_structure({k: item[k] for k in (F.ATOMIC_NUMBERS, F.POSITIONS, F.CELL, *keys)})
        reduced = structure.get_reduced_structure()
        record = structure_to_record(reduced)
        record.update({k: np.asarray(reduced.site_properties[k], dtype=np.float64) for k in keys})
        records.append(record)
        names.append(item["name"])
    if not records:
        raise ValueError(f"none of the {len(dataset)} label files in {folder} has {', '.join(keys)} at every site "
                         "(version-1 labels carry no Bader charges); label structures with `diffase label` first, "
                         "or train without the descriptor field")
    return records, names, skipped
