"""Vacancy-hop NEB with CHGNet.

The default test uses Li2O (antifluorite; Li moves by vacancy hops between neighbouring tetrahedral sites)
in a 23-atom cell (primitive cell x 2 x 2 x 2, lengths 6.5 Angstrom, one Li vacancy) with 3 images, so it
runs in well under a minute; the full protocol (every length >= 10 Angstrom, 7 images) is the slow test.
"""

import numpy as np
import pytest
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from diffase.simulate import neb_barrier, plot_neb, supercell_repeats, vacancy_hops
from diffase.simulate.neb import has_saddle, limiting_barrier

pytest.importorskip("chgnet")
pytest.importorskip("pymatgen.analysis.diffusion")


@pytest.fixture(scope="module")
def li2o_primitive(shared_data):
    return SpacegroupAnalyzer(Structure.from_file(shared_data / "pmg" / "cif_Li2O.cif")).get_primitive_standard_structure()


def test_vacancy_hops_are_distinct_and_sorted(shared_data, li2o_primitive):
    hops = vacancy_hops(li2o_primitive, "Li", max_hop_length=4.0)
    lengths = [h.length for h in hops]
    assert lengths == sorted(lengths) and lengths[0] == pytest.approx(2.305, abs=0.01)
    # antifluorite Li (8c, site symmetry -43m): a/2, a/sqrt(2) and two distinct a*sqrt(3)/2 hops (one across an O,
    # one across the empty octahedral site): equal lengths, yet not symmetry-equivalent
    np.testing.assert_allclose(lengths, [2.305, 3.26, 3.99, 3.99], atol=0.01)
    assert all(a != b for i, a in enumerate(hops) for b in hops[i + 1:])
    lfp = vacancy_hops(Structure.from_file(shared_data / "pmg" / "cif_LiFePO4.cif"), "Li")
    assert lfp[0].length == pytest.approx(3.03, abs=0.02)  # the b-axis channel hop
    assert supercell_repeats(lfp[0].symm_structure, 10.0) == (1, 2, 3)
    with pytest.raises(ValueError, match="contains no Na"):
        vacancy_hops(li2o_primitive, "Na")


def test_li2o_vacancy_barrier_and_climbing_image(li2o_primitive, tmp_path):
    hop = vacancy_hops(li2o_primitive, "Li", max_hop_length=2.5)[0]
    result = neb_barrier(hop, n_images=3, min_length=6.0, fmax=0.1, steps=150)
    assert result.supercell == (2, 2, 2) and result.n_atoms == 23
    assert result.converged
    assert 0.1 < result.barrier < 0.8  # eV; DFT and experiment put Li vacancy migration in Li2O at ~0.3-0.5 eV
    assert result.climbing_index == int(np.argmax(result.energies))
    # the climbing image sits at the top of the band: the force-consistent spline peaks there, not between images
    assert result.fit_energies.max() <= result.energies[result.climbing_index] + 1e-3
    assert result.energies[0] == 0.0 and abs(result.delta_energy) < 0.02  # symmetric hop
    assert result.has_saddle and result.limiting_barrier == pytest.approx(result.barrier, abs=0.02)
    png = plot_neb(result, tmp_path / "neb.png")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("energies, limiting, saddle", [
    ([0.0, 0.3, 0.0], 0.3, True),          # a symmetric hop: the forward barrier
    ([0.0, 0.5, -0.4], 0.9, True),         # ends 0.4 eV lower: the way back climbs 0.9 eV
    ([0.0, -0.6, -1.3], 1.3, False),       # only falls (a forward 'barrier' of 0): the sites differ by 1.3 eV
    ([0.0, 0.2, 0.3], 0.3, False),         # only climbs to a less stable site
    ([0.0, -0.09, -0.08, 0.005], 0.095, False),  # dips to an intermediate minimum first
])
def test_limiting_barrier_and_saddle(energies, limiting, saddle):
    assert limiting_barrier(energies) == pytest.approx(limiting) and has_saddle(energies) is saddle


@pytest.mark.slow
def test_lifepo4_full_protocol(shared_data):
    """LiFePO4 b-channel hop: supercell >= 10 Angstrom (167 atoms), 7 images (tens of minutes on one CPU core)."""
    hop = vacancy_hops(Structure.from_file(shared_data / "pmg" / "cif_LiFePO4.cif"), "Li")[0]
    result = neb_barrier(hop)
    assert result.n_atoms == 167 and len(result.energies) == 9
    assert 0.1 < result.barrier < 0.7
    assert result.climbing_index == int(np.argmax(result.energies))
