"""Migration barriers of a species by vacancy hops: nudged elastic band with an MLIP, as in ChargeDIFF.

Protocol (defaults): the symmetrically distinct hops between sites of ``species`` up to 4 Angstrom long (at
most 10, shortest first; pymatgen-analysis-diffusion's ``DistinctPathFinder``), each in a supercell of the
given cell repeated along each axis until every lattice length is >= 10 Angstrom, one ``species`` atom
removed at the hop's end (the vacancy), both endpoints relaxed first (positions, cell fixed), 7 images
interpolated by IDPP, then a climbing-image NEB (``ase.mep.NEB``) optimised with FIRE. The barrier is the
highest image energy minus the initial endpoint energy; between sites that are not symmetry copies the endpoints
differ, and :func:`limiting_barrier` (the largest climb either way) and :func:`has_saddle` say what the band means.

Pass a relaxed structure: the cell is kept as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator
from ase.mep import NEB
from ase.optimize import FIRE
from ase.utils.forcecurve import fit_images
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.calculators import MLIP, get_calculator, resolve_potential
from diffase.data.structures import StructureLike, to_structure
from diffase.simulate.relax import relax
from diffase.simulate.supercells import supercell_repeats


@dataclass
class NEBResult:
    """One hop's band. Energies in eV (relative to the relaxed initial endpoint), distances in Angstrom.

    ``energies``/``path``: the images, endpoints included, (n_images + 2,), ``path`` being the distance along
    the band. ``fit_path``/``fit_energies``: ASE's force-consistent spline through them (for plots).
    ``barrier``: highest image minus initial endpoint; ``delta_energy``: final minus initial endpoint;
    ``limiting_barrier`` and ``has_saddle``: see the functions of those names.
    """

    hop: str
    hop_length: float
    barrier: float
    delta_energy: float
    energies: np.ndarray
    path: np.ndarray
    fit_path: np.ndarray
    fit_energies: np.ndarray
    climbing_index: int | None
    converged: bool
    steps: int
    supercell: tuple[int, int, int]
    images: list[Structure]

    @property
    def n_atoms(self) -> int:
        return len(self.images[0])

    @property
    def limiting_barrier(self) -> float:
        return limiting_barrier(self.energies)

    @property
    def has_saddle(self) -> bool:
        return has_saddle(self.energies)


def limiting_barrier(energies: Sequence[float]) -> float:
    """Highest minus lowest image energy (eV) of a band (endpoints included): the largest climb met crossing the
    band in one direction or the other. The forward barrier when the endpoints are symmetry copies and the lowest
    points; larger when the hop ends lower (the way back climbs more) or the band dips to an intermediate minimum
    (an unrelaxed endpoint, or a stable site between the two)."""
    e = np.asarray(energies, dtype=float)
    return float(e.max() - e.min())


def has_saddle(energies: Sequence[float]) -> bool:
    """True when the highest image lies strictly between the endpoints: the band crosses a saddle. False for a
    band that only climbs (or falls) from one site to a less (more) stable one, whose 'barrier' is the sites'
    energy difference."""
    e = np.asarray(energies, dtype=float)
    return bool(e[1:-1].max(initial=-np.inf) > max(e[0], e[-1]))


def vacancy_hops(structure: StructureLike, species: str = "Li", *, max_hop_length: float = 4.0,
                 max_hops: int = 10, symprec: float = 0.1) -> list:
    """Symmetrically distinct hops between ``species`` sites no longer than ``max_hop_length`` (Angstrom),
    shortest first, at most ``max_hops`` (pymatgen ``MigrationHop`` objects)."""
    from pymatgen.analysis.diffusion.neb.pathfinder import DistinctPathFinder

    s = to_structure(structure).copy()
    s.remove_oxidation_states()
    if species not in {el.symbol for el in s.composition.elements}:
        raise ValueError(f"{s.composition.reduced_formula} contains no {species}")
    hops = DistinctPathFinder(s, species, max_path_length=max_hop_length, symprec=symprec).get_paths()
    if not hops:
        raise ValueError(f"no {species}-{species} hop shorter than {max_hop_length} Angstrom in "
                         f"{s.composition.reduced_formula}; raise max_hop_length")
    return hops[:max_hops]


def hop_endpoints(hop, repeats: Sequence[int]) -> tuple[Structure, Structure]:
    """Initial and final supercells of a vacancy hop, the migrating atom first in both and every other atom
    in the same order (so images can be interpolated). A vacancy sits at the hop's other end."""
    from pymatgen.analysis.diffusion.utils.supercells import get_start_end_structures

    base = Structure.from_sites(hop.symm_structure.sites)
    sc = np.diag(repeats)
    start, end, _ = get_start_end_structures(hop.isite, hop.esite, base, sc, vac_mode=True)
    inv = np.linalg.inv(sc)

    def migrating_first(s: Structure, site) -> Structure:
        frac = np.dot(site.frac_coords, inv)
        k = int(np.argmin([s.lattice.get_distance_and_image(frac, x.frac_coords)[0] for x in s]))
        return Structure.from_sites([s[k]] + [x for i, x in enumerate(s) if i != k])

    return migrating_first(start, hop.isite), migrating_first(end, hop.esite)


