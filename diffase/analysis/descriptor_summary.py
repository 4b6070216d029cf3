"""Per-crystal summary of generated per-site descriptors, one row per crystal of an extxyz file.

Columns: ``sample`` (index in the run), ``formula``, ``n_atoms``, and for each descriptor the file holds:

=============================  ===================================================================================
column                         meaning
=============================  ===================================================================================
total_charge_e                 sum of the sites' ``bader_charge``, e (0 for a model sampled under charge neutrality)
mean_abs_charge_e              mean |bader_charge| over the sites, e
dos_at_fermi_states_per_eV     ``atomic_dos`` summed over the sites at the grid point nearest E - E_F = 0, states/eV
states_in_window               ``atomic_dos`` summed over the sites and integrated over the grid, states
min_dos_states_per_eV          smallest ``atomic_dos`` value of the crystal, states/eV (>= 0 when decoded)
latent_abs_max                 largest |``ados_latent``| of the crystal (<= 1 under the range restriction)
mean_dummy                     mean of the sites' ``dummy_descriptor`` (no physics: the ablation's control)
=============================  ===================================================================================
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.io import read as ase_read

from diffase.data import fields as F


def descriptor_rows(path: str | Path, dos_grid: np.ndarray | None = None) -> list[dict]:
    """One summary row (see the module table) per frame of the extxyz file ``path``; ``dos_grid`` (P,) eV: the
    energies of ``atomic_dos`` (needed when the file holds it)."""
    path = Path(path)
    frames = ase_read(str(path), ":", format="extxyz") if path.exists() and path.stat().st_size else []
    rows = []
    for i, atoms in enumerate(frames):
        row = {"sample": atoms.info.get("sample", i), "formula": atoms.get_chemical_formula(mode="reduce"),
               "n_atoms": len(atoms)}
        arrays = atoms.arrays
        if F.BADER_CHARGE in arrays:
            q = arrays[F.BADER_CHARGE]
            row.update(total_charge_e=float(q.sum()), mean_abs_charge_e=float(np.abs(q).mean()))
        if F.ATOMIC_DOS in arrays:
            if dos_grid is None:
                raise ValueError(f"{path} holds atomic_dos; give its energy grid (dos_grid) to summarise it")
            dos = np.asarray(arrays[F.ATOMIC_DOS]).reshape(len(atoms), -1)
            grid = np.asarray(dos_grid, dtype=np.float64)
            row.update(dos_at_fermi_states_per_eV=float(dos[:, int(np.argmin(np.abs(grid)))].sum()),
                       states_in_window=float(np.trapezoid(dos.sum(0), grid)),
                       min_dos_states_per_eV=float(dos.min()))
        if F.ADOS_LATENT in arrays:
            row["latent_abs_max"] = float(np.abs(arrays[F.ADOS_LATENT]).max())
        if F.DUMMY_DESCRIPTOR in arrays:
            row["mean_dummy"] = float(np.mean(arrays[F.DUMMY_DESCRIPTOR]))
        rows.append(row)
    return rows
