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


def _cell_edges(energies: np.ndarray) -> np.ndarray:
    """Edges of the cells around each grid point: midpoints, clipped at the grid's ends."""
    return np.concatenate([[energies[0]], 0.5 * (energies[1:] + energies[:-1]), [energies[-1]]])


def resample_dos(energies: Sequence[float], dos: np.ndarray, e_min: float = -10.0, e_max: float = 10.0,
                 n_points: int = 128) -> np.ndarray:
    """Bring a tabulated DOS (..., n_in) on ascending ``energies`` (n_in,) to ``n_points`` from ``e_min`` to
    ``e_max``, keeping the number of states in every output cell.

    The input is taken as piecewise linear (its trapezoid integral); each output value is the states between
    the midpoints around its energy divided by the cell width (the end cells are half cells). The integral of
    the output by the same cells equals the input's trapezoid integral over [e_min, e_max] exactly; outside
    the input's range the DOS is taken as 0. NaN rows stay NaN.
    """
    e_in = np.asarray(energies, dtype=np.float64)
    dos = np.asarray(dos, dtype=np.float64)
    if e_in.ndim != 1 or dos.shape[-1] != e_in.shape[0] or e_in.shape[0] < 2:
        raise ValueError(f"energies {e_in.shape} and dos {dos.shape} must share the last axis (>= 2 points)")
    if not np.all(np.diff(e_in) > 0):
        raise ValueError("energies must be strictly ascending")
    out_edges = _cell_edges(np.linspace(e_min, e_max, n_points))
    # cumulative states N(E) at the input points (trapezoid), linear DOS between them -> N quadratic per segment
    seg = np.diff(e_in)
    cum = np.concatenate([np.zeros(dos.shape[:-1] + (1,)),
                          np.cumsum(0.5 * (dos[..., 1:] + dos[..., :-1]) * seg, axis=-1)], axis=-1)

    def states_below(x: np.ndarray) -> np.ndarray:
        x = np.clip(x, e_in[0], e_in[-1])
        k = np.clip(np.searchsorted(e_in, x, side="right") - 1, 0, len(e_in) - 2)
        u = x - e_in[k]
        slope = (dos[..., k + 1] - dos[..., k]) / seg[k]
        return cum[..., k] + dos[..., k] * u + 0.5 * slope * u**2

    counts = np.diff(states_below(out_edges), axis=-1)
    return counts / np.diff(out_edges)


def integral(energies: Sequence[float], dos: np.ndarray) -> np.ndarray:
    """States in a DOS on ``energies`` by the cells :func:`resample_dos` uses (its output's integral)."""
    return (np.asarray(dos, dtype=np.float64) * np.diff(_cell_edges(np.asarray(energies, dtype=np.float64)))).sum(-1)


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
