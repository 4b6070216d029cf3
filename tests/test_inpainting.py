"""Guest inpainting: exact hosts, RePaint schedule, the one-to-many transformation contract, bad input."""

import numpy as np
import pytest
import torch
from monty.json import MontyDecoder
from pymatgen.alchemy.materials import TransformedStructure
from pymatgen.alchemy.transmuters import StandardTransmuter
from pymatgen.core import Lattice, Structure
from pymatgen.transformations.standard_transformations import SupercellTransformation

from diffase.data import fields as F
from diffase.diffusion.schedules import repaint_schedule
from diffase.errors import DisorderedStructureError, HostTooDenseError, SamplingError, UnknownElementError
from diffase.generators.inpainting import InpaintingSettings, inpaint_guests, prepare_hosts
from diffase.generators.score_model import ScoreModel
from diffase.diffusion.ve import VEProcess
from diffase.transformations import InpaintIntercalantTransformation, inpaint_atoms
from tests.helpers import tiny_net

FAST = dict(num_levels=8, n_resample=2, jump_length=2, n_corrector=1)


def listing_1(t_total, jump_length, n_resample):
    """RePaint's get_schedule_jump (Lugmayr et al. 2022), the inpainting paper's Listing 1, transcribed."""
    jumps = {}
    for j in range(0, t_total - jump_length, jump_length):
        jumps[j] = n_resample - 1
    t, ts = t_total, []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(jump_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


@pytest.mark.parametrize("t_total,jump,r", [(10, 2, 2), (12, 3, 3), (20, 10, 3), (25, 5, 1), (200, 10, 3)])
def test_repaint_schedule_equals_listing_1(t_total, jump, r):
    assert repaint_schedule(t_total, jump, r) == listing_1(t_total, jump, r)


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory):
    model = ScoreModel(tiny_net(), VEProcess(num_levels=8), elements=list(range(1, 95)), device="cpu")
    path = tmp_path_factory.mktemp("models") / "tiny-score.pt"
    torch.save(model.to_checkpoint(), path)
    return str(path)


@pytest.fixture(scope="module")
def host():
    """Rock-salt MgO with the Mg removed: an fcc O host with room for guests."""
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.4), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.remove_species(["Mg"])
    return s


def test_host_atoms_end_exactly_where_given(host, tiny_model_path, monkeypatch):
    """Host atoms are known to the sampler, which returns them exactly where given; candidates hold them bit
    for bit (even a site outside [0, 1)) and put the guests where the sampler left them.

    The candidates' host sites are copied from the input host, so they alone cannot show that the sampler
    kept the host: the sampler's own output is checked too (the spy below records it)."""
    import diffase.generators.score_model as score_model

    runs = []
    real_sample = score_model.sample

    def spy(*args, **kwargs):
        out = real_sample(*args, **kwargs)
        runs.append((kwargs.get("known") or {}, {key: value.clone() for key, value in out.items()}))
        return out

    monkeypatch.setattr(score_model, "sample", spy)
    shifted = host.copy()
    shifted.translate_sites([0], [-0.2, 1.3, 0.1])  # a host site outside [0, 1) stays as given, bit for bit
    hosts, guests = prepare_hosts(shifted, "Mg", count=2)
    batches = list(inpaint_guests(hosts, guests, n_samples=3, model=tiny_model_path,
                                  settings=InpaintingSettings(**FAST, batch_size=2), device="cpu"))
    assert [len(b) for b in batches] == [2, 1] and len(runs) == 2
    n_host = len(shifted)
    for batch, (known, out) in zip(batches, runs):
        # what the sampler was told: the host atoms of every crystal are known, at the host's positions
        assert F.POSITIONS in known, "the host positions were not given to the sampler as known values"
        mask, given = known[F.POSITIONS]
        host_rows = torch.arange(len(mask)) % (n_host + 2) < n_host
        assert torch.equal(mask.bool(), host_rows)
        expected = torch.as_tensor(np.tile(shifted.cart_coords, (len(batch), 1)), dtype=given.dtype)
        assert torch.equal(given[host_rows], expected)
        # what the sampler returned: the host exactly as given
        assert torch.equal(out[F.POSITIONS][host_rows], given[host_rows])
        guests_out = out[F.POSITIONS][~host_rows].double().numpy().reshape(len(batch), 2, 3)
        for cand, sampled in zip(batch, guests_out):
            s = cand.structure
            assert len(s) == n_host + 2 and s.composition["Mg"] == 2
            for i, site in enumerate(shifted):
                assert (s[i].frac_coords == site.frac_coords).all() and s[i].species == site.species
            frac = s.frac_coords[cand.guest_indices]
            assert ((frac >= 0) & (frac < 1)).all()
            d = frac - s.lattice.get_fractional_coords(sampled)  # the guests the sampler made, wrapped
            assert np.allclose(d, np.round(d), atol=1e-5)


