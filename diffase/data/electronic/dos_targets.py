"""DOS targets as users hold them, put on a model's energy grid: what :class:`DOSConditionedGenerator` conditions on.

A target is one of

* a pymatgen ``CompleteDos`` (e.g. ``Vasprun.complete_dos``): each site's DOS, orbitals and spins summed, E_F = 0,
  smeared onto the grid by :func:`diffase.data.electronic.dos.site_dos_from_complete_dos`;
* a label file of :mod:`diffase.data.electronic.dataset` (path, or the dict :func:`read_label` returns): the
  structure and its site DOS;
* an array (n_sites, n_energies) or (n_energies,) in states/eV, with its energy grid ``energies`` (E - E_F, eV)
  unless it already lies on the model's grid (then it must have the grid's length);
* a material-level **total** DOS (``total=True``): states/eV per cell, from any of the above (a CompleteDos's total
  DOS, the sum of a label's site DOS, or an array (n_energies,)).

Per-site conditioning needs a DOS for each conditioned site. For a total DOS no site decomposition exists, so every
site of an ``n_atoms`` crystal is conditioned on the mean site DOS ``total / n_atoms``: the only assignment that sums
to the given total without inventing a partition between sites. The generated crystals are then ranked by their
predicted total DOS (the surrogate's site DOS summed) against the target total, per atom, so the ranking judges what
the user asked for, not the made-up partition.

Regridding (:func:`regrid_dos`) conserves the number of states in the window exactly: the input is taken as
piecewise linear (zero outside its grid), integrated exactly into a cumulative count N(E), and each output value is the
mean DOS over its cell (cells between grid midpoints, half cells at both ends), so the trapezoid integral of the
output over the window equals the input's integral over the window. It adds no broadening: a coarse input (VASP's
0.1 eV steps) comes out as steps; a ``CompleteDos`` is smeared instead (the dos.py rule).

Units: eV (energies relative to the Fermi level), states/eV summed over spins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Structure
from pymatgen.electronic_structure.dos import CompleteDos

from diffase.data.electronic.dataset import label_structure, read_label
from diffase.data.electronic.dos import (
    DosWindow,
    site_dos_from_complete_dos,
    smear_sampled,
)
from diffase.errors import SiteIndexError


@dataclass(frozen=True)
class DOSTarget:
    """A DOS target on a model's grid.

    ``site_dos`` (k, P) states/eV: the condition of each site in ``sites`` (indices into the generated crystal, k of
    them). ``window``: the grid (P points, E - E_F eV). ``structure``: the crystal the DOS belongs to, if known (a
    CompleteDos's or label's). ``total`` (P,) states/eV per cell for a total-DOS target (then ``sites`` are all
    ``num_atoms`` sites and ``site_dos`` rows are ``total / num_atoms``), else None. ``source``: what it was made from.
    """

    site_dos: np.ndarray
    sites: tuple[int, ...]
    window: DosWindow
    structure: Structure | None = None
    total: np.ndarray | None = None
    source: str = "array"

    def node_conditions(self, n_atoms: int) -> np.ndarray:
        """(n_atoms, P) per-site conditions of a crystal of ``n_atoms``: the target rows at ``sites``, NaN rows
        ("not given": free sites) elsewhere. Raises :class:`~diffase.errors.SiteIndexError` for a site outside the
        crystal."""
        check_sites(self.sites, n_atoms)
        rows = np.full((n_atoms, self.window.n_points), np.nan)
        rows[list(self.sites)] = self.site_dos
        return rows


def check_sites(sites, n_atoms: int, what: str = "the generated crystal") -> tuple[int, ...]:
    """``sites`` as a tuple of ints, each in 0..n_atoms-1 and none twice; :class:`~diffase.errors.SiteIndexError`
    (an ``IndexError``) / ``ValueError`` naming the problem otherwise."""
    out = tuple(int(i) for i in sites)
    bad = [i for i in out if not 0 <= i < n_atoms]
    if bad:
        raise SiteIndexError(f"site index {bad[0]} is out of range: {what} has {n_atoms} sites (0..{n_atoms - 1}); "
                         "give site indices within it, or a template / num_atoms with more sites")
    if len(set(out)) != len(out):
        raise ValueError(f"site indices repeat in {list(out)}; give each conditioned site once")
    return out


def check_finite(dos: np.ndarray, what: str = "the DOS") -> np.ndarray:
    """``dos`` as float64; ``ValueError`` naming the first site and energy index with a NaN or infinite value."""
    dos = np.asarray(dos, dtype=np.float64)
    bad = np.argwhere(~np.isfinite(np.atleast_2d(dos)))
    if len(bad):
        row, col = bad[0]
        raise ValueError(f"{what} holds a NaN or infinite value (row {row}, energy index {col}); a target needs a "
                         "finite DOS at every energy: fill or cut the gap first (a free site is chosen with `sites`, "
                         "not with NaN)")
    return dos


def _cumulative_states(energies: np.ndarray, dos: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Exact integral from -inf to each of ``at`` (M,) of the piecewise-linear DOS (..., n) on ``energies`` (zero
    outside them): (..., M) states."""
    cum = np.concatenate([np.zeros(dos.shape[:-1] + (1,)),
                          np.cumsum(0.5 * (dos[..., 1:] + dos[..., :-1]) * np.diff(energies), axis=-1)], axis=-1)
    x = np.clip(at, energies[0], energies[-1])
    k = np.clip(np.searchsorted(energies, x, side="right") - 1, 0, len(energies) - 2)
    dx = energies[k + 1] - energies[k]
    t = x - energies[k]
    slope = (dos[..., k + 1] - dos[..., k]) / dx
    return cum[..., k] + dos[..., k] * t + 0.5 * slope * t**2


