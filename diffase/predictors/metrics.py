"""Held-out errors of predicted site labels, per site and summarised per element.

=====================  ===========================================================================================
quantity               meaning
=====================  ===========================================================================================
dos_mae                mean over the energy grid of |dos - dos_ref|, states/eV (per site)
dos_wasserstein        1-D Wasserstein distance between the two DOS curves normalised to unit area over the window:
                       integral of |CDF - CDF_ref| dE, eV (per site; sites whose reference or prediction has no
                       weight in the window are left out)
bader_abs_error        |q - q_ref|, e (per site; NaN where the reference has no Bader charge)
=====================  ===========================================================================================

The element table gives, per element and over all sites, the site counts, the mean of each quantity, and the
DOS MAE relative to the mean |dos_ref| of the same sites.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Element


def wasserstein_1d(dos: np.ndarray, reference: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """W1 distance (n,), eV, between rows of ``dos`` and ``reference`` (n, P) on the uniform energy ``grid`` (P,).

    Negative values are clipped to 0 before normalising; a row with no weight gives NaN.
    """
    step = float(grid[1] - grid[0])
    out = []
    for a, b in zip(np.clip(dos, 0, None), np.clip(reference, 0, None)):
        if a.sum() <= 0 or b.sum() <= 0:
            out.append(np.nan)
            continue
        out.append(np.abs(np.cumsum(a / a.sum()) - np.cumsum(b / b.sum())).sum() * step)
    return np.array(out)


def site_errors(dos, dos_ref, charge, charge_ref, grid) -> dict[str, np.ndarray]:
    """Per-site errors (see the module table) of predicted ``dos`` (n, P) and ``charge`` (n,) against references."""
    dos, dos_ref = np.asarray(dos, np.float64), np.asarray(dos_ref, np.float64)
    return {
        "dos_mae": np.abs(dos - dos_ref).mean(axis=1),
        "dos_ref_mean_abs": np.abs(dos_ref).mean(axis=1),
        "dos_wasserstein": wasserstein_1d(dos, dos_ref, np.asarray(grid, np.float64)),
        "bader_abs_error": np.abs(np.asarray(charge, np.float64) - np.asarray(charge_ref, np.float64)),
    }


def element_table(numbers: np.ndarray, errors: dict[str, np.ndarray]) -> list[dict]:
    """One row per element (by symbol, sorted by atomic number) and a final ``"all"`` row.

    Each row: ``element``, ``n_sites``, ``dos_mae``, ``dos_relative_mae`` (dos_mae / mean |dos_ref|),
    ``dos_wasserstein`` (mean over sites with weight, ``n_wasserstein`` of them), ``n_bader``, ``bader_mae``.
    """
    numbers = np.asarray(numbers)
    rows = []
    for name, keep in [(Element.from_Z(int(z)).symbol, numbers == z) for z in np.unique(numbers)] + [
            ("all", np.ones(len(numbers), bool))]:
        w = errors["dos_wasserstein"][keep]
        q = errors["bader_abs_error"][keep]
        rows.append({
            "element": name,
            "n_sites": int(keep.sum()),
            "dos_mae": float(errors["dos_mae"][keep].mean()),
            "dos_relative_mae": float(errors["dos_mae"][keep].mean() / errors["dos_ref_mean_abs"][keep].mean()),
            "n_wasserstein": int(np.isfinite(w).sum()),
            "dos_wasserstein": float(np.nanmean(w)) if np.isfinite(w).any() else float("nan"),
            "n_bader": int(np.isfinite(q).sum()),
            "bader_mae": float(np.nanmean(q)) if np.isfinite(q).any() else float("nan"),
        })
    return rows