def neb_barrier(hop, calculator: str | Calculator | MLIP = "chgnet", *, n_images: int = 7,
                min_length: float = 10.0, supercell: Sequence[int] | None = None, fmax: float = 0.05,
                steps: int = 300, endpoint_fmax: float = 0.05, climb: bool = True, spring: float = 0.1,
                device: str = "auto") -> NEBResult:
    """Climbing-image NEB of one vacancy hop (from :func:`vacancy_hops`).

    min_length: supercell lattice lengths (Angstrom), unless ``supercell`` gives the repeats (a, b, c).
    fmax: NEB force threshold (eV/Angstrom); steps: FIRE step limit; endpoint_fmax: endpoint relaxation
    threshold; spring: spring constant (eV/Angstrom^2).
    """
    potential = resolve_potential(calculator, device)
    repeats = tuple(int(r) for r in supercell) if supercell is not None else supercell_repeats(
        hop.symm_structure, min_length)
    ends = [relax(s, potential, fmax=endpoint_fmax, steps=steps, relax_cell=False).structure
            for s in hop_endpoints(hop, repeats)]
    first, last = (AseAtomsAdaptor.get_atoms(s) for s in ends)
    images = [first] + [first.copy() for _ in range(n_images)] + [last]
    for image in images:
        image.calc = get_calculator(potential)
    band = NEB(images, k=spring, climb=climb, method="improvedtangent",
               allow_shared_calculator=isinstance(potential, Calculator))
    band.interpolate(method="idpp", mic=True)
    opt = FIRE(band, logfile=None)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    fit = fit_images(images)
    energies = np.asarray(fit.energies, dtype=float)
    return NEBResult(
        hop=str(hop), hop_length=float(hop.length),
        barrier=float(energies.max() - energies[0]), delta_energy=float(energies[-1] - energies[0]),
        energies=energies - energies[0], path=np.asarray(fit.path, dtype=float),
        fit_path=np.asarray(fit.fit_path, dtype=float),
        fit_energies=np.asarray(fit.fit_energies, dtype=float) - energies[0],
        climbing_index=int(band.imax) if climb else None, converged=converged, steps=int(opt.nsteps),
        supercell=repeats, images=[AseAtomsAdaptor.get_structure(a) for a in images],
    )


def migration_barriers(structure: StructureLike, species: str = "Li",
                       calculator: str | Calculator | MLIP = "chgnet", *, max_hop_length: float = 4.0,
                       max_hops: int = 10, device: str = "auto", **neb_kw) -> list[NEBResult]:
    """NEB barrier of every distinct ``species`` vacancy hop (see the module docstring for the protocol;
    ``neb_kw`` as in :func:`neb_barrier`)."""
    potential = resolve_potential(calculator, device)
    return [neb_barrier(hop, potential, **neb_kw)
            for hop in vacancy_hops(structure, species, max_hop_length=max_hop_length, max_hops=max_hops)]


def plot_neb(results: NEBResult | Sequence[NEBResult], path: str | Path, *, title: str | None = None) -> Path:
    """PNG of energy (eV, relative to the initial endpoint) along the band (Angstrom): images as markers,
    ASE's spline fit as a line, the climbing image circled; one curve per hop."""
    # a Figure, not pyplot: the caller's backend and open figures stay as they are
    from matplotlib.figure import Figure

    results = [results] if isinstance(results, NEBResult) else list(results)
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    for k, r in enumerate(results):
        color = f"C{k % 10}"
        ax.plot(r.fit_path, r.fit_energies, "-", color=color,
                label=f"hop {k}: {r.hop_length:.2f} A, Ea = {r.barrier:.2f} eV, dE = {r.delta_energy:+.2f} eV"
                      + ("" if r.has_saddle else ", no saddle"))
        ax.plot(r.path, r.energies, "o", color=color)
        if r.climbing_index is not None:
            ax.plot(r.path[r.climbing_index], r.energies[r.climbing_index], "o", ms=12, mfc="none", color=color)
    ax.set_xlabel("distance along band (Angstrom)")
    ax.set_ylabel("energy relative to initial state (eV)")
    ax.set_title(title or "NEB energy profile (circled: climbing image)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
