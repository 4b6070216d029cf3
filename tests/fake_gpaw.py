"""A stand-in for the GPAW worker, for tests: a made-up ionic two-atom crystal, numpy only.

:func:`fake_raw` is what :mod:`diffase.labeling.gpaw_worker` would return. Run as a script it is a fake GPAW
*interpreter* too (see :func:`fake_gpaw_python`; the ``fake_gpaw`` fixture installs it):
``python fake_gpaw.py -c "import gpaw"`` succeeds, and ``python fake_gpaw.py WORKER JOB.json RESULT.npz`` writes
:func:`fake_raw` of the job's structure, echoing its k-meshes as the real worker does, and appends
``cell[0][0] pid DIFFASE_NUM_THREADS`` to ``$FAKE_GPAW_CALLS``.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest


def fake_raw(cell, positions, kpts=(6, 6, 6), dos_kpts=None) -> dict:
    """Raw worker output for a two-atom cell (3x3 cell and 2x3 positions in Angstrom): Gaussian all-electron atoms
    of 10 and 18 electrons, two levels per atom, as an ionic Na+ Cl- crystal would give."""
    cell, positions = np.asarray(cell, dtype=np.float64), np.asarray(positions, dtype=np.float64)
    frac_sites = positions @ np.linalg.inv(cell)
    volume = abs(np.linalg.det(cell))
    shape = (24, 24, 24)
    frac = np.stack(np.meshgrid(*(np.arange(n) / n for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    ae = np.zeros(len(frac))
    for site, n_el, width in zip(frac_sites, (10.0, 18.0), (0.3, 0.6)):
        d = frac - site
        d -= np.round(d)
        r2 = np.sum((d @ cell) ** 2, axis=1)
        ae += n_el * np.exp(-r2 / (2 * width**2)) / (2 * np.pi * width**2) ** 1.5
    ae = ae.reshape(shape) * 28.0 / (ae.mean() * volume)
    return {
        "energy": np.float64(-6.4), "efermi": np.float64(1.0), "gap": np.float64(5.0),
        "pseudo_density": ae / 4.0, "ae_density": ae, "valence_electrons": np.array([7.0, 7.0]),
        "level_energies": np.array([[-3.0, -1.0, 6.0, 8.0]]),
        "level_weights": np.array([[[0.0, 0.1, 0.8, 0.1], [0.9, 0.9, 0.1, 0.0]]]),
        "hirshfeld": np.array([0.3, -0.3]), "kpts": np.array(kpts), "n_ibz_kpts": np.int64(16),
        "dos_kpts": np.array(dos_kpts or kpts), "n_ibz_dos_kpts": np.int64(16 if dos_kpts is None else 20),
        "nbands": np.int64(9), "scf_iterations": np.int64(10), "seconds": np.float64(1.0),
        "gpaw_version": np.array("fake"),
    }


def fake_gpaw_python(folder: Path) -> Path:
    """An executable in ``folder`` that behaves as an interpreter with GPAW (for ``DIFFASE_GPAW_PYTHON``)."""
    script = folder / "fake-gpaw-python"
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} \"$@\"\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


@pytest.fixture(name="fake_gpaw")
def fake_gpaw_fixture(tmp_path, monkeypatch):
    """Point diffase at the fake interpreter and at empty PAW setup / basis files for Na and Cl, through the
    environment (so worker processes started later see them too); yields the calls file."""
    from diffase.labeling.gpaw_runner import find_gpaw_python

    folder = tmp_path / "fake-gpaw"
    (folder / "setups").mkdir(parents=True)
    for symbol in ("Na", "Cl"):
        (folder / "setups" / f"{symbol}.PBE").touch()
        (folder / "setups" / f"{symbol}.dzp.basis").touch()
    monkeypatch.setenv("GPAW_SETUP_PATH", str(folder / "setups"))
    monkeypatch.setenv("DIFFASE_GPAW_PYTHON", str(fake_gpaw_python(folder)))
    monkeypatch.setenv("FAKE_GPAW_CALLS", str(folder / "calls.txt"))
    find_gpaw_python.cache_clear()
    yield folder / "calls.txt"
    find_gpaw_python.cache_clear()  # forget the fake interpreter


def main(argv: list[str]) -> int:
    if argv[:1] == ["-c"]:
        return 0  # the "import gpaw" probe
    _, job_path, result_path = argv
    job = json.loads(Path(job_path).read_text())
    raw = fake_raw(job["cell"], job["positions"], job["gpaw"]["kpts"], job["gpaw"]["dos_kpts"])
    if calls := os.environ.get("FAKE_GPAW_CALLS"):
        with open(calls, "a") as fh:
            fh.write(f"{job['cell'][0][0]:.6f} {os.getppid()} {os.environ.get('DIFFASE_NUM_THREADS')}\n")
    np.savez(result_path, **raw)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
