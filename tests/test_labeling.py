"""The GPAW labeller (diffase.labeling) and the label format + loader (diffase.data.electronic.dataset).

Fast tests replace the GPAW worker by a synthetic raw result; the real GPAW run is in the slow set.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data import fields as F
from diffase.data.electronic.dataset import (
    FORMAT_VERSION,
    ElectronicDataset,
    collate_electronic,
    label_structure,
    read_label,
    write_index,
    write_label,
)
from diffase.errors import SettingsMismatchError, UnknownElementError
from diffase.labeling import batch as batch_module
from diffase.labeling.batch import file_stem, label_structures, parse_shard
from diffase.labeling.gpaw_runner import check_supported, label_from_raw
from diffase.labeling.settings import (
    PRESETS,
    LabelSettings,
    gpaw_setup_dirs,
    kpoint_mesh,
    settings_differences,
    unsupported_elements,
)
from tests.fake_gpaw import fake_gpaw_fixture, fake_raw  # noqa: F401 - the fake_gpaw fixture


def nacl() -> Structure:
    return Structure(Lattice.from_parameters(4.02, 4.02, 4.02, 60, 60, 60), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl_raw(structure: Structure, settings: LabelSettings | None = None, **_) -> dict:
    """What the GPAW worker returns for ``structure`` (a two-atom cell), made up by :func:`tests.fake_gpaw.fake_raw`."""
    return fake_raw(structure.lattice.matrix, structure.cart_coords)


# --- settings ----------------------------------------------------------------------------------------------------


def test_default_settings_reproduce_shared_labels(shared_data):
    settings = LabelSettings()
    assert (settings.xc, settings.mode, settings.basis, settings.h) == ("PBE", "lcao", "dzp", 0.2)
    assert (settings.kpoint_density, settings.kpoint_cap, settings.smearing_width, settings.grid) == (15.0, 6, 0.1, 32)
    # the k-point rule gives the meshes stored in the shared labels
    for path in sorted((shared_data / "electronic").glob("mp-1*.npz"))[:10]:
        label = read_label(path)
        s = label_structure(label)
        assert kpoint_mesh(s.lattice, 15.0, 6) == label["kpts"].tolist(), path.name


def test_unsupported_elements_are_reported_up_front():
    if not any(d.is_dir() for d in gpaw_setup_dirs()):
        pytest.skip("no GPAW setups installed (apt-get install gpaw-data)")
    settings = LabelSettings()
    assert unsupported_elements({"Na", "Cl"}, settings) == []
    assert unsupported_elements({"Na", "La", "Nd"}, settings) == ["La", "Nd"]
    with pytest.raises(UnknownElementError, match="La"):
        check_supported(Structure(Lattice.cubic(4), ["La", "N"], [[0, 0, 0], [0.5, 0.5, 0.5]]), settings)


def test_parse_shard_and_file_stem():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert file_stem("mp-1/x y") == "mp-1_x_y"


# --- labelling, with the GPAW worker replaced ----------------------------------------------------------------------


def test_label_from_raw_fields():
    s = nacl()
    label = label_from_raw("nacl", s, nacl_raw(s), LabelSettings())
    assert label["rho32"].shape == (32, 32, 32)
    assert label["dos"].shape == (2, 512)
    # Bader on the all-electron density: Na loses, Cl gains, neutral in total
    assert label["bader"][0] > 0.3 and label["bader"][1] < -0.3
    assert float(label["bader"].sum()) == pytest.approx(0.0, abs=1e-4)
    # spin-paired: each level counts twice
    grid = label["dos_grid"]
    assert label["dos"][1].sum() * (grid[1] - grid[0]) == pytest.approx(2 * (0.9 + 0.9 + 0.1), rel=1e-3)


def test_label_structures_resumes_shards_and_records_failures(tmp_path, monkeypatch):
    calls = []

    def fake_run(structure, settings, **kw):
        calls.append(structure.formula)
        if structure.lattice.a > 4.5:
            raise RuntimeError("SCF did not converge")
        return nacl_raw(structure)

    monkeypatch.setattr(batch_module, "run_single_point", fake_run)
    monkeypatch.setattr(batch_module, "find_gpaw_python", lambda: "python")
    # as GPAW's setup folders would answer, without needing them installed
    monkeypatch.setattr(batch_module, "unsupported_elements", lambda symbols, settings: sorted(symbols & {"La"}))
    good = nacl()
    bad = good.copy()
    bad.scale_lattice(good.volume * 2)
    la = Structure(Lattice.cubic(4), ["La", "N"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structures = [good, bad, la, good.copy()]

    # two shards of two workers split the list without overlap
    r0 = label_structures(structures, tmp_path, shard=(0, 2))
    r1 = label_structures(structures, tmp_path, shard=(1, 2))
    assert (r0.labelled, r1.labelled) == (["0"], ["3"])
    assert sorted(r0.failed + r1.failed) == ["1", "2"]
    assert len(calls) == 3  # La was refused before any DFT
    failures = [json.loads(line) for p in tmp_path.glob("failures-*.jsonl") for line in p.read_text().splitlines()]
    errors = {f["name"]: f["error"] for f in failures}
    assert "SCF did not converge" in errors["1"] and "unsupported elements" in errors["2"] and "La" in errors["2"]

    # resume: finished structures are skipped, failures retried
    again = label_structures(structures, tmp_path)
    assert sorted(again.skipped) == ["0", "3"] and sorted(again.failed) == ["1", "2"]
    assert len(calls) == 4

    rows = (tmp_path / "index.csv").read_text().splitlines()
    assert rows[0].startswith("file,material_id") and len(rows) == 3
    assert not list(tmp_path.glob("*.part*"))


def test_missing_gpaw_is_one_clear_error(tmp_path, monkeypatch):
    from diffase.labeling.gpaw_runner import GPAWNotFoundError

    def no_gpaw():
        raise GPAWNotFoundError("GPAW is not installed: apt-get install gpaw gpaw-data")

    monkeypatch.setattr(batch_module, "find_gpaw_python", no_gpaw)
    monkeypatch.setattr(batch_module, "unsupported_elements", lambda symbols, settings: [])
    with pytest.raises(GPAWNotFoundError, match="apt-get"):
        label_structures([nacl()], tmp_path)


def test_cli_label_is_registered():
    from diffase.cli import build_parser

    args = build_parser().parse_args(["label", "x.csv", "--out", "o", "--shard", "1/3"])
    assert args.func.__module__ == "diffase.commands.label" and args.shard == "1/3"


# --- presets and resuming ----------------------------------------------------------------------------------------


def test_fast_preset_is_coarse_scf_plus_dos_pass_on_the_default_mesh():
    fast, default = LabelSettings.from_preset("fast"), LabelSettings.from_preset("default")
    assert default == LabelSettings() and default.dos_mesh(nacl().lattice) is None
    assert (fast.h, fast.kpoint_density, fast.kpoint_cap, fast.preset) == (0.2, 8.0, 4, "fast")
    lattice = nacl().lattice
    assert fast.dos_mesh(lattice) == kpoint_mesh(lattice, 15.0, 6) == [5, 5, 5]
    assert kpoint_mesh(lattice, fast.kpoint_density, fast.kpoint_cap) == [3, 3, 3]
    assert LabelSettings.from_preset("fast", h=0.3).h == 0.3
    with pytest.raises(ValueError, match="unknown label preset"):
        LabelSettings.from_preset("quick")
    with pytest.raises(ValueError, match="both"):
        LabelSettings(dos_kpoint_density=15.0)


def test_fast_preset_settings_round_trip_into_the_label_file(fake_gpaw, tmp_path):
    """diffase label --preset fast: the settings, preset name and both k-meshes sent to GPAW come back from the file."""
    from diffase.cli import main

    source = tmp_path / "nacl.cif"
    nacl().to(filename=str(source))
    assert main(["label", str(source), "--out", str(tmp_path / "out"), "--preset", "fast"]) == 0
    label = read_label(tmp_path / "out" / "nacl.npz")
    stored = LabelSettings.from_dict(json.loads(label["settings"]))
    assert stored == PRESETS["fast"] and stored.preset == "fast"
    assert label["kpts"].tolist() == [3, 3, 3] and label["dos_kpts"].tolist() == [5, 5, 5]  # as the worker was told
    assert LabelSettings.from_dict(json.loads((tmp_path / "out" / "settings.json").read_text())) == stored


def test_labels_written_before_presets_read_as_default(shared_data):
    """Stored settings lack the DOS-pass and preset fields; absent fields mean what the code did then: default."""
    for path in sorted((shared_data / "electronic").glob("*.npz")):
        label = read_label(path)
        if "settings" in label:
            assert settings_differences(LabelSettings.from_dict(json.loads(label["settings"])), LabelSettings()) == []
            return
    pytest.skip("no format-2 label in shared/data/electronic")


def test_resume_refuses_changed_settings_before_any_work(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(batch_module, "run_single_point", lambda s, settings, **kw: calls.append(1) or nacl_raw(s))
    monkeypatch.setattr(batch_module, "find_gpaw_python", lambda: "python")
    monkeypatch.setattr(batch_module, "unsupported_elements", lambda symbols, settings: [])
    structures = [nacl(), nacl()]
    label_structures(structures, tmp_path, shard=(0, 2))
    before = sorted(p.name for p in tmp_path.rglob("*"))

    fast = LabelSettings.from_preset("fast")
    with pytest.raises(SettingsMismatchError) as info:
        label_structures(structures, tmp_path, settings=fast, shard=(1, 2))
    for difference in ("kpoint_density: 15.0 -> 8.0", "kpoint_cap: 6 -> 4", "preset: 'default'"):
        assert difference in str(info.value)
    assert len(calls) == 1 and sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing ran, nothing written

    # a folder from before settings.json existed is checked against its labels' own settings
    (tmp_path / "settings.json").unlink()
    with pytest.raises(SettingsMismatchError, match="kpoint_density: 15.0 -> 8.0"):
        label_structures(structures, tmp_path, settings=fast)

    # the same settings (a longer timeout is allowed) resume: the done structure is skipped, the other labelled
    report = label_structures(structures, tmp_path, settings=LabelSettings(timeout=10.0))
    assert (report.skipped, report.labelled, len(calls)) == (["0"], ["1"], 2)


def test_cli_refuses_a_changed_preset_without_writing(tmp_path, monkeypatch, capsys):
    from diffase.cli import main

    monkeypatch.setattr(batch_module, "run_single_point", lambda s, settings, **kw: nacl_raw(s))
    monkeypatch.setattr(batch_module, "find_gpaw_python", lambda: "python")
    monkeypatch.setattr(batch_module, "unsupported_elements", lambda symbols, settings: [])
    label_structures([nacl()], tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    source = tmp_path.parent / "nacl.cif"
    nacl().to(filename=str(source))
    assert main(["label", str(source), "--out", str(tmp_path), "--preset", "fast", "--h", "0.2"]) == 2
    message = capsys.readouterr().out
    assert "kpoint_density: 15.0 -> 8.0" in message and "h:" not in message and "new --out" in message
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # not even a log file


# --- dataset format and loader -----------------------------------------------------------------------------------


def test_reads_legacy_shared_labels_and_joins_structures(shared_data, tmp_path):
    legacy = shared_data / "electronic" / "mp-1000.npz"  # BaTe, version 1
    label = read_label(legacy)
    raw = np.load(legacy)
    assert label["format_version"] == 1
    np.testing.assert_allclose(label["dos"], 2 * raw["dos"])  # v1 held one spin channel
    assert np.isnan(label["bader"]).all()

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(legacy, folder / "mp-1000.npz")
    s = nacl()
    write_label(folder / "nacl.npz", label_from_raw("nacl", s, nacl_raw(s), LabelSettings()))
    write_index(folder)
    data = ElectronicDataset(folder)
    assert len(data) == 2
    items = [data[i] for i in range(2)]
    assert items[1]["name"] == "nacl" and read_label(folder / "nacl.npz")["format_version"] == FORMAT_VERSION
    batch = collate_electronic(items)
    assert batch[F.CHARGE_DENSITY].shape == (2, 32, 32, 32)
    assert batch[F.SITE_DOS].shape == (4, 512)
    assert batch[F.BADER_CHARGE].shape == (4,) and torch.isnan(batch[F.BADER_CHARGE][:2]).all()
    assert batch[F.NUM_ATOMS].tolist() == [2, 2]


def test_loader_on_whole_shared_label_folder(shared_data):
    data = ElectronicDataset(shared_data / "electronic")
    assert len(data) >= 79
    item = data[0]
    assert item[F.CHARGE_DENSITY].shape == (32, 32, 32)
    assert item[F.SITE_DOS].shape == (len(item[F.ATOMIC_NUMBERS]), 512)


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ElectronicDataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="no label files"):
        ElectronicDataset(tmp_path)


# --- the real thing ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_gpaw_labeller_two_atom_cell_reproduces_shared_label(shared_data, tmp_path):
    """BaTe (mp-1000, 2 atoms, 4x4x4 k): the labeller's defaults give the stored label (about 2-3 min)."""
    from diffase.labeling.gpaw_runner import find_gpaw_python

    try:
        find_gpaw_python()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    reference = read_label(shared_data / "electronic" / "mp-1000.npz")
    structure = Structure.from_str(reference["cif"], fmt="cif")
    report = label_structures([structure], tmp_path)
    assert report.labelled == ["0"]
    label = read_label(tmp_path / "0.npz")
    for key in ("energy", "efermi", "gap"):
        assert float(label[key]) == pytest.approx(float(reference[key]), abs=1e-4), key
    np.testing.assert_allclose(label["hirshfeld"], reference["hirshfeld"], atol=1e-4)
    np.testing.assert_allclose(label["rho32"], reference["rho32"], atol=1e-4)
    # the v1 DOS was folded on 1024 points and interpolated; v2 smears straight onto the grid: within 2% of the peak
    assert np.abs(label["dos"] - reference["dos"]).max() < 0.02 * reference["dos"].max()
    assert label["bader"][0] > 0.5 and label["bader"][1] < -0.5  # Ba gives electrons to Te
    assert float(label["bader"].sum()) == pytest.approx(0.0, abs=1e-3)
    assert (tmp_path / "logs" / "0.txt").read_text().count("iter:") > 3
