"""Settings of the GPAW labeller, the k-point rule, and the check of which elements GPAW can treat.

The defaults reproduce the labels in shared/data/electronic (GPAW 22.8, PBE, LCAO dzp, grid spacing 0.2 A,
Gamma-centred k-mesh of ceil(15 |b_i|) points per direction capped at 6, Fermi-Dirac 0.1 eV, spin-paired,
32^3 pseudo-density, site DOS on [-10, 10] eV with 512 points and GPAW width 0.1 eV).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
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
    the stored N^3 density; ``dos_*``: window and Gaussian sigma of the site DOS; ``timeout``: seconds per structure.
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
    timeout: float = 3600.0

    def __post_init__(self):
        if self.mode not in ("lcao", "pw"):
            raise ValueError(f"mode must be 'lcao' or 'pw', got {self.mode!r}")

    def as_dict(self) -> dict:
        return asdict(self)


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
