"""Thermodynamic stability of (MLIP-relaxed) crystals against a convex hull, with pymatgen's ``PhaseDiagram``.

Two kinds of reference, used alone or together:

(a) entries you give (``ComputedEntry`` objects on the same energy scale, e.g. from the Materials Project);
(b) the MP elemental references (:func:`load_elemental_references`) plus known structures relaxed with the
    same MLIP (:func:`mlip_entries`, e.g. the rows of a dataset in the chemical system,
    :func:`in_chemical_system`), so compounds are compared on the MLIP's own scale.

Energy scale: what is and is not corrected
-----------------------------------------
* CHGNet was trained on MPtrj, whose energy labels are MP GGA/GGA+U energies *with* the MaterialsProject2020
  corrections applied (anion corrections for oxides, peroxides, superoxides, ozonides, fluorides, chlorides,
  bromides, iodides, nitrides, sulfides, selenides, tellurides, hydrides...; the GGA/GGA+U mixing correction
  for Co, Cr, Fe, Mn, Mo, Ni, V, W in oxides and fluorides). Its energies are therefore already on the
  MP2020-compatible scale; diffase applies **no** correction to MLIP energies (applying MP2020 again would
  count them twice). Checked in ``benchmarks/results/mlip_validation.md``: on 50 MPtrj frames, whose files
  store uncorrected DFT energies, CHGNet is 413 meV/atom below them on average, and 26.5 meV/atom (MAE) from
  them once pymatgen's MP2020 corrections are added. The corrections are only as good as what CHGNet learned: it sees structure, not oxidation
  state, so e.g. an oxide/peroxide mis-assignment is not corrected, and no uncertainty is attached.
* The MP elemental references are GGA(+U) entries; MP2020 corrects no pure element, so they sit on the same
  scale as is (O is the O2 molecule; the oxide correction lives in the compounds' energies).
* Entries you pass in (a) are used as given: process raw VASP entries with
  ``MaterialsProject2020Compatibility().process_entries`` first; entries from the MP API (GGA/GGA+U) already
  carry the corrections. Do not mix in the GGA/GGA+U/r2SCAN mixing-scheme energies (a different scale).
* MatterSim energies are whatever its checkpoint was trained on (see its model card); diffase corrects nothing.

Units: energies in eV, per-atom quantities in eV/atom.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ase.calculators.calculator import Calculator
from monty.json import MontyDecoder
from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry

from diffase.calculators import MLIP, resolve_potential
from diffase.data.structures import StructureLike, to_structure
from diffase.simulate.relax import relax_many
from diffase.simulate.single_point import single_points


@dataclass
class Stability:
    """Where one entry sits relative to a reference hull (per-atom energies in eV/atom).

    e_above_hull: energy above the convex hull of the references *and the entry itself*, so >= 0 by
    definition: 0 for an entry on or below the hull of the references, its distance to that hull otherwise.
    decomposition_energy: signed energy relative to the hull of every *other* composition (pymatgen
    ``get_decomp_and_phase_separation_energy``, Bartel et al. 2020; CHGGen's E_d): negative for a phase that
    would be stable against them. For a polymorph of a reference composition the references of that
    composition are left out, so it can be negative while e_above_hull is positive. formation_energy: signed
    energy relative to the elemental references (pymatgen ``get_form_energy_per_atom``); against elemental
    references only it equals decomposition_energy. decomposition: the competing phases and their fractions (by
    atoms) at the entry's composition.

    Earlier versions returned the signed distance to the references' hull as e_above_hull (e.g. -2.0 eV/atom
    for Li2O against Li and O only: a formation energy, not an energy above a hull).
    """

    entry: ComputedEntry
    e_above_hull: float
    decomposition_energy: float
    formation_energy: float
    decomposition: dict[str, float]

    @property
    def is_stable(self) -> bool:
        """On the hull of the references plus the entry (e_above_hull <= 1e-8 eV/atom)."""
        return self.e_above_hull <= 1e-8


def mlip_entry(structure: StructureLike, energy: float, *, entry_id: str | None = None,
               potential: str = "chgnet") -> ComputedStructureEntry:
    """A ``ComputedStructureEntry`` for an MLIP total energy (eV), with no correction (see the module docstring);
    oxidation states are dropped so entries compare by element."""
    s = to_structure(structure).copy()
    s.remove_oxidation_states()
    return ComputedStructureEntry(s, float(energy), entry_id=entry_id,
                                  parameters={"potential": potential, "corrections": "none applied"})


def mlip_entries(structures: Sequence[StructureLike], calculator: str | Calculator | MLIP = "chgnet", *,
                 relax: bool = True, ids: Sequence[str] | None = None, device: str = "auto",
                 **relax_kw) -> list[ComputedStructureEntry]:
    """Entries of ``structures`` with MLIP energies: relaxed first (positions and cell; ``relax_kw`` as in
    :func:`diffase.simulate.relax.relax`) unless ``relax=False`` (single points of the structures as given)."""
    potential = resolve_potential(calculator, device)
    name = potential.name if isinstance(potential, MLIP) else type(potential).__name__
    ids = list(ids) if ids is not None else [None] * len(structures)
    if relax:
        results = relax_many(structures, potential, device=device, **relax_kw)
        pairs = [(r.structure, r.final_energy) for r in results]
    else:
        pairs = [(s, p.energy) for s, p in zip(structures, single_points(structures, potential))]
    return [mlip_entry(s, e, entry_id=i, potential=name) for (s, e), i in zip(pairs, ids, strict=True)]


def load_elemental_references(path: str | Path, elements: Iterable[str] | None = None) -> list[ComputedEntry]:
    """MP elemental reference entries from a (gzipped) JSON dict ``{symbol: ComputedEntry}`` such as
    ``2023-02-07-mp-elemental-reference-entries.json.gz``; only ``elements`` if given."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        refs = json.load(fh, cls=MontyDecoder)
    if elements is None:
        return list(refs.values())
    missing = sorted(set(elements) - set(refs))
    if missing:
        raise ValueError(f"{path.name} has no reference for {', '.join(missing)}")
    return [refs[el] for el in elements]


