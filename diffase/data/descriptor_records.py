"""Crystal records that carry per-site descriptor labels (Bader charges, ...) for training joint models.

Read from an electronic label folder (the files :class:`~diffase.data.electronic.dataset.ElectronicDataset`
lists, read with :func:`~diffase.data.electronic.dataset.read_label`: version-2 files written by ``diffase label``
hold Bader charges; version-1 files hold NaN there; labels predicted by ``diffase predict-labels`` hold them too
and are marked: each record's ``label_source`` is ``"dft"`` or the predictor's name). The site DOS (``site_dos``,
states/eV on the label grid) is read as a descriptor too (the atomic-DOS field encodes it); the control field
``dummy_descriptor`` is not read but drawn (:func:`dummy_values`). Each crystal is put in
its Niggli-reduced cell, as the joint pipeline feeds every crystal; the reduction keeps the site order, and the
descriptors travel with their sites as pymatgen site properties. Grid fields are not carried: a density grid is
laid along the stored cell and would need regridding with the reduction.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from diffase.data import fields as F
from diffase.data.electronic.dataset import (
    PREDICTED_KEY,
    ElectronicDataset,
    label_structure,
    read_label,
)
from diffase.data.material_sets import read_each_material_once
from diffase.data.structures import structure_to_record

#: Per-site descriptor fields and the label-file key that holds them.
_LABEL_KEYS = {F.BADER_CHARGE: "bader", F.HIRSHFELD_CHARGE: "hirshfeld", F.SITE_DOS: "dos"}
#: Seed of the control field's values (:func:`dummy_values`).
DUMMY_SEED = 0


def dummy_values(material_id: str, n_sites: int, seed: int = DUMMY_SEED) -> np.ndarray:
    """The control field of a crystal: (n_sites,) draws of N(0, 1), one per site in label order, from a generator
    seeded by ``seed`` and the CRC-32 of ``material_id`` (the same crystal and seed give the same values on every
    machine; no physics in them)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(str(material_id).encode())]))
    return rng.standard_normal(int(n_sites))


def _label_values(label: dict, key: str, n_sites: int) -> np.ndarray:
    """Per-site values of ``key`` in a label (NaN when the file lacks them); the control field drawn."""
    if key == F.DUMMY_DESCRIPTOR:
        return dummy_values(label["material_id"], n_sites)
    name = _LABEL_KEYS[key]
    return np.asarray(label[name], dtype=np.float64) if name in label else np.full(n_sites, np.nan)


def _source(label: dict) -> str:
    """``"dft"``, or the name of the predictor that wrote ``label``."""
    return label.get(PREDICTED_KEY, "dft")


def read_label_records(folders: str | Path | Sequence[str | Path], make_record: Callable[[dict], dict | None], *,
                       exclude: Sequence[str] = (), only: Sequence[str] | None = None,
                       limit: int | None = None) -> tuple[list[dict], list[str], dict]:
    """Records made by ``make_record(label)`` from the label files of ``folders``, read in order, each material
    once: a material read from an earlier folder is not read again (list the DFT folder first so that its label
    wins over a predicted one). ``make_record`` returns ``None`` for a label it cannot use (counted as skipped; a
    later folder may still give that material). ``exclude``: material ids never read (held-out materials);
    ``only``: read only these. Each record gets ``label_source``: ``"dft"`` or the name of the predictor that
    wrote the label.

    Returns the records, their material ids and counts: ``{"sources": {source: n}, "skipped": n, "excluded": n,
    "duplicates": n, "folders": {folder: n read}}``.
    """
    def labels_of(folder):  # the folder's file list now (an empty folder is refused), each label when pulled
        return ((label["material_id"], _source(label), label)
                for label in map(read_label, ElectronicDataset(folder).files))

    def make(label: dict) -> dict | None:
        record = make_record(label)
        if record is not None:
            record["label_source"] = _source(label)
        return record

    return read_each_material_once(folders, labels_of, make, exclude=exclude, only=only, limit=limit)


