"""DOS targets as users hold them (CompleteDos, label file, array, total DOS), regridding that keeps the number of
states, the errors for bad targets, and DOSMatGen's JSON list format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.electronic_structure.dos import CompleteDos

from diffase.data.electronic.dataset import label_structure, read_label
from diffase.data.electronic.dos import DosWindow, site_dos_from_complete_dos
from diffase.data.electronic.dos_targets import regrid_dos, resolve_target
from diffase.data.electronic.dosmatgen_json import (
    read_dosmatgen_json,
    write_dosmatgen_json,
)
from tests.helpers import rocksalt

WINDOW = DosWindow(-10.0, 10.0, 64)


def _trapezoid(energies, dos):
    return np.trapezoid(dos, energies, axis=-1)


@pytest.mark.parametrize("n_in", [37, 301, 2000])
def test_regridding_conserves_the_states_in_the_window(n_in):
    """Coarser, comparable and finer inputs on a grid wider than the window, with a peak cut by the window edge:
    the output's integral equals the input's integral over the window (not over its whole grid)."""
    rng = np.random.default_rng(n_in)
    energies = np.sort(rng.uniform(-14.0, 13.0, n_in))
    dos = rng.uniform(0, 3, (2, n_in)) + 8 * np.exp(-((energies + 10.0) / 0.3) ** 2)
    out = regrid_dos(energies, dos, WINDOW)
    cut = np.concatenate([[-10.0], energies[(energies > -10) & (energies < 10)], [10.0]])  # exact: kinks kept
    inside = _trapezoid(cut, np.stack([np.interp(cut, energies, d) for d in dos]))
    assert out.shape == (2, 64)
    assert np.allclose(_trapezoid(WINDOW.grid(), out), inside, rtol=1e-10)
    whole = _trapezoid(energies, dos)
    assert not np.allclose(inside, whole, rtol=1e-3)  # the window cuts states: the test can tell the two apart


def test_regridding_a_dos_already_on_the_grid_keeps_it():
    grid = WINDOW.grid()
    dos = np.exp(-((grid / 3) ** 2))  # the cell mean of a smooth curve stays close to its value at the point
    assert np.allclose(regrid_dos(grid, dos, WINDOW), dos, atol=5e-3)


@pytest.fixture(scope="module")
def complete_dos(shared_data):
    with open(shared_data / "pmg" / "electronic_structure_dos_complete_dos.json") as fh:
        return CompleteDos.from_dict(json.load(fh))


def test_complete_dos_gives_the_site_dos_of_the_chosen_sites(complete_dos):
    """Rows of the chosen sites, in the order asked for, equal to dos.py's site DOS of those sites (Li and O of
    LiFe4P4O16 differ, so a swapped or shifted row fails)."""
    sites = [24, 0]
    target = resolve_target(complete_dos, WINDOW, sites=sites)
    every = site_dos_from_complete_dos(complete_dos, WINDOW)
    assert target.sites == (24, 0) and target.site_dos.shape == (2, 64)
    assert np.allclose(target.site_dos, every[sites])
    assert not np.allclose(every[24], every[0])
    assert len(target.structure) == 25 and target.source == "CompleteDos"
    conditions = target.node_conditions(25)
    assert np.allclose(conditions[24], every[24]) and np.isnan(conditions[1:24]).all()


def test_total_dos_conditions_every_site_on_its_share(complete_dos):
    target = resolve_target(complete_dos, WINDOW, total=True)
    assert target.sites == tuple(range(25))
    assert np.allclose(target.site_dos.sum(0), target.total)
    assert np.allclose(target.site_dos[3], target.total / 25)
    with pytest.raises(ValueError, match="leave sites=None"):
        resolve_target(complete_dos, WINDOW, total=True, sites=[0])
    with pytest.raises(ValueError, match="num_atoms"):
        resolve_target(np.ones(64), WINDOW, total=True)


def test_label_file_gives_its_structure_and_site_dos(shared_data):
    path = min((shared_data / "electronic").glob("mp-*.npz"))
    label = read_label(path)
    window = DosWindow(-10.0, 10.0, 512)  # the labels' own grid: no regridding
    target = resolve_target(path, window, sites=[1])
    assert np.allclose(target.site_dos, label["dos"][[1]], atol=1e-6)
    assert target.structure == label_structure(label)
    coarse = resolve_target(path, WINDOW)
    grid = label["dos_grid"].astype(np.float64)
    assert np.allclose(_trapezoid(WINDOW.grid(), coarse.site_dos), _trapezoid(grid, label["dos"]), rtol=1e-4)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="pass its energy grid"):  # wrong length without a grid
        resolve_target(np.ones((1, 100)), WINDOW)
    with pytest.raises(ValueError, match="one energy per DOS value"):  # grid and DOS disagree
        resolve_target(np.ones((1, 100)), WINDOW, energies=np.linspace(-5, 5, 99))
    dos = np.ones((2, 64))
    dos[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite value \(row 1, energy index 7\)"):
        resolve_target(dos, WINDOW, sites=[0, 1])
    with pytest.raises(ValueError, match="2 DOS rows for 1 sites"):
        resolve_target(np.ones((2, 64)), WINDOW, sites=[0])
    target = resolve_target(np.ones((1, 64)), WINDOW, sites=[5])
    with pytest.raises(IndexError, match="site index 5 is out of range: the generated crystal has 2 sites"):
        target.node_conditions(2)


def test_site_out_of_range_of_a_complete_dos(complete_dos):
    with pytest.raises(IndexError, match="site index 25 is out of range: the CompleteDos has 25 sites"):
        resolve_target(complete_dos, WINDOW, sites=[25])


def test_dosmatgen_json_round_trip(tmp_path):
    s = rocksalt()
    dos = np.random.default_rng(0).uniform(0, 2, (len(s), 40))
    path = write_dosmatgen_json(tmp_path / "data.json", [{"structure_id": "NaCl-1", "structure": s, "site_dos": dos}])
    raw = json.loads(path.read_text())
    assert set(raw[0]) == {"structure_id", "positions", "cell", "atomic_numbers", "y"}
    [back] = read_dosmatgen_json(path)
    assert back["structure_id"] == "NaCl-1"
    assert np.allclose(back["site_dos"], dos)
    assert np.allclose(back["structure"].cart_coords, s.cart_coords)
    assert [x.specie.Z for x in back["structure"]] == [x.specie.Z for x in s]
    target = resolve_target(back["site_dos"], WINDOW, energies=np.linspace(-8, 8, 40))
    assert target.site_dos.shape == (len(s), 64)
    raw[0]["y"] = raw[0]["y"][:1]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="record 0 .*disagree"):
        read_dosmatgen_json(path)
    path.write_text(json.dumps([{"structure_id": "x"}]))
    with pytest.raises(ValueError, match="missing positions, cell, atomic_numbers, y"):
        read_dosmatgen_json(path)


def test_targets_are_regridded_as_the_model_was_trained(shared_data):
    """A label's site DOS put on a 128-point grid by the target code equals what dos-mp20's training saw
    (diffase.generators.node_condition.resample_dos): a user's target and the training conditions agree."""
    from diffase.generators.node_condition import resample_dos

    label = read_label(shared_data / "electronic" / "mp-864957.npz")
    window = DosWindow(-10.0, 10.0, 128)
    target = resolve_target(shared_data / "electronic" / "mp-864957.npz", window)
    assert np.allclose(target.site_dos, resample_dos(label["dos_grid"], label["dos"], -10.0, 10.0, 128), atol=1e-12)
