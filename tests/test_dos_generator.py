"""DOSConditionedGenerator on a tiny joint model with per-site DOS conditions: masked conditioning, templates, fixed
types per structure, de novo, ranking by the surrogate's DOS similarity, and the refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase import DOSConditionedGenerator
from diffase.data.electronic.dos import DosWindow
from diffase.data.electronic.dos_targets import on_window
from diffase.errors import SettingsMismatchError
from diffase.generators.joint import JointModel
from diffase.generators.joint_fields import joint_fields
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.predictors.model import SiteLabelPredictor
from tests.fake_gpaw import fake_gpaw_fixture  # noqa: F401 - the fake_gpaw fixture

ELEMENTS = [8, 13, 28, 29, 79]  # O Al Ni Cu Au: known to the surrogate (site-labels-mp20) and to ASE's EMT
N_POINTS = 16
SPEC = {"kind": "site_dos", "e_min": -10.0, "e_max": 10.0, "n_points": N_POINTS, "sigma_eV": 0.0707,
        "transform": {"name": "log1p"}}
WINDOW = DosWindow(-10.0, 10.0, N_POINTS)


def dos_model(seed: int = 0, node_condition: dict | None = SPEC) -> JointModel:
    """A tiny joint model taking a 16-point site DOS per atom."""
    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              node_cond_dim=N_POINTS)
    net = JointDenoiser(cfg).to(torch.float64)
    with torch.no_grad():
        net.node_cond.null.normal_()
    model = JointModel(net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1, 2, 3, 2], device="cpu")
    model.node_condition = dict(node_condition) if node_condition else None
    return model


def au_ni3() -> Structure:
    return Structure(Lattice.cubic(3.6), ["Au", "Ni", "Ni", "Ni"],
                     [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def al_cu() -> Structure:
    return Structure(Lattice.cubic(2.9), ["Al", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def target_rows(k: int, seed: int = 0) -> np.ndarray:
    grid = WINDOW.grid()
    centres = np.random.default_rng(seed).uniform(-4, 2, k)
    return np.stack([3.0 * np.exp(-(((grid - c) / 1.5) ** 2)) for c in centres])


@pytest.fixture(scope="module")
def surrogate():
    return SiteLabelPredictor.load("site-labels-mp20")


def generator(model, surrogate, target, **kw) -> DOSConditionedGenerator:
    kw = {"n_samples": 3, "num_levels": 4, "batch_size": 8, "guidance_scale": 2.0, **kw}
    return DOSConditionedGenerator(target, model=model, surrogate=surrogate, **kw)


def spy(monkeypatch, model, method: str) -> list[dict]:
    """Record the keyword arguments of ``model.<method>`` and run it."""
    calls = []
    real = getattr(model, method)

    def wrapper(*args, **kw):
        calls.append({"args": args, **kw})
        return real(*args, **kw)

    monkeypatch.setattr(model, method, wrapper)
    return calls


def test_masked_sites_get_their_condition_and_free_sites_none(monkeypatch, surrogate):
    model = dos_model()
    calls = spy(monkeypatch, model, "sample_from")
    rows = target_rows(2)
    g = generator(model, surrogate, rows, sites=[3, 1], t_start=0.5)
    g.apply_transformation(au_ni3(), return_ranked_list=True)
    [call] = calls
    assert call["t_start"] == 0.5 and call["guidance_scale"] == 2.0
    assert len(call["node_conditions"]) == 3
    for values in call["node_conditions"]:
        assert values.shape == (4, N_POINTS)
        assert np.array_equal(values[3], rows[0]) and np.array_equal(values[1], rows[1])
        assert np.isnan(values[[0, 2]]).all()


def test_fixed_types_stay_fixed_per_structure(monkeypatch, surrogate):
    """Two templates in one batch, each with its own fixed site and element (not the template's): every sample ends
    with that element at that site, and the masks reaching sample_from differ per structure (no batch-wide atom 0)."""
    model = dos_model()
    calls = spy(monkeypatch, model, "sample_from")
    g = generator(model, surrogate, target_rows(1), sites=[0], t_start=1.0, n_samples=4,
                  fix_species=[{2: "Cu"}, {1: "Au"}])
    results = g.candidates([au_ni3(), al_cu()])
    [call] = calls
    masks = call["fix_types"]
    assert [m.tolist() for m in masks[:4]] == [[False, False, True, False]] * 4
    assert [m.tolist() for m in masks[4:]] == [[False, True]] * 4
    assert [s[2].specie.symbol for s in call["args"][0][:4]] == ["Cu"] * 4
    done = [r for r in results if r["structure"] is not None]
    assert len(done) == 8
    for r in done:
        site, element = (2, "Cu") if r["template_index"] == 0 else (1, "Au")
        assert r["structure"][site].specie.symbol == element


def test_de_novo_passes_conditions_to_sample(monkeypatch, surrogate):
    model = dos_model()
    calls = spy(monkeypatch, model, "sample")
    rows = target_rows(1)
    g = generator(model, surrogate, rows, sites=[2], num_atoms=3)
    ranked = g.apply_transformation(None, return_ranked_list=2)
    [call] = calls
    assert call["num_atoms"] == [3, 3, 3]
    for values in call["node_conditions"]:
        assert np.array_equal(values[2], rows[0]) and np.isnan(values[:2]).all()
    assert all(len(r["structure"]) == 3 for r in ranked)


def test_de_novo_with_fixed_species(surrogate):
    model = dos_model()
    g = generator(model, surrogate, target_rows(1), sites=[0], num_atoms=3, fix_species={0: "Au"}, n_samples=4)
    results = g.candidates()
    assert all(r["structure"][0].specie.symbol == "Au" for r in results if r["structure"] is not None)
    with pytest.raises(ValueError, match=r"without a template give \{site: element\}"):
        generator(model, surrogate, target_rows(1), sites=[0], num_atoms=3, fix_species=[0]).candidates()


def test_ranking_follows_the_surrogate_similarity(surrogate):
    """Ranked by dos_mae ascending, and dos_mae is the surrogate's site DOS at the conditioned sites, regridded to the
    model's grid, against the target, computed here independently."""
    model = dos_model()
    rows = target_rows(2, seed=3)
    g = generator(model, surrogate, rows, sites=[0, 1], t_start=0.5, n_samples=6)
    ranked = g.apply_transformation(au_ni3(), return_ranked_list=True)
    maes = [r["dos_mae"] for r in ranked]
    assert maes == sorted(maes) and len(set(maes)) > 1
    for r in ranked:
        pred = on_window(surrogate.predict(r["structure"])["site_dos"], WINDOW, surrogate.dos_grid)
        assert r["dos_mae"] == pytest.approx(np.mean(np.abs(pred[[0, 1]] - rows)))
        assert r["predicted_site_dos"].shape == (2, N_POINTS)
    best = g.apply_transformation(au_ni3())
    assert isinstance(best, Structure) and best == ranked[0]["structure"]


def test_total_dos_target_conditions_every_site_and_ranks_by_the_total(monkeypatch, surrogate):
    model = dos_model()
    calls = spy(monkeypatch, model, "sample_from")
    total = 4 * target_rows(1)[0]
    g = generator(model, surrogate, total, total=True, t_start=0.5)
    ranked = g.apply_transformation(au_ni3(), return_ranked_list=True)
    for values in calls[0]["node_conditions"]:
        assert np.allclose(values, total / 4)
    for r in ranked:
        assert r["dos_mae"] == pytest.approx(np.mean(np.abs(r["predicted_total_dos"] - total)) / 4)


def test_refusals(tmp_path, surrogate):
    plain = dos_model(node_condition=None)
    with pytest.raises(ValueError, match="has no DOS conditioning"):
        generator(plain, surrogate, target_rows(1), sites=[0]).apply_transformation(au_ni3())
    path = tmp_path / "plain.pt"
    torch.save(plain.to_checkpoint(), path)  # a checkpoint file without node_condition
    with pytest.raises(ValueError, match="has no DOS conditioning"):
        generator(str(path), surrogate, target_rows(1), sites=[0]).apply_transformation(au_ni3())
    model = dos_model()
    with pytest.raises(IndexError, match="site index 4 is out of range"):
        generator(model, surrogate, target_rows(1), sites=[4]).apply_transformation(au_ni3())
    with pytest.raises(ValueError, match="pass its energy grid"):
        generator(model, surrogate, np.ones((1, 30)), sites=[0]).apply_transformation(au_ni3())
    nan = target_rows(1)
    nan[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        generator(model, surrogate, nan, sites=[0]).apply_transformation(au_ni3())
    with pytest.raises(ValueError, match="t_start must be in"):
        DOSConditionedGenerator(target_rows(1), t_start=0.0)


# --- dos_screen workflow and CLI ----------------------------------------------------------------------------
def emt_references(tmp_path):
    """Elemental references on ASE EMT's scale (each fcc element near 0 eV/atom), as {symbol: ComputedEntry}."""
    from monty.json import MontyEncoder
    from pymatgen.entries.computed_entries import ComputedEntry

    path = tmp_path / "refs.json"
    path.write_text(json.dumps({el: ComputedEntry(el, 0.0) for el in ("O", "Al", "Ni", "Cu", "Au")}, cls=MontyEncoder))
    return path


class Interrupted(Exception):
    pass


def test_dos_screen_resumes_after_an_interruption(tmp_path, monkeypatch, surrogate):
    """Interrupted after the first generated batch, then after the first relaxation, then finished: every sample is
    generated once (the second run samples only batch 1) and relaxed once, and the crystals equal those of an
    uninterrupted run. The MLIP is ASE's EMT (CHGNet would take minutes here)."""
    import importlib

    from ase.calculators.emt import EMT

    from diffase.workflows.dos_screen import dos_screen

    relax_module = importlib.import_module("diffase.simulate.relax")  # the package re-exports relax() by that name

    refs = emt_references(tmp_path)
    relaxed = []
    real_relax = relax_module.relax

    def counting_relax(structure, *a, **kw):
        relaxed.append(structure)
        return real_relax(structure, *a, **kw)

    monkeypatch.setattr(relax_module, "relax", counting_relax)

    def run(out, stop_at=None):
        model = dos_model()
        calls = spy(monkeypatch, model, "sample_from")
        g = generator(model, surrogate, target_rows(1), sites=[0], t_start=0.3, n_samples=4, batch_size=2)

        def say(text):
            if stop_at and text.startswith(stop_at):
                raise Interrupted(text)

        try:
            rows = dos_screen(g, out, template=au_ni3(), elemental_references=refs, calculator=EMT(),
                              relax_steps=3, max_formation_energy=50.0, say=say)
        except Interrupted:
            rows = None
        return rows, calls

    _, calls = run(tmp_path / "a", stop_at="generated batch 0")
    assert len(calls) == 1 and not (tmp_path / "a" / "relaxed.jsonl").exists()
    _, calls = run(tmp_path / "a", stop_at="relaxed sample")
    assert len(calls) == 1  # only batch 1 was sampled again
    assert len((tmp_path / "a" / "relaxed.jsonl").read_text().splitlines()) == 1
    rows, calls = run(tmp_path / "a")
    assert calls == []
    generated = [json.loads(x) for x in (tmp_path / "a" / "generated.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in generated] == [0, 1, 2, 3]
    n_valid = sum(r["valid"] for r in generated)
    assert len(relaxed) == n_valid  # none relaxed twice
    fresh, _ = run(tmp_path / "b")
    for r in generated:
        if r["valid"]:
            assert Structure.from_file(tmp_path / "a" / r["cif"]) == Structure.from_file(tmp_path / "b" / r["cif"])
    assert [r["sample"] for r in rows] == [r["sample"] for r in fresh]
    ranked = [r for r in rows if r.get("rank")]
    assert len(ranked) >= 2 and n_valid >= 2
    assert [r["dos_mae"] for r in ranked] == sorted(r["dos_mae"] for r in ranked)
    with open(tmp_path / "a" / "ranking.csv") as fh:
        table = list(csv.DictReader(fh))
    assert [int(t["sample"]) for t in table] == [r["sample"] for r in rows]
    g = generator(dos_model(), surrogate, target_rows(1), sites=[0], t_start=0.3, n_samples=4, batch_size=2,
                  guidance_scale=1.0)
    with pytest.raises(SettingsMismatchError, match="guidance_scale"):
        dos_screen(g, tmp_path / "a", template=au_ni3(), elemental_references=refs, calculator=EMT())


def test_overlay_legend_names_target_and_generated_the_right_way_round(tmp_path, monkeypatch, surrogate):
    from diffase.workflows import dos_screen as ws

    drawn = {}
    monkeypatch.setattr("diffase.data.electronic.plots.plot_site_dos",
                        lambda energies, curves, path, **kw: drawn.update(curves=curves, labels=kw["site_labels"]))
    rows = target_rows(1)
    g = generator(dos_model(), surrogate, rows, sites=[0], t_start=0.3)
    [job] = g.jobs([au_ni3()])[:1]
    structure = au_ni3()
    [score] = g.score([job], [structure])
    ws.write_plots(tmp_path, [{"rank": 1, "sample": 0, "structure": structure, "score": score}], [job], top=1)
    assert np.array_equal(drawn["curves"]["target"], rows)
    assert np.array_equal(drawn["curves"]["generated (surrogate)"], score["predicted_site_dos"])
    assert drawn["labels"] == ["site 0 Au"]


def test_cli_dos_screen_end_to_end(tmp_path, monkeypatch, fake_gpaw, capsys):
    """The command on a tiny checkpoint, an array target on the model's grid and a template: generation, EMT
    relaxation, ranking, plots and the GPAW check of the best (the fake GPAW interpreter of tests/fake_gpaw.py)."""
    from ase.calculators.emt import EMT

    from diffase.cli import main

    monkeypatch.setattr("diffase.calculators.resolve_potential", lambda *a, **kw: EMT())
    for symbol in ("Al", "Cu"):  # the fake GPAW's setups
        (fake_gpaw.parent / "setups" / f"{symbol}.PBE").touch()
        (fake_gpaw.parent / "setups" / f"{symbol}.dzp.basis").touch()
    model_path = tmp_path / "tiny-dos.pt"
    torch.save(dos_model().to_checkpoint(node_condition=SPEC), model_path)
    np.save(tmp_path / "target.npy", target_rows(1))
    al_cu().to(filename=str(tmp_path / "AlCu.cif"))
    out = tmp_path / "screen"
    argv = ["dos-screen", "--target", str(tmp_path / "target.npy"), "--sites", "1", "--template",
            str(tmp_path / "AlCu.cif"), "--t-start", "0.2", "--samples", "3", "--levels", "4", "--model",
            str(model_path), "--elemental-references", str(emt_references(tmp_path)), "--relax-steps", "2",
            "--max-formation-energy", "50", "--gpaw-check", "1", "--top", "2", "--out", str(out), "--threads", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ranked ->" in printed and "rank" in printed
    with open(out / "ranking.csv") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["rank"] == "1" and table[0]["gpaw_dos_mae_states_per_eV"] != ""
    assert (out / "gpaw" / f"sample-{int(table[0]['sample']):04d}.npz").exists()
    assert (out / "plots" / "rank-1.png").exists()
    assert main(argv) == 0  # a re-run resumes: nothing left to do, same table
    with open(out / "ranking.csv") as fh:
        assert list(csv.DictReader(fh)) == table


def test_gpaw_check_is_skipped_with_a_message_without_gpaw(tmp_path, monkeypatch, surrogate):
    from diffase.labeling import gpaw_runner
    from diffase.workflows.dos_screen import gpaw_stage

    def missing():
        raise gpaw_runner.GPAWNotFoundError("GPAW is not installed: apt-get install gpaw gpaw-data")

    monkeypatch.setattr(gpaw_runner, "find_gpaw_python", missing)
    said = []
    gpaw_stage([{"rank": 1, "sample": 0, "structure": au_ni3()}], [], tmp_path, 1, said.append)
    assert said and "skipping the GPAW check" in said[0] and "apt-get install gpaw" in said[0]
    assert not (tmp_path / "gpaw").exists()


def test_as_dict_round_trip_keeps_every_argument():
    """MSONable like a pymatgen transformation: a JSON round trip keeps the target and the fixed species (whose
    integer keys JSON turns into strings, still read as site indices)."""
    from monty.json import MontyDecoder, MontyEncoder

    g = DOSConditionedGenerator(target_rows(1), sites=[0], fix_species={2: "Cu"}, t_start=0.5, n_samples=3)
    back = json.loads(json.dumps(g.as_dict(), cls=MontyEncoder), cls=MontyDecoder)
    assert np.allclose(back.target, g.target) and back.t_start == 0.5 and back.sites == [0]
    start, mask = back._start(au_ni3(), back.fix_species, 4, ELEMENTS)
    assert start[2].specie.symbol == "Cu" and mask.tolist() == [False, False, True, False]


def test_ranking_gives_a_duplicate_no_rank(tmp_path, surrogate):
    """Two relaxed crystals that match (StructureMatcher) take one rank; the other points at it; a crystal above
    the formation-energy threshold is not ranked."""
    from diffase.workflows.dos_screen import rank_stage, write_ranking

    g = generator(dos_model(), surrogate, target_rows(1), sites=[0], t_start=0.3)
    other = au_ni3()
    other.replace(1, "Cu")
    (tmp_path / "relaxed").mkdir()
    rows = []
    for k, (s, e_f) in enumerate([(au_ni3(), -0.1), (au_ni3().perturb(0.01, 0.0), -0.2), (other, -0.1),
                                   (other, 0.5)]):
        s.to(filename=str(tmp_path / "relaxed" / f"{k}.cif"))
        rows.append({"sample": k % 3, "formation_energy_per_atom": e_f, "energy_per_atom": -1.0,
                     "cif": f"relaxed/{k}.cif"})
    (tmp_path / "relaxed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = rank_stage(g, [au_ni3()], tmp_path, max_formation_energy=0.0, top=3)
    ranked = [r for r in out if r.get("rank")]
    assert len(ranked) == 2 and {r["structure"].composition for r in ranked} == {au_ni3().composition,
                                                                                   other.composition}
    [twin] = [r for r in out if "duplicate_of" in r]
    assert twin["duplicate_of"] in (0, 1) and twin["sample"] != twin["duplicate_of"]
    assert [r["kept"] for r in out].count(False) == 1
    with open(write_ranking(tmp_path, out)) as fh:
        table = list(csv.DictReader(fh))
    assert [t["rank"] for t in table] == ["1", "2", "", ""]


def test_cli_refuses_bad_input_before_writing(tmp_path, capsys):
    from diffase.cli import main

    model_path = tmp_path / "tiny-dos.pt"
    torch.save(dos_model().to_checkpoint(node_condition=SPEC), model_path)
    np.save(tmp_path / "target.npy", target_rows(1))
    al_cu().to(filename=str(tmp_path / "AlCu.cif"))
    out = tmp_path / "screen"
    base = ["dos-screen", "--template", str(tmp_path / "AlCu.cif"), "--t-start", "0.2", "--model", str(model_path),
            "--elemental-references", str(emt_references(tmp_path)), "--out", str(out)]
    assert main([*base, "--target", str(tmp_path / "target.npy"), "--sites", "5"]) == 2
    assert "site index 5 is out of range" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", np.ones((1, 40)))
    assert main([*base, "--target", str(tmp_path / "short.npy"), "--sites", "0"]) == 2
    assert "pass its energy grid" in capsys.readouterr().err
    assert main([*base, "--target", str(tmp_path / "short.npy"), "--sites", "0", "--energies=-8:8:40",
                 "--samples", "0"]) == 2
    assert not out.exists()
