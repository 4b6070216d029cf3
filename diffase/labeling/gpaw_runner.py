"""Run one GPAW single point in a worker subprocess and turn its raw output into a diffase label.

Why a subprocess: Debian's GPAW 22.8 (``apt-get install gpaw gpaw-data``) lives in the system interpreter with
Debian's numpy 1.x, while diffase runs in a virtual environment with numpy 2; GPAW from PyPI is a source build (C
extensions, libxc, BLAS). The worker (:mod:`diffase.labeling.gpaw_worker`) imports only gpaw/ase/numpy and talks
through a JSON job file and an ``.npz`` result, so the two numpy ABIs never meet. Starting the interpreter and
importing GPAW costs about a second, against minutes for the DFT itself.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Structure

from diffase.data.electronic.bader import bader_charges, bader_partition
from diffase.data.electronic.density import regrid
from diffase.data.electronic.dos import DosWindow, smear_levels
from diffase.errors import DiffaseError, UnknownElementError
from diffase.labeling.settings import LabelSettings, kpoint_mesh, unsupported_elements

WORKER = Path(__file__).with_name("gpaw_worker.py")
_CANDIDATES = ("/usr/bin/python3",)


class GPAWNotFoundError(DiffaseError, RuntimeError):
    """No Python interpreter with GPAW was found."""


@functools.lru_cache(maxsize=None)
def find_gpaw_python() -> str:
    """Interpreter that imports GPAW: $DIFFASE_GPAW_PYTHON, this interpreter, then Debian's /usr/bin/python3."""
    env = os.environ.get("DIFFASE_GPAW_PYTHON")
    for python in ([env] if env else []) + [sys.executable, *_CANDIDATES]:
        if python and shutil.which(python) and subprocess.run(
            [python, "-c", "import gpaw"], capture_output=True, timeout=120
        ).returncode == 0:
            return python
    raise GPAWNotFoundError(
        "GPAW is not installed: on Debian/Ubuntu run `apt-get install gpaw gpaw-data` (used through /usr/bin/python3), "
        "or point DIFFASE_GPAW_PYTHON at a Python that can `import gpaw`."
    )


def check_supported(structure: Structure, settings: LabelSettings) -> None:
    """Raise :class:`UnknownElementError` if GPAW has no setup (or LCAO basis) for an element of ``structure``."""
    missing = unsupported_elements({el.symbol for el in structure.composition.elements}, settings)
    if missing:
        raise UnknownElementError(
            f"{structure.formula}: GPAW has no {settings.xc} setup"
            + (f" or {settings.basis} basis" if settings.mode == "lcao" else "")
            + f" for {', '.join(missing)} (looked in GPAW_SETUP_PATH, /usr/local/share/gpaw-setups, "
            "/usr/share/gpaw-setups); such structures cannot be labelled with these settings"
        )


def run_single_point(structure: Structure, settings: LabelSettings, *, log_path: str | Path | None = None) -> dict:
    """Run the GPAW worker on ``structure``; return its raw result (see :mod:`diffase.labeling.gpaw_worker`).

    ``log_path`` keeps GPAW's text log (and ``<stem>.dos.txt`` that of a DOS pass). Threads are pinned to one
    (``OMP_NUM_THREADS=1``); raises ``RuntimeError`` with the worker's last output lines if it fails,
    ``subprocess.TimeoutExpired`` on timeout.
    """
    check_supported(structure, settings)
    python = find_gpaw_python()
    with tempfile.TemporaryDirectory(prefix="diffase-gpaw-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.npz"
        job.write_text(json.dumps({
            "numbers": [site.specie.Z for site in structure],
            "positions": structure.cart_coords.tolist(),
            "cell": structure.lattice.matrix.tolist(),
            "gpaw": {
                "mode": settings.mode, "basis": settings.basis, "ecut": settings.ecut, "h": settings.h,
                "xc": settings.xc, "smearing_width": settings.smearing_width,
                "kpts": kpoint_mesh(structure.lattice, settings.kpoint_density, settings.kpoint_cap),
                "dos_kpts": settings.dos_mesh(structure.lattice),
                "ae_gridrefinement": settings.ae_gridrefinement,
                "txt": str(log_path) if log_path else os.devnull,
                "dos_txt": str(Path(log_path).with_suffix(".dos.txt")) if log_path else os.devnull,
            },
        }))
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = subprocess.run([python, str(WORKER), str(job), str(result)], capture_output=True, text=True,
                              timeout=settings.timeout, env=env)
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"GPAW worker failed (exit {proc.returncode}) on {structure.formula}:\n{tail}")
        with np.load(result, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}


def site_dos(raw: dict, settings: LabelSettings) -> np.ndarray:
    """Site DOS (n_sites, settings.dos_points), states/eV, of a raw worker result: its levels smeared with
    ``settings.dos_sigma`` onto the settings' window relative to E_F, spins summed (x2 for a spin-paired run)."""
    window = DosWindow(settings.dos_e_min, settings.dos_e_max, settings.dos_points)
    level_energies, level_weights = raw["level_energies"], raw["level_weights"]  # (s, L), (s, n, L)
    spin_degeneracy = 2.0 if level_energies.shape[0] == 1 else 1.0
    return sum(
        smear_levels(level_energies[s] - float(raw["efermi"]), level_weights[s], window, sigma=settings.dos_sigma)
        for s in range(level_energies.shape[0])
    ) * spin_degeneracy


def label_from_raw(name: str, structure: Structure, raw: dict, settings: LabelSettings) -> dict[str, Any]:
    """Post-process a raw worker result into a label (keys of :mod:`diffase.data.electronic.dataset`).

    Density: the pseudo-density Fourier-regridded to ``settings.grid``^3. DOS: levels smeared onto the settings'
    window, spins summed (x2 for a spin-paired run). Bader: basins and electrons of GPAW's all-electron density
    (core + valence, normalised by GPAW to integrate to sum Z), charge = Z - basin electrons.
    """
    window = DosWindow(settings.dos_e_min, settings.dos_e_max, settings.dos_points)
    dos = site_dos(raw, settings)
    basins = bader_partition(raw["ae_density"], structure.lattice.matrix, structure.frac_coords)
    atomic_numbers = np.array([site.specie.Z for site in structure], dtype=np.float64)
    return {
        "material_id": np.array(name),
        "cif": np.array(structure.to(fmt="cif")),
        "energy": raw["energy"],
        "efermi": raw["efermi"],
        "gap": raw["gap"],
        "kpts": raw["kpts"],
        "rho32": regrid(raw["pseudo_density"], settings.grid).astype(np.float32),
        "dos": dos.astype(np.float32),
        "dos_grid": window.grid().astype(np.float32),
        "dos_sigma": np.float64(settings.dos_sigma),
        "hirshfeld": raw["hirshfeld"].astype(np.float32),
        "bader": bader_charges(basins, atomic_numbers).astype(np.float32),
        "valence_electrons": raw["valence_electrons"].astype(np.float32),
        "n_ibz_kpts": raw["n_ibz_kpts"],
        "dos_kpts": raw["dos_kpts"],
        "n_ibz_dos_kpts": raw["n_ibz_dos_kpts"],
        "dft_seconds": raw["seconds"],
        "code_version": np.array(f"GPAW {raw['gpaw_version']}"),
        "settings": np.array(json.dumps(settings.as_dict(), sort_keys=True)),
    }
