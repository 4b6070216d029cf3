"""Many hosts in one process (issue 14, item 1): shared network batches, per-host output, resume and skips.

The samples of several hosts share network batches cut by crystals and atoms; each host's candidates do not
depend on the batching or on the other hosts; ``diffase inpaint`` over a folder writes one folder per host,
skips a bad host with its reason and resumes host by host after an interrupt. Tiny random score network,
few noise levels, a stand-in energy instead of an MLIP (as test_cli_reliability.py).
"""

import csv
import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from diffase.cli import main
from diffase.data.batch import batch_slices
from diffase.generators import load_model
from diffase.generators.inpainting import inpainting_record
from diffase.transformations import InpaintIntercalantTransformation
from tests.test_cli_reliability import inpaint_args, no_mlip  # noqa: F401 (autouse: stand-in energy)
from tests.test_inpainting import host, tiny_model_path  # noqa: F401 (fixtures: fcc O host, tiny score model)


def test_batch_slices_keep_order_and_respect_both_limits():
    sizes = [3, 4, 5, 2, 9, 1, 1]
    slices = batch_slices(sizes, max_crystals=3, max_atoms=8)
    assert [list(range(*s.indices(len(sizes)))) for s in slices] == [[0, 1], [2, 3], [4], [5, 6]]
    assert all(sum(sizes[s]) <= 8 or s.stop - s.start == 1 for s in slices)  # 9 atoms: a batch of its own
    assert batch_slices(sizes, max_crystals=2) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 7)]
    assert batch_slices([], max_crystals=4) == []
    with pytest.raises(ValueError, match=">= 1"):
        batch_slices(sizes, max_crystals=0)


def hosts_of_three_sizes(host):
    """Three hosts: the fcc O host, the same 2% larger, and its 2x1x1 supercell (8 O)."""
    bigger = host.copy()
    bigger.scale_lattice(host.volume * 1.06)
    return [host, bigger, host * (2, 1, 1)]


def test_samples_do_not_depend_on_batching(host, tiny_model_path):
    """The same crystals with their seeds, in batches of 1 crystal, of 12 atoms, or all at once: the same
    positions (up to float rounding), so sharing batches between hosts changes speed, not results."""
    model = load_model(tiny_model_path, "cpu")
    records = [inpainting_record(h, {"Mg": 2}) for h in hosts_of_three_sizes(host)] * 2
    seeds = list(range(100, 106))

    def positions(**batching):
        out = {}
        for first, results in model.sample_positions(records, seeds=seeds, num_levels=6, n_corrector=1, **batching):
            out.update({first + k: r["pos"] for k, r in enumerate(results)})
        return [out[i] for i in range(len(records))]

    alone, by_atoms, together = positions(batch_size=1), positions(max_atoms=12), positions(batch_size=32)
    for a, b, c in zip(alone, by_atoms, together):
        np.testing.assert_allclose(a, b, atol=1e-3)  # float32 rounding: ~2e-5 A seen
        np.testing.assert_allclose(a, c, atol=1e-3)
    assert not np.allclose(alone[0], alone[3], atol=1e-2)  # same crystal, other seed: other sample


def test_apply_to_hosts_skips_a_bad_host_and_matches_single_runs(host, tiny_model_path):
    disordered = host.copy()
    disordered.replace_species({"O": {"O": 0.5, "F": 0.5}})
    good = hosts_of_three_sizes(host)[:2]
    t = InpaintIntercalantTransformation("Mg", count=2, n_samples=2, model=tiny_model_path, relax=False,
                                         device="cpu", deduplicate=False, num_levels=8, n_resample=2,
                                         jump_length=2, n_corrector=1, batch_size=3)
    results = t.apply_to_hosts([good[0], disordered, good[1]])
    assert [r.host_index for r in results] == [0, 1, 2]
    assert results[1].ranked == [] and "disordered" in results[1].error
    assert results[0].error is None and results[2].error is None and len(results[2].ranked) == 2
    alone = t.apply_transformation(good[0], return_ranked_list=True)  # the first host alone: same candidates
    assert [r["energy_per_atom"] for r in results[0].ranked] == pytest.approx([r["energy_per_atom"] for r in alone])