def test_sample_depends_on_seed_and_index_alone(host, tiny_model_path):
    """Sample i is the same in a run of 2 or 3 samples, in batches of 2 or 3, and after a resume that skips
    the finished ones (before per-sample seeds, growing a run from 2 to 3 samples changed samples 0 and 1)."""
    hosts, guests = prepare_hosts(host, "Mg", count=1)

    def run(n_samples, batch_size, skip=()):
        settings = InpaintingSettings(**FAST, batch_size=batch_size)
        return {c.sample_index: c.structure for b in inpaint_guests(
            hosts, guests, n_samples=n_samples, model=tiny_model_path, settings=settings, device="cpu", seed=3,
            skip=skip) for c in b}

    two, three = run(2, 2), run(3, 3)
    assert two[0] == three[0] and two[1] == three[1]
    assert three[0] != three[1]
    resumed = run(3, 2, skip=[(0, 0), (0, 1)])
    assert list(resumed) == [2] and resumed[2] == three[2]


@pytest.fixture(scope="module")
def transformation(tiny_model_path):
    return InpaintIntercalantTransformation("Mg", count=2, n_samples=4, model=tiny_model_path, relax=False,
                                            device="cpu", deduplicate=False, **FAST)


def test_one_to_many_contract(host, transformation):
    assert transformation.is_one_to_many and transformation.inverse is None
    best = transformation.apply_transformation(host)
    assert isinstance(best, Structure) and best.composition["Mg"] == 2
    top2 = transformation.apply_transformation(host, return_ranked_list=2)
    every = transformation.apply_transformation(host, return_ranked_list=True)
    assert len(top2) == 2 and 2 <= len(every) <= 4
    energies = [r["energy_per_atom"] for r in every]
    assert energies == sorted(energies) and top2[0]["structure"] == best
    for key in ("structure", "energy_per_atom", "fmax_before_relax", "sample_index", "method"):
        assert key in top2[0]


def test_as_dict_round_trip(transformation):
    d = transformation.as_dict()
    back = MontyDecoder().process_decoded(d)
    assert isinstance(back, InpaintIntercalantTransformation) and back.as_dict() == d
    multi = InpaintIntercalantTransformation({"Li": 1, "Na": 2}, method="hybrid")
    assert InpaintIntercalantTransformation.from_dict(multi.as_dict()).guest == {"Li": 1, "Na": 2}


def test_works_in_a_transmuter_chain(host, transformation):
    transmuter = StandardTransmuter([TransformedStructure(host, [])], [SupercellTransformation([[1, 0, 0], [0, 1, 0], [0, 0, 1]])])
    transmuter.append_transformation(transformation, extend_collection=3)
    n_valid = len(transformation.apply_transformation(host, return_ranked_list=True))  # same seed, same samples
    assert len(transmuter) == min(3, n_valid) >= 2
    assert all(ts.final_structure.composition["Mg"] == 2 for ts in transmuter)
    history = transmuter[0].history[-1]
    assert history["@class"] == "InpaintIntercalantTransformation" and "energy_per_atom" in history["output_parameters"]
    TransformedStructure.from_dict(transmuter[0].as_dict())  # serialisable with its outputs


def test_ase_front_end(host, tiny_model_path):
    from pymatgen.io.ase import AseAtomsAdaptor

    out = inpaint_atoms(AseAtomsAdaptor.get_atoms(host), "Mg", 1, n_best=2, n_samples=2, model=tiny_model_path,
                        relax=False, device="cpu", deduplicate=False, **FAST)
    assert len(out) == 2 and "energy_per_atom" in out[0].info and out[0].get_chemical_symbols().count("Mg") == 1