def load_descriptor_records(folders: str | Path | Sequence[str | Path], keys: Sequence[str], *,
                            require: Sequence[str] = (), exclude: Sequence[str] = (),
                            only: Sequence[str] | None = None, limit: int | None = None
                            ) -> tuple[list[dict], list[str], dict]:
    """Records (Niggli-reduced, with ``keys`` as (n_atoms, ...) arrays) and material ids of the label files in
    ``folders`` (:func:`read_label_records`: each material once, ``exclude`` / ``only`` / ``limit`` as there)
    whose every key, and every per-site label in ``require``, is known at every site; files lacking one are
    skipped and counted (``counts["skipped"]``).

    ``keys``: node fields of the labels, e.g. ``["bader_charge"]`` (e), ``["site_dos"]`` (n_atoms, P) states/eV,
    ``["dummy_descriptor"]``, or none (structures only). ``require``: per-site labels a crystal must carry
    without being read into the record, so that the models of an ablation train on the very same crystals
    (e.g. ``["bader_charge", "site_dos"]`` for a structure-only baseline). Raises ``ValueError`` when no file
    has them all.
    """
    bad = [k for k in [*keys, *require] if k not in _LABEL_KEYS and k != F.DUMMY_DESCRIPTOR]
    if bad:
        raise ValueError(f"no per-site label for {bad}; known: {', '.join([*_LABEL_KEYS, F.DUMMY_DESCRIPTOR])}")
    needed = list(dict.fromkeys([*keys, *require]))

    def make_record(label: dict) -> dict | None:
        structure = label_structure(label)
        values = {k: _label_values(label, k, len(structure)) for k in needed}
        if not all(np.isfinite(v).all() for v in values.values()):
            return None
        for k in keys:
            structure.add_site_property(k, list(values[k]))
        reduced = structure.get_reduced_structure()
        record = structure_to_record(reduced)
        record.update({k: np.asarray(reduced.site_properties[k], dtype=np.float64) for k in keys})
        return record

    records, names, counts = read_label_records(folders, make_record, exclude=exclude, only=only, limit=limit)
    if not records:
        raise ValueError(f"none of the label files in {', '.join(map(str, counts['folders']))} has "
                         f"{', '.join(needed)} at every site ({counts['excluded']} held out; version-1 labels carry "
                         "no Bader charges; a label without 'dos' has no site DOS); label structures with "
                         "`diffase label` first, or train without the descriptor field")
    return records, names, counts


def load_site_dos_records(folders: Sequence[str | Path], spec: dict, *, exclude: Sequence[str] = (),
                          only: Sequence[str] | None = None, limit: int | None = None) -> tuple[list[dict], list[str], dict]:
    """Crystal records with the site DOS of each atom as the joint model's per-atom condition (``node_cond``).

    ``folders``: label folders read in order (:func:`read_label_records`: a DFT folder first, then e.g. one
    written by ``diffase predict-labels``; each material once; ``exclude`` / ``only`` / ``limit`` as there).
    ``spec``: the model's node condition (:func:`~diffase.generators.node_condition.site_dos_spec`): each
    label's DOS (states/eV, spin-summed, on its ``dos_grid``) is resampled onto the spec's grid keeping the
    states per cell (:func:`~diffase.generators.node_condition.resample_dos`) and transformed as the network sees
    it (:func:`~diffase.generators.node_condition.apply_transform`). Crystals come Niggli-reduced, rows following
    their sites. Files whose DOS is not finite at every site are skipped (``counts["skipped"]``).

    Returns the records (each with ``label_source`` and ``dos_sigma``), their material ids, and the counts of
    :func:`read_label_records`.
    """
    from diffase.data.electronic.dos import DEFAULT_SIGMA
    from diffase.generators.node_condition import apply_transform, resample_dos

    def make_record(label: dict) -> dict | None:
        dos = np.asarray(label["dos"], dtype=np.float64)
        if not np.isfinite(dos).all():
            return None
        structure = label_structure(label)
        structure.add_site_property("_row", list(range(len(structure))))
        reduced = structure.get_reduced_structure()
        rows = np.asarray(reduced.site_properties["_row"], dtype=np.int64)
        reduced.remove_site_property("_row")
        values = resample_dos(label["dos_grid"], dos, spec["e_min"], spec["e_max"], int(spec["n_points"]))
        record = structure_to_record(reduced)
        record[F.NODE_COND] = apply_transform(spec, values[rows])
        record["dos_sigma"] = float(label.get("dos_sigma", DEFAULT_SIGMA))  # version 1: GPAW width 0.1 eV
        return record

    records, names, counts = read_label_records(folders, make_record, exclude=exclude, only=only, limit=limit)
    if not records:
        raise ValueError(f"no site-DOS labels read from {', '.join(map(str, folders))} "
                         f"({counts['excluded']} held out, {counts['skipped']} without a finite DOS)")
    return records, names, counts
