"""How far one label of a structure is from another (e.g. the ``fast`` preset against ``default``).

All errors compare arrays on the same grids and in the same site order:

=====================  ============================================================================================
key                    meaning
=====================  ============================================================================================
density_eps_msd        sum (rho - rho_ref)^2 / sum rho_ref^2 over the N^3 grid (dimensionless; x100 for %)
density_nmae           sum |rho - rho_ref| / sum |rho_ref| (the normalised MAE of DeepDFT / ChargE3Net)
dos_relative_mae       mean |dos - dos_ref| / mean |dos_ref| over all sites and energies (states/eV cancel)
bader_mae              mean |q - q_ref| over sites, e (NaN when either label has no Bader charges)
hirshfeld_mae          mean |q - q_ref| over sites, e
efermi_shift           efermi - efermi_ref, eV
gap_shift              gap - gap_ref, eV
=====================  ============================================================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffase.data.electronic.dataset import require_dft


def density_errors(rho: np.ndarray, rho_ref: np.ndarray) -> dict[str, float]:
    """``density_eps_msd`` and ``density_nmae`` (see the module table) of a density grid against a reference grid
    of the same shape (any units, the same for both)."""
    rho, rho_ref = np.asarray(rho, np.float64), np.asarray(rho_ref, np.float64)
    return {"density_eps_msd": float(np.sum((rho - rho_ref) ** 2) / np.sum(rho_ref**2)),
            "density_nmae": float(np.sum(np.abs(rho - rho_ref)) / np.sum(np.abs(rho_ref)))}


def label_errors(label: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """Errors of ``label`` against ``reference`` (both as :func:`~diffase.data.electronic.dataset.read_label` gives).

    ``reference`` must be a DFT label: a predicted one raises :class:`~diffase.errors.PredictedLabelError`."""
    require_dft(reference, "the reference of a label comparison")
    rho, rho_ref = np.asarray(label["rho32"], np.float64), np.asarray(reference["rho32"], np.float64)
    dos, dos_ref = np.asarray(label["dos"], np.float64), np.asarray(reference["dos"], np.float64)
    if rho.shape != rho_ref.shape or dos.shape != dos_ref.shape:
        raise ValueError(f"labels on different grids: density {rho.shape} vs {rho_ref.shape}, "
                         f"DOS {dos.shape} vs {dos_ref.shape}")
    return {
        **density_errors(rho, rho_ref),
        "dos_relative_mae": float(np.mean(np.abs(dos - dos_ref)) / np.mean(np.abs(dos_ref))),
        "bader_mae": float(np.mean(np.abs(np.asarray(label["bader"]) - np.asarray(reference["bader"])))),
        "hirshfeld_mae": float(np.mean(np.abs(np.asarray(label["hirshfeld"]) - np.asarray(reference["hirshfeld"])))),
        "efermi_shift": float(label["efermi"]) - float(reference["efermi"]),
        "gap_shift": float(label["gap"]) - float(reference["gap"]),
    }