def write_host_folder(folder, host):
    """A folder of four host files: two good hosts, a disordered one and one with americium (the tiny model
    knows elements 1-94)."""
    folder.mkdir()
    first, second, _ = hosts_of_three_sizes(host)
    first.to(filename=str(folder / "a-first.cif"))
    second.to(filename=str(folder / "d-second.cif"))
    disordered = host.copy()
    disordered.replace_species({"O": {"O": 0.5, "F": 0.5}})
    disordered.to(filename=str(folder / "b-disordered.cif"))
    americium = host.copy()
    americium.replace(0, "Am")
    americium.to(filename=str(folder / "c-americium.cif"))


def read_summary(out):
    with open(out / "summary.csv") as fh:
        return {row["host"]: row for row in csv.DictReader(fh)}


def results_lines(out, name):
    return sorted((out / name / "results.jsonl").read_text().splitlines())


def test_folder_of_hosts_writes_one_folder_per_host_and_skips_bad_ones(host, tiny_model_path, tmp_path, capsys):
    write_host_folder(tmp_path / "hosts", host)
    out = tmp_path / "run"
    assert main(inpaint_args(tmp_path / "hosts", out, tiny_model_path, "--batch-atoms", "20")) == 0
    summary = read_summary(out)
    assert set(summary) == {"a-first", "b-disordered", "c-americium", "d-second"}
    assert "disordered" in summary["b-disordered"]["error"] and "Am" in summary["c-americium"]["error"]
    for name in ("a-first", "d-second"):
        assert summary[name]["error"] == "" and summary[name]["candidates"] == "2"
        assert len(results_lines(out, name)) == 2 and (out / name / "best-1.cif").exists()
    assert not (out / "b-disordered").exists() and not (out / "c-americium").exists()
    assert "skipping host b-disordered" in capsys.readouterr().err


def test_interrupted_multi_host_run_resumes_host_by_host(host, tiny_model_path, tmp_path, monkeypatch):
    """Interrupted after 3 of 4 candidates (host 1 half done), the re-run does only the missing candidate:
    nothing lost, nothing duplicated, and every host's results equal those of an uninterrupted run."""
    write_host_folder(tmp_path / "hosts", host)
    fresh = tmp_path / "fresh"
    assert main(inpaint_args(tmp_path / "hosts", fresh, tiny_model_path)) == 0

    evaluate = InpaintIntercalantTransformation.evaluate
    calls = []

    def interrupted_evaluate(self, candidate):
        calls.append((candidate.host_index, candidate.sample_index))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return evaluate(self, candidate)

    out = tmp_path / "run"
    monkeypatch.setattr(InpaintIntercalantTransformation, "evaluate", interrupted_evaluate)
    with pytest.raises(KeyboardInterrupt):
        main(inpaint_args(tmp_path / "hosts", out, tiny_model_path))
    assert len(results_lines(out, "a-first")) == 2 and len(results_lines(out, "d-second")) == 1
    sampled = []
    monkeypatch.setattr(InpaintIntercalantTransformation, "evaluate",
                        lambda self, c: sampled.append((c.host_index, c.sample_index)) or evaluate(self, c))
    assert main(inpaint_args(tmp_path / "hosts", out, tiny_model_path)) == 0
    assert sampled == [(1, 1)]
    for name in ("a-first", "d-second"):
        lines = results_lines(out, name)
        assert len(lines) == len(set(lines)) == 2
        assert [json.loads(x)["energy_per_atom"] for x in lines] == pytest.approx(
            [json.loads(x)["energy_per_atom"] for x in results_lines(fresh, name)])


def test_resume_with_the_host_moved_in_the_list_is_refused(host, tiny_model_path, tmp_path, capsys):
    write_host_folder(tmp_path / "hosts", host)
    out = tmp_path / "run"
    assert main(inpaint_args(tmp_path / "hosts", out, tiny_model_path)) == 0
    host.to(filename=str(tmp_path / "hosts" / "0-new.cif"))  # sorts first: every other host moves down
    assert main(inpaint_args(tmp_path / "hosts", out, tiny_model_path)) == 2
    assert "host_index" in capsys.readouterr().err


