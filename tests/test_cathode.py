"""Cathode workflow (issue 12): Li-network dimensionality, O coordination, density regions, Li insertion at the
density minima of a real label, resume, bad input. The CHGNet relaxation + NEB path is the slow-marked test."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from pymatgen.core import Lattice, Structure

from diffase.analysis.li_network import anion_coordination, network_dimensionality
from diffase.cli import main
from diffase.data.electronic.regions import region_density, region_mask
from diffase.errors import DisorderedStructureError, InvalidStructureError, SettingsMismatchError
from diffase.workflows.cathode import best_hop, cathode_screen, relax_host, screen_item
from diffase.workflows.cathode_settings import CathodeSettings
from diffase.workflows.li_insertion import insert_at_density_minima

LABELS = ("mp-675025", "mp-1009490")  # SbRhO4 (a transition-metal oxide), O2 (not one)


def _li(lattice: Lattice, frac, host: bool = True) -> Structure:
    """Li at ``frac`` plus an O far from every Li (the network must ignore it)."""
    species, coords = ["Li"] * len(frac), list(frac)
    if host:
        species.append("O")
        coords.append([0.5, 0.5, 0.5])
    return Structure(lattice, species, coords)


@pytest.mark.parametrize("lattice, frac, expected", [
    (Lattice.orthorhombic(3.0, 10.0, 10.0), [[0, 0, 0]], 1),            # chain along a, 3 A apart
    (Lattice.orthorhombic(3.0, 3.5, 10.0), [[0, 0, 0]], 2),             # sheet in the ab plane
    (Lattice.cubic(3.2), [[0, 0, 0]], 3),                                # simple cubic network
    (Lattice.cubic(9.0), [[0, 0, 0], [0.3, 0, 0]], 0),                   # an isolated Li pair (2.7 A)
    (Lattice.orthorhombic(6.0, 10.0, 10.0), [[0, 0, 0], [0.5, 0, 0]], 1),  # two Li per cell still a chain
    (Lattice.cubic(4.5), [[0, 0, 0]], 0),                                # every neighbour beyond 4 A
])
def test_li_network_dimensionality(lattice, frac, expected):
    assert network_dimensionality(_li(lattice, frac)) == expected


def test_dimensionality_cutoff_and_missing_li():
    s = _li(Lattice.cubic(4.5), [[0, 0, 0]])
    assert network_dimensionality(s, cutoff=5.0) == 3
    with pytest.raises(ValueError, match="no Li site"):
        network_dimensionality(Structure(Lattice.cubic(4), ["O"], [[0, 0, 0]]))
    with pytest.raises(ValueError, match="cutoff"):
        network_dimensionality(s, cutoff=0)


def test_anion_coordination_octahedral_and_tetrahedral():
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.2), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert set(anion_coordination(rocksalt, cutoff=2.5).values()) == {6}
    antifluorite = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.6), ["Li", "O"], [[0.25, 0.25, 0.25], [0, 0, 0]])
    assert set(anion_coordination(antifluorite, cutoff=2.5).values()) == {4}


def test_region_presets():
    channel = region_mask("channel-1d-z", 32)
    assert channel.shape == (32, 32, 32) and channel.mean() == pytest.approx((8 / 32) ** 2)
    assert channel[:, :, 0].sum() == channel[:, :, 17].sum() == 64  # the same square on every plane along z
    slab = region_mask("slab-2d-x", (16, 8, 8), width=0.5)
    assert slab[8].all() and not slab[0].any()
    rho = np.where(channel, 0.1, 1.0)
    stats = region_density(rho, channel)
    assert stats["region_mean_density"] == pytest.approx(0.1) and stats["region_density_ratio"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown region preset"):
        region_mask("channel-3d")
    with pytest.raises(ValueError, match="neither empty nor full"):
        region_density(rho, np.zeros_like(channel))
    with pytest.raises(ValueError, match="differ in shape"):
        region_density(rho, region_mask("slab-2d-z", 16))


@pytest.fixture(scope="module")
def labels(shared_data):
    from diffase.data.electronic.density_sets import read_label_densities

    entries = {e.name: e for e in read_label_densities(shared_data / "electronic")}
    missing = [n for n in LABELS if n not in entries]
    if missing:
        pytest.skip(f"labels {missing} not in the shared data")
    return [entries[n] for n in LABELS]


def test_insertion_at_low_density(labels):
    entry = labels[0]
    insertion = insert_at_density_minima(entry.structure, entry.rho, min_host_distance=1.6, min_ion_distance=2.3)
    assert insertion.sites and insertion.n_groups >= 1
    assert [p.avg_density for p in insertion.sites] == sorted(p.avg_density for p in insertion.sites)
    rho = entry.rho
    n = np.array(rho.shape)
    for p in insertion.sites:  # the grid point nearest each inserted Li is in the low tail of the cell's density
        value = rho[tuple(np.rint(p.frac_coords * n).astype(int) % n)]
        assert value < np.quantile(rho, 0.1) and p.avg_density < rho.mean()
    s = insertion.structure
    assert [x.specie.symbol for x in s][len(entry.structure):] == ["Li"] * len(insertion.sites)
    host = s.frac_coords[: len(entry.structure)]
    li = s.frac_coords[insertion.ion_indices]
    assert s.lattice.get_all_distances(li, host).min() >= 1.6
    d = s.lattice.get_all_distances(li, li)
    assert d[~np.eye(len(li), dtype=bool)].min(initial=99) >= 2.3
    assert len(insert_at_density_minima(entry.structure, entry.rho, max_ions=1).sites) == 1


def test_screen_item(labels):
    settings = CathodeSettings()
    row, insertion = screen_item("x", labels[0].structure, labels[0].rho.astype(float), settings)
    assert row["survivor"] and row["target_chemistry"] and row["li_dimensionality"] >= 1
    assert all(c in (4, 6) for c in row["li_coordinations"][: row["n_li_kept"]]) and insertion.sites
    row, insertion = screen_item("y", labels[1].structure, labels[1].rho.astype(float), settings)
    assert not row["survivor"] and "transition-metal" in row["reason"] and insertion is None


class ZeroCalculator(Calculator):
    """Zero energy, forces and stress, counting its calls: relaxations end at once, and a resume must not call it."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        ZeroCalculator.calls += 1
        self.results = {"energy": 0.0, "free_energy": 0.0, "forces": np.zeros((len(atoms), 3)),
                        "stress": np.zeros(6)}