def in_chemical_system(structures: Iterable[StructureLike], elements: Iterable[str]) -> list[Structure]:
    """The structures whose elements all belong to ``elements`` (e.g. dataset rows for a reference set)."""
    allowed = set(elements)
    return [s for s in map(to_structure, structures) if set(s.composition.chemical_system.split("-")) <= allowed]


def hull_stability(entries: Sequence[ComputedEntry], reference_entries: Sequence[ComputedEntry]) -> list[Stability]:
    """:class:`Stability` of each entry against the hull of ``reference_entries`` within its own chemical
    system (one ``PhaseDiagram`` per system). Every element of an entry needs a reference entry.
    ``e_above_hull`` is never negative; the signed quantities are ``decomposition_energy`` and
    ``formation_energy``."""
    out, diagrams = [], {}
    for entry in entries:
        system = frozenset(entry.composition.chemical_system.split("-"))
        if system not in diagrams:
            refs = [r for r in reference_entries if set(r.composition.chemical_system.split("-")) <= system]
            have = {r.composition.chemical_system for r in refs if r.composition.is_element}
            missing = sorted(system - have)
            if missing:
                raise ValueError(
                    f"no elemental reference for {', '.join(missing)} among the reference entries "
                    f"(needed for {entry.composition.reduced_formula}); add them, e.g. with "
                    "load_elemental_references('2023-02-07-mp-elemental-reference-entries.json.gz')"
                )
            diagrams[system] = PhaseDiagram(refs)
        pd = diagrams[system]
        decomp, e_to_references = pd.get_decomp_and_e_above_hull(entry, allow_negative=True)
        decomp_energy = pd.get_decomp_and_phase_separation_energy(entry)[1]
        amounts = {}
        for e, frac in decomp.items():
            amounts[e.composition.reduced_formula] = amounts.get(e.composition.reduced_formula, 0.0) + float(frac)
        # below the references' hull the entry becomes a vertex of the hull that includes it: 0 above it
        out.append(Stability(entry, max(0.0, float(e_to_references)), float(decomp_energy),
                             float(pd.get_form_energy_per_atom(entry)), amounts))
    return out


class MLIPHull:
    """A reference hull for MLIP energies; calling it on structures relaxes them and returns their energy
    above the hull (eV/atom), the signature :func:`diffase.analysis.sun.sun_metrics` takes.

    reference_entries: (a) your entries and/or (b) elemental references plus :func:`mlip_entries` of known
    structures. relax: relax candidates first (``relax_kw`` as in :func:`diffase.simulate.relax.relax`).
    """

    def __init__(self, reference_entries: Sequence[ComputedEntry], calculator: str | Calculator | MLIP = "chgnet",
                 *, relax: bool = True, device: str = "auto", **relax_kw):
        self.reference_entries = list(reference_entries)
        self.calculator = calculator
        self.relax = relax
        self.device = device
        self.relax_kw = relax_kw

    def evaluate(self, structures: Sequence[StructureLike]) -> list[Stability]:
        """:class:`Stability` of each structure after (optional) relaxation."""
        entries = mlip_entries(structures, self.calculator, relax=self.relax, device=self.device, **self.relax_kw)
        return hull_stability(entries, self.reference_entries)

    def __call__(self, structures: Sequence[StructureLike]) -> list[float]:
        return [s.e_above_hull for s in self.evaluate(structures)]

