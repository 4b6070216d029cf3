"""Which guests go into a host, and whether they can fit: checks shared by every guest-insertion method.

The capacity check is written here (no library answers "can n guests fit into this host at a minimum
distance"): free space is sampled on a grid (~0.3 Angstrom), points closer than ``min_host_distance`` to a
host atom (any periodic image) are discarded, and guests are packed greedily into what is left, each
at least ``min_guest_distance`` from the others. Greedy packing under-estimates the true capacity a little,
so the defaults are deliberately permissive (1.4 Angstrom): this is a guard against impossible requests,
not a site finder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from pymatgen.core import Element, Structure
from scipy.spatial import cKDTree

from diffase.errors import HostTooDenseError, UnknownElementError

#: Default minimum guest-host and guest-guest distances of the capacity check, Angstrom.
GUEST_MIN_DISTANCE = 1.4


def parse_guests(host: Structure, guest: str | Mapping[str, int], count: int | None = None,
                 concentration: float | None = None) -> dict[str, int]:
    """Normalise the guest request to ``{element symbol: number of guests in this host cell}``.

    Give ``guest`` as one symbol with ``count`` (guests per host cell) or ``concentration`` (guests per host
    formula unit, e.g. 0.5 for Zn0.5MnO2), or as a mapping ``{"Li": 2, "Na": 1}`` for several species.
    """
    if isinstance(guest, Mapping):
        if count is not None or concentration is not None:
            raise ValueError("give counts inside the guest mapping, not also count/concentration")
        request = dict(guest)
    else:
        if (count is None) == (concentration is None):
            raise ValueError("give exactly one of count (guests per cell) or concentration (per formula unit)")
        if concentration is not None:
            units = host.composition.get_reduced_composition_and_factor()[1]
            exact = concentration * units
            if abs(exact - round(exact)) > 1e-6:
                raise ValueError(
                    f"concentration {concentration} x {units:g} formula units of {host.composition.reduced_formula} "
                    f"= {exact:g} guests, not a whole number: use a supercell or give count")
            count = int(round(exact))
        request = {guest: count}
    out = {}
    for symbol, n in request.items():
        if not Element.is_valid_symbol(str(symbol)):
            raise UnknownElementError(f"guest {symbol!r} is not a chemical element symbol")
        if int(n) != n or n < 1:
            raise ValueError(f"guest count for {symbol} must be a positive integer, got {n}")
        out[str(symbol)] = int(n)
    return out


def _free_points(host: Structure, spacing: float, min_host_distance: float) -> np.ndarray:
    """Cartesian grid points (m, 3) at least ``min_host_distance`` from every host atom image."""
    lattice = host.lattice
    n_grid = [max(4, math.ceil(length / spacing)) for length in lattice.abc]
    axes = [np.arange(n) / n for n in n_grid]
    frac = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    if len(host) == 0:
        return frac @ lattice.matrix
    reps = [math.ceil(min_host_distance * np.linalg.norm(b)) + 1 for b in lattice.inv_matrix.T]
    shifts = np.stack(np.meshgrid(*[np.arange(-r, r + 1) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    images = ((np.mod(host.frac_coords, 1)[None] + shifts[:, None]).reshape(-1, 3)) @ lattice.matrix
    dist, _ = cKDTree(images).query(frac @ lattice.matrix)
    return (frac @ lattice.matrix)[dist >= min_host_distance]


def guest_capacity(host: Structure, *, min_host_distance: float = GUEST_MIN_DISTANCE,
                   min_guest_distance: float = GUEST_MIN_DISTANCE, spacing: float = 0.3, limit: int | None = None) -> int:
    """Number of guests greedily packable into ``host`` (stops counting at ``limit``)."""
    points = _free_points(host, spacing, min_host_distance)
    inv = host.lattice.inv_matrix
    placed = 0
    while len(points) and (limit is None or placed < limit):
        chosen = points[0]
        d = (points - chosen) @ inv
        d = (d - np.round(d)) @ host.lattice.matrix
        points = points[np.linalg.norm(d, axis=1) >= min_guest_distance]
        placed += 1
    return placed


def check_capacity(host: Structure, guests: Mapping[str, int], *, min_host_distance: float = GUEST_MIN_DISTANCE,
                   min_guest_distance: float = GUEST_MIN_DISTANCE, name: str | None = None) -> None:
    """Raise :class:`HostTooDenseError` when ``host`` cannot hold the requested guests."""
    wanted = sum(guests.values())
    room = guest_capacity(host, min_host_distance=min_host_distance, min_guest_distance=min_guest_distance,
                          limit=wanted)
    if room < wanted:
        label = f" ({name})" if name else ""
        raise HostTooDenseError(
            f"host {host.composition.reduced_formula}{label} has room for at most {room} guest(s) at >= "
            f"{min_host_distance} Angstrom from host atoms and {min_guest_distance} Angstrom from each other; "
            f"{wanted} requested ({', '.join(f'{n} {s}' for s, n in guests.items())}). Use fewer guests or a "
            "supercell of the host (structure.make_supercell)."
        )


def guest_species_list(guests: Mapping[str, int]) -> list[int]:
    """Atomic numbers of the guests in insertion order, e.g. {"Li": 2, "O": 1} -> [3, 3, 8]."""
    return [Element(s).Z for s, n in guests.items() for _ in range(n)]
