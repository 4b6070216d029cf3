"""Host-guided CSP (CHGGen): lattice sampler, tolerance ladder, guest bookkeeping, the workflow and its CLI.

The workflow tests run a tiny random score network and ASE's Lennard-Jones calculator: they check the
plumbing (streaming, resume, reports), not the chemistry (``benchmarks/csp_chggen.py`` measures that).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from ase.calculators.lj import LennardJones
from pymatgen.core import Composition, Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry
from pymatgen.symmetry.groups import SpaceGroup

from diffase.analysis.symmetry import (LOW_SYMMETRY, parse_space_groups, space_group, symmetrize_by_ladder,
                                       symmetry_success_rate)
from diffase.diffusion.ve import VEProcess
from diffase.generators.inpainting import InpaintingSettings, inpaint_guests, prepare_hosts
from diffase.generators.score_model import ScoreModel
from diffase.workflows.csp import CSPSettings, evaluate_structure, parse_composition, plan_cells, run_csp, stage_seed
from diffase.workflows.csp_report import markdown_table, summarize, write_report
from diffase.workflows.frameworks import (NoSymmetricFrameworkError, extract_framework, scale_guest_counts,
                                          split_guests)
from diffase.workflows.lattices import (ANGLES, LATTICE_KINDS, PAPER_RATIOS, RATIO_KINDS, bravais_lattice,
                                        estimate_volume_per_atom, sample_lattice)
from tests.helpers import tiny_net

FAST_INPAINT = InpaintingSettings(num_levels=6, n_resample=2, jump_length=2, n_corrector=1, snr=0.4, batch_size=4)


def perturbed(structure: Structure, distance: float, seed: int = 0) -> Structure:
    """Every site moved by exactly ``distance`` Angstrom in a random direction."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(len(structure), 3))
    d *= distance / np.linalg.norm(d, axis=1, keepdims=True)
    return Structure(structure.lattice, structure.species, structure.cart_coords + d, coords_are_cartesian=True)


def rutile() -> Structure:
    return Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                     [[0, 0, 0], [0.305, 0.305, 0]])


