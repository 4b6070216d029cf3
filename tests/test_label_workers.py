"""``diffase label --workers N``: sub-shards split a shard without overlap; workers are pinned to one thread."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

from diffase.errors import SettingsMismatchError
from diffase.labeling.settings import LabelSettings
from diffase.labeling.workers import label_structures_in_parallel, worker_shards
from tests.fake_gpaw import fake_gpaw_fixture  # noqa: F401 - the fake_gpaw fixture


def test_worker_shards_split_each_shard_without_overlap():
    assert worker_shards((0, 1), 3) == [(0, 3), (1, 3), (2, 3)]
    items = list(range(50))
    for count in (1, 2, 3):
        for workers in (1, 2, 4):
            taken = [items[i::n] for shard in range(count) for i, n in worker_shards((shard, count), workers)]
            flat = [x for part in taken for x in part]
            assert sorted(flat) == items  # every structure once, none twice
            for shard in range(count):  # the workers of shard i/n take exactly shard i/n
                mine = [x for i, n in worker_shards((shard, count), workers) for x in items[i::n]]
                assert sorted(mine) == items[shard::count]
    with pytest.raises(ValueError):
        worker_shards((0, 1), 0)


def nacl(a: float) -> Structure:
    return Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.mark.slow  # two spawned Pythons importing torch: about 20 s on the shared 2-core machine
def test_two_worker_processes_label_a_folder_once_each(fake_gpaw, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFASE_NUM_THREADS", "4")  # the workers must not inherit this
    structures = [nacl(4.0 + 0.1 * i) for i in range(5)]
    out = tmp_path / "out"
    report = label_structures_in_parallel(structures, out, workers=2)
    assert sorted(report.labelled) == ["0", "1", "2", "3", "4"] and not report.failed
    calls = [line.split() for line in fake_gpaw.read_text().splitlines()]
    assert sorted(float(c[0]) for c in calls) == pytest.approx([4.0, 4.1, 4.2, 4.3, 4.4])  # each once
    assert len({c[1] for c in calls}) == 2  # from two worker processes
    assert {c[2] for c in calls} == {"1"}  # each pinned to one thread
    assert sorted(p.name for p in out.glob("label-*.log")) == ["label-0-of-2.log", "label-1-of-2.log"]
    assert len((out / "index.csv").read_text().splitlines()) == 6

    # resuming: every structure is done, so the worker processes skip all (label_structures' resume, per worker)
    # and a changed preset is refused before any process starts
    with pytest.raises(SettingsMismatchError, match="kpoint_cap: 6 -> 4"):
        label_structures_in_parallel(structures, out, workers=2, settings=LabelSettings.from_preset("fast"))
    assert len(fake_gpaw.read_text().splitlines()) == 5
