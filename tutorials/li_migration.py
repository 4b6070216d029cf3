"""Li migration in Li2O with CHGNet in five steps: relax, hull, NEB barrier, MD with a vacancy, pathway.

Run: ``OMP_NUM_THREADS=1 python tutorials/li_migration.py [--data ../shared/data] [--out li-migration]
[--md-steps 1500]`` (about 20 minutes on one busy CPU core; any CIF of a Li compound works the same way).
Writes ``neb.png``, ``md.traj`` (view with ``ase gui``) and ``pathway.png`` into ``--out``.

The NEB here uses a 23-atom cell (primitive cell x 2, lengths 6.5 Angstrom) to stay quick; the published
protocol (every supercell length >= 10 Angstrom, 7 images) is ``neb_barrier(hop)`` with its defaults.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from diffase.analysis.stability import hull_stability, load_elemental_references, mlip_entries
from diffase.simulate import (neb_barrier, plot_neb, plot_site_density, relax, run_md, site_density,
                              vacancy_hops, vacancy_supercell)

parser = argparse.ArgumentParser()
parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
parser.add_argument("--out", default="li-migration")
parser.add_argument("--md-steps", type=int, default=1500, help="2 fs steps at 1200 K")
args = parser.parse_args()
data, out = Path(args.data), Path(args.out)
out.mkdir(exist_ok=True)

# 1. relax the primitive cell (positions + cell, FIRE, fmax 0.05 eV/A)
li2o = SpacegroupAnalyzer(Structure.from_file(data / "pmg" / "cif_Li2O.cif")).get_primitive_standard_structure()
relaxed = relax(li2o, "chgnet", fmax=0.05)
print(f"relaxed: {relaxed.final_energy_per_atom:.3f} eV/atom, a = {relaxed.structure.lattice.a:.3f} A, "
      f"{relaxed.steps} steps")

# 2. stability against the MP elemental references (CHGNet energies are on the MP2020 scale)
refs = load_elemental_references(data / "pmg" / "2023-02-07-mp-elemental-reference-entries.json.gz", ["Li", "O"])
[stability] = hull_stability(mlip_entries([relaxed.structure], relax=False), refs)
print(f"formation (decomposition) energy vs Li + O2: {stability.decomposition_energy:.3f} eV/atom")

# 3. NEB barrier of the shortest Li vacancy hop
hop = vacancy_hops(relaxed.structure, "Li")[0]
neb = neb_barrier(hop, n_images=5, min_length=6.0)
print(f"hop {neb.hop_length:.2f} A: barrier {neb.barrier:.3f} eV ({neb.n_atoms} atoms, converged={neb.converged})")
plot_neb(neb, out / "neb.png", title="Li vacancy hop in Li2O (CHGNet)")

# 4. NVT MD at 1200 K with one Li vacancy
cell = vacancy_supercell(relaxed.structure, "Li", min_length=6.0)
md = run_md(cell, temperature=1200, steps=args.md_steps, timestep=2.0, interval=5, seed=0,
            trajectory=out / "md.traj")
print(f"MD: {md.times[-1] / 1000:.1f} ps, mean T = {md.temperature[len(md.temperature) // 5:].mean():.0f} K")

# 5. where the Li went: density on a 0.3 A grid and the dimensionality of the visited network
density = site_density(md, "Li", interval=0.3)
print(f"Li pathway dimensionality: {density.dimensionality()}")
plot_site_density(density, out / "pathway.png")
print(f"wrote {out / 'neb.png'} and {out / 'pathway.png'}")
