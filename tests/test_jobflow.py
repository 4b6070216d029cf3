"""jobflow Makers (diffase.workflows.makers): the flow "inpaint hosts -> relax -> NEB of the best" under
run_locally with a JobStore, its inpainting output equal to a direct apply_transformation call with the same
seed, and the CSP and labelling Makers.

A tiny score model and few noise levels keep sampling to seconds; CHGNet gives the inpainting single points
(the transformation takes a potential by name), a Lennard-Jones potential the relaxation and the NEB."""

import numpy as np
import pytest
from jobflow import JobStore, run_locally
from maggma.stores import MemoryStore
from monty.json import MontyDecoder, jsanitize
from pymatgen.core import Lattice, Structure

from diffase.transformations import InpaintIntercalantTransformation
from diffase.workflows import tasks
from diffase.workflows.makers import (
    CSPMaker,
    InpaintMaker,
    LabelMaker,
    NEBMaker,
    calculator_from_spec,
    inpaint_relax_neb_flow,
    relax_maker,
)
from tests.fake_gpaw import fake_gpaw_fixture  # noqa: F401 - the fake_gpaw fixture
from tests.helpers import rocksalt
from tests.test_inpainting import tiny_model_path  # noqa: F401 - the tiny score model fixture

pytest.importorskip("atomate2")
pytest.importorskip("chgnet")
pytest.importorskip("pymatgen.analysis.diffusion")

FAST = dict(num_levels=8, n_resample=2, jump_length=2, n_corrector=1)
LJ_PATH = "ase.calculators.lj.LennardJones"
LJ = dict(sigma=2.3, epsilon=0.05, rc=6.0, smooth=True)


def stored(store: JobStore, job) -> dict:
    """A job's output as the store gives it back, decoded (Structures as Structure objects)."""
    return MontyDecoder().process_decoded(store.get_output(job.uuid, load=True))


def empty_rocksalt(scale: float = 1.0) -> Structure:
    """Rock-salt MgO with the Mg removed (an fcc O host with room for guests), volume times ``scale``."""
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.4), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.remove_species(["Mg"])
    s.scale_lattice(s.volume * scale)
    return s


def test_inpaint_relax_neb_flow_runs_locally_and_matches_a_direct_call(tiny_model_path, tmp_path):
    hosts = [empty_rocksalt(), empty_rocksalt(1.15)]
    transformation = InpaintIntercalantTransformation("Mg", count=2, n_samples=3, model=tiny_model_path, relax=False,
                                                      device="cpu", deduplicate=False, seed=11, **FAST)
    neb = NEBMaker(species="Mg", calculator=LJ_PATH, calculator_kwargs=LJ, max_hop_length=5.0, max_hops=1,
                   neb_kwargs=dict(n_images=1, supercell=(1, 1, 1), steps=10, fmax=0.5))
    flow = inpaint_relax_neb_flow(hosts, InpaintMaker(transformation=transformation, n_best=2), neb,
                                  relax_maker(LJ_PATH, calculator_kwargs=LJ, steps=20), n_relax=2)
    assert len(flow.jobs) == 2 + 4 + 2  # per host: inpaint + 2 relaxations; then pick the best, NEB
    jsanitize(flow, strict=True)  # serialisable, as FireWorks and jobflow-remote need
    store = JobStore(MemoryStore(), additional_stores={"data": MemoryStore()})  # atomate2 puts trajectories in "data"
    run_locally(flow, store=store, create_folders=True, root_dir=tmp_path, ensure_success=True, raise_immediately=True, log=False)

    for h, host in enumerate(hosts):
        doc = stored(store, flow.jobs[3 * h])
        direct = transformation.apply_transformation(host, return_ranked_list=2)
        assert doc["host"] == host and len(doc["candidates"]) == len(direct) == 2
        for got, want in zip(doc["candidates"], direct):
            assert got["sample_index"] == want["sample_index"]
            assert got["energy_per_atom"] == want["energy_per_atom"]
            assert isinstance(got["energy_per_atom"], float)
            np.testing.assert_array_equal(got["structure"].frac_coords, want["structure"].frac_coords)

    relaxed = [stored(store, flow.jobs[3 * h + k]).output for h in range(2) for k in (1, 2)]  # atomate2 task docs
    energies = [r.energy_per_atom for r in relaxed]
    best = stored(store, flow.jobs[-2])
    assert best["index"] == int(np.argmin(energies)) and best["energy_per_atom"] == min(energies)
    barriers = stored(store, flow.jobs[-1])
    assert barriers["structure"] == best["structure"] and barriers["species"] == "Mg"
    [hop] = barriers["hops"]
    assert len(hop["images"]) == 3 and hop["energies"][0] == 0.0 and hop["supercell"] == [1, 1, 1]
    assert barriers["lowest_barrier"] == hop["barrier"] == max(hop["energies"])


