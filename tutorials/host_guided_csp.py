"""Host-guided crystal structure prediction (CHGGen) for a Li-rich silicide and a thiophosphate, side by side
with plain unconditional generation.

Run: ``OMP_NUM_THREADS=1 python tutorials/host_guided_csp.py [--data ../shared/data] [--out csp-tutorial]
[--n 10] [--model score-mp20]`` (about 15 minutes per composition on one CPU core with n = 10: sampling and
CHGNet relaxations; a GPU makes the sampling seconds). Re-running resumes where it stopped. The same in
one command per system: ``diffase csp Li5Si2 --n 10 --guest Li --v0 16 --formula-units 2 --elemental-references ...``.

What happens, per composition (:mod:`diffase.workflows.csp`):

1. ``n`` crystals are generated *unconditionally*: random Bravais cells at N x V0, positions by reverse
   diffusion with the score model, each relaxed with CHGNet. These are the baseline ("unconditional").
2. The Li is removed from each relaxed crystal; the Si (or P-S) framework is symmetrised by spglib at
   increasing tolerance until it is no longer P1/P-1, then refined.
3. Li is inpainted back into each symmetric framework (3 runs), and the results are relaxed ("inpainting").
4. Both routes are scored: space group after relaxation (0.1 A / 10 degrees), energy change on relaxation,
   RMSD generated -> relaxed, and E_d against a hull of the MP elemental references plus the known compounds
   of the system in MP-20 / MPTS-52 relaxed with CHGNet (CHGGen used the full MP hull; ours is smaller, so
   E_d is measured against fewer competing phases).

Numbers: see ``benchmarks/csp_chggen.py`` and the section "Measured" at the end of this docstring; with the
few crystals this tutorial generates, expect them to vary by tens of percent from seed to seed.

Measured
--------
With n = 10 (seed 0, shipped ``score-mp20``, CHGNet), the settings of this script are those of
``benchmarks/csp_chggen.py``; its run (``benchmarks/results/csp_chggen.md``, 882 s for Li5Si2 and 764 s for
Li3PS4 on one core of a busy 2-core CPU) gave:

=========  ===============  ==========================  ============  ==========
system     route            symmetric / relaxed          median E_d   min E_d
=========  ===============  ==========================  ============  ==========
Li5Si2     unconditional    1 / 10 (0.10)                0.085        0.042
Li5Si2     inpainting       7 / 27 (0.26), 9 frameworks  0.062        0.022
Li3PS4     unconditional    1 / 10 (0.10)                0.091        0.005
Li3PS4     inpainting       1 / 21 (0.05), 7 frameworks  0.101        -0.015
=========  ===============  ==========================  ============  ==========

E_d in eV/atom against the MP elemental references plus the compounds of the system in MP-20 and MPTS-52
relaxed with CHGNet. For Li-Si, host-guided inpainting more than doubled the fraction of symmetric crystals
and lowered E_d, as CHGGen reports. For Li3PS4 it did not: 3 of 10 P2S8 frameworks stayed P1 up to 2
Angstrom, and the inpainted Li did not follow the symmetry of the other 7 (0 of 21 crystals symmetric before
relaxation, 1 after; for Li-Si 4 of 27 before, 7 after). The two negative E_d values are
below a hull that has no Li3PS4 phase (none is in MP-20 / MPTS-52), not evidence of a new stable phase.
With 10 crystals per route, every rate here is uncertain by about +-0.1.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pymatgen.core import Composition, Structure

from diffase.generators.inpainting import InpaintingSettings
from diffase.workflows.csp import CSPSettings, run_csp
from diffase.workflows.csp_report import markdown_table, plot_energy_histogram, plot_success_rates, summarize
from diffase.workflows.hull_references import reference_entries

os.environ.setdefault("SPGLIB_WARNING", "OFF")  # spglib warns at every large tolerance it tries

parser = argparse.ArgumentParser()
parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
parser.add_argument("--out", default="csp-tutorial")
parser.add_argument("--n", type=int, default=10, help="unconditional crystals per composition")
parser.add_argument("--model", default="score-mp20")
args = parser.parse_args()
data, out = Path(args.data), Path(args.out)

# Li5Si2 (Li-rich silicide, 2 formula units = 14 atoms, ~16 A^3/atom like Li15Si4 and Li13Si4) and
# Li3PS4 (Li in a framework of PS4 tetrahedra, 2 formula units = 16 atoms, ~20 A^3/atom like gamma-Li3PS4)
systems = {"Li5Si2": 16.0, "Li3PS4": 20.0}
all_rows = []
for composition, v0 in systems.items():
    # 1. the reference hull: MP elemental references + known compounds relaxed with CHGNet (cached)
    folder = out / composition
    folder.mkdir(parents=True, exist_ok=True)
    elements = {el.symbol for el in Composition(composition).elements}
    refs = reference_entries(elements, elemental=data / "pmg" / "2023-02-07-mp-elemental-reference-entries.json.gz",
                             structures=[data / "mp20" / "train.csv.gz", data / "mp20" / "val.csv.gz",
                                         data / "mpts52" / "train.csv.gz"],
                             compounds_only=True, cache=folder / "reference_entries.json")
    print(f"{composition}: hull of {len(refs)} reference entries")

    # 2-3. unconditional generation, frameworks, inpainting; every crystal is written as soon as it is relaxed.
    # Fewer inpainting levels than the paper's 200 keep this on a CPU budget (the table below says which).
    settings = CSPSettings(n=args.n, guest="Li", v0=v0, formula_units=(2,), batch_size=16,
                           inpainting=InpaintingSettings(num_levels=100, snr=0.4, batch_size=16))
    rows = run_csp(composition, folder, settings, model=args.model, reference_entries=refs, device="cpu",
                   on_result=lambda r: print(f"  {r['id']:>9} {r['stage']:<13} "
                                             + (f"{r['spacegroup_symbol']:<9} E_d {r['decomposition_energy']:+.3f} eV/atom"
                                                if r["valid"] else "screened out (atoms < 1 A apart)")))
    all_rows += rows

# 4. the comparison: symmetry success rate and E_d of both routes, per composition
summary = summarize(all_rows)
print(markdown_table(summary))
figures = [plot_success_rates(summary, out / "success_rates.png"),
           plot_energy_histogram(all_rows, out / "ed_histogram.png")]  # None when no E_d was measured

# 5. the lowest-E_d symmetric crystal of each composition, as a pymatgen Structure
for composition in systems:
    best = min((r for r in all_rows if r["composition"] == composition and r["valid"]
                and r["spacegroup_number"] not in (1, 2)), key=lambda r: r["decomposition_energy"], default=None)
    if best is None:
        print(f"{composition}: no symmetric crystal this time")
        continue
    structure = Structure.from_dict(best["relaxed_structure"])
    print(f"{composition}: best symmetric crystal {best['id']} ({best['stage']}), {best['spacegroup_symbol']}, "
          f"E_d {best['decomposition_energy']:+.3f} eV/atom, {len(structure)} atoms, file {out / composition / best['cif']}")
print("figures:", ", ".join(str(f) for f in figures if f is not None))
