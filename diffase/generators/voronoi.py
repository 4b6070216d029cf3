"""Classical guest placement, the baseline a user would pick instead of diffusion.

Candidate sites are the Voronoi interstitial sites of the host (pymatgen-analysis-defects'
``VoronoiInterstitialGenerator``) with all their symmetry-equivalent copies. Guests are inserted one at a
time, each at the candidate site that gives the lowest MLIP energy (a beam of ``beam_width`` partial
arrangements is kept), skipping sites closer than ``min_distance`` to guests already placed. The MLIP enters
as a function ``energy_fn(structures) -> energies (eV)`` so this module imports no potential.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pymatgen.core import Structure

from diffase.errors import HostTooDenseError
from diffase.generators.guests import GUEST_MIN_DISTANCE, guest_species_list
from diffase.generators.inpainting import GuestCandidate, with_guests

EnergyFn = Callable[[Sequence[Structure]], Sequence[float]]


def voronoi_sites(host: Structure, species: str = "Li", *, clustering_tol: float = 0.5,
                  min_dist: float = 0.9) -> np.ndarray:
    """Fractional coordinates (m, 3) of every Voronoi interstitial site of ``host``, symmetry copies included."""
    try:
        from pymatgen.analysis.defects.generators import VoronoiInterstitialGenerator
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the Voronoi baseline needs pymatgen-analysis-defects: "
                          "pip install pymatgen-analysis-defects") from err
    generator = VoronoiInterstitialGenerator(clustering_tol=clustering_tol, min_dist=min_dist)
    sites = [site.frac_coords for defect in generator.generate(host, [species]) for site in defect.equivalent_sites]
    return np.mod(np.array(sites, dtype=float).reshape(-1, 3), 1.0)


def _too_close(host: Structure, frac: np.ndarray, placed: list[np.ndarray], min_distance: float) -> np.ndarray:
    """(m,) bool: candidate sites within ``min_distance`` (Angstrom, minimum image) of a placed guest."""
    close = np.zeros(len(frac), dtype=bool)
    for p in placed:
        d = frac - p
        d -= np.round(d)
        close |= np.linalg.norm(d @ host.lattice.matrix, axis=1) < min_distance
    return close


def voronoi_insertion(
    host: Structure,
    guests: Mapping[str, int],
    energy_fn: EnergyFn,
    *,
    beam_width: int = 1,
    min_distance: float = GUEST_MIN_DISTANCE,
    host_index: int = 0,
    sites: np.ndarray | None = None,
) -> list[GuestCandidate]:
    """Greedy (beam) insertion of the requested guests into ``host`` at Voronoi sites, ranked by energy.

    Returns up to ``beam_width`` complete arrangements, lowest MLIP energy first. Raises
    :class:`~diffase.errors.HostTooDenseError` (a ``ValueError``) when the sites run out before every guest is
    placed (the host is too dense for this baseline).
    """
    order = guest_species_list(guests)
    frac_sites = voronoi_sites(host, next(iter(guests))) if sites is None else sites
    if len(frac_sites) == 0:
        raise HostTooDenseError(f"no Voronoi interstitial sites found in {host.composition.reduced_formula}")
    beam: list[tuple[float, list[int]]] = [(0.0, [])]  # (energy, chosen site indices)
    for step, z in enumerate(order):
        trials, owners = [], []
        for _, chosen in beam:
            placed = [frac_sites[i] for i in chosen]
            free = np.flatnonzero(~_too_close(host, frac_sites, placed, min_distance))
            for i in free:
                trial = with_guests(host, order[: step + 1], (np.array(placed + [frac_sites[i]]) @ host.lattice.matrix),
                                    host_index, 0, "voronoi")
                trials.append(trial.structure)
                owners.append(chosen + [int(i)])
        if not trials:
            raise HostTooDenseError(
                f"Voronoi baseline: no free site left for guest {step + 1} of {len(order)} in "
                f"{host.composition.reduced_formula} (sites closer than {min_distance} Angstrom are excluded)")
        energies = np.asarray(energy_fn(trials), dtype=float)
        seen, new_beam = set(), []
        for k in np.argsort(energies):
            key = frozenset(owners[k])
            if key not in seen:
                seen.add(key)
                new_beam.append((float(energies[k]), owners[k]))
            if len(new_beam) == beam_width:
                break
        beam = new_beam
    return [
        with_guests(host, order, frac_sites[chosen] @ host.lattice.matrix, host_index, rank, "voronoi")
        for rank, (_, chosen) in enumerate(beam)
    ]
