"""Dask scatter (diffase.parallel) on a LocalCluster of 2 single-threaded worker processes: the same documents
as the serial path, in input order, and a failing item reported in its place without stopping the others.

EMT and Lennard-Jones calculators keep this to seconds: what is under test is the scatter, not the physics."""

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from ase.calculators.lj import LennardJones
from pymatgen.core import Lattice, Structure

from diffase.diffusion.ve import VEProcess
from diffase.generators.score_model import ScoreModel
from diffase.parallel import error_entry, inpaint_task, relax_task, scatter_map
from diffase.transformations import InpaintIntercalantTransformation
from tests.helpers import tiny_net

distributed = pytest.importorskip("dask.distributed")

FAST = dict(num_levels=8, n_resample=2, jump_length=2, n_corrector=1)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def metals():
    """Four small, slightly perturbed fcc cells EMT knows (1-4 atoms)."""
    out = []
    for k, (element, a) in enumerate([("Cu", 3.61), ("Al", 4.05), ("Ni", 3.52), ("Cu", 3.7)]):
        s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), [element], [[0, 0, 0]])
        s = s.get_primitive_structure() if k % 2 else s
        s.perturb(0.05)
        out.append(s)
    return out


def overlapping() -> Structure:
    return Structure(Lattice.cubic(3.6), ["Cu", "Cu"], [[0, 0, 0], [0.01, 0, 0]])


def test_relax_through_dask_equals_serial_and_reports_a_bad_item(client):
    structures = metals()
    items = structures[:2] + [overlapping()] + structures[2:]
    kw = dict(calculator=EMT(), fmax=0.05, steps=50)
    scattered = scatter_map(client, relax_task, items, **kw)
    serial = [relax_task(s, **kw) for s in structures]
    assert len(scattered) == 5
    bad = scattered[2]
    assert bad["index"] == 2 and bad["error"].startswith("InvalidStructureError") and "traceback" in bad
    for got, want in zip(scattered[:2] + scattered[3:], serial):
        assert got.keys() == want.keys()
        assert got["final_energy"] == pytest.approx(want["final_energy"], abs=1e-10)
        assert got["steps"] == want["steps"] and got["converged"] == want["converged"]
        np.testing.assert_allclose(got["structure"].cart_coords, want["structure"].cart_coords, atol=1e-10)
        np.testing.assert_allclose(got["structure"].lattice.matrix, want["structure"].lattice.matrix, atol=1e-10)
    assert scatter_map(client, relax_task, [], **kw) == []


def test_tasks_run_single_threaded(client):
    def threads(_):
        import os

        import torch

        from diffase.parallel import pin_threads

        pin_threads()
        return torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]

    assert scatter_map(client, threads, [0, 1]) == [(1, "1"), (1, "1")]


def test_inpaint_through_dask_equals_serial(client, tmp_path):
    model = ScoreModel(tiny_net(), VEProcess(num_levels=8), elements=list(range(1, 95)), device="cpu")
    path = tmp_path / "tiny-score.pt"
    torch.save(model.to_checkpoint(), path)
    host = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.4), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    host.remove_species(["Mg"])
    wider = host.copy()
    wider.scale_lattice(host.volume * 1.2)
    transformation = InpaintIntercalantTransformation(
        "Mg", count=1, n_samples=2, model=str(path), relax=False, device="cpu", deduplicate=False, seed=5,
        calculator=LennardJones(sigma=2.3, epsilon=0.05, rc=6.0, smooth=True), **FAST)
    scattered = scatter_map(client, inpaint_task, [host, wider], transformation=transformation, n_best=2)
    serial = [inpaint_task(h, transformation, n_best=2) for h in (host, wider)]
    for got, want in zip(scattered, serial):
        assert [c["sample_index"] for c in got["candidates"]] == [c["sample_index"] for c in want["candidates"]]
        for a, b in zip(got["candidates"], want["candidates"]):
            assert a["energy_per_atom"] == pytest.approx(b["energy_per_atom"], abs=1e-9)
            np.testing.assert_allclose(a["structure"].frac_coords, b["structure"].frac_coords, atol=1e-6)


def test_error_entry_names_the_item_and_the_error():
    try:
        raise ValueError("no room for 3 Li")
    except ValueError as err:
        entry = error_entry(7, err)
    assert entry["index"] == 7 and entry["error"] == "ValueError: no room for 3 Li"
    assert "no room for 3 Li" in entry["traceback"]
