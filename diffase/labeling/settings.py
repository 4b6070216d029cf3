"""Settings of the GPAW labeller, the k-point rule, and the check of which elements GPAW can treat.

The defaults reproduce the labels in shared/data/electronic (GPAW 22.8, PBE, LCAO dzp, grid spacing 0.2 A,
Gamma-centred k-mesh of ceil(15 |b_i|) points per direction capped at 6, Fermi-Dirac 0.1 eV, spin-paired,
32^3 pseudo-density, site DOS on [-10, 10] eV with 512 points and GPAW width 0.1 eV).

Presets (:data:`PRESETS`, ``diffase label --preset NAME``):

* ``default``: everything above; the site DOS, Fermi level and gap come from the self-consistent mesh.
* ``fast``: the self-consistent run on a coarse mesh (k-point density 8, at most 4 per direction) for the density,
  energy, Hirshfeld and Bader charges (the density converges at far fewer k-points than the DOS); the site DOS, Fermi
  level and gap from a non-self-consistent pass with that density fixed on the default mesh (density 15, cap 6).
  Grid spacing stays 0.2 A: a coarser 0.25 A (the preset until 2026-12-05) was measured faster but worse on the
  density, site DOS and Bader charges alike. Its errors against ``default`` are measured in
  benchmarks/results/label_preset.md; the site DOS agrees to < 10 % when both are compared at a 0.3 eV Gaussian,
  not at the stored 0.07 eV one.

A label stores the settings that made it (JSON, with the preset's name); :func:`settings_differences` is what a
resumed run checks them with.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice

from diffase.data.electronic.dos import DEFAULT_SIGMA, DOSMATGEN_WINDOW


@dataclass(frozen=True)
class LabelSettings:
    """How a structure is labelled. Lengths in Angstrom, energies in eV, k-point density in points x Angstrom.

    ``mode``: ``"lcao"`` (basis ``basis``) or ``"pw"`` (cut-off ``ecut``); ``kpoint_density``: points per 1/Angstrom
    of reciprocal vector length (no 2 pi), at most ``kpoint_cap`` per direction; ``smearing_width``: Fermi-Dirac
    width; ``ae_gridrefinement``: refinement of the all-electron density used for Bader basins; ``grid``: size N of
    the stored N^3 density; ``dos_*``: window and Gaussian sigma of the site DOS; ``dos_kpoint_density`` and
    ``dos_kpoint_cap``: the mesh of a non-self-consistent DOS pass (``None``: no pass, the DOS comes from the
    self-consistent mesh); ``preset``: the name of the preset these settings started from (recorded in each label);
    ``timeout``: seconds per structure (the only field that does not change a label).
    """

    xc: str = "PBE"
    mode: str = "lcao"
    basis: str = "dzp"
    ecut: float = 400.0
    h: float = 0.2
    kpoint_density: float = 15.0
    kpoint_cap: int = 6
    smearing_width: float = 0.1
    ae_gridrefinement: int = 2
    grid: int = 32
    dos_e_min: float = DOSMATGEN_WINDOW.e_min
    dos_e_max: float = DOSMATGEN_WINDOW.e_max
    dos_points: int = DOSMATGEN_WINDOW.n_points
    dos_sigma: float = DEFAULT_SIGMA
    dos_kpoint_density: float | None = None
    dos_kpoint_cap: int | None = None
    preset: str = "default"
    timeout: float = 3600.0

    def __post_init__(self):
        if self.mode not in ("lcao", "pw"):
            raise ValueError(f"mode must be 'lcao' or 'pw', got {self.mode!r}")
        if (self.dos_kpoint_density is None) != (self.dos_kpoint_cap is None):
            raise ValueError("give both dos_kpoint_density and dos_kpoint_cap for a DOS pass, or neither")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LabelSettings:
        """The settings of preset ``name`` (a key of :data:`PRESETS`), with ``overrides`` replacing fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown label preset {name!r}; choose from {', '.join(PRESETS)}")
        return replace(PRESETS[name], **overrides)

    @classmethod
    def from_dict(cls, data: dict) -> LabelSettings:
        """Settings from :meth:`as_dict` output (e.g. a label's ``settings``); absent fields take their defaults,
        which is what labels written before those fields existed were made with."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def dos_mesh(self, lattice: Lattice | np.ndarray) -> list[int] | None:
        """Mesh of the non-self-consistent DOS pass for ``lattice``, or ``None`` when the settings have none."""
        if self.dos_kpoint_density is None:
            return None
        return kpoint_mesh(lattice, self.dos_kpoint_density, self.dos_kpoint_cap)


#: Named settings: ``default`` reproduces shared/data/electronic; ``fast`` is the coarse-SCF + DOS-pass preset.
PRESETS: dict[str, LabelSettings] = {
    "default": LabelSettings(),
    "fast": LabelSettings(kpoint_density=8.0, kpoint_cap=4, dos_kpoint_density=15.0, dos_kpoint_cap=6,
                          preset="fast"),
}

#: Fields that do not change what a label holds, so a resume may change them.
RESUMABLE_FIELDS = frozenset({"timeout"})


def settings_differences(old: LabelSettings, new: LabelSettings) -> list[str]:
    """``"field: old -> new"`` for every field that changes a label (all but :data:`RESUMABLE_FIELDS`)."""
    return [f"{f.name}: {getattr(old, f.name)!r} -> {getattr(new, f.name)!r}" for f in fields(LabelSettings)
            if f.name not in RESUMABLE_FIELDS and getattr(old, f.name) != getattr(new, f.name)]


def kpoint_mesh(lattice: Lattice | np.ndarray, density: float, cap: int) -> list[int]:
    """Gamma-centred mesh size per direction: ``min(cap, ceil(density * |b_i|))``, b_i in 1/Angstrom without 2 pi."""
    matrix = lattice.matrix if isinstance(lattice, Lattice) else np.asarray(lattice, dtype=np.float64)
    lengths = np.linalg.norm(np.linalg.inv(matrix).T, axis=1)
    return [int(min(cap, max(1, np.ceil(density * b - 1e-9)))) for b in lengths]


def gpaw_setup_dirs() -> list[Path]:
    """Where GPAW looks for PAW setups and basis sets: $GPAW_SETUP_PATH, then the default install folders."""
    env = [Path(p) for p in os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) if p]
    return env + [Path("/usr/local/share/gpaw-setups"), Path("/usr/share/gpaw-setups")]


def unsupported_elements(symbols: set[str], settings: LabelSettings) -> list[str]:
    """Elements of ``symbols`` without a PAW setup for ``settings.xc`` (or, in LCAO mode, without the basis set)."""
    folders = [d for d in gpaw_setup_dirs() if d.is_dir()]

    def found(name: str) -> bool:
        return any((d / name).exists() or (d / f"{name}.gz").exists() for d in folders)

    missing = []
    for symbol in sorted(symbols):
        has_setup = found(f"{symbol}.{settings.xc}")
        has_basis = settings.mode != "lcao" or found(f"{symbol}.{settings.basis}.basis")
        if not (has_setup and has_basis):
            missing.append(symbol)
    return missing