def diamond_si() -> Structure:
    """Conventional diamond Si (8 atoms; the primitive cell has 2)."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])


def with_random_li(framework: Structure, n_li: int, seed: int = 0) -> Structure:
    """``framework`` plus ``n_li`` Li at random positions (no symmetry)."""
    s = framework.copy()
    for f in np.random.default_rng(seed).random((n_li, 3)):
        s.append("Li", f)
    return s


# --- lattice sampler ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", LATTICE_KINDS)
@pytest.mark.parametrize("ratio", PAPER_RATIOS)
def test_bravais_lattice_volume_angles_and_ratio(kind, ratio):
    lat = bravais_lattice(kind, 321.7, ratio)
    assert lat.volume == pytest.approx(321.7, rel=1e-12)
    assert np.allclose(lat.angles, ANGLES[kind], atol=1e-8)
    a, b, c = lat.abc
    expected = {"tetragonal": (a, c / ratio), "hexagonal": (a, c / ratio), "orthorhombic": (a, b / ratio),
                "monoclinic": (a, b / ratio)}.get(kind, (a, b))
    assert expected[0] == pytest.approx(expected[1], rel=1e-10)
    if kind not in RATIO_KINDS:
        assert a == pytest.approx(b) == pytest.approx(c)


@pytest.mark.parametrize("continuous", [False, True])
def test_sampled_lattices_have_the_volume_and_ratios_in_range(continuous):
    rng = np.random.default_rng(1)
    choices = [sample_lattice(250.0, rng, continuous_ratios=continuous) for _ in range(300)]
    assert {c.kind for c in choices} == set(LATTICE_KINDS)
    for c in choices:
        assert c.lattice.volume == pytest.approx(250.0, rel=1e-12)
        assert np.allclose(c.lattice.angles, ANGLES[c.kind], atol=1e-8)
        if c.kind not in RATIO_KINDS:
            assert c.ratio == 1.0
        elif continuous:
            assert 0.5 <= c.ratio <= 1.5
        else:
            assert c.ratio in PAPER_RATIOS
    ratios = {c.ratio for c in choices if c.kind in RATIO_KINDS}
    assert len(ratios) > (50 if continuous else 4)


def test_lattice_sampler_bad_input():
    with pytest.raises(ValueError, match="unknown lattice type"):
        bravais_lattice("cubicc", 100.0)
    with pytest.raises(ValueError, match="volume"):
        bravais_lattice("cubic", -1.0)
    with pytest.raises(ValueError, match="no lattice types"):
        sample_lattice(100.0, np.random.default_rng(0), kinds=())


def test_volume_estimate_is_the_mean_elemental_volume():
    li = 13.02 / 6.02214076e23 * 1e24  # Angstrom^3 per Li atom from the molar volume (13.02 cm^3/mol)
    si = 12.06 / 6.02214076e23 * 1e24
    assert estimate_volume_per_atom("Li5Si2") == pytest.approx((5 * li + 2 * si) / 7, rel=1e-3)


# --- space groups and the tolerance ladder -------------------------------------------------------------------
def test_ladder_recovers_the_space_group_of_a_perturbed_crystal():
    """Rutile with every atom moved 0.12 Angstrom: P1 at 0.1 Angstrom, P4_2/mnm again from the ladder once the
    monoclinic subgroups are excluded too (otherwise the ladder may stop at one of them, see below)."""
    for seed in range(10):
        noisy = perturbed(rutile(), 0.12, seed)
        assert space_group(noisy)[1] == 1
        found = symmetrize_by_ladder(noisy, excluded=range(1, 16))
        assert (found.spacegroup_number, found.spacegroup_symbol, found.symprec) == (136, "P4_2/mnm", 0.5)
        assert space_group(found.structure, 1e-3, 1.0)[1] == 136  # refined: exactly symmetric
        assert found.structure.composition == rutile().composition  # primitive cell, nothing merged


def test_ladder_stops_at_the_first_allowed_group_which_may_be_a_subgroup():
    """CHGGen's rule (stop once not P1/P-1) on diamond Si moved 0.1 Angstrom: the full Fd-3m comes back for
    some perturbations; for others an intermediate tolerance already finds a subgroup and the ladder stops."""
    fd3m = SpaceGroup.from_int_number(227)
    numbers = []
    for seed in range(10):
        found = symmetrize_by_ladder(perturbed(diamond_si(), 0.1, seed))
        assert found.spacegroup_number not in LOW_SYMMETRY
        assert space_group(found.structure, 1e-3, 1.0)[1] == found.spacegroup_number
        numbers.append(found.spacegroup_number)
    assert numbers.count(227) >= 3
    assert all(n == 227 or fd3m.is_supergroup(SpaceGroup.from_int_number(n)) for n in set(numbers))
    assert len(symmetrize_by_ladder(perturbed(diamond_si(), 0.1, 1)).structure) == 2  # the primitive cell


def test_ladder_gives_up_when_every_rung_is_excluded():
    noisy = perturbed(rutile(), 0.15)
    assert symmetrize_by_ladder(noisy, ladder=((0.01, 5.0),)) is None
    with pytest.raises(ValueError, match="empty"):
        symmetrize_by_ladder(noisy, ladder=())


def test_space_group_sets_and_success_rate():
    assert parse_space_groups("P1,P-1") == parse_space_groups("1, 2") == parse_space_groups([1, "P-1"]) == {1, 2}
    with pytest.raises(ValueError, match="unknown space group"):
        parse_space_groups("P9")
    with pytest.raises(ValueError, match="outside"):
        parse_space_groups("231")
    assert symmetry_success_rate([1, 2, 136, None]) == 0.25
    assert symmetry_success_rate([1, 2, 136], excluded={136}) == pytest.approx(2 / 3)
    assert math.isnan(symmetry_success_rate([]))


# --- guest removal and reinsertion bookkeeping ----------------------------------------------------------------
@pytest.mark.parametrize("guests,before,after,expected", [
    ({"Li": 10}, 4, 2, ({"Li": 5}, 1)),  # Li10Si4 -> Si2 primitive: 5 Li
    ({"Li": 10}, 4, 1, ({"Li": 5}, 2)),  # Si1 would need 2.5 Li: framework doubled
    ({"Li": 3, "Na": 1}, 2, 1, ({"Li": 3, "Na": 1}, 2)),
    ({"Li": 6}, 2, 2, ({"Li": 6}, 1)),
])
def test_scale_guest_counts(guests, before, after, expected):
    assert scale_guest_counts(guests, before, after) == expected


def test_framework_of_diamond_with_li_keeps_the_composition():
    crystal = with_random_li(perturbed(diamond_si(), 0.1, seed=1), 20)  # Li20Si8 = Li5Si2, Si moved 0.1 A
    framework, counts = split_guests(crystal, "Li")
    assert counts == {"Li": 20} and framework.composition.formula == "Si8"
    fw = extract_framework(crystal, "Li", source="u0001")
    assert (fw.spacegroup_number, len(fw.structure), fw.guests, fw.multiplier) == (227, 2, {"Li": 5}, 1)
    total = fw.structure.composition + Composition(fw.guests)
    assert total.reduced_composition == crystal.composition.reduced_composition
    assert fw.info()["framework_formula"] == "Si2" and fw.info()["source"] == "u0001"


def test_framework_is_repeated_when_guest_counts_would_be_fractional():
    fcc = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.0), ["Si"], [[0, 0, 0]])  # 4 atoms, primitive 1
    fw = extract_framework(with_random_li(fcc, 10), "Li")
    assert fw.multiplier == 2 and len(fw.structure) == 2 and fw.guests == {"Li": 5}
    assert fw.structure.volume == pytest.approx(2 * fcc.volume / 4)


def test_guests_are_inpainted_back_to_the_original_composition(tiny_model):
    crystal = with_random_li(perturbed(diamond_si(), 0.1, seed=1), 20)
    fw = extract_framework(crystal, "Li")
    hosts, guests = prepare_hosts(fw.structure, fw.guests)
    [batch] = list(inpaint_guests(hosts, guests, n_samples=2, model=tiny_model, settings=FAST_INPAINT, device="cpu"))
    for cand in batch:
        assert cand.structure.composition.reduced_composition == crystal.composition.reduced_composition
        assert np.array_equal(cand.structure.frac_coords[: len(fw.structure)], fw.structure.frac_coords)


def test_framework_bad_input():
    with pytest.raises(ValueError, match="contains no Li"):
        split_guests(diamond_si(), "Li")
    only_li = Structure(Lattice.cubic(3.5), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="only of guests"):
        split_guests(only_li, "Li")
    with pytest.raises(NoSymmetricFrameworkError, match="excluded space group"):
        extract_framework(with_random_li(perturbed(rutile(), 0.15), 3), "Li", ladder=((0.01, 5.0),))
    with pytest.raises(ValueError, match="not a chemical element"):
        split_guests(diamond_si(), "Lx")


# --- planning and evaluation ----------------------------------------------------------------------------------
def test_plan_cells_volumes_compositions_and_seeds():
    settings = CSPSettings(n=30, guest="Li", v0=16.0, seed=3)
    plans = plan_cells("Li5Si2", settings)
    assert {p.formula_units for p in plans} == {1, 2}  # 7 and 14 atoms fit max_atoms=20
    for p in plans:
        assert len(p.atomic_numbers) == 7 * p.formula_units
        assert p.cell.lattice.volume == pytest.approx(16.0 * 7 * p.formula_units, rel=1e-12)
        assert Composition({3: 5 * p.formula_units, 14: 2 * p.formula_units}) == Composition(
            {int(z): p.atomic_numbers.count(z) for z in set(p.atomic_numbers)})
        assert p.record()["cell"].shape == (3, 3)
    again = plan_cells("Li10Si4", settings)  # same reduced composition, same seed: same cells
    assert [(p.cell.kind, p.cell.ratio, p.formula_units) for p in again] == [
        (p.cell.kind, p.cell.ratio, p.formula_units) for p in plans]
    other = plan_cells("Li5Si2", CSPSettings(n=30, guest="Li", v0=16.0, seed=4))
    assert [p.cell.kind for p in other] != [p.cell.kind for p in plans]
    assert len({stage_seed(0, s) for s in ("cells", "unconditional", "inpainting")}) == 3


def test_composition_and_settings_errors():
    with pytest.raises(ValueError, match="not in Li5Si2"):
        parse_composition("Li5Si2", "Na")
    with pytest.raises(ValueError, match="only of guests"):
        parse_composition("Li", "Li")
    with pytest.raises(ValueError, match="fractional"):
        parse_composition("Li0.5Si", "Li")
    with pytest.raises(ValueError, match="more than max_atoms"):
        plan_cells("Li15Si4", CSPSettings(max_atoms=10))
    with pytest.raises(ValueError, match="v0"):
        CSPSettings(v0=0)
    with pytest.raises(ValueError, match="not a chemical element"):
        CSPSettings(guest="Xx")


LJ = dict(sigma=2.3, epsilon=0.05, rc=6.0, smooth=True)


def test_evaluate_structure_screens_relaxes_and_scores():
    settings = CSPSettings(relax_steps=20)
    refs = [ComputedEntry("Na", 0.0), ComputedEntry("Cl", 0.0)]
    good = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    row, relaxed = evaluate_structure(good, LennardJones(**LJ), settings=settings, reference_entries=refs)
    assert row["valid"] and row["spacegroup_number"] == 225 and row["spacegroup_generated"] == 225
    assert row["delta_e"] == pytest.approx(row["energy_relaxed"] - row["energy_generated"])
    assert row["decomposition_energy"] == pytest.approx(row["energy_relaxed"])  # elemental references at 0 eV/atom
    assert row["e_above_hull"] == pytest.approx(max(0.0, row["energy_relaxed"]))  # >= 0 by definition
    assert row["rms_dist"] >= 0 and row["max_pair_dist"] >= row["rms_dist"] and len(relaxed) == 8
    close = good.copy()
    close.replace(1, "Na", [0.02, 0, 0])  # 0.11 Angstrom from the Na at the origin
    row, relaxed = evaluate_structure(close, LennardJones(**LJ), settings=settings)
    assert not row["valid"] and "overlapping atoms" in row["error"] and relaxed is None


# --- the workflow ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    return ScoreModel(tiny_net(), VEProcess(num_levels=6), elements=list(range(1, 95)), device="cpu")


def tiny_settings(**kw) -> CSPSettings:
    base = dict(n=5, guest="Li", v0=16.0, formula_units=(2,), num_levels=6, n_corrector=1, batch_size=3,
                n_inpaint=2, inpainting=FAST_INPAINT, min_distance=0.0, relax_steps=3)
    base.update(kw)
    return CSPSettings(**base)


def test_run_csp_streams_resumes_and_reports(tiny_model, tmp_path, monkeypatch):
    import diffase.generators.score_model as score_model

    refs = [ComputedEntry("Li", 0.0), ComputedEntry("Si", 0.0)]
    seen = []
    rows = run_csp("Li5Si2", tmp_path, tiny_settings(), model=tiny_model, calculator=LennardJones(**LJ),
                   reference_entries=refs, device="cpu", on_result=lambda r: seen.append(r["id"]))
    unconditional = [r for r in rows if r["stage"] == "unconditional"]
    inpainted = [r for r in rows if r["stage"] == "inpainting"]
    assert [r["id"] for r in unconditional] == [f"u{i:04d}" for i in range(5)] == seen[:5]
    frameworks = [json.loads(line) for line in (tmp_path / "frameworks.jsonl").read_text().splitlines()]
    ok = [f for f in frameworks if f["status"] == "ok"]
    assert len(frameworks) == 5 and len(inpainted) == 2 * len(ok) and seen == [r["id"] for r in rows]
    for r in inpainted:  # guests back in: the composition of the run, framework from a symmetric space group
        assert r["formula"] == "Li5Si2" and r["framework_spacegroup"] not in LOW_SYMMETRY
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows) and len(list((tmp_path / "structures").glob("*.cif"))) == len(rows)

    def redone(*args, **kwargs):  # the same lines alone could come from a seeded run that redid everything
        raise AssertionError("the resumed run sampled or relaxed again")

    with monkeypatch.context() as patch:
        patch.setattr(score_model, "sample", redone)
        patch.setattr(LennardJones, "calculate", redone)
        again = run_csp("Li5Si2", tmp_path, tiny_settings(), model=tiny_model, calculator=LennardJones(**LJ),
                        reference_entries=refs, device="cpu")  # resume: nothing is redone
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines and len(again) == len(rows)
    with pytest.raises(ValueError, match="different settings"):
        run_csp("Li5Si2", tmp_path, tiny_settings(seed=1), model=tiny_model, calculator=LennardJones(**LJ),
                device="cpu")

    summary = write_report(rows, tmp_path)
    assert [s["stage"] for s in summary] == ["unconditional", "inpainting"][: len(summary)]
    assert summary[0]["n_generated"] == 5 and summary[0]["n_relaxed"] == 5
    for name in ("summary.md", "summary.csv", "ranking.csv", "success_rates.png", "ed_histogram.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "success rate" in markdown_table(summary)


def test_interrupted_run_resumes_with_the_same_crystals(tiny_model, tmp_path):
    settings = tiny_settings(n_inpaint=0)
    full = run_csp("Li5Si2", tmp_path / "full", settings, model=tiny_model, calculator=LennardJones(**LJ), device="cpu")
    lines = (tmp_path / "full" / "results.jsonl").read_text().splitlines()
    part = tmp_path / "part"
    part.mkdir()
    (part / "results.jsonl").write_text("\n".join(lines[:4]) + "\n")  # killed after 4 of 5 crystals
    (part / "settings.json").write_text((tmp_path / "full" / "settings.json").read_text())
    resumed = run_csp("Li5Si2", part, settings, model=tiny_model, calculator=LennardJones(**LJ), device="cpu")
    assert [r["id"] for r in resumed] == [r["id"] for r in full]
    # crystal 4 has its own seeded noise: it comes out the same sampled alone as beside crystals 0-3 (up to
    # the ~1e-8 A that batched float arithmetic changes; Structure equality allows 1e-5 A)
    same = Structure.from_dict(resumed[4]["relaxed_structure"]) == Structure.from_dict(full[4]["relaxed_structure"])
    assert same


def test_summary_counts_screened_crystals_as_failures():
    rows = [{"composition": "X", "stage": "unconditional", "valid": False},
            {"composition": "X", "stage": "unconditional", "valid": True, "spacegroup_number": 1, "delta_e": -0.1},
            {"composition": "X", "stage": "unconditional", "valid": True, "spacegroup_number": 12, "delta_e": -0.3,
             "decomposition_energy": 0.05, "rms_dist": 0.1, "max_pair_dist": 0.2}]
    [s] = summarize(rows)
    assert (s["n_generated"], s["n_relaxed"], s["n_symmetric"]) == (3, 2, 1)
    assert s["success_rate"] == pytest.approx(1 / 3) and s["success_rate_relaxed"] == pytest.approx(0.5)
    assert s["median_delta_e"] == pytest.approx(-0.2) and s["matched"] == 0.5 and s["n_below_hull"] == 0


def test_cli(tiny_model, tmp_path, capsys):
    from diffase.cli import main

    path = tmp_path / "tiny.pt"
    torch.save(tiny_model.to_checkpoint(), path)
    out = tmp_path / "run"
    args = ["csp", "Li5Si2", "--n", "2", "--guest", "Li", "--v0", "16", "--formula-units", "2", "--out", str(out),
            "--model", str(path), "--levels", "6", "--corrector", "1", "--inpaint-levels", "6", "--resample", "2",
            "--jump", "2", "--inpaint-corrector", "1", "--inpaint-runs", "1", "--relax-steps", "2", "--device", "cpu",
            "--threads", "1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "u0000 unconditional" in printed and "u0001 unconditional" in printed
    assert "| composition | route |" in printed
    assert (out / "summary.md").exists() and (out / "success_rates.png").exists()


def test_reference_entries_from_tables_and_elemental_references(shared_data, tmp_path):
    from diffase.workflows.hull_references import known_structures, reference_entries

    li2si = Structure(Lattice.cubic(4.6), ["Li", "Li", "Si"], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    li = Structure(Lattice.cubic(3.44), ["Li", "Li"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    table = tmp_path / "known.csv"
    pd.DataFrame({"material_id": ["a", "b", "c"], "cif": [s.to(fmt="cif") for s in (li2si, li, nacl)]}).to_csv(table)
    assert [n for n, _ in known_structures(table, {"Li", "Si"})] == ["a", "b"]
    assert [n for n, _ in known_structures([table, nacl], {"Li", "Si"}, compounds_only=True)] == ["a"]
    cache = tmp_path / "refs.json"
    elemental = shared_data / "pmg" / "2023-02-07-mp-elemental-reference-entries.json.gz"
    refs = reference_entries(["Li", "Si"], elemental=elemental, structures=table, compounds_only=True,
                             calculator=LennardJones(**LJ), cache=cache, steps=2)
    assert sorted(e.composition.reduced_formula for e in refs) == ["Li", "Li2Si", "Si"] and cache.exists()
    again = reference_entries(["Li", "Si"], structures=table, cache=cache)  # read back, nothing relaxed
    assert [e.entry_id for e in again] == ["a"]
    assert reference_entries(["Li", "Si"]) == []


def test_csp_defaults_are_chggen_values():
    s = CSPSettings()
    assert (s.n_inpaint, s.inpainting.snr, s.min_distance, s.fmax, s.relax_steps) == (3, 0.4, 1.0, 0.1, 500)
    assert (s.final_symprec, s.final_angle_tolerance, set(s.excluded)) == (0.1, 10.0, {1, 2})
    assert s.ladder[0] == (0.1, 10.0) and s.ladder[-1] == (2.0, 30.0) and len(s.ladder) == 7


@pytest.mark.slow
def test_real_checkpoint_csp_run(tmp_path, shared_data):
    """The shipped score model and CHGNet on two small Li5Si2 crystals, short sampling (minutes on a CPU)."""
    from diffase.errors import CheckpointNotFoundError
    from diffase.generators import load_model

    try:
        model = load_model("score-mp20", "cpu")
    except CheckpointNotFoundError:
        pytest.skip("models/score-mp20.pt is not there")
    settings = CSPSettings(n=2, guest="Li", v0=16.0, formula_units=(1,), num_levels=50, n_corrector=2,
                           inpainting=InpaintingSettings(num_levels=40, snr=0.4), relax_steps=100)
    from diffase.analysis.stability import load_elemental_references

    refs = load_elemental_references(shared_data / "pmg" / "2023-02-07-mp-elemental-reference-entries.json.gz",
                                     ["Li", "Si"])
    rows = run_csp("Li5Si2", tmp_path, settings, model=model, reference_entries=refs, device="cpu")
    assert len([r for r in rows if r["stage"] == "unconditional"]) == 2
    for r in rows:
        assert r["formula"] == "Li5Si2" and (not r["valid"] or math.isfinite(r["e_above_hull"]))


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    from diffase.cli import main

    assert main(["csp", "Li5Si2", "--guest", "Na", "--out", str(tmp_path)]) == 2
    assert "error: guest Na is not in Li5Si2" in capsys.readouterr().err
    assert main(["csp", "Li5Si2", "--guest", "Li", "--exclude", "P7", "--out", str(tmp_path)]) == 2
    assert main(["csp", "Li5Si2", "--guest", "Li", "--model", str(tmp_path / "none.pt"), "--n", "1",
                 "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
