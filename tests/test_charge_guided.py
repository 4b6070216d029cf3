"""ChargeGuidedGenerator (issue 12): structures with their charge density from a tiny A/X/L/C joint model, the region
moved to the latent grid and kept through the loop's known mechanism (with and without RePaint resampling), the
targets, ranking, CHGCARs, MSON, the errors, and ``diffase cathode --generate``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from monty.json import MontyDecoder, MontyEncoder
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Chgcar

from diffase.data import fields as F
from diffase.data.electronic.density import grid_in_cell
from diffase.generators.charge_guided import ChargeGuidedGenerator
from diffase.generators.joint import JointModel, sampling_schedule
from diffase.generators.joint_fields import joint_fields
from diffase.nn.conditioning import ConditionSpec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.nn.vqvae3d import ResidualBlock
from tests.helpers import DENSITY_ELEMENTS, density_model, tiny_vqvae

CONDITIONS = [ConditionSpec("chemsys_groups", "multi_hot", 17), ConditionSpec("band_gap", "scalar", 1, 1.0, 1.5)]
FAST = {"num_levels": 5, "progress": False, "n_samples": 3}


@pytest.fixture(scope="module")
def model():
    return density_model(conditions=CONDITIONS)


def monotone_vqvae():
    """A VQ-VAE whose latent grows with the density near each voxel: every convolution passes channel i to channel i
    through its centre tap, residual blocks are identities, both latent channels carry channel 0, the codebook is a
    line. (The encoder's group norms normalise each channel over the grid, so only contrasts are encoded.)"""
    vq = tiny_vqvae()
    with torch.no_grad():
        for module in vq.modules():
            if isinstance(module, torch.nn.Conv3d):
                module.weight.zero_()
                module.bias.zero_()
                c = module.kernel_size[0] // 2
                for i in range(min(module.in_channels, module.out_channels)):
                    module.weight[i, i, c, c, c] = 1.0
        for block in (m for m in vq.modules() if isinstance(m, ResidualBlock)):
            block.body[-1].weight.zero_()
        vq.encoder[-1].weight[1, 0] = 1.0
        vq.decoder[-1].weight.mul_(0.1)
        vq.decoder[-1].bias.fill_(0.4)  # log scale 0.4: ~0.025 e/A^3 where the normalised field is 0
        vq.quantiser.codebook.weight.copy_(torch.linspace(-2.0, 2.0, 16)[:, None].repeat(1, 2))
    return vq


def known_voxels_exact(result, mask, values) -> bool:
    """The known voxels hold ``values`` exactly, in the sampled cell or in the cell flipped to right-handed."""
    z, flip = result["density_latent"], (np.eye(3), -np.eye(3))
    return np.array_equal(z[mask], values[mask]) or np.array_equal(grid_in_cell(z, *flip)[mask], values[mask])


# --- generation -----------------------------------------------------------------------------------------
def test_unconditional_and_conditional_runs_return_structures_and_densities(model):
    plain = ChargeGuidedGenerator(model=model, seed=1, **FAST)
    results = plain.apply_transformation(None, return_ranked_list=True)
    assert plain.counts["generated"] == 3 and plain.counts["valid"] + plain.counts["invalid"] == 3
    assert len(results) == plain.counts["valid"] >= 1
    assert [r["sample_index"] for r in results] == sorted(r["sample_index"] for r in results)  # no region: in order
    for r in results:
        assert isinstance(r["structure"], Structure) and r["region_score"] is None
        assert r["charge_density"].shape == (32, 32, 32) and (r["charge_density"] > 0).all()
    guided = ChargeGuidedGenerator(model=model, conditions={"chemsys_groups": ["tm3d", "oxide"], "band_gap": 2.0},
                                   region="slab-2d-x", guidance_scale=2.0, seed=1, **FAST)
    ranked = guided.apply_transformation(None, return_ranked_list=2)
    assert 1 <= len(ranked) <= 2 and isinstance(guided.apply_transformation(None), Structure)
    scores = [r["region_score"] for r in guided.candidates()]
    assert scores == sorted(scores)
    for r in ranked:
        assert r["region_score"] == r["region_mean_density"]  # "low": the mean density inside the region
        inside, outside = r["charge_density"][r["region_mask"]], r["charge_density"][~r["region_mask"]]
        assert r["region_mean_density"] == pytest.approx(inside.mean())
        assert r["outside_mean_density"] == pytest.approx(outside.mean())


def test_predict_density_adds_the_surrogate_density_of_each_generated_structure(model):
    from diffase.predictors.density_model import DensityPredictor

    g = ChargeGuidedGenerator(model=model, seed=1, predict_density="density-mp20", **FAST)
    results = g.apply_transformation(None, return_ranked_list=True)
    predictor = DensityPredictor.load("density-mp20")
    for r in results:
        expected = predictor.predict_if_known(r["structure"])
        if expected is None:  # an element density-mp20 never saw (Na here)
            assert r["predicted_density"] is None and "Na" in r["structure"].composition
        else:
            np.testing.assert_allclose(r["predicted_density"], expected)
    assert "predicted_density" not in ChargeGuidedGenerator(model=model, seed=1, **FAST).candidates()[0]
    assert predictor.predict_if_known(Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5] * 3])) is None