def test_resume_skips_done_items(labels, tmp_path):
    pulled = []

    def items():  # a lazy input, as a generator would give: (Structure, rho) pairs named by position
        for e in labels:
            pulled.append(e.name)
            yield e.structure, e.rho

    messages: list[str] = []
    rows = cathode_screen(items(), tmp_path, n_neb=0, calculator=ZeroCalculator(), say=messages.append)
    assert [r["name"] for r in rows] == ["item-0000", "item-0001"] and [r["survivor"] for r in rows] == [True, False]
    assert (tmp_path / "relaxed" / "item-0000.cif").exists() and (tmp_path / "results.md").exists()
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"item-0000-density.png", "item-0000-li-network.png"}
    calls, lines = ZeroCalculator.calls, (tmp_path / "screened.jsonl").read_text()
    assert calls > 0
    messages.clear()
    again = cathode_screen(items(), tmp_path, n_neb=0, calculator=ZeroCalculator(), say=messages.append)
    assert ZeroCalculator.calls == calls and (tmp_path / "screened.jsonl").read_text() == lines
    assert messages == ["resuming: 2 item(s) already screened, 1 relaxed"] and again == rows
    changed = [(labels[0].structure, labels[0].rho * 1.01)]
    with pytest.raises(SettingsMismatchError, match="item-0000 with other content"):
        cathode_screen(changed, tmp_path, n_neb=0, calculator=ZeroCalculator(), say=messages.append)
    with pytest.raises(SettingsMismatchError, match="li_li_cutoff"):
        cathode_screen(items(), tmp_path, CathodeSettings(li_li_cutoff=3.5), n_neb=0, calculator=ZeroCalculator())
    assert json.loads((tmp_path / "settings.json").read_text())["li_li_cutoff"] == 4.0


