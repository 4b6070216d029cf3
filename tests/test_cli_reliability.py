"""The ``diffase`` command on bad input, resumes and empty results (issue 11, items 1, 3-6, 8, 12).

Bad input is refused with one line on stderr and exit code 2, before any output is created; ``--debug``
shows the traceback; a bug keeps its traceback. Runs use a tiny random score network and few noise levels.
"""

import json

import pytest
from pymatgen.core import Lattice, Structure

from diffase.cli import main
from tests.test_inpainting import host, tiny_model_path  # noqa: F401 (fixtures: fcc O host, tiny score model)


@pytest.fixture(scope="module", autouse=True)
def no_mlip():
    """Score candidates without an MLIP (these tests are about the command, not the chemistry; the real
    evaluation is tested in test_inpainting.py): shortest interatomic distance as a stand-in energy, and
    overlapping atoms screened out as the evaluation does."""
    from diffase.analysis.validity import structure_valid
    from diffase.transformations import InpaintIntercalantTransformation

    def evaluate(self, candidate):
        s = candidate.structure
        valid = structure_valid(s)
        return {"structure": s, "generated_structure": s, "sample_index": candidate.sample_index,
                "host_index": candidate.host_index, "method": candidate.method, "refined": False, "valid": valid,
                "energy_per_atom": -float(s.distance_matrix[0, 1]) if valid else float("inf"),
                **({} if valid else {"error": "overlapping atoms"})}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(InpaintIntercalantTransformation, "evaluate", evaluate)
        yield


