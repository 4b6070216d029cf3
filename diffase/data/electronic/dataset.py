"""The on-disk format of electronic labels (one ``.npz`` per structure plus ``index.csv``) and its loader.

A label folder holds ``<name>.npz`` files and an ``index.csv`` (one row per file: file, material_id, nsites, gap_eV,
efermi_eV, has_bader, format_version), rebuilt by :func:`write_index`. Format version 2 (written by
``diffase label``) extends the GPAW labels of shared/data/electronic (read as version 1):

===================  =================  =====================================================================
key                  shape / type       meaning
===================  =================  =====================================================================
format_version       int                2 (absent in version 1)
material_id, cif     str                name and P1 CIF of the geometry; site order = row order below
energy               float              DFT total energy, eV (code's own reference)
efermi               float              Fermi level, eV
gap                  float              band gap on the k-mesh, eV (0 for metals)
kpts                 (3,) int           k-mesh of the self-consistent run
dos_kpts             (3,) int           k-mesh of dos, efermi and gap (= kpts unless a non-self-consistent DOS pass
                                        ran, as in ``diffase label --preset fast``; absent before that existed)
rho32                (N, N, N) f32      valence density, e/A^3, Fourier-regridded to N^3 (N = 32 by default); from
                                        GPAW the smooth pseudo-density (no PAW augmentation: mean x V is not the
                                        valence count)
dos                  (n_sites, P) f32   site DOS, states/eV, **summed over spins** (version 1 stores one spin channel
                                        of a spin-paired run: the loader doubles it; its levels were folded on 1024
                                        points then interpolated, which differs from version 2's direct smearing by
                                        1.4% of the peak height on BaTe)
dos_grid             (P,) f32           E - E_F, eV (P = 512)
dos_sigma            float              Gaussian standard deviation of the DOS, eV
hirshfeld            (n_sites,) f32     Hirshfeld charges, e (positive = electron loss)
bader                (n_sites,) f32     Bader charges, e (positive = electron loss); NaN in version 1
valence_electrons    (n_sites,) f32     valence electrons per site in the calculation
settings             str                JSON of the settings that made the label (incl. the preset's name)
n_ibz_kpts           int                irreducible k-points of the calculation
n_ibz_dos_kpts       int                irreducible k-points of dos_kpts
dft_seconds          float              wall time of the DFT worker, s
code_version         str                e.g. "GPAW 22.8.0"
predicted_by         str                only in predicted labels (``diffase predict-labels``): the predictor's
                                        name; such a label holds the structure, NaN for ``energy``, ``efermi``,
                                        ``gap``, ``hirshfeld``, and what its predictor predicts: ``dos``,
                                        ``dos_grid``, ``dos_sigma`` and ``bader`` (a site-label predictor, no
                                        ``rho32``) or ``rho32`` (a density predictor; ``bader`` NaN, no ``dos``)
predictor_sha256     str                SHA-256 of the predictor's checkpoint (predicted labels only)
predictor_error      str                JSON of the predictor's held-out errors (predicted labels only)
===================  =================  =====================================================================

A predicted label is never a DFT label: :func:`require_dft` refuses it wherever DFT is required (the reference of
:func:`diffase.labeling.compare.label_errors`, predictor training, the density and DOS of an
:class:`ElectronicDataset` item).
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from diffase.data import fields as F
from diffase.data.batch import Batch, collate
from diffase.data.structures import structure_to_record
from diffase.errors import PredictedLabelError

FORMAT_VERSION = 2
#: Key whose presence marks a label as predicted (its value: the predictor's name).
PREDICTED_KEY = "predicted_by"
INDEX_COLUMNS = ("file", "material_id", "nsites", "gap_eV", "efermi_eV", "has_bader", "format_version")


def write_label(path: str | Path, label: dict[str, Any]) -> Path:
    """Write one label (keys as in the module table) atomically: a temporary file, then a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez_compressed(tmp, **{**label, "format_version": np.int64(FORMAT_VERSION)})
    os.replace(tmp, path)
    return path


def read_label(path: str | Path) -> dict[str, Any]:
    """Read one label file (version 1 or 2) into plain numpy values, in the version-2 conventions."""
    with np.load(path, allow_pickle=False) as npz:
        label = {key: npz[key] for key in npz.files}
    version = int(label.get("format_version", 1))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: label format {version} is newer than this diffase reads ({FORMAT_VERSION}); upgrade")
    if version == 1:  # spin-paired GPAW labels stored one spin channel
        label["dos"] = 2.0 * label["dos"]
        label["bader"] = np.full(len(label["hirshfeld"]), np.nan, dtype=np.float32)
    label["format_version"] = version
    for key in ("material_id", "cif", "split", "settings", PREDICTED_KEY, "predictor_sha256", "predictor_error"):
        if key in label:
            label[key] = str(label[key])
    return label