def test_with_predict_density_the_ranking_uses_the_structures_predicted_density_in_the_region(model):
    from diffase.data.electronic.regions import region_density

    g = ChargeGuidedGenerator(model=model, seed=1, predict_density="density-mp20", region="channel-1d-z",
                              **{**FAST, "n_samples": 6})
    results = g.candidates()
    predicted = [r for r in results if r["predicted_density"] is not None]
    assert predicted and [r["score_source"] for r in results] == (
        ["predicted"] * len(predicted) + ["generated"] * (len(results) - len(predicted)))  # predicted ones first
    for r in predicted:
        stats = region_density(r["predicted_density"], r["region_mask"])
        assert r["region_score"] == r["predicted_region_mean_density"] == stats["region_mean_density"]
        assert r["region_mean_density"] != r["region_score"]  # the generated density's is kept beside it
    scores = [r["region_score"] for r in predicted]
    assert scores == sorted(scores)


def test_a_template_keeps_its_atom_count_and_species(model):
    template = Structure(Lattice.cubic(4.0), ["Na", "Cl", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.2, 0.3, 0.4]])
    g = ChargeGuidedGenerator(model=model, region="channel-1d-y", **FAST)
    for r in g.apply_transformation(template, return_ranked_list=True):
        assert r["structure"].composition == template.composition
        assert r["charge_density"].shape == (32, 32, 32)


@pytest.mark.parametrize("resample", [None, (2, 3)])
def test_known_latent_voxels_are_exact_at_the_end(model, resample):
    mask32 = np.zeros((32, 32, 32), dtype=bool)
    mask32[4:20, 8:16, :] = True  # an arbitrary box, not a preset
    g = ChargeGuidedGenerator(model=model, region=mask32, target=0.05, resample=resample, seed=2, **FAST)
    latent_mask, values = g.known_grids()[F.DENSITY_LATENT]
    assert latent_mask.shape == (8, 8, 8) and 0 < latent_mask.sum() < latent_mask.size
    results = g.candidates()
    assert results
    for r in results:
        assert known_voxels_exact(r, latent_mask, values)
        assert not np.allclose(r["density_latent"][~latent_mask], values[~latent_mask])
        flipped = not np.array_equal(r["density_latent"][latent_mask], values[latent_mask])
        expected = grid_in_cell(mask32, np.eye(3), -np.eye(3)) if flipped else mask32  # the region follows a flip
        assert np.array_equal(r["region_mask"], expected)
        assert r["region_score"] == pytest.approx(abs(r["region_mean_density"] - 0.05))


def test_resample_uses_the_repaint_schedule():
    assert sampling_schedule(6) == [5, 4, 3, 2, 1, 0, -1]
    levels = sampling_schedule(6, (2, 3))
    assert levels[0] == 5 and levels[-1] == -1 and len(levels) > 7
    assert any(b == a + 1 for a, b in itertools.pairwise(levels))  # it goes back up (re-noising)
    with pytest.raises(ValueError, match="jump_length"):
        sampling_schedule(4, (4, 2))