# --- item 8: one line for a user's error, the traceback with --debug or for a bug ---------------------------
def test_user_error_is_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["csp", "Li5Xx2", "--guest", "Li", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("diffase csp: error: ") and "Xx is not a chemical element" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()


def test_debug_shows_the_traceback(tmp_path):
    from diffase.errors import UnknownElementError

    with pytest.raises(UnknownElementError, match="Xx"):
        main(["--debug", "csp", "Li5Xx2", "--guest", "Li", "--out", str(tmp_path / "x")])


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import diffase.workflows.csp as csp

    def broken(*args, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(csp, "parse_composition", broken)
    with pytest.raises(ZeroDivisionError):
        main(["csp", "Li5Si2", "--guest", "Li", "--out", str(tmp_path / "x")])


def test_unreadable_host_file_is_one_line_naming_the_file(host, tmp_path, capsys):
    path = tmp_path / "cut.cif"
    path.write_text(host.to(fmt="cif")[:200])
    assert main(["inpaint", str(path), "--guest", "Mg", "--count", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cut.cif" in err and not (tmp_path / "r").exists()


# --- inpaint: a tiny run, and re-runs into its folder ------------------------------------------------------
def inpaint_args(host_file, out, model, *extra) -> list[str]:
    """``diffase inpaint`` arguments of a tiny run (2 Mg, 2 samples, few levels, no relaxation); ``extra``
    replaces or adds options."""
    options = {"--guest": "Mg", "--count": "2", "--samples": "2", "--model": str(model), "--levels": "8",
               "--resample": "2", "--jump": "2", "--corrector": "1", "--device": "cpu", "--threads": "1"}
    flags = ["--no-relax"]
    extra = list(extra)
    while extra:
        key = extra.pop(0)
        if extra and not extra[0].startswith("--"):
            options[key] = extra.pop(0)
        else:
            flags.append(key)
    if "--concentration" in options:
        options.pop("--count")
    return ["inpaint", str(host_file), "--out", str(out), *[x for kv in options.items() for x in kv], *flags]


@pytest.fixture(scope="module")
def finished_run(host, tiny_model_path, tmp_path_factory):
    """A finished tiny inpainting run: (host file, output folder, files' contents)."""
    root = tmp_path_factory.mktemp("inpaint")
    host_file = root / "host.cif"
    host.to(filename=str(host_file))
    out = root / "run"
    assert main(inpaint_args(host_file, out, tiny_model_path)) == 0
    return host_file, out, {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def unchanged(out, files) -> bool:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


@pytest.mark.parametrize("change,key", [(["--guest", "Zn"], "guest"), (["--count", "1"], "count"),
                                        (["--concentration", "0.5"], "concentration"),
                                        (["--method", "hybrid"], "method"), (["--levels", "6", "--jump", "1"], "num_levels"),
                                        (["--snr", "0.4"], "snr"), (["--seed", "1"], "seed"),
                                        (["--refine-guests"], "refine_guests")])
def test_resume_with_other_settings_is_refused_naming_them(finished_run, tiny_model_path, change, key, capsys):
    host_file, out, files = finished_run
    capsys.readouterr()
    assert main(inpaint_args(host_file, out, tiny_model_path, *change)) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and f"{key}:" in err and err.count("\n") == 1
    assert unchanged(out, files)  # settings.json, results.jsonl, best-1.cif as they were


def test_resume_compares_host_content_and_model_content(finished_run, host, tiny_model_path, tmp_path, capsys):
    host_file, out, files = finished_run
    other_host = tmp_path / "host.cif"  # same file name, another crystal
    host.copy().scale_lattice(host.volume * 1.1).to(filename=str(other_host))
    assert main(inpaint_args(other_host, out, tiny_model_path)) == 2
    assert "host_sha256:" in capsys.readouterr().err
    moved = tmp_path / "moved-host.cif"  # another name, the same crystal: resumes
    moved.write_bytes(host_file.read_bytes())
    assert main(inpaint_args(moved, out, tiny_model_path)) == 0
    assert unchanged(out, files)
    import torch

    from diffase.diffusion.ve import VEProcess
    from diffase.generators.score_model import ScoreModel
    from tests.helpers import tiny_net

    retrained = tmp_path / "models" / "tiny-score.pt"  # same file name, other weights
    retrained.parent.mkdir()
    torch.save(ScoreModel(tiny_net(seed=1), VEProcess(num_levels=8), elements=list(range(1, 95)),
                          device="cpu").to_checkpoint(), retrained)
    capsys.readouterr()
    assert main(inpaint_args(host_file, out, retrained)) == 2
    assert "model_sha256:" in capsys.readouterr().err and unchanged(out, files)


def test_identical_settings_resume_and_diffusion_samples_can_grow(finished_run, tiny_model_path, tmp_path):
    import shutil

    host_file, out, _ = finished_run
    grown = tmp_path / "grown"
    shutil.copytree(out, grown)
    before = (grown / "results.jsonl").read_text().splitlines()
    assert main(inpaint_args(host_file, grown, tiny_model_path, "--samples", "3")) == 0
    after = (grown / "results.jsonl").read_text().splitlines()
    assert after[:2] == before and len(after) == 3


# --- item 5 and 6: bad input refused before the output folder exists --------------------------------------
def overlapping(host, distance: float):
    """``host`` with a second O ``distance`` Angstrom from O 0."""
    s = host.copy()
    s.append("O", s[0].coords + [distance, 0, 0], coords_are_cartesian=True)
    return s


@pytest.mark.parametrize("change,message", [
    (["--guest", "Xx"], "not a chemical element"), (["--count", "0"], "positive integer"),
    (["--count", "1000"], "room for at most"), (["--samples", "-1"], "n_samples must be >= 1"),
    (["--samples", "0"], "n_samples must be >= 1"), (["--top", "0"], "--top"),
    (["--concentration", "0.3"], "not a whole number"), (["--levels", "1"], "invalid inpainting settings"),
    (["--model", "missing.pt"], "does not exist")])
def test_bad_arguments_leave_no_output(host, tiny_model_path, tmp_path, change, message, capsys):
    host_file = tmp_path / "host.cif"
    host.to(filename=str(host_file))
    out = tmp_path / "run"
    assert main(inpaint_args(host_file, out, tiny_model_path, *change)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("distance", [0.0, 0.3])
def test_host_with_overlapping_atoms_is_refused_naming_them(host, tiny_model_path, tmp_path, distance, capsys):
    host_file = tmp_path / "POSCAR"  # pymatgen's CIF parser drops a block with two atoms on one site
    overlapping(host, distance).to(filename=str(host_file), fmt="poscar")
    out = tmp_path / "run"
    assert main(inpaint_args(host_file, out, tiny_model_path)) == 2
    err = capsys.readouterr().err
    assert f"atoms 0 (O) and {len(host)} (O) are {distance:.3f} Angstrom apart" in err and not out.exists()


def test_nan_host_leaves_no_output(host, tiny_model_path, tmp_path, capsys):
    host_file = tmp_path / "POSCAR"
    host.to(filename=str(host_file), fmt="poscar")
    text = host_file.read_text().splitlines()
    text[-1] = "nan 0.5 0.5 O"
    host_file.write_text("\n".join(text) + "\n")
    assert main(inpaint_args(host_file, tmp_path / "run", tiny_model_path)) == 2
    assert "non-finite" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_python_api_refuses_an_overlapping_host_before_sampling(host):
    from diffase.errors import InvalidStructureError
    from diffase.generators.inpainting import prepare_hosts
    from diffase.transformations import InpaintIntercalantTransformation

    bad = overlapping(host, 0.3)
    with pytest.raises(InvalidStructureError, match=r"overlapping atoms in host 0: atoms 0 \(O\) and 4 \(O\)"):
        prepare_hosts(bad, "Mg", count=1)
    t = InpaintIntercalantTransformation("Mg", count=1, model="no-such-model.pt", device="cpu")  # never loaded
    with pytest.raises(InvalidStructureError, match="overlapping atoms"):
        t.apply_transformation(bad)


# --- item 3: nothing valid is an error, and results.jsonl stays valid JSON ----------------------------------
def strict_json(line: str) -> dict:
    """``json.loads`` that refuses the non-standard ``Infinity``/``NaN`` tokens Python writes by default."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def test_no_valid_candidate_exits_1_with_the_reason_and_writes_valid_json(host, tiny_model_path, tmp_path,
                                                                            monkeypatch, capsys):
    from diffase.transformations import InpaintIntercalantTransformation

    evaluate = InpaintIntercalantTransformation.evaluate

    def screened_out(self, candidate):  # what the evaluation gives a candidate with overlapping atoms
        return {**evaluate(self, candidate), "valid": False, "energy_per_atom": float("inf"),
                "error": "overlapping atoms: atoms 4 (Mg) and 5 (Mg) are 0.100 Angstrom apart"}

    monkeypatch.setattr(InpaintIntercalantTransformation, "evaluate", screened_out)
    host_file = tmp_path / "host.cif"
    host.to(filename=str(host_file))
    out = tmp_path / "run"
    assert main(inpaint_args(host_file, out, tiny_model_path)) == 1
    err = capsys.readouterr().err
    assert "error: all 2 candidate(s) for O2 were screened out (first: overlapping atoms" in err
    rows = [strict_json(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["energy_per_atom"] is None and not r["valid"] for r in rows)
    assert not (out / "ranking.csv").exists() and not (out / "best-1.cif").exists()


def test_json_line_never_writes_non_finite_numbers():
    from diffase.data.io import json_line

    assert strict_json(json_line({"e": float("inf"), "f": float("nan"), "g": 1.5})) == {"e": None, "f": None, "g": 1.5}
    with pytest.raises(ValueError):  # a non-finite number hidden in a nested value is an error, not "Infinity"
        json_line({"nested": [float("inf")]})


# --- item 4: a failing half of --method hybrid is reported, the other half ranked -------------------------
def test_hybrid_ranks_diffusion_candidates_when_voronoi_fails(host, tiny_model_path, tmp_path, monkeypatch,
                                                               capsys):
    import diffase.transformations as transformations
    from diffase.errors import HostTooDenseError

    def no_site(host, guests, energies, beam_width, host_index=0):
        raise HostTooDenseError("no free site left for guest 2 of 2 in O2")
        yield  # a generator, as voronoi_insertion

    monkeypatch.setattr(transformations, "voronoi_insertion", no_site)
    t = transformations.InpaintIntercalantTransformation(
        "Mg", count=2, n_samples=2, method="hybrid", model=tiny_model_path, relax=False, device="cpu",
        deduplicate=False, num_levels=8, n_resample=2, jump_length=2, n_corrector=1)
    failures = []
    candidates = list(t.iter_candidates(host, on_failure=lambda m, e: failures.append((m, str(e)))))
    assert [c.method for c in candidates] == ["diffusion"] * 2 and failures == [
        ("voronoi", "no free site left for guest 2 of 2 in O2")]

    host_file = tmp_path / "host.cif"
    host.to(filename=str(host_file))
    out = tmp_path / "run"
    assert main(inpaint_args(host_file, out, tiny_model_path, "--method", "hybrid")) == 0
    captured = capsys.readouterr()
    assert "the voronoi half of --method hybrid failed: no free site left" in captured.err
    assert "hybrid method failed" in captured.out and (out / "ranking.csv").exists() and (out / "best-1.cif").exists()


def test_hybrid_fails_when_both_halves_fail(host, monkeypatch):
    import diffase.transformations as transformations
    from diffase.errors import HostTooDenseError, NoValidCandidateError, SamplingError

    def fails(error):
        def method(*args, **kw):
            raise error
            yield
        return method

    monkeypatch.setattr(transformations, "voronoi_insertion", fails(HostTooDenseError("no free site left")))
    monkeypatch.setattr(transformations, "inpaint_guests", fails(SamplingError("NaN in sampling")))
    t = transformations.InpaintIntercalantTransformation("Mg", count=2, method="hybrid", device="cpu")
    with pytest.raises(NoValidCandidateError, match="diffusion: NaN in sampling; voronoi: no free site left"):
        t.apply_transformation(host)
    single = transformations.InpaintIntercalantTransformation("Mg", count=2, method="voronoi", device="cpu")
    with pytest.raises(HostTooDenseError):  # a single method's failure is raised as it is
        single.apply_transformation(host)


# --- diffase generate: structural validity counted (item 12), resume checked (item 1) ----------------------
@pytest.fixture
def fake_joint(monkeypatch, tmp_path):
    """``diffase generate`` on a stand-in joint model (checkpoint file ``fake-joint.pt``) whose samples are an
    ordinary NaCl crystal and one with two atoms 0.06 Angstrom apart."""
    import diffase.generators
    from diffase.data.io import append_extxyz
    from diffase.generators.joint import JointModel

    good = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    close = Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.012, 0, 0]])

    class FakeJoint(JointModel):
        def __init__(self):
            pass

        def generate(self, n, path, *, guidance_scale=None, **kw):
            if guidance_scale is not None and guidance_scale < 0:
                raise ValueError("guidance_scale must be >= 0")
            append_extxyz(path, [good, close][:n], [{"sample": 0}, {"sample": 1}][:n])
            return {"written": min(n, 2), "invalid": 0, "path": str(path)}

    monkeypatch.setattr(diffase.generators, "load_model", lambda name, device="auto": FakeJoint())
    checkpoint = tmp_path / "fake-joint.pt"
    checkpoint.write_bytes(b"weights v1")
    return checkpoint


def test_generate_counts_structurally_invalid_crystals(fake_joint, tmp_path, capsys):
    out = tmp_path / "gen.extxyz"
    assert main(["generate", "--n", "2", "--out", str(out), "--model", str(fake_joint)]) == 0
    printed = capsys.readouterr().out
    assert "structurally valid: 1 of 2" in printed


def test_generate_resume_with_another_model_or_guidance_is_refused(fake_joint, tmp_path, capsys):
    out = tmp_path / "gen.extxyz"
    args = ["generate", "--n", "2", "--out", str(out), "--model", str(fake_joint)]
    assert main(args) == 0
    settings = (tmp_path / "gen.extxyz.settings.json").read_text()
    assert main([*args, "--guidance", "2.0"]) == 2
    assert "guidance: null -> 2.0" in capsys.readouterr().err
    fake_joint.write_bytes(b"weights v2")  # retrained in place: same path, other checkpoint
    assert main(args) == 2
    assert "model_sha256:" in capsys.readouterr().err
    assert (tmp_path / "gen.extxyz.settings.json").read_text() == settings


def test_generate_bad_input_leaves_no_settings_file(fake_joint, tmp_path, capsys):
    out = tmp_path / "gen.extxyz"
    assert main(["generate", "--n", "2", "--out", str(out), "--model", str(fake_joint), "--guidance", "-1"]) == 2
    assert "guidance_scale" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "gen.extxyz.settings.json").exists()
    assert main(["generate", "--n", "0", "--out", str(out), "--model", str(fake_joint)]) == 2
    assert main(["generate", "--out", str(out), "--model", str(tmp_path / "missing.pt")]) == 2
    assert not (tmp_path / "gen.extxyz.settings.json").exists()


# --- diffase csp: the resume check names the keys, covers the checkpoint and comes before the hull ---------
def test_csp_resume_with_other_settings_is_refused_before_the_reference_hull(tmp_path, capsys):
    import torch
    from ase.calculators.lj import LennardJones

    from diffase.diffusion.ve import VEProcess
    from diffase.errors import SettingsMismatchError
    from diffase.generators.score_model import ScoreModel
    from diffase.workflows.csp import run_csp
    from tests.helpers import tiny_net
    from tests.test_csp import LJ, tiny_settings

    def save_model(seed):
        torch.save(ScoreModel(tiny_net(seed=seed), VEProcess(num_levels=6), elements=list(range(1, 95)),
                              device="cpu").to_checkpoint(), checkpoint)

    checkpoint = tmp_path / "tiny.pt"
    save_model(0)
    out = tmp_path / "run"
    settings = tiny_settings(n=1, n_inpaint=0)
    run_csp("Li5Si2", out, settings, model=str(checkpoint), calculator=LennardJones(**LJ), device="cpu")
    recorded = (out / "settings.json").read_text()
    save_model(1)  # retrained in place
    with pytest.raises(SettingsMismatchError, match="model_sha256:"):
        run_csp("Li5Si2", out, settings, model=str(checkpoint), calculator=LennardJones(**LJ), device="cpu")
    table = tmp_path / "known.csv"
    table.write_text("material_id,cif\n")
    assert main(["csp", "Li5Si2", "--guest", "Li", "--n", "1", "--out", str(out), "--model", str(checkpoint),
                 "--reference-structures", str(table)]) == 2
    err = capsys.readouterr().err
    assert "different settings" in err and "calculator:" in err and "model_sha256:" in err
    assert not (out / "reference_entries.json").exists() and (out / "settings.json").read_text() == recorded


def test_voronoi_needs_no_score_model_and_csp_checks_reference_files_first(host, tmp_path, capsys):
    from diffase.commands.inpaint import run_settings
    from diffase.errors import CheckpointNotFoundError
    from diffase.transformations import InpaintIntercalantTransformation

    missing = str(tmp_path / "missing.pt")
    assert "model" not in run_settings(host, InpaintIntercalantTransformation("Mg", count=1, method="voronoi",
                                                                              model=missing))
    with pytest.raises(CheckpointNotFoundError):
        run_settings(host, InpaintIntercalantTransformation("Mg", count=1, method="hybrid", model=missing))
    out = tmp_path / "run"
    assert main(["csp", "Li5Si2", "--guest", "Li", "--out", str(out), "--reference-structures",
                 str(tmp_path / "missing.csv")]) == 2
    assert "no such reference file" in capsys.readouterr().err and not out.exists()


def test_elements_the_model_never_saw_are_refused_before_the_folder(host, tmp_path, capsys):
    import torch

    from diffase.diffusion.ve import VEProcess
    from diffase.generators.score_model import ScoreModel
    from tests.helpers import tiny_net

    limited = tmp_path / "mg-o-only.pt"
    torch.save(ScoreModel(tiny_net(), VEProcess(num_levels=8), elements=[8, 12], device="cpu").to_checkpoint(),
               limited)
    host_file = tmp_path / "host.cif"
    host.to(filename=str(host_file))
    out = tmp_path / "run"
    assert main(inpaint_args(host_file, out, limited, "--guest", "Zn")) == 2
    assert "never saw" in capsys.readouterr().err and not out.exists()
