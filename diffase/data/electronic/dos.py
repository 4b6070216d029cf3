"""Site-projected densities of states as fixed-length vectors: spin sum, E_F = 0, semicore cut, Gaussian smearing.

Every site DOS diffase stores or returns is a ``(n_sites, n_points)`` array in **states/eV summed over both spins**
(a spin-paired calculation counts each level twice), on the energy grid of a :class:`DosWindow` given relative to
the Fermi level (E - E_F, eV).

Smearing and resampling are one step: each input level (a Kohn-Sham eigenvalue with its projection weight, or one
sample of an already tabulated DOS times its energy step) becomes a normalised Gaussian evaluated on the output
grid, so the number of states inside the window is kept, whatever the input grid was.

Semicore truncation: states below ``semicore_below`` (E - E_F, eV) are dropped *before* smearing, so that deep
semicore peaks just under the window (Ti 3p, Ga 3d, Ba 5p...) do not leak their Gaussian tails into it. The
joint-descriptor preset follows the atom-projected DOS of Okuda, Takahara & Mizoguchi (npj Comput. Mater. 2026,
MatterGen-e-): 512 points over E - E_F in [-15, 5] eV, spin-summed, one vector per site; cutting at the window's
lower edge is diffase's reading of their semicore truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.electronic_structure.dos import CompleteDos


@dataclass(frozen=True)
class DosWindow:
    """An energy grid relative to E_F: ``n_points`` values from ``e_min`` to ``e_max`` (eV, both included)."""

    e_min: float = -10.0
    e_max: float = 10.0
    n_points: int = 512

    def grid(self) -> np.ndarray:
        """The energies (n_points,) in eV relative to the Fermi level."""
        return np.linspace(self.e_min, self.e_max, self.n_points)


#: Default window: E - E_F in [-10, 10] eV, 512 points (DOSMatGen, and the GPAW labels in shared/data/electronic).
DOSMATGEN_WINDOW = DosWindow(-10.0, 10.0, 512)
#: Window of the joint structure + atomic-DOS generator (Okuda, Takahara, Mizoguchi 2026): [-15, 5] eV, 512 points.
JOINT_DESCRIPTOR_WINDOW = DosWindow(-15.0, 5.0, 512)

#: Default Gaussian standard deviation, eV. GPAW's ``width=0.1`` (exp(-(x/w)^2)) is this sigma: 0.1 / sqrt(2).
DEFAULT_SIGMA = float(0.1 / np.sqrt(2.0))


def smear_levels(
    energies: np.ndarray,
    weights: np.ndarray,
    window: DosWindow = DOSMATGEN_WINDOW,
    *,
    sigma: float = DEFAULT_SIGMA,
    semicore_below: float | None = None,
) -> np.ndarray:
    """Broaden discrete levels into a DOS on ``window``.

    ``energies`` (n_levels,) are E - E_F in eV; ``weights`` (..., n_levels) are states per level (projection
    weight x k-point weight x spin degeneracy). Levels below ``semicore_below`` (eV) are dropped first. Returns
    (..., n_points) in states/eV: sum_i w_i N(E; e_i, sigma).
    """
    energies = np.asarray(energies, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if energies.ndim != 1 or weights.shape[-1] != energies.shape[0]:
        raise ValueError(f"energies {energies.shape} and weights {weights.shape} must share the last axis")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive (eV), got {sigma}")
    keep = np.ones(energies.shape, dtype=bool) if semicore_below is None else energies >= semicore_below
    grid = window.grid()
    kernel = np.exp(-0.5 * ((grid[:, None] - energies[None, keep]) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return weights[..., keep] @ kernel.T


def smear_sampled(
    energies: np.ndarray,
    dos: np.ndarray,
    window: DosWindow = DOSMATGEN_WINDOW,
    *,
    sigma: float | None = None,
    semicore_below: float | None = None,
) -> np.ndarray:
    """Resample a tabulated DOS (..., n_in) on ascending ``energies`` (n_in,) (E - E_F, eV) onto ``window``.

    Each sample carries ``dos * dE`` states (dE: the width of its cell between midpoints), then :func:`smear_levels`.
    ``sigma=None`` uses the larger of :data:`DEFAULT_SIGMA` and the input energy step: a narrower Gaussian would
    show the input samples as ripples (VASP's default NEDOS = 301 gives steps of ~0.1 eV).
    """
    energies = np.asarray(energies, dtype=np.float64)
    if sigma is None:
        sigma = max(DEFAULT_SIGMA, float(np.median(np.diff(energies))))
    edges = np.concatenate([[energies[0]], 0.5 * (energies[1:] + energies[:-1]), [energies[-1]]])
    return smear_levels(energies, np.asarray(dos, dtype=np.float64) * np.diff(edges), window,
                        sigma=sigma, semicore_below=semicore_below)


def site_dos_from_complete_dos(
    complete_dos: CompleteDos,
    window: DosWindow = DOSMATGEN_WINDOW,
    *,
    sigma: float | None = None,
    semicore_below: float | None = None,
) -> np.ndarray:
    """Per-site DOS (n_sites, n_points), states/eV, from a pymatgen ``CompleteDos`` (e.g. ``Vasprun.complete_dos``).

    Sums every orbital projection and both spins of each site, puts E_F at 0, smears and resamples onto
    ``window`` (:func:`smear_sampled`; ``sigma`` in eV). Sites come in the order of ``complete_dos.structure``.
    """
    energies = np.asarray(complete_dos.energies, dtype=np.float64) - complete_dos.efermi
    per_site = []
    for site in complete_dos.structure:
        densities = complete_dos.get_site_dos(site).densities
        per_site.append(sum(np.asarray(values, dtype=np.float64) for values in densities.values()))
    return smear_sampled(energies, np.stack(per_site), window, sigma=sigma, semicore_below=semicore_below)
