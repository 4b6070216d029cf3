"""Energy above the hull is >= 0 by definition; the signed quantities have their own names (issue 11, item 13).

Synthetic entries (eV per formula as given, no MLIP): Li and O at 0 eV/atom, Li2O at -2.0 eV/atom.
"""

import numpy as np
import pytest
from pymatgen.entries.computed_entries import ComputedEntry

from diffase.analysis.stability import hull_stability

ELEMENTS = [ComputedEntry("Li", 0.0), ComputedEntry("O", 0.0)]


def li2o(energy_per_atom: float, entry_id: str = "new") -> ComputedEntry:
    return ComputedEntry("Li2O", 3 * energy_per_atom, entry_id=entry_id)


def test_against_elemental_references_only_the_negative_value_is_a_formation_energy():
    [st] = hull_stability([li2o(-2.0)], ELEMENTS)
    assert st.e_above_hull == 0.0 and st.is_stable  # it would be on the hull, not 2 eV/atom below "above"
    assert st.formation_energy == pytest.approx(-2.0) and st.decomposition_energy == pytest.approx(-2.0)


def test_a_polymorph_above_a_known_phase():
    [st] = hull_stability([li2o(-1.9)], [*ELEMENTS, li2o(-2.0, "known")])
    assert st.e_above_hull == pytest.approx(0.1) and not st.is_stable
    assert st.formation_energy == pytest.approx(-1.9)
    assert st.decomposition_energy == pytest.approx(-1.9)  # same-composition references left out (Bartel)


def test_e_above_hull_is_never_negative_and_is_the_distance_to_the_hull_with_the_entry():
    refs = [*ELEMENTS, li2o(-2.0, "known"), ComputedEntry("Li2O2", 4 * -1.5)]
    energies = np.linspace(-2.6, -1.0, 9)
    stabilities = hull_stability([ComputedEntry("LiO", 2 * e) for e in energies], refs)
    e_hull = np.array([s.e_above_hull for s in stabilities])
    assert (e_hull >= 0).all()
    on_hull = np.array([s.decomposition_energy <= 0 for s in stabilities])
    assert (e_hull[on_hull] == 0).all() and (e_hull[~on_hull] > 0).all()
    np.testing.assert_allclose(e_hull[~on_hull], [s.decomposition_energy for s, o in zip(stabilities, on_hull) if not o])
