"""Electronic fields in five steps: density grid, learning normalisation, Bader charges, site DOS, a label folder.

Run: ``python tutorials/electronic_fields.py [--data ../shared/data] [--out electronic-tutorial]``
(any CHGCAR / CompleteDos json of your own works the same way). Writes PNGs and a CHGCAR into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pymatgen.electronic_structure.dos import CompleteDos

from diffase.data.electronic.bader import bader_partition
from diffase.data.electronic.dataset import ElectronicDataset
from diffase.data.electronic.density import chgcar_to_density, electron_count, read_density, regrid, write_chgcar
from diffase.data.electronic.dos import JOINT_DESCRIPTOR_WINDOW, site_dos_from_complete_dos
from diffase.data.electronic.normalise import LogDensityScaler
from diffase.data.electronic.plots import plot_density_slices, plot_isosurface, plot_site_dos

parser = argparse.ArgumentParser()
parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
parser.add_argument("--out", default="electronic-tutorial")
args = parser.parse_args()
data, out = Path(args.data), Path(args.out)
out.mkdir(exist_ok=True)

# 1. a VASP CHGCAR (rocksalt NaCl, valence) -> e/A^3 on the file's 56^3 grid -> 32^3, same electron count
chgcar = read_density(data / "pmg" / "command_line_chargemol_spin_unpolarized_CHGCAR.gz")
structure, rho = chgcar.structure, chgcar_to_density(chgcar)
rho32 = regrid(rho, 32)
print(f"electrons: {electron_count(rho, structure.volume):.4f} on {rho.shape}, "
      f"{electron_count(rho32, structure.volume):.4f} on {rho32.shape}")
write_chgcar(structure, rho32, out / "CHGCAR_32")
plot_density_slices(structure, rho32, out / "slices.png")
plot_isosurface(structure, rho32, out / "isosurface.png", level=0.05)

# 2. what a network sees, and back
scaler = LogDensityScaler.fit([rho32])
y = scaler.transform(rho32)
print(f"normalised mean {y.mean():+.2e}, std {y.std():.3f}; max round-trip error "
      f"{abs(scaler.inverse(y) - rho32).max():.1e} e/A^3; scaler {scaler.as_dict()}")

# 3. Bader: basins need the total (core + valence) density; with a valence-only CHGCAR Na gets no basin.
#    With VASP AECCARs: total = read_total_density("AECCAR0", "AECCAR2") and integrated_density=rho (CHGCAR).
basins = bader_partition(rho, structure.lattice.matrix, structure.frac_coords)
print("valence-only Bader electrons (Na, Cl):", basins.electrons.round(3), "<- Na has no maximum of its own")

# 4. site DOS of a pymatgen CompleteDos (LiFePO4): spins summed, E_F = 0, 512 points on [-15, 5] eV
with open(data / "pmg" / "electronic_structure_dos_complete_dos.json") as fh:
    complete_dos = CompleteDos.from_dict(json.load(fh))
dos = site_dos_from_complete_dos(complete_dos, JOINT_DESCRIPTOR_WINDOW, semicore_below=-15.0)
plot_site_dos(JOINT_DESCRIPTOR_WINDOW.grid(), {"VASP (pymatgen test file)": dos}, out / "site_dos.png",
              site_labels=[s.specie.symbol for s in complete_dos.structure], max_sites=4)
print("site DOS:", dos.shape, "states/eV")

# 5. a label folder (GPAW labels made by `diffase label`, or the shared ones) as structures + fields
labels = ElectronicDataset(data / "electronic")
item = labels[0]
charges = item["bader_charge"]
print(f"{len(labels)} labelled crystals; first: {item['name']}, density {item['charge_density'].shape}, "
      f"site DOS {item['site_dos'].shape}, Bader {charges} (NaN: not in this older label)")
print(f"figures and CHGCAR in {out}/")
