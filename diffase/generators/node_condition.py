"""Per-atom conditions of a joint model as users hold them: the site DOS, its grid, and the normalisation the
network sees.

A joint checkpoint trained with a site-DOS condition stores (and :class:`~diffase.generators.joint.JointModel`
exposes as ``JointModel.node_condition``)::

    {"kind": "site_dos", "e_min": -10.0, "e_max": 10.0, "n_points": 128, "sigma_eV": 0.0707,
     "transform": {"name": "log1p"}, "resample": "cell_integral"}

* the grid: ``n_points`` energies from ``e_min`` to ``e_max`` (both included), E - E_F in eV, site DOS in
  states/eV summed over spins (the label convention, :mod:`diffase.data.electronic.dos`);
* ``sigma_eV``: the Gaussian smearing of the labels the model was trained on (before resampling);
* ``resample``: how the 512-point labels were brought to the grid (:func:`resample_dos`: the number of states
  in each grid cell is kept, so the integral over the window is conserved);
* ``transform``: what the network sees of a raw DOS row (:func:`apply_transform`): ``log1p`` = ``log(1 + g)``
  (a sharp d peak of 20 states/eV and a 0.2 states/eV s tail then differ by 3 units, not a factor 100).

Users pass RAW site DOS (states/eV on the model's grid); ``JointModel`` checks them (:func:`check_site_dos`) and
applies the transform; a row of NaN leaves its site free (masked conditioning).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SITE_DOS = "site_dos"
#: Transforms of a raw DOS row into the network's input (NaN rows stay NaN).
TRANSFORMS = ("log1p", "identity")
#: Resampling rule recorded in the checkpoint: the states in each grid cell are kept (:func:`resample_dos`).
RESAMPLE = "cell_integral"


def grid(spec: dict) -> np.ndarray:
    """The energies (n_points,) of a node-condition spec, eV relative to E_F."""
    return np.linspace(float(spec["e_min"]), float(spec["e_max"]), int(spec["n_points"]))


def site_dos_spec(n_points: int = 128, e_min: float = -10.0, e_max: float = 10.0, sigma_eV: float | None = None,
                  transform: str = "log1p") -> dict:
    """The ``node_condition`` entry of a joint checkpoint conditioned on the site DOS."""
    if transform not in TRANSFORMS:
        raise ValueError(f"node-condition transform must be one of {TRANSFORMS}, got {transform!r}")
    if n_points < 2 or not e_max > e_min:
        raise ValueError(f"site-DOS grid needs n_points >= 2 and e_max > e_min, got {n_points}, [{e_min}, {e_max}]")
    return {"kind": SITE_DOS, "e_min": float(e_min), "e_max": float(e_max), "n_points": int(n_points),
            "sigma_eV": None if sigma_eV is None else float(sigma_eV), "transform": {"name": transform},
            "resample": RESAMPLE}


def resample_dos(energies: Sequence[float], dos: np.ndarray, e_min: float = -10.0, e_max: float = 10.0,
                 n_points: int = 128) -> np.ndarray:
    """Bring a tabulated DOS (..., n_in) on ascending ``energies`` (n_in,) to ``n_points`` from ``e_min`` to
    ``e_max``, keeping the number of states in every output cell
    (:func:`diffase.data.electronic.dos_targets.regrid_dos`: the input is piecewise linear, zero outside its
    grid; the cells are the midpoints around each output energy, half cells at the ends). NaN rows stay NaN
    (free sites)."""
    from diffase.data.electronic.dos import DosWindow
    from diffase.data.electronic.dos_targets import regrid_dos

    dos = np.asarray(dos, dtype=np.float64)
    out = np.full(dos.shape[:-1] + (int(n_points),), np.nan)
    given = ~np.isnan(dos).all(axis=-1)
    out[given] = regrid_dos(energies, dos[given], DosWindow(float(e_min), float(e_max), int(n_points)))
    return out


def apply_transform(spec: dict | None, raw: np.ndarray) -> np.ndarray:
    """The network's input for raw per-atom conditions (NaN rows stay NaN); ``spec`` None = as given."""
    raw = np.asarray(raw, dtype=np.float64)
    name = ((spec or {}).get("transform") or {}).get("name", "identity")
    if name == "identity":
        return raw
    if name == "log1p":
        return np.log1p(np.clip(raw, 0.0, None))  # clip: a resampled label can dip to -1e-12
    raise ValueError(f"unknown node-condition transform {name!r}; known: {TRANSFORMS}")


def invert_transform(spec: dict | None, values: np.ndarray) -> np.ndarray:
    """Raw per-atom conditions back from the network's input (inverse of :func:`apply_transform`)."""
    values = np.asarray(values, dtype=np.float64)
    name = ((spec or {}).get("transform") or {}).get("name", "identity")
    if name == "identity":
        return values
    if name == "log1p":
        return np.expm1(values)
    raise ValueError(f"unknown node-condition transform {name!r}; known: {TRANSFORMS}")


def check_site_dos(values: np.ndarray, n_atoms: int, dim: int, crystal: int = 0) -> np.ndarray:
    """A (n_atoms, dim) float array of raw per-atom conditions: each row all numbers (given) or all NaN (free).

    Raises ``ValueError`` naming the crystal for a wrong shape (a DOS of the wrong length), an infinite value
    or a NaN inside a row that also holds numbers (a partial DOS is not a condition; NaN the whole row to leave
    the site free)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 and n_atoms == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[0] != n_atoms:
        raise ValueError(f"per-atom conditions of crystal {crystal} have shape {values.shape}; this model needs "
                         f"({n_atoms}, {dim}): one row per atom of the crystal (NaN rows = free sites)")
    if values.shape[1] != dim:
        raise ValueError(f"per-atom conditions of crystal {crystal} have shape {values.shape}: rows of "
                         f"{values.shape[1]} values; this model needs {dim} per row ({n_atoms}, {dim}): regrid the DOS to the model's energy grid "
                         "(JointModel.node_condition; diffase.generators.node_condition.resample_dos)")
    nan = np.isnan(values)
    partial = nan.any(1) & ~nan.all(1)
    if partial.any():
        raise ValueError(f"per-atom conditions of crystal {crystal}: row(s) {np.flatnonzero(partial).tolist()} "
                         "hold NaN among numbers; give a whole row (a DOS on every grid energy) or NaN the whole "
                         "row to leave that site free")
    if np.isinf(values).any():
        raise ValueError(f"per-atom conditions of crystal {crystal} hold an infinite value")
    return values