def is_predicted(label: dict[str, Any]) -> bool:
    """True for a label written by a predictor (``diffase predict-labels``), False for a DFT label."""
    return PREDICTED_KEY in label


def require_dft(label: dict[str, Any], role: str) -> dict[str, Any]:
    """Return ``label`` if it is a DFT label; raise :class:`~diffase.errors.PredictedLabelError` naming ``role``
    (e.g. ``"the reference of a label comparison"``) and the predictor if it was predicted."""
    if is_predicted(label):
        raise PredictedLabelError(
            f"label {label.get('material_id', '?')!r} was predicted by {label[PREDICTED_KEY]!r}, not computed with "
            f"DFT; {role} must be a DFT label (diffase label)")
    return label


def label_structure(label: dict[str, Any]) -> Structure:
    """The pymatgen ``Structure`` of a label, sites in the order of its per-site arrays: the rows of its P1 CIF as
    written (ASE's CIF reader keeps them; pymatgen's regroups sites by element, which would pair the arrays of a
    structure whose sites are not grouped so with the wrong atoms)."""
    import io

    from ase.io import read

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CIF rounding chatter
        grouped = Structure.from_str(str(label["cif"]), fmt="cif")  # its lattice: pymatgen's Cartesian frame
        rows = read(io.StringIO(str(label["cif"])), format="cif")
    return Structure(grouped.lattice, rows.get_chemical_symbols(), rows.get_scaled_positions(wrap=True))


def write_index(folder: str | Path) -> Path:
    """(Re)build ``index.csv`` of a label folder from the ``.npz`` files in it; returns its path."""
    folder = Path(folder)
    rows = []
    for path in sorted(folder.glob("*.npz")):
        if path.name.endswith(".part.npz"):
            continue
        with np.load(path, allow_pickle=False) as npz:
            bader = npz["bader"] if "bader" in npz.files else np.array([np.nan])
            rows.append([path.name, str(npz["material_id"]), len(npz["hirshfeld"]), f"{float(npz['gap']):.4f}",
                         f"{float(npz['efermi']):.4f}", int(np.isfinite(bader).all()),
                         int(npz["format_version"]) if "format_version" in npz.files else 1])
    index = folder / "index.csv"
    tmp = folder / f"index.csv.{os.getpid()}.part"  # one per process: shards finishing together must not share it
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(INDEX_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, index)
    return index


def _label_files(folder: Path) -> list[Path]:
    index = folder / "index.csv"
    if index.exists():
        with open(index, newline="") as fh:
            return [folder / row["file"] for row in csv.DictReader(fh)]
    return sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".part.npz"))


class ElectronicDataset(torch.utils.data.Dataset):
    """Structures joined with their electronic fields, one item per label file in ``folder``.

    Item: a crystal record (:mod:`diffase.data.structures`; the cell is kept as stored, never reduced, because the
    density grid is laid along it) plus ``charge_density`` (N, N, N) e/A^3, ``site_dos`` (n, P) states/eV,
    ``bader_charge`` (n,) e (NaN when absent), ``hirshfeld_charge`` (n,) e, and ``name``.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no label folder at {self.folder}")
        self.files = _label_files(self.folder)
        if not self.files:
            raise ValueError(f"{self.folder} holds no label files (*.npz)")
        #: energies of the site DOS (E - E_F, eV) of the first label; None for a folder of predicted densities
        self.dos_grid = read_label(self.files[0]).get("dos_grid")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        label = require_dft(read_label(self.files[i]), "the charge density and site DOS of an ElectronicDataset item")
        record = structure_to_record(label_structure(label), name=label["material_id"])
        record.update({
            F.CHARGE_DENSITY: label["rho32"].astype(np.float32),
            F.SITE_DOS: label["dos"].astype(np.float32),
            F.BADER_CHARGE: label["bader"].astype(np.float32),
            F.HIRSHFELD_CHARGE: label["hirshfeld"].astype(np.float32),
            "name": label["material_id"],
        })
        return record


def collate_electronic(records: list[dict[str, Any]]) -> Batch:
    """:func:`~diffase.data.batch.collate` plus the stacked charge-density grids (n_crystals, N, N, N)."""
    batch = collate(records)
    batch[F.CHARGE_DENSITY] = torch.as_tensor(np.stack([r[F.CHARGE_DENSITY] for r in records]))
    return batch
