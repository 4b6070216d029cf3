"""Tutorial: put Zn, Li and Mg into three MnO2 polymorphs and keep the best candidates.

What it shows, with the shipped score model and CHGNet:

1. ``InpaintIntercalantTransformation``: score-based inpainting of guests into a fixed host, each candidate
   relaxed with CHGNet (FIRE + FrechetCellFilter, fmax 0.1 eV/A) and ranked by energy per atom;
2. the same call as a ``method="hybrid"`` run (diffusion samples pooled with the Voronoi baseline);
3. a check against a known answer: Li into lambda-MnO2 (delithiated spinel) should give back LiMn2O4;
4. a picture: 2x2x1 supercell views of the best candidate of every (host, guest) pair.

Hosts (tutorials/data): alpha-MnO2 (hollandite, mp-19395, Mn8O16, 2x2 tunnels), beta-MnO2 (rutile-type
pyrolusite, 1x1x3 supercell, Mn6O12, narrow 1x1 tunnels), lambda-MnO2 (spinel with the Li removed, Mn4O8).

    python tutorials/inpaint_mno2.py --samples 2 --out tutorials/output/mno2      # ~37 min on 1 CPU core

Numbers from a run on the shipped model are in tutorials/README.md.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ase.visualize.plot import plot_atoms  # noqa: E402
from pymatgen.analysis.structure_matcher import StructureMatcher  # noqa: E402
from pymatgen.core import Structure  # noqa: E402
from pymatgen.io.ase import AseAtomsAdaptor  # noqa: E402

from diffase import InpaintIntercalantTransformation  # noqa: E402

warnings.filterwarnings("ignore")
DATA = Path(__file__).parent / "data"


def hosts() -> dict[str, tuple[Structure, int]]:
    """Host structures and how many guests each takes (one guest per 4-6 Mn)."""
    beta = Structure.from_file(DATA / "beta-MnO2.cif")
    beta.make_supercell([1, 1, 3])
    return {
        "alpha-MnO2": (Structure.from_file(DATA / "alpha-MnO2_mp-19395.cif"), 2),
        "beta-MnO2": (beta, 1),
        "lambda-MnO2": (Structure.from_file(DATA / "lambda-MnO2.cif"), 2),
    }


#: viewing direction per host: alpha down its 2x2 tunnels (c), beta across its 1x1 tunnels, lambda oblique
VIEWS = {"alpha-MnO2": "0x,0y,0z", "beta-MnO2": "90x,0y,0z", "lambda-MnO2": "10x,10y,0z"}


def plot_best(best: dict[tuple[str, str], Structure], path: Path) -> None:
    """2x2x1 supercell views of the best candidate of every (host, guest) pair, one panel each (PNG)."""
    fig, axes = plt.subplots(3, 3, figsize=(12, 12))
    for ax, ((host_name, guest), structure) in zip(axes.ravel(), best.items()):
        plot_atoms(AseAtomsAdaptor.get_atoms(structure) * (2, 2, 1), ax, rotation=VIEWS[host_name], radii=0.6)
        ax.set_title(f"{host_name} + {guest}")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4, help="diffusion samples per host and guest")
    p.add_argument("--out", default="tutorials/output/mno2")
    p.add_argument("--model", default="score-mp20")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    best, summary = {}, []
    for host_name, (host, n_guests) in hosts().items():
        for guest in ("Zn", "Li", "Mg"):
            t0 = time.perf_counter()
            transformation = InpaintIntercalantTransformation(guest, count=n_guests, n_samples=args.samples,
                                                              model=args.model, seed=0)
            ranked = transformation.apply_transformation(host, return_ranked_list=3)
            seconds = time.perf_counter() - t0
            top = ranked[0]
            top["structure"].to(filename=str(out / f"{host_name}-{n_guests}{guest}-best.cif"))
            best[(host_name, guest)] = top["structure"]
            row = {"host": host_name, "guest": f"{n_guests} {guest}", "distinct": len(ranked),
                   "E_best (eV/atom)": round(top["energy_per_atom"], 4),
                   "Fmax before relax (eV/A)": round(top["fmax_before_relax"], 3),
                   "relax dE (eV/atom)": round(top["relax_delta_e"], 4), "seconds": round(seconds)}
            summary.append(row)
            print(row, flush=True)

    # a known answer: Li into the delithiated spinel must give back LiMn2O4 (lambda-MnO2.cif is this file minus Li)
    ok = StructureMatcher().fit(best[("lambda-MnO2", "Li")], Structure.from_file(DATA / "LiMn2O4.cif"))
    print(f"lambda-MnO2 + 2 Li reproduces spinel LiMn2O4: {ok}")
    summary.append({"check": "lambda-MnO2 + 2 Li == LiMn2O4 (StructureMatcher defaults)", "result": bool(ok)})

    # hybrid: diffusion samples pooled with the Voronoi baseline, for one pair
    host, n = hosts()["alpha-MnO2"]
    hybrid = InpaintIntercalantTransformation("Zn", count=n, n_samples=args.samples, method="hybrid", model=args.model)
    top = hybrid.apply_transformation(host, return_ranked_list=3)
    print("alpha-MnO2 + 2 Zn, hybrid:", [(r["method"], round(r["energy_per_atom"], 4)) for r in top])
    summary.append({"hybrid alpha-MnO2 + 2 Zn": [(r["method"], round(r["energy_per_atom"], 4)) for r in top]})

    plot_best(best, out / "mno2_best_candidates.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"written: {out}/mno2_best_candidates.png, *-best.cif, summary.json")


if __name__ == "__main__":
    main()
