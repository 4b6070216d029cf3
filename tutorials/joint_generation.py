"""Generate crystals with the joint (atom types, coordinates, lattice) diffusion model, then check them.

Run: ``OMP_NUM_THREADS=1 python tutorials/joint_generation.py [--model joint-mp20] [--out joint-out]``
(about a minute on one CPU core). Four steps:

1. de novo: 8 crystals, atom counts drawn from MP-20, written as CIFs;
2. validity (SMACT charge balance, interatomic distances) of what came out;
3. a template: start from LiFePO4's cell noised to t = 0.3 and let the model finish it;
4. inpainting: keep the lattice and the Fe/P/O sublattice (types and positions) fixed, regenerate the Li sites.

Conditions (``conditions={"band_gap": 2.0}, guidance_scale=1.0``) work the same way with a model trained
with them (the shipped ``joint-mp20`` is unconditional: it refuses conditions with a clear error).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from diffase.analysis.validity import composition_valid, structure_valid
from diffase.generators import load_model
from diffase.data.structures import record_to_structure

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="joint-mp20")
parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
parser.add_argument("--out", default="joint-out")
parser.add_argument("--levels", type=int, default=100, help="sampling levels (the model was trained on 1000)")
args = parser.parse_args()
out = Path(args.out)
out.mkdir(exist_ok=True)
model = load_model(args.model)  # offline: models/, $DIFFASE_MODELS or a path

# 1. de novo generation, one batch, seeded
[records] = model.sample(8, batch_size=8, num_levels=args.levels, seed=0)
crystals = [record_to_structure(r) for r in records if r["valid"]]
for i, s in enumerate(crystals):
    s.to(filename=str(out / f"denovo-{i}-{s.composition.reduced_formula}.cif"))

# 2. validity
for s in crystals:
    print(f"{s.composition.reduced_formula:>12s}  charge-balanced={composition_valid(s.composition)!s:5s} "
          f"distances-ok={structure_valid(s)}")

# 3. template: LiFePO4 noised to t = 0.3, then denoised
lfp = Structure.from_file(Path(args.data) / "pmg" / "cif_LiFePO4.cif")
[[templated]] = model.sample_from([lfp], t_start=0.3, num_levels=args.levels, seed=1)
print("from the LiFePO4 template:", record_to_structure(templated).composition.reduced_formula)

# 4. inpainting: fixed lattice and host sublattice, Li sites regenerated (types and positions)
reduced = lfp.get_reduced_structure()  # the model sees every crystal in its Niggli cell; masks follow its order
host = np.array([site.specie.symbol != "Li" for site in reduced])
[[inpainted]] = model.sample_from([reduced], fix_lattice=True, fix_types=[host], fix_coords=[host],
                                  num_levels=args.levels, seed=2)
print("Li sites regenerated:", record_to_structure(inpainted).composition.reduced_formula)
