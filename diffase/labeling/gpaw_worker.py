"""One GPAW single point, driven through files; run by an interpreter that has GPAW (e.g. Debian's /usr/bin/python3).

Usage: ``python3 gpaw_worker.py JOB.json RESULT.npz``

This script is standalone on purpose: it imports only ``gpaw``, ``ase`` and ``numpy`` (never diffase), so it runs
in Debian's system interpreter (GPAW 22.8 built against Debian's numpy 1.x) while diffase lives in a virtual
environment with numpy 2. :mod:`diffase.labeling.gpaw_runner` writes the job file, starts this script as a
subprocess and post-processes the raw result.

``JOB.json`` holds ``numbers`` (n,), ``positions`` (n, 3) Angstrom, ``cell`` (3, 3) Angstrom and ``gpaw``: the
keyword arguments of the calculator except ``txt`` and the structured ones, as plain JSON:
``{"mode": "lcao"|"pw", "basis": "dzp", "h": 0.2, "ecut": 400.0, "xc": "PBE", "kpts": [k1, k2, k3],
"smearing_width": 0.1, "ae_gridrefinement": 2, "txt": path}``, optionally ``"dos_kpts": [k1, k2, k3]`` and
``"dos_txt": path``.

With ``dos_kpts`` the density, Hirshfeld charges and energy come from the self-consistent run on ``kpts``, and the
site DOS, Fermi level and gap from a non-self-consistent pass on the ``dos_kpts`` mesh with the density held fixed
(GPAW ``fixed_density``, same symmetry, so the levels are on its irreducible k-points); its Fermi level is found
again from the levels on that mesh, since GPAW keeps the self-consistent one.

``RESULT.npz`` (written atomically: a temporary name, then renamed) holds, all energies in eV:

=====================  ======================  =========================================================
key                    shape                   meaning
=====================  ======================  =========================================================
energy                 ()                      total energy (GPAW reference energies), eV
efermi                 ()                      Fermi level, eV (of the DOS mesh)
gap                    ()                      band gap on the DOS mesh (ase.dft.bandgap), eV; 0 for metals
pseudo_density         (n1, n2, n3)            smooth valence pseudo-density, e/Angstrom^3
ae_density             (m1, m2, m3)            all-electron density with frozen core, e/A^3 (integrates to sum Z)
valence_electrons      (n,)                    valence electrons of each PAW setup
level_energies         (n_spins, n_levels)     Kohn-Sham eigenvalues over all IBZ k-points, eV
level_weights          (n_spins, n, n_levels)  k-weight x sum over bound projectors |<p|psi>|^2 per atom
hirshfeld              (n,)                    Hirshfeld charges, e (positive = electron loss)
kpts                   (3,)                    Monkhorst-Pack size of the self-consistent run (Gamma-centred)
n_ibz_kpts, nbands     ()                      irreducible k-points of the self-consistent run, bands
dos_kpts               (3,)                    mesh of the DOS, Fermi level and gap (= kpts without a DOS pass)
n_ibz_dos_kpts         ()                      irreducible k-points of that mesh
scf_iterations         ()                      SCF iterations
seconds                ()                      wall time of the SCF + DOS pass + post-processing, s
gpaw_version           ()                      str
=====================  ======================  =========================================================
"""

import json
import os
import sys
import time

import numpy as np


def _calculator(params):
    from gpaw import GPAW, PW

    mode = PW(params["ecut"]) if params["mode"] == "pw" else "lcao"
    kwargs = {
        "mode": mode,
        "xc": params["xc"],
        "h": params["h"],
        "kpts": {"size": tuple(params["kpts"]), "gamma": True},
        "occupations": {"name": "fermi-dirac", "width": params["smearing_width"]},
        "txt": params["txt"],
    }
    if params["mode"] == "lcao":
        kwargs["basis"] = params["basis"]
    return GPAW(**kwargs)


def _dos_calculator(calc, params):
    """``calc`` itself, or a non-self-consistent pass on the ``dos_kpts`` mesh with ``calc``'s density fixed."""
    if not params.get("dos_kpts") or list(params["dos_kpts"]) == list(params["kpts"]):
        return calc
    dos_calc = calc.fixed_density(kpts={"size": tuple(params["dos_kpts"]), "gamma": True},
                                  txt=params.get("dos_txt", os.devnull))
    dos_calc.wfs.calculate_occupation_numbers()  # the Fermi level of this mesh (fixed_density keeps the SCF one)
    return dos_calc


def _site_levels(calc, n_atoms):
    from gpaw.utilities.dos import raw_orbital_LDOS
    from ase.units import Hartree

    nspins = calc.get_number_of_spins()
    energies, weights = [], []
    for spin in range(nspins):
        per_atom = [raw_orbital_LDOS(calc, a, spin, angular="spdf") for a in range(n_atoms)]
        energies.append(per_atom[0][0] * Hartree)
        weights.append(np.stack([w for _, w in per_atom]))
    return np.stack(energies), np.stack(weights)


def run(job):
    from ase import Atoms
    from ase.dft.bandgap import bandgap
    from gpaw import __version__ as gpaw_version
    from gpaw.analyse.hirshfeld import HirshfeldPartitioning

    start = time.perf_counter()
    params = job["gpaw"]
    atoms = Atoms(numbers=job["numbers"], positions=job["positions"], cell=job["cell"], pbc=True)
    atoms.calc = _calculator(params)
    energy = atoms.get_potential_energy()
    calc = atoms.calc
    dos_calc = _dos_calculator(calc, params)
    gap, _, _ = bandgap(dos_calc, output=None)
    refine = params["ae_gridrefinement"]
    level_energies, level_weights = _site_levels(dos_calc, len(atoms))
    return {
        "energy": np.float64(energy),
        "efermi": np.float64(dos_calc.get_fermi_level()),
        "gap": np.float64(gap),
        "pseudo_density": calc.get_pseudo_density(),
        "ae_density": calc.get_all_electron_density(gridrefinement=refine),
        "valence_electrons": np.array([s.Nv for s in calc.wfs.setups], dtype=np.float64),
        "level_energies": level_energies,
        "level_weights": level_weights,
        "hirshfeld": np.array(HirshfeldPartitioning(calc).get_charges(), dtype=np.float64),
        "kpts": np.array(params["kpts"], dtype=np.int64),
        "n_ibz_kpts": np.int64(len(calc.get_ibz_k_points())),
        "dos_kpts": np.array(params.get("dos_kpts") or params["kpts"], dtype=np.int64),
        "n_ibz_dos_kpts": np.int64(len(dos_calc.get_ibz_k_points())),
        "nbands": np.int64(calc.get_number_of_bands()),
        "scf_iterations": np.int64(calc.get_number_of_iterations()),
        "seconds": np.float64(time.perf_counter() - start),
        "gpaw_version": np.array(str(gpaw_version)),
    }


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: gpaw_worker.py JOB.json RESULT.npz\n")
        return 2
    with open(argv[1]) as fh:
        job = json.load(fh)
    result = run(job)
    tmp = argv[2] + ".part.npz"
    np.savez(tmp, **result)
    os.replace(tmp, argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
