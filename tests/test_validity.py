from pymatgen.core import Lattice, Structure

from diffase.analysis.validity import structure_valid


def test_short_lattice_vector_of_a_skewed_cell_is_an_overlap():
    # a = b = 3 A at gamma = 179 deg: a + b is 0.05 A long although min(abc) = 3 A
    skewed = Structure(Lattice.from_parameters(3, 3, 5, 90, 90, 179.0), ["Cu"], [[0, 0, 0]])
    assert min(skewed.lattice.abc) > 0.5 and not structure_valid(skewed)
    assert structure_valid(Structure(Lattice.cubic(3), ["Cu"], [[0, 0, 0]]))
