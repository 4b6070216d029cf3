"""Physics on crystals with MLIPs through ASE: single points, relaxation, NEB migration barriers, MD pathways.

Every entry point takes pymatgen ``Structure`` or ASE ``Atoms`` and a calculator given by name
(``"chgnet"``, ``"mattersim"``; see :mod:`diffase.calculators`), as a loaded ``MLIP``, or as any ASE calculator.
Importing this package loads no model.
"""

from diffase.simulate.inputs import MIN_DISTANCE, check_overlaps, to_atoms
from diffase.simulate.md import MDResult, run_md
from diffase.simulate.neb import NEBResult, migration_barriers, neb_barrier, plot_neb, vacancy_hops
from diffase.simulate.pathways import SiteDensity, percolation_dimension, plot_site_density, site_density
from diffase.simulate.relax import RelaxResult, relax, relax_many
from diffase.simulate.single_point import SinglePoint, forces, single_points
from diffase.simulate.supercells import supercell_repeats, vacancy_supercell

__all__ = [
    "MIN_DISTANCE",
    "MDResult",
    "NEBResult",
    "RelaxResult",
    "SinglePoint",
    "SiteDensity",
    "check_overlaps",
    "forces",
    "migration_barriers",
    "neb_barrier",
    "percolation_dimension",
    "plot_neb",
    "plot_site_density",
    "relax",
    "relax_many",
    "run_md",
    "single_points",
    "site_density",
    "supercell_repeats",
    "to_atoms",
    "vacancy_hops",
    "vacancy_supercell",
]
