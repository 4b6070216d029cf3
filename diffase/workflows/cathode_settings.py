"""The settings of a cathode run (:mod:`diffase.workflows.cathode`), checked when made.

Kept apart from the workflow so that ``diffase cathode``'s parser takes its defaults from here without importing
pymatgen's analysis modules (``diffase --help`` stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CathodeSettings:
    """What a cathode run does to each item (distances Angstrom, densities e/Angstrom^3, forces eV/Angstrom).

    species/anion: the working ion and the coordinating anion. region/region_width: the density region measured
    (:mod:`~diffase.data.electronic.regions`). max_avg_density, avg_radius, min_host_distance, min_li_distance,
    max_li: the insertion (:func:`~diffase.workflows.li_insertion.insert_at_density_minima`). li_o_cutoff and
    coordinations: the Li sites kept. li_li_cutoff and min_dimensionality: the network a survivor needs.
    relax_steps/fmax: the MLIP relaxations. relax_host: relax each host (cell and positions) with the MLIP before
    inserting Li, and take the relaxed host's density from ``host_density_model`` (a structure -> density model,
    :class:`~diffase.predictors.density_model.DensityPredictor`), as ChargeDIFF relaxes its generated crystals and
    recomputes their density before inserting Li. neb_hops, neb_min_length (supercell lengths), neb_steps, neb_fmax,
    neb_images: each NEB (:func:`~diffase.simulate.neb.neb_barrier`).
    """

    species: str = "Li"
    anion: str = "O"
    region: str = "channel-1d-z"
    region_width: float = 0.25
    max_avg_density: float = 0.9
    avg_radius: float = 0.4
    min_host_distance: float = 1.6
    min_li_distance: float = 2.3
    max_li: int | None = None
    li_o_cutoff: float = 2.5
    coordinations: tuple[int, ...] = (4, 6)
    li_li_cutoff: float = 4.0  # ChargeDIFF's Li-Li network cutoff
    min_dimensionality: int = 1
    relax_steps: int = 200
    fmax: float = 0.1
    relax_host: bool = False
    host_density_model: str = "density-mp20"
    neb_hops: int = 1
    neb_min_length: float = 10.0
    neb_steps: int = 200
    neb_fmax: float = 0.1
    neb_images: int = 5

    def __post_init__(self) -> None:
        from diffase.data.electronic.regions import region_axes

        region_axes(self.region)  # an unknown preset is refused here, with the list of presets
        if not 0 <= self.min_dimensionality <= 3:
            raise ValueError(f"min_dimensionality is 0-3, got {self.min_dimensionality}")
        if not self.coordinations or any(int(c) < 1 for c in self.coordinations):
            raise ValueError(f"coordinations must name at least one count >= 1, got {self.coordinations}")
        for name in ("li_o_cutoff", "li_li_cutoff", "fmax", "neb_fmax", "neb_min_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.neb_min_length < 2 * self.li_li_cutoff:  # a hop must not end on its migrating atom's own image
            raise ValueError(f"neb_min_length ({self.neb_min_length} A) must be at least twice the Li-Li cutoff "
                             f"({self.li_li_cutoff} A), the longest hop")
        for name in ("relax_steps", "neb_steps", "neb_hops", "neb_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