def test_voronoi_baseline_out_of_sites_is_a_host_too_dense_error(host):
    """A dense host's baseline failure is a DiffaseError, so several-host runs report it per host (a plain
    ValueError stopped the whole run)."""
    from diffase.errors import HostTooDenseError
    from diffase.generators.voronoi import voronoi_insertion

    with pytest.raises(HostTooDenseError, match="no free site left"):
        voronoi_insertion(host, {"Mg": 30}, lambda structures: [0.0] * len(structures))


def test_the_only_method_failing_on_the_only_accepted_host_is_reported_in_the_summary(
        host, tiny_model_path, tmp_path, monkeypatch, capsys):
    import diffase.transformations as transformations
    from diffase.errors import HostTooDenseError

    def no_site(*args, **kw):
        raise HostTooDenseError("no free site left for guest 1 of 2")

    monkeypatch.setattr(transformations, "voronoi_insertion", no_site)
    folder = tmp_path / "hosts"
    folder.mkdir()
    host.to(filename=str(folder / "a.cif"))
    Structure(host.lattice, [{"O": 0.5, "F": 0.5}] * len(host), host.frac_coords).to(filename=str(folder / "b.cif"))
    out = tmp_path / "run"
    assert main(inpaint_args(folder, out, tiny_model_path, "--method", "voronoi")) == 1
    summary = read_summary(out)
    assert "no free site left" in summary["a"]["error"] and "disordered" in summary["b"]["error"]


def test_a_bad_row_of_a_table_is_skipped_alone_and_names_stay_unique(host, tiny_model_path, tmp_path):
    import pandas as pd

    from diffase.commands.inpaint import read_hosts

    disordered = Structure(host.lattice, [{"O": 0.5, "F": 0.5}] * len(host), host.frac_coords)
    table = tmp_path / "hosts.csv"
    pd.DataFrame({"material_id": ["x", "y", "z"],
                  "cif": [host.to(fmt="cif"), disordered.to(fmt="cif"), host.to(fmt="cif")]}).to_csv(table)
    named = read_hosts([str(table)])
    assert [n for n, _ in named] == ["x", "y", "z"]
    assert isinstance(named[1][1], Exception) and isinstance(named[2][1], Structure)
    out = tmp_path / "run"
    assert main(inpaint_args(table, out, tiny_model_path)) == 0
    summary = read_summary(out)
    assert summary["x"]["candidates"] == summary["z"]["candidates"] == "2" and "disordered" in summary["y"]["error"]

    for sub in ("d1", "d2"):
        (tmp_path / sub).mkdir()
        host.to(filename=str(tmp_path / sub / "a.cif"))
    host.to(filename=str(tmp_path / "A-2.cif"))
    names = [n for n, _ in read_hosts([str(tmp_path / "d1"), str(tmp_path / "d2"), str(tmp_path / "A-2.cif")])]
    assert len({n.lower() for n in names}) == 3, names


def test_a_host_is_seeded_by_its_place_in_the_users_list_not_among_accepted_hosts(host, tiny_model_path):
    """[refused, H] and [other, H] give H the same samples (both seed it as host 1); seeding by the position
    among accepted hosts would give it host 0's streams in the first call."""
    disordered = Structure(host.lattice, [{"O": 0.5, "F": 0.5}] * len(host), host.frac_coords)
    other = hosts_of_three_sizes(host)[1]
    t = InpaintIntercalantTransformation("Mg", count=2, n_samples=2, model=tiny_model_path, relax=False,
                                         device="cpu", deduplicate=False, num_levels=8, n_resample=2,
                                         jump_length=2, n_corrector=1)
    after_refused = t.apply_to_hosts([disordered, host])[1].ranked
    after_other = t.apply_to_hosts([other, host])[1].ranked
    first = t.apply_to_hosts([host])[0].ranked
    energies = [r["energy_per_atom"] for r in after_refused]
    assert energies == pytest.approx([r["energy_per_atom"] for r in after_other])
    assert energies != pytest.approx([r["energy_per_atom"] for r in first])