def regrid_dos(energies, dos, window: DosWindow) -> np.ndarray:
    """Put a DOS (..., n) on ascending ``energies`` (n,) (E - E_F, eV) onto ``window``, conserving the number of
    states in the window (module docstring): returns (..., P) states/eV whose trapezoid integral over the window
    equals the input's integral over the window (the input is zero outside its own grid)."""
    energies = np.asarray(energies, dtype=np.float64)
    dos = check_finite(dos)
    if energies.ndim != 1 or dos.shape[-1] != len(energies) or len(energies) < 2:
        raise ValueError(f"the energy grid ({energies.shape}) must be 1-D with one energy per DOS value "
                         f"(the DOS has {dos.shape[-1]} values per row)")
    if not (np.diff(energies) > 0).all():
        raise ValueError("the energy grid must be strictly ascending (E - E_F in eV)")
    grid = window.grid()
    edges = np.concatenate([[grid[0]], 0.5 * (grid[1:] + grid[:-1]), [grid[-1]]])
    counts = _cumulative_states(energies, dos, edges)
    return np.diff(counts, axis=-1) / np.diff(edges)


def on_window(dos, window: DosWindow, energies=None, *, what: str = "the DOS") -> np.ndarray:
    """A DOS array (k, n) or (n,) as (k, P) on ``window``: regridded from ``energies`` if given, else it must have
    the window's P values per row already."""
    dos = check_finite(np.atleast_2d(np.asarray(dos, dtype=np.float64)), what)
    if dos.ndim != 2:
        raise ValueError(f"{what} must be (n_sites, n_energies) or (n_energies,), got shape {dos.shape}")
    if energies is not None:
        return regrid_dos(energies, dos, window)
    if dos.shape[1] != window.n_points:
        raise ValueError(f"{what} has {dos.shape[1]} values per site but the model's grid has {window.n_points} "
                         f"(E - E_F from {window.e_min} to {window.e_max} eV); pass its energy grid "
                         "(energies=..., E - E_F in eV) to regrid it")
    return dos


def _read_source(target, window: DosWindow, energies, sigma, total: bool) -> tuple[np.ndarray, Structure | None, str]:
    """(rows (n, P) on ``window``, structure or None, source name): site DOS rows, or one total-DOS row."""
    if isinstance(target, CompleteDos):
        if total:
            tdos = target.get_densities()  # the total DOS, summed over spins
            e = np.asarray(target.energies, dtype=np.float64) - target.efermi
            rows = smear_sampled(e, check_finite(tdos, "the total DOS"), window, sigma=sigma)[None]
        else:
            rows = site_dos_from_complete_dos(target, window, sigma=sigma)
        return check_finite(rows), target.structure, "CompleteDos"
    if isinstance(target, (str, os.PathLike, dict)):
        label = read_label(target) if not isinstance(target, dict) else target
        name = str(label.get("material_id", Path(str(target)).stem if not isinstance(target, dict) else "label"))
        rows = on_window(label["dos"], window, None if _same_grid(label["dos_grid"], window) else label["dos_grid"],
                         what=f"the site DOS of label {name}")
        return (rows.sum(0, keepdims=True) if total else rows), label_structure(label), f"label {name}"
    rows = on_window(target, window, energies, what="the target DOS")
    if total and rows.shape[0] != 1:
        raise ValueError(f"a total-DOS target is one curve (n_energies,), got {rows.shape[0]} rows")
    return rows, None, "array"


def _same_grid(energies, window: DosWindow) -> bool:
    energies = np.asarray(energies, dtype=np.float64)
    return energies.shape == (window.n_points,) and np.allclose(energies, window.grid(), atol=1e-4)


def resolve_target(target, window: DosWindow, *, sites=None, energies=None, sigma: float | None = None,
                   total: bool = False, num_atoms: int | None = None) -> DOSTarget:
    """A :class:`DOSTarget` on ``window`` from what a user holds (module docstring).

    ``sites``: the indices of the generated crystal's sites to condition (masked conditioning: the others are free).
    With a CompleteDos or a label the rows are taken at these indices of its structure (all sites if None); with an
    array its rows go to ``sites`` in order (rows = sites 0..k-1 if None). ``energies``: the array's grid (E - E_F,
    eV). ``sigma``: smearing of a CompleteDos, eV (None: dos.py's rule, the larger of the labels' 0.0707 eV and the
    input step). ``total``: the target is a material-level total DOS; every one of ``num_atoms`` sites (default: the
    target's structure's) is conditioned on total / num_atoms, and ``sites`` must be None.
    """
    rows, structure, source = _read_source(target, window, energies, sigma, total)
    if total:
        if sites is not None:
            raise ValueError("a total-DOS target conditions every site (total / n_atoms); leave sites=None")
        n = num_atoms if num_atoms is not None else (len(structure) if structure is not None else None)
        if n is None or int(n) < 1:
            raise ValueError("a total-DOS array fixes no number of atoms: give num_atoms (or a template)")
        n = int(n)
        return DOSTarget(np.repeat(rows / n, n, axis=0), tuple(range(n)), window, structure, rows[0], source)
    if structure is not None:
        chosen = check_sites(range(len(structure)) if sites is None else sites, len(structure), f"the {source}")
        return DOSTarget(rows[list(chosen)], chosen, window, structure, None, source)
    chosen = tuple(range(len(rows))) if sites is None else tuple(int(i) for i in sites)
    if len(chosen) != len(rows):
        raise ValueError(f"{len(rows)} DOS rows for {len(chosen)} sites {list(chosen)}: give one row per "
                         "conditioned site")
    return DOSTarget(rows, chosen, window, None, None, source)