def test_relax_host_screens_the_relaxed_host_with_its_predicted_density(labels, tmp_path):
    from diffase.predictors.density_model import DensityPredictor

    settings = CathodeSettings(relax_host=True)
    rows = cathode_screen([(e.name, e.structure, e.rho) for e in labels], tmp_path, settings, n_neb=0,
                          calculator=ZeroCalculator(), say=lambda _: None)
    oxide, other = rows
    assert oxide["host_relax_converged"] is True and oxide["host_volume_change"] == pytest.approx(0.0)
    assert [p.name for p in (tmp_path / "hosts").iterdir()] == [f"{labels[0].name}.cif"]  # O2 is no target
    assert other["host_relax_converged"] is None and "transition-metal" in other["reason"]
    # the screen saw density-mp20's density of the (unchanged) host, not the label's DFT density
    predicted = DensityPredictor.load("density-mp20").predict(labels[0].structure)
    mask = region_mask(settings.region, predicted.shape, width=settings.region_width)
    screened = json.loads((tmp_path / "screened.jsonl").read_text().splitlines()[0])
    assert screened["region_density_ratio"] == pytest.approx(region_density(predicted, mask)["region_density_ratio"])
    assert screened["region_density_ratio"] != pytest.approx(
        region_density(labels[0].rho, mask)["region_density_ratio"], rel=1e-6)
    assert json.loads((tmp_path / "settings.json").read_text())["relax_host"] is True


def test_relax_host_drops_a_host_the_density_model_does_not_know(labels):
    class Unknown:  # a density model that knows none of the host's elements
        def predict_if_known(self, structure):
            return None

    row, host, rho = relax_host(labels[0].structure, CathodeSettings(relax_host=True), ZeroCalculator(), Unknown())
    assert host is None and rho is None and "density-mp20 knows no density" in row["reason"]
    assert row["host_relax_converged"] is True


def test_best_hop_is_the_hop_with_the_smallest_largest_climb():
    hops = [{"hop_length": 2.4, "barrier": 0.0, "delta_energy": -1.3, "converged": True, "energies": [0, -0.6, -1.3]},
            {"hop_length": 3.1, "barrier": 0.5, "delta_energy": 0.0, "converged": False, "energies": [0, 0.5, 0]}]
    assert best_hop(hops) == {"barrier": 0.5, "delta_energy": 0.0, "limiting_barrier": 0.5, "saddle": True,
                              "hop_length": 3.1, "converged": False}


def test_bad_items_and_settings(tmp_path):
    s = Structure(Lattice.cubic(4), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cases = [([s], InvalidStructureError, "neither"), ([(s, np.ones((4, 4)))], InvalidStructureError, "grid"),
             ([(s, np.full((4, 4, 4), np.nan))], InvalidStructureError, "finite"),
             ([("a", "not a structure", np.ones((4, 4, 4)))], InvalidStructureError, "Structure")]
    disordered = Structure(Lattice.cubic(4), [{"Fe": 0.5, "Ni": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cases.append(([(disordered, np.ones((4, 4, 4)))], DisorderedStructureError, "partially occupied"))
    for items, error, match in cases:
        with pytest.raises(error, match=match):
            cathode_screen(items, tmp_path / "out", n_neb=0, calculator=ZeroCalculator())
    for kwargs, match in [({"region": "tube"}, "unknown region preset"), ({"coordinations": ()}, "coordinations"),
                          ({"min_dimensionality": 4}, "0-3"), ({"neb_min_length": 6.0}, "twice"),
                          ({"li_o_cutoff": 0}, "li_o_cutoff")]:
        with pytest.raises(ValueError, match=match):
            CathodeSettings(**kwargs)
    with pytest.raises(ValueError, match="n_neb"):
        cathode_screen([], tmp_path / "neg", n_neb=-1)
    assert not (tmp_path / "neg").exists()


def test_cli_errors(tmp_path, capsys, shared_data):
    out = tmp_path / "out"
    labels = str(shared_data / "electronic")
    for argv, match in [([str(tmp_path / "missing")], "no folder"), ([labels, "--only", "mp-0"], "mp-0"),
                        ([labels, "--coordinations", "four"], "comma-separated integers"),
                        ([labels, "--region", "tube"], "unknown region preset")]:
        assert main(["cathode", *argv, "--out", str(out)]) == 2
        assert match in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_chgnet_relax_and_neb(labels, tmp_path):
    settings = CathodeSettings(relax_steps=20, neb_steps=5, neb_images=3, neb_min_length=8.0)
    rows = cathode_screen(labels[:1], tmp_path, settings, n_neb=1, say=lambda _: None)
    assert rows[0]["survivor"] and rows[0]["energy_per_atom"] < 0
    assert rows[0]["neb_rank"] == 1 and rows[0]["barrier"] is not None
    assert (tmp_path / "plots" / f"{labels[0].name}-neb.png").exists()
