"""The pure pieces of the ChargeDIFF benchmarks (issue 12), on tiny models and synthetic data: the inpainting
region, target and tests, its sample sets and report; the self-consistency grid alignment (a label of the Niggli cell
moved onto the generated cell, sites checked) and its label loop on the fake GPAW worker; the ablation's cached
evaluation and table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import write as ase_write
from pymatgen.core import Lattice, Structure

from diffase.data import fields as F
from diffase.data.electronic.dataset import read_label
from diffase.data.electronic.density import grid_in_cell, regrid, write_chgcar
from diffase.data.electronic.regions import region_mask
from diffase.labeling.settings import LabelSettings
from tests.fake_gpaw import fake_gpaw_fixture, fake_raw  # noqa: F401 - the fake_gpaw fixture
from tests.test_density_field import density_model, tiny_vqvae

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import chargediff_ablation as ablation
import chargediff_inpainting as inpainting
import chargediff_self_consistency as consistency

FLIP = (np.eye(3), -np.eye(3))


# --- inpainting ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("preset", "points"), [("channel-1d-z", 7 * 7 * 32), ("slab-2d-z", 7 * 32 * 32)])
def test_the_measured_region_is_the_part_of_the_region_that_a_handedness_flip_keeps(preset, points):
    mask = region_mask(preset, 32)
    core = inpainting.measured_region(mask)
    assert core.sum() == points and not (core & ~mask).any()
    assert np.array_equal(grid_in_cell(core, *FLIP), core)
    assert not np.array_equal(grid_in_cell(mask, *FLIP), mask)  # the region itself moves by one point
    plane = np.zeros((32, 32, 32), bool)
    plane[:, :, 3] = True  # its flip is the plane 29: nothing stays
    with pytest.raises(ValueError, match="widen"):
        inpainting.measured_region(plane)


def test_the_low_target_is_the_generators_encoding_of_the_region_at_the_target_density():
    from diffase.generators.charge_guided import BACKGROUND_DENSITY
    from diffase.generators.descriptor_decoding import density_decoder

    model = density_model()
    vq = density_decoder(model.meta)
    latent, values = inpainting.low_target(model, "channel-1d-z", 0.25, 0.05)
    assert latent.shape == (8, 8, 8) and values.shape == (8, 8, 8, 2)
    # a plus-shaped column: voxel 4 lies inside on both confined axes, 3 and 5 half (>= 0.5 only with the other at 4)
    assert latent.sum() == 5 * 8 and latent[4, 4].all() and latent[3, 4].all() and not latent[3, 3].any()
    grid = torch.full((1, 32, 32, 32), BACKGROUND_DENSITY)
    grid[0][torch.as_tensor(region_mask("channel-1d-z", 32))] = 0.05
    np.testing.assert_allclose(values, vq.encode_field(grid)[0].double().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        inpainting.low_target(model, "channel-1d-z", 0.25, 0.0)


def test_atoms_in_region_counts_each_crystals_atoms_on_region_grid_points():
    region = region_mask("channel-1d-z", 32)  # x and y in [0.375, 0.625)
    arrays = {"num_atoms": np.array([2, 1, 3]), "valid": np.array([True, False, True]),
              "frac_coords": np.array([[0.5, 0.5, 0.1], [0.0, 0.5, 0.3], [0.5, 0.5, 0.5],
                                       [0.1, 0.1, 0.1], [0.2, 0.9, 0.0], [1.49, 0.51, 0.7]])}
    got = inpainting.atoms_in_region(arrays, region)
    assert got[0] == 0.5 and np.isnan(got[1]) and np.isclose(got[2], 1 / 3)


def test_region_tests_count_below_target_median_and_outside_and_fail_an_invalid_sample():
    means = np.array([[0.04, 0.2], [0.08, 0.05], [0.2, 0.3], [np.nan, np.nan]])
    tests = inpainting.region_tests(means, target=0.05, unmasked_median=0.1)
    assert tests["below_target"].tolist() == [True, False, False, False]
    assert tests["below_unmasked_median"].tolist() == [True, True, False, False]
    assert tests["below_outside"].tolist() == [True, False, True, False]
    assert inpainting.count_cell(3, 4) == "3/4 (75.0 %)"
    assert inpainting.z_cell(0, 5, 0, 5) == "same" and inpainting.z_cell(5, 10, 1, 10).startswith("z +")


def test_surrogate_counts_measure_the_region_on_the_predicted_densities_and_skip_unpredicted_ones():
    region = region_mask("channel-1d-z", 8)
    low, flat = np.full((8, 8, 8), 1.0), np.full((8, 8, 8), 1.0)
    low[region] = 0.2  # a channel at a fifth of the outside density
    nan = np.full((8, 8, 8), np.nan)  # an invalid sample, or one with an element the predictor does not know
    counts = inpainting.surrogate_counts(np.stack([low, low, nan]), np.stack([flat, low, flat]), region)
    m, u = counts["masked"], counts[inpainting.UNMASKED]
    assert m["predicted"] == 2 and u["predicted"] == 3 and m["unmasked_median_region_mean"] == 1.0
    assert (m["below_unmasked_median"], m["below_outside"], m["below_half_outside"]) == (2, 2, 2)
    assert (u["below_unmasked_median"], u["below_outside"], u["below_half_outside"]) == (1, 1, 1)
    assert m["region_mean"]["median"] == pytest.approx(0.2) and m["outside_mean"]["median"] == pytest.approx(1.0)


def test_sample_sets_share_seeds_are_kept_on_disk_and_the_report_counts_them(tmp_path):
    model = density_model()
    mask = region_mask("channel-1d-z", 32)
    latent, values = inpainting.low_target(model, "channel-1d-z", 0.25, 0.05)
    kw = {"n": 3, "seed": 4, "levels": 3, "batch_size": 2, "conditions": None, "guidance": 1.0}
    unmasked = inpainting.sample_set(model, tmp_path / "u.npz", known_grids=None, **kw)
    masked = inpainting.sample_set(model, tmp_path / "m.npz", known_grids={F.DENSITY_LATENT: (latent, values)}, **kw)
    assert np.array_equal(masked["num_atoms"], unmasked["num_atoms"])  # same seeds: same atom counts
    assert masked["density"].shape == (3, 32, 32, 32) and not np.allclose(masked["density"], unmasked["density"])
    again = inpainting.sample_set(None, tmp_path / "m.npz", known_grids=None, **kw)  # read back, no model needed
    np.testing.assert_array_equal(again["density"], masked["density"])
    structures = inpainting.set_structures(masked)
    assert [len(s) for s in structures if s is not None] == masked["num_atoms"][masked["valid"]].tolist()

    li = [{"category": c, "kept_category": "no 4/6-fold O Li"} for c in ("1D", "not TM oxide", "1D")]
    region = inpainting.measured_region(mask)
    result = inpainting.preset_result("channel-1d-z", masked, unmasked, li, li[::-1], region, 0.05, 0.06)
    m = result["masked"]
    assert result["requested_dimensionality"] == 1 and m["n"] == 3
    assert m["li_all"]["1D"] == 2 and m["li_all"]["not TM oxide"] == 1 and sum(m["li_all"].values()) == 3
    means = inpainting.region_means(masked["density"], masked["valid"], region)
    assert m["tests"]["below_outside"] == int((means[:, 0] < means[:, 1]).sum())
    settings = {"n": 3, "seed": 4, "levels": 3, "batch_size": 2, "conditions": None, "guidance": None,
                "width": 0.25, "target_density": 0.05}
    text = "\n".join(inpainting.report_lines({"model": "tiny", "machine": "test", "settings": settings,
                                              "presets": [result]}))
    assert "| all Li: 1D (requested) | 2/3 (66.7 %) | 2/3 (66.7 %) | z +0.00, p 1.000 |" in text
    assert "| 4/6-fold O Li: no 4/6-fold O Li | 3/3 (100.0 %) |" in text
    assert "| below outside | " in text and "seconds per sample" in text

    class Flat:  # a density model that knows every element: a flat density
        grid = 32

        def predict_if_known(self, structure):
            return np.full((32, 32, 32), len(structure) / structure.volume)

    predicted = inpainting.surrogate_densities(structures, Flat(), tmp_path / "m.flat.npy")
    assert np.isfinite(predicted.reshape(3, -1)[:, 0]).tolist() == masked["valid"].tolist()
    np.testing.assert_array_equal(inpainting.surrogate_densities(structures, None, tmp_path / "m.flat.npy"), predicted)
    with_surrogate = inpainting.preset_result("channel-1d-z", masked, unmasked, li, li[::-1], region, 0.05, 0.06,
                                              (predicted, predicted))
    assert with_surrogate["masked"]["surrogate"]["below_outside"] == 0  # flat: the region equals the outside
    report = {"model": "tiny", "machine": "test", "settings": {**settings, "surrogate": "flat"},
              "presets": [with_surrogate]}
    text = "\n".join(inpainting.report_lines(report))
    assert "| flat density of the generated structure: region mean below its outside mean | 0/3 (0.0 %) |" in text


def test_li_row_screens_a_transition_metal_oxide_and_names_what_it_skips():
    from diffase.workflows.cathode_settings import CathodeSettings

    host = Structure(Lattice.cubic(4.3), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    frac = np.stack(np.meshgrid(*(np.arange(32) / 32,) * 3, indexing="ij"), axis=-1)
    rho = np.full((32, 32, 32), 0.01)
    for site in host:  # Gaussian atoms: the density minima lie between them
        d = frac - site.frac_coords
        d -= np.round(d)
        rho += 2.0 * np.exp(-np.sum((d @ host.lattice.matrix) ** 2, axis=-1) / 0.5)
    row = inpainting.li_row(host, rho, CathodeSettings())
    assert row["category"] in inpainting.LI_CATEGORIES[3:] and row["n_li"] >= 1
    assert inpainting.li_row(None, rho, CathodeSettings())["category"] == "invalid sample"
    inverted = 2.5 - rho  # its minima sit on the atoms: no acceptable site (the generator itself then fails)
    assert inpainting.li_row(host, inverted, CathodeSettings())["category"] == "no Li inserted"
    salt = Structure(Lattice.cubic(4.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert inpainting.li_row(salt, rho, CathodeSettings())["category"] == "not TM oxide"


# --- self-consistency -------------------------------------------------------------------------------------------
def _skewed_salt() -> Structure:
    """NaCl in a far-from-reduced cell (what a generator may return; GPAW refuses such a cell)."""
    return Structure(Lattice([[2.9, 0.0, 0.0], [2.2, 3.1, 0.0], [1.4, 1.1, 4.2]]), ["Na", "Cl"],
                     [[0.1, 0.2, 0.3], [0.55, 0.45, 0.8]])


def _gaussian_density(structure: Structure, n: int = 32) -> np.ndarray:
    frac = np.stack(np.meshgrid(*(np.arange(n) / n,) * 3, indexing="ij"), axis=-1)
    rho = np.full((n, n, n), 0.02)
    for site, width in zip(structure, (0.5, 0.8)):
        d = frac - site.frac_coords
        d -= np.round(d)
        rho += np.exp(-np.sum((d @ structure.lattice.matrix) ** 2, axis=-1) / (2 * width**2))
    return rho


def test_a_label_of_the_niggli_cell_is_moved_exactly_onto_the_generated_cell_grid():
    generated = _skewed_salt()
    reduced = generated.get_reduced_structure()
    assert not np.allclose(reduced.lattice.matrix, generated.lattice.matrix)
    rho = _gaussian_density(generated)
    label = {"material_id": "x", "cif": reduced.to(fmt="cif"),
             "rho32": grid_in_cell(rho, generated.lattice.matrix, reduced.lattice.matrix).astype(np.float32)}
    np.testing.assert_allclose(consistency.label_density_on(generated, label), rho, rtol=1e-6)
    assert consistency.density_errors(label["rho32"], rho)["density_eps_msd"] > 0.1  # unmapped: another grid
    same_cell = {**label, "cif": generated.to(fmt="cif"), "rho32": rho.astype(np.float32)}
    np.testing.assert_allclose(consistency.label_density_on(generated, same_cell), rho, rtol=1e-6)
    moved = reduced.copy()
    moved.translate_sites([0, 1], [0.05, 0, 0])  # the same crystal shifted: the grids would not share an origin
    with pytest.raises(ValueError, match="no cell mapping"):
        consistency.label_density_on(generated, {**label, "cif": moved.to(fmt="cif")})
    other = Structure(reduced.lattice, ["K", "Cl"], reduced.frac_coords)
    with pytest.raises(ValueError, match="is not the generated"):
        consistency.label_density_on(generated, {**label, "cif": other.to(fmt="cif")})


def test_structure_rows_and_summary_put_the_vqvae_floor_beside_the_generated_error():
    s = _skewed_salt()
    rho = _gaussian_density(s)
    row = consistency.structure_row(3, s, rho * 1.1, rho, tiny_vqvae(), 12.0)
    assert row["generated"]["density_eps_msd"] == pytest.approx(0.01, rel=1e-6)
    assert row["uniform"]["density_eps_msd"] > 0 and row["vqvae_floor"]["density_eps_msd"] > 0
    assert row["electrons_generated"] == pytest.approx(1.1 * row["electrons_gpaw"])
    exact = consistency.structure_row(4, s, rho, rho, tiny_vqvae(), 12.0)
    summ = consistency.summary([row, exact])
    assert summ["generated"]["n"] == 2 and summ["generated"]["eps_msd_mean"] == pytest.approx(0.005, rel=1e-6)
    result = {"model": "tiny", "machine": "test", "wall_s": 1.0, "summary": summ, "structures": [row, exact],
              "settings": {"pool": 2, "max_atoms": 6, "seed": 0, "levels": 3, "n": 2, "timeout_s": 60.0},
              "counts": {"frames": 2, "labelled": 2, "resumed": 0, "failed": 0, "skipped": {},
                         "unlabelled_candidates": 0}}
    text = "\n".join(consistency.report_lines(result))
    assert "| generated density vs GPAW | 2 | 0.50 % | 0.50 % |" in text and "(floor)" in text


def test_the_label_loop_gives_gpaw_the_niggli_cell_and_compares_on_the_generated_grid(fake_gpaw, tmp_path):
    generated = _skewed_salt()
    pool = tmp_path / "pool.extxyz"
    atoms = generated.to_ase_atoms()
    atoms.info["sample"] = 7
    ase_write(str(pool), atoms, format="extxyz")
    # the "generated" density: the fake worker's own pseudo-density of this crystal, so GPAW agrees with it
    raw = fake_raw(generated.lattice.matrix, generated.cart_coords)
    folder = pool.with_name(pool.name + ".chgcar")
    folder.mkdir()
    write_chgcar(generated, regrid(raw["pseudo_density"], 32), folder / "CHGCAR-7")
    settings = LabelSettings.from_preset("fast", timeout=60)
    rows, counts = consistency.labelled_rows(pool, tmp_path / "labels", settings, 1, 6, tiny_vqvae())
    assert counts["frames"] == 1 and counts["tried"] == 1 and len(rows) == 1
    given = Path(fake_gpaw).read_text().split()  # the cell GPAW got: Niggli-reduced, not the generated one
    assert float(given[0]) == pytest.approx(generated.get_reduced_structure().lattice.matrix[0][0])
    # the same density once on the same grid (each cell's grid Fourier-regridded 24^3 -> 32^3: ~0.2 %), not unmapped
    assert rows[0]["generated"]["density_eps_msd"] < 5e-3
    unmapped = read_label(tmp_path / "labels" / "sample-7-0.npz")["rho32"]
    generated_rho = consistency.generated_density(pool, 7)
    assert consistency.density_errors(generated_rho, unmapped)["density_eps_msd"] > 0.05
    rows, counts = consistency.labelled_rows(pool, tmp_path / "labels", settings, 1, 6, tiny_vqvae(), compute=False)
    assert len(counts["resumed"]) == 1 and len(rows) == 1


# --- ablation ---------------------------------------------------------------------------------------------------
def test_the_ablation_row_caches_each_sample_e_hull_and_the_table_compares_to_the_control(tmp_path):
    model = density_model()
    reference = [Structure(Lattice.cubic(4.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])]
    calls = []

    def hull(structures):
        calls.extend(structures)
        return [0.05] * len(structures)

    row = ablation.evaluate(model, tmp_path / "AXLC", 4, 0, 3, 2, None, None, reference, hull)
    assert row["n"] == 4 and set(ablation.METRICS) <= set(row["counts"])
    assert len(calls) == row["n_relaxed"] == row["counts"]["stable"] <= row["n_structure_valid"]
    again = ablation.evaluate(model, tmp_path / "AXLC", 4, 0, 3, 2, None, None, reference, hull)
    assert len(calls) == row["n_relaxed"] and again["counts"] == row["counts"]  # read from stability.json
    assert again["seconds_per_sample"] is None  # resumed: not timed

    settings = {"n": 10, "seed": 0, "levels": 3, "batch_size": 2, "conditions": None, "guidance": None,
                "relax_steps": 5}
    counts = dict.fromkeys(ablation.METRICS, 5)
    rows = {"AXL": {"label": "AXL", "model": "a.pt", "train_step": 1, "n": 10, "counts": counts, "n_relaxed": 5,
                    "settings": settings, "machine": "test", "seconds_per_sample": 0.1},
            "AXLC": {"label": "AXLC", "model": "b.pt", "train_step": 1, "n": 10, "n_relaxed": 8,
                     "counts": {**counts, "stable": 8}, "settings": settings, "machine": "test",
                     "seconds_per_sample": 0.2}}
    text = "\n".join(ablation.table_lines(rows))
    assert "| AXL | `a.pt` | 1 | 5/10 (50.0 %) |" in text
    assert "8/10 (80.0 %), z +1.41, p 0.16" in text
    with pytest.raises(ValueError, match="no rows"):
        ablation.table_lines({})