def test_a_low_target_encodes_a_lower_density_than_a_high_one():
    """On the latent level: with an encoder monotone in the density, the known voxels of "low" (0.01 e/A^3 in the
    region) are below those of "high" (1.0), and the generated crystals carry them exactly. Its decoder being
    monotone too, the decoded density is then lower inside the region than outside for "low", higher for "high"."""
    model = density_model(vqvae=monotone_vqvae())
    runs, decoded = {}, {}
    for target in ("low", "high"):
        g = ChargeGuidedGenerator(model=model, region="channel-1d-z", target=target, seed=3, **FAST)
        latent_mask, values = g.known_grids()[F.DENSITY_LATENT]
        runs[target] = values[latent_mask]
        results = g.candidates()
        assert results and all(known_voxels_exact(r, latent_mask, values) for r in results)
        grid = g.target_grid()
        assert np.unique(grid[g.region_grid()]).tolist() == [{"low": 0.01, "high": 1.0}[target]]
        decoded[target] = [(r["region_mean_density"], r["outside_mean_density"]) for r in results]
    assert runs["low"].mean() < runs["high"].mean()
    assert np.median(runs["low"][:, 0]) < np.median(runs["high"][:, 0])
    assert max(inside for inside, _ in decoded["low"]) < min(inside for inside, _ in decoded["high"])
    assert all(inside < outside for inside, outside in decoded["low"])
    assert all(inside > outside for inside, outside in decoded["high"])


def test_ranking_for_high_and_a_density_grid_target(model):
    high = ChargeGuidedGenerator(model=model, region="channel-1d-x", target="high", **FAST).candidates()
    assert [r["region_score"] for r in high] == sorted(-r["region_mean_density"] for r in high)
    grid = np.full((32, 32, 32), 0.3)
    g = ChargeGuidedGenerator(model=model, region="channel-1d-x", target=grid, **FAST)
    for r in g.candidates():
        inside = r["charge_density"][r["region_mask"]]
        assert r["region_score"] == pytest.approx(np.abs(inside - 0.3).mean())


# --- output ------------------------------------------------------------------------------------------------
def test_chgcars_hold_the_electron_count(model, tmp_path):
    g = ChargeGuidedGenerator(model=model, region="channel-1d-z", **FAST)
    results = g.apply_transformation(None, return_ranked_list=True)
    for r in results:  # the untrained model's cells can reach 1000s of Angstrom, past POSCAR's fixed-width columns
        r["structure"] = r["structure"].copy()
        r["structure"].scale_lattice(20.0 * len(r["structure"]))
    paths = g.write_chgcars(results, tmp_path / "chg")
    assert [p.name for p in paths] == [f"CHGCAR-{r['sample_index']}" for r in results]
    for path, r in zip(paths, results):
        chg = Chgcar.from_file(str(path))
        volume = r["structure"].lattice.volume
        assert chg.data["total"].mean() == pytest.approx(r["charge_density"].mean() * volume, rel=1e-6)
        assert len(chg.structure) == len(r["structure"])


def test_as_dict_holds_the_arguments_and_no_network(model, tmp_path):
    path = tmp_path / "tiny-chargediff.pt"
    torch.save(model.to_checkpoint(), path)
    mask = np.zeros((32, 32, 32), dtype=bool)
    mask[:, :, 10:20] = True
    g = ChargeGuidedGenerator(model=str(path), region=mask, target="high", resample=[2, 2],
                              conditions={"chemsys_groups": ["tm3d", "oxide"]}, **FAST)
    assert g.apply_transformation(None, return_ranked_list=1)  # the model loaded from the path
    text = json.dumps(g.as_dict(), cls=MontyEncoder)
    assert "state_dict" not in text and "JointModel" not in text
    again = MontyDecoder().process_decoded(json.loads(text))
    assert isinstance(again, ChargeGuidedGenerator) and again.model == str(path) and again.target == "high"
    assert np.array_equal(again.region, mask) and again.conditions == g.conditions and list(again.resample) == [2, 2]
    assert again._loaded == {}


def test_exported_lazily_from_diffase():
    import diffase

    assert diffase.ChargeGuidedGenerator is ChargeGuidedGenerator