def test_flow_needs_enough_candidates(tiny_model_path):
    transformation = InpaintIntercalantTransformation("Mg", count=1, model=tiny_model_path)
    with pytest.raises(ValueError, match="n_relax"):
        inpaint_relax_neb_flow([empty_rocksalt()], InpaintMaker(transformation=transformation, n_best=1), NEBMaker(),
                               n_relax=2)


def test_relax_maker_is_atomate2s_with_diffases_protocol(monkeypatch):
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    from diffase.errors import CheckpointNotFoundError

    maker = relax_maker("chgnet")
    assert isinstance(maker, ForceFieldRelaxMaker) and maker.force_field_name == "MLFF.CHGNet"
    assert maker.relax_kwargs == {"fmax": 0.1} and maker.steps == 500 and maker.relax_cell
    assert maker.optimizer_kwargs == {"optimizer": "FIRE"}
    monkeypatch.delenv("DIFFASE_MATTERSIM_CHECKPOINT", raising=False)
    with pytest.raises(CheckpointNotFoundError):
        relax_maker("mattersim")
    with pytest.raises(ValueError, match="import path"):
        relax_maker("m3gnet")
    assert calculator_from_spec("chgnet") == "chgnet"
    assert type(calculator_from_spec(LJ_PATH, LJ)).__name__ == "LennardJones"


def test_csp_maker_writes_into_the_job_folder(tiny_model_path, tmp_path):
    settings = dict(n=2, guest="Li", v0=16.0, formula_units=[2], num_levels=6, n_corrector=1, batch_size=2,
                    n_inpaint=1, min_distance=0.0, relax_steps=3,
                    inpainting=dict(num_levels=6, n_resample=2, jump_length=2, n_corrector=1, snr=0.4, batch_size=4))
    job = CSPMaker(settings=settings, model=tiny_model_path, calculator=LJ_PATH, calculator_kwargs=LJ,
                   device="cpu").make("Li5Si2")
    store = JobStore(MemoryStore())
    run_locally(job, store=store, create_folders=True, root_dir=tmp_path, ensure_success=True, raise_immediately=True, log=False)
    doc = stored(store, job)
    assert doc["composition"] == "Li5Si2" and doc["out"].startswith(str(tmp_path))
    unconditional = [r for r in doc["rows"] if r["stage"] == "unconditional"]
    assert [r["id"] for r in unconditional] == ["u0000", "u0001"]


def test_label_maker_equals_a_direct_label(fake_gpaw, tmp_path):
    nacl = rocksalt(5.6).get_primitive_structure()
    job = LabelMaker(settings={"grid": 8}).make(nacl, label_name="nacl")
    store = JobStore(MemoryStore())
    run_locally(job, store=store, ensure_success=True, raise_immediately=True, log=False)
    doc = stored(store, job)
    direct = tasks.label_structure(nacl, {"grid": 8}, "nacl")
    assert doc.keys() == direct.keys() and doc["material_id"] == "nacl"
    assert doc["energy"] == direct["energy"] and doc["rho32"] == direct["rho32"]
    assert np.asarray(doc["rho32"]).shape == (8, 8, 8) and np.asarray(doc["dos"]).shape[0] == 2
