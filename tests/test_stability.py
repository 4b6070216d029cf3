"""Energy above hull / decomposition energy of CHGNet-relaxed structures."""

import json

import pytest
from monty.json import MontyDecoder
from pymatgen.analysis.phase_diagram import PhaseDiagram
from pymatgen.core import Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility

from diffase.analysis.stability import (MLIPHull, hull_stability, in_chemical_system, load_elemental_references,
                                        mlip_entries)

pytest.importorskip("chgnet")

ELEMENTAL = "2023-02-07-mp-elemental-reference-entries.json.gz"


@pytest.fixture(scope="module")
def mp_lifepo_entries(shared_data):
    """MP Li-Fe-P-O entries with the MP2020 corrections applied (the scale CHGNet was trained on)."""
    with open(shared_data / "pmg" / "entries_Li-Fe-P-O_entries.json") as fh:
        entries = json.load(fh, cls=MontyDecoder)
    return MaterialsProject2020Compatibility(check_potcar=False).process_entries(entries)


def test_known_stable_lifepo4_sits_on_the_mp_hull(shared_data, mp_lifepo_entries):
    [entry] = mlip_entries([Structure.from_file(shared_data / "pmg" / "cif_LiFePO4.cif")], fmax=0.1)
    [st] = hull_stability([entry], mp_lifepo_entries)
    assert abs(st.e_above_hull) < 0.05  # eV/atom: CHGNet's error scale
    assert set(st.decomposition) == {"LiFePO4"}


def test_li2o_against_elemental_references_and_mlip_reference_set(shared_data, mp_lifepo_entries):
    refs = load_elemental_references(shared_data / "pmg" / ELEMENTAL, ["Li", "O"])
    li2o = Structure.from_file(shared_data / "pmg" / "cif_Li2O.cif")
    [entry] = mlip_entries([li2o], fmax=0.1, ids=["li2o-chgnet"])
    [st] = hull_stability([entry], refs)
    mp_li2o = min((e for e in mp_lifepo_entries if e.reduced_formula == "Li2O"), key=lambda e: e.energy_per_atom)
    mp_formation = PhaseDiagram([e for e in mp_lifepo_entries if e.composition.chemical_system in ("Li", "O", "Li-O")]
                                ).get_form_energy_per_atom(mp_li2o)
    assert st.decomposition_energy == pytest.approx(mp_formation, abs=0.15)  # only elements compete
    assert st.decomposition_energy < -1.5 and not st.e_above_hull > 0

    hull = MLIPHull(refs + [entry], fmax=0.1)  # (b): elemental refs + known structures relaxed with CHGNet
    rattled = li2o.copy()
    rattled.perturb(0.05, seed=0)
    assert hull([rattled])[0] == pytest.approx(0.0, abs=0.005)
    assert in_chemical_system([li2o, Structure.from_file(shared_data / "pmg" / "cif_LiFePO4.cif")], ["Li", "O"]) \
        == [li2o]


def test_missing_elemental_reference_is_named(shared_data):
    refs = load_elemental_references(shared_data / "pmg" / ELEMENTAL, ["Li"])
    [entry] = mlip_entries([Structure.from_file(shared_data / "pmg" / "cif_Li2O.cif")], relax=False)
    with pytest.raises(ValueError, match="no elemental reference for O"):
        hull_stability([entry], refs)