# --- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"region": np.zeros((32, 32, 32), bool)}, "empty"),
    ({"region": np.ones((32, 32, 32), bool)}, "full"),
    ({"region": np.ones((32, 32), bool)}, r"\(N, N, N\) bool"),
    ({"region": "tube-z"}, "unknown region preset"),
    ({"region": "channel-1d-z", "region_width": 1.5}, "width"),
    ({"target": "medium"}, "'low', 'high'"),
    ({"target": -0.1, "region": "slab-2d-z"}, "positive"),
    ({"target": np.ones((32, 32, 32))}, "needs a region"),
    ({"resample": (3,)}, "jump_length, n_resample"),
    ({"n_samples": 0}, "n_samples"),
])
def test_bad_arguments_are_refused_at_once(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChargeGuidedGenerator(**kwargs)


def test_errors_found_with_the_model(model):
    def run(**kw):
        return ChargeGuidedGenerator(model=model, **{**FAST, **kw}).apply_transformation(None)

    wrong_size = np.zeros((16, 16, 16), bool)
    wrong_size[4:8] = True
    with pytest.raises(ValueError, match=r"\(32, 32, 32\)"):
        run(region=wrong_size)
    with pytest.raises(ValueError, match="unknown element group"):
        run(conditions={"chemsys_groups": ["tm3d", "chalcogen"]})
    with pytest.raises(ValueError, match="not trained with condition 'formation_energy'"):
        run(conditions={"formation_energy": -1.0})
    point = np.zeros((32, 32, 32), bool)
    point[5, 5, 5] = True
    with pytest.raises(ValueError, match="covers no latent voxel"):
        run(region=point)
    with pytest.raises(ValueError, match="covers every latent voxel"):
        run(region=~point)
    with pytest.raises(ValueError, match="jump_length"):
        run(region="channel-1d-z", resample=(5, 2))
    with pytest.raises(ValueError, match="needs conditions"):
        run(guidance_scale=1.5)


def test_a_model_without_the_density_field_is_refused():
    torch.manual_seed(0)
    net = JointDenoiser(JointDenoiserConfig(num_elements=len(DENSITY_ELEMENTS), hidden=8, num_layers=1, num_freqs=2,
                                            time_dim=8))
    plain = JointModel(net, joint_fields(len(DENSITY_ELEMENTS)), DENSITY_ELEMENTS, [0, 1, 1], device="cpu")
    with pytest.raises(ValueError, match="does not generate the charge density"):
        ChargeGuidedGenerator(model=plain, **FAST).apply_transformation(None)


# --- diffase cathode --generate -----------------------------------------------------------------------------
def test_cathode_cli_screens_generated_crystals(model, tmp_path, capsys):
    from diffase.cli import main

    path = tmp_path / "tiny-chargediff.pt"
    torch.save(model.to_checkpoint(), path)
    out = tmp_path / "out"
    base = ["cathode", "--generate", "3", "--model", str(path), "--num-levels", "4", "--neb", "0"]
    for extra, match in [(["--chemsys-groups", "tm3d,chalcogen"], "unknown element group"),
                         (["--target", "medium"], "'low', 'high'"), (["--resample", "x"], "--resample"),
                         ([str(tmp_path)], "not both")]:
        assert main([*base, *extra, "--out", str(out)]) == 2
        assert match in capsys.readouterr().err
    assert not out.exists()
    assert main(["cathode", "--out", str(out)]) == 2 and "--generate" in capsys.readouterr().err
    code = main([*base, "--chemsys-groups", "tm3d,oxide", "--region", "channel-1d-y", "--out", str(out)])
    assert code == 1  # the tiny model's elements (H, Li, O, Na, Cl) hold no transition metal: no survivor
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert 1 <= len(rows) <= 3 and all(row.startswith("gen-") for row in rows)
    assert "not a transition-metal O compound" in (out / "results.csv").read_text()
    capsys.readouterr()
    again = [*base, "--chemsys-groups", "tm3d,oxide", "--region", "channel-1d-y", "--out", str(out)]
    assert main(again) == 1 and f"resuming: {len(rows)} item(s) already screened" in capsys.readouterr().err
    assert main([*again, "--target", "high"]) == 2  # other crystals under the same names
    assert "other content" in capsys.readouterr().err