@pytest.mark.parametrize("count", [0, -2])
def test_guest_count_must_be_positive(host, count):
    with pytest.raises(ValueError, match="positive integer"):
        prepare_hosts(host, "Mg", count=count)


def test_unknown_species(host, tiny_model_path):
    with pytest.raises(UnknownElementError, match="not a chemical element"):
        prepare_hosts(host, "Xx", count=1)
    limited = ScoreModel(tiny_net(), VEProcess(num_levels=4), elements=[8, 12], device="cpu")
    hosts, guests = prepare_hosts(host, "Zn", count=1)
    with pytest.raises(UnknownElementError, match="never saw"):
        next(inpaint_guests(hosts, guests, model=limited, device="cpu"))


def test_disordered_host(host):
    bad = host.copy()
    bad.replace(0, {"O": 0.5, "F": 0.5})
    with pytest.raises(DisorderedStructureError):
        prepare_hosts(bad, "Li", count=1)


def test_host_too_dense_names_the_room_and_the_fix(host):
    with pytest.raises(HostTooDenseError, match="room for at most .* supercell"):
        prepare_hosts(host, "Mg", count=40)


def test_nan_during_sampling_is_a_clear_error(host):
    class NaNNet(torch.nn.Module):
        def forward(self, batch):
            return torch.full_like(batch["pos"], float("nan"))

    broken = ScoreModel(tiny_net(), VEProcess(num_levels=4), device="cpu")
    broken.net = NaNNet()
    hosts, guests = prepare_hosts(host, "Mg", count=1)
    with pytest.raises(SamplingError, match="NaN"):
        next(inpaint_guests(hosts, guests, model=broken, device="cpu", settings=InpaintingSettings(num_levels=4, n_resample=1)))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method"):
        InpaintIntercalantTransformation("Li", count=1, method="magic")
    with pytest.raises(ValueError, match="jump_length"):
        InpaintingSettings(num_levels=5, jump_length=10, n_resample=2)


def test_cli_streams_ranks_and_resumes(host, tiny_model_path, tmp_path, capsys, monkeypatch):
    import diffase.generators.score_model as score_model
    from diffase.cli import main

    host_file = tmp_path / "host.cif"
    host.to(filename=str(host_file))
    args = ["inpaint", str(host_file), "--guest", "Mg", "--count", "2", "--samples", "3", "--out", str(tmp_path / "r"),
            "--model", tiny_model_path, "--levels", "8", "--resample", "2", "--jump", "2", "--corrector", "1",
            "--device", "cpu", "--threads", "1", "--no-relax"]
    assert main(args) == 0
    out = tmp_path / "r"
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3 and len(list((out / "candidates").glob("*.cif"))) == 3
    assert (out / "best-1.cif").exists() and (out / "ranking.csv").read_text().startswith("rank,cif,method")
    first = capsys.readouterr().out

    def no_sampling(*args, **kwargs):
        raise AssertionError("the resumed run sampled again")

    monkeypatch.setattr(score_model, "sample", no_sampling)  # the same lines alone could come from a redone run
    assert main(args) == 0  # resume: nothing is redone
    assert (out / "results.jsonl").read_text().splitlines() == lines
    assert "3 candidates" in capsys.readouterr().out and "3 candidates" in first


def test_evaluation_relaxes_and_reports_scores(host):
    from diffase.generators.inpainting import with_guests
    from diffase.transformations import evaluate_candidate

    near_rocksalt = with_guests(host, [12] * 4, (host.frac_coords + [0.52, 0.5, 0.49]) @ host.lattice.matrix, 0, 0,
                                "diffusion")
    result = evaluate_candidate(near_rocksalt, "chgnet", relax=True, refine_guests=True, fmax=0.1, relax_steps=200)
    assert result["valid"] and result["converged"]
    assert result["relax_delta_e"] <= 1e-6 and result["energy_per_atom"] < -5.0  # MgO: ~ -5.9 eV/atom in CHGNet
    assert result["structure"].composition.reduced_formula == "MgO" and result["max_displacement"] < 0.5
