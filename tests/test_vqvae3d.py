"""The charge-density VQ-VAE (diffase.nn.vqvae3d), its density readers and its trainer, on tiny models."""

import math

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data.electronic.density import chgcar_to_density, read_density
from diffase.data.electronic.density_sets import (
    read_anchor_layout,
    read_chgcar_folder,
    read_density_set,
)
from diffase.nn.vqvae3d import (
    DensityVQVAE,
    VectorQuantiser,
    VQVAE3DConfig,
    codebook_usage,
)
from diffase.train.vqvae_trainer import pool_upsample, random_rolls


def tiny(seed: int = 0, **kw) -> DensityVQVAE:
    torch.manual_seed(seed)
    return DensityVQVAE(VQVAE3DConfig(channels=[4, 8, 8], codebook_size=16, **kw)).eval()


def densities(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Positive smooth-ish densities (n, 32, 32, 32) in e/Angstrom^3, 1e-3 .. ~5."""
    g = torch.Generator().manual_seed(seed)
    return torch.exp(torch.randn(n, 32, 32, 32, generator=g)) * 0.3 + 1e-3


def test_shapes_32_to_8_by_d_and_back():
    net = tiny(latent_dim=5)
    rho = densities()
    z = net.encode(rho)
    assert z.shape == (2, 5, 8, 8, 8)
    z_q, indices = net.quantise(z)
    assert z_q.shape == z.shape and indices.shape == (2, 8, 8, 8)
    out = net.decode(z)
    assert out.shape == (2, 32, 32, 32) and bool((out > 0).all())
    with pytest.raises(ValueError, match="regrid"):
        net.encode(torch.ones(1, 16, 16, 16))


def test_log_scale_round_trip_in_e_per_cubic_angstrom():
    net = tiny()
    rho = torch.tensor([1e-4, 3.7e-3, 0.25, 1.0, 42.0, 100.0], dtype=torch.float64)
    x = net.to_log_scale(rho)
    assert torch.allclose(x, (torch.log10(rho) + 4) / 6, atol=1e-12)  # ChargeDIFF: [1e-4, 100] -> [0, 1]
    assert float(x[0]) == 0.0 and float(x[-1]) == 1.0
    assert torch.allclose(net.from_log_scale(x), rho, rtol=1e-10)
    clipped = net.from_log_scale(net.to_log_scale(torch.tensor([-0.3, 0.0, 1e3], dtype=torch.float64)))
    assert torch.allclose(clipped, torch.tensor([1e-4, 1e-4, 100.0], dtype=torch.float64))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rolling_the_grid_by_4_points_rolls_the_latent_by_one_voxel(axis):
    net = tiny()
    rho = densities(1)
    z = net.encode(rho)
    z_rolled = net.encode(torch.roll(rho, 4, dims=1 + axis))
    assert torch.allclose(z_rolled, torch.roll(z, 1, dims=2 + axis), atol=1e-5)
    assert not torch.allclose(z_rolled, z, atol=1e-3)  # the test can fail: the latent does move
    # and the decoder maps a one-voxel latent roll back to a 4-point grid roll
    out = net.decode(z, quantise=False)
    assert torch.allclose(net.decode(torch.roll(z, 1, dims=2 + axis), quantise=False),
                          torch.roll(out, 4, dims=1 + axis), rtol=1e-4, atol=1e-6)


def test_straight_through_gradient_reaches_the_encoder():
    net = tiny().train()
    x = net.to_log_scale(densities())
    recon, _, _ = net(x)
    (recon - x).abs().mean().backward()  # the reconstruction term alone: its only path to the encoder is ST
    first = net.encoder[0].weight.grad
    assert first is not None and float(first.abs().sum()) > 0


def test_quantiser_picks_the_nearest_code_and_its_loss():
    q = VectorQuantiser(4, 2, commitment=0.25)
    with torch.no_grad():
        q.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    q.eval()
    z = torch.tensor([[0.9, 0.2], [0.1, 0.05], [-0.6, -0.7], [0.2, 0.8]]).T.reshape(1, 2, 4, 1, 1)
    z_q, loss, indices = q(z)
    assert indices.flatten().tolist() == [1, 0, 3, 2]
    assert torch.allclose(z_q, q.lookup(indices))
    sq = float(((z_q - z) ** 2).mean())
    assert math.isclose(float(loss.detach()), 1.25 * sq, rel_tol=1e-6)


def test_dead_codes_move_onto_encoder_outputs_in_training():
    q = VectorQuantiser(8, 3, commitment=1.0).train()
    z = torch.randn(2, 3, 4, 4, 4) + 10.0  # far from the initial codes, all near 0
    q(z)
    flat = z.movedim(1, -1).reshape(-1, 3)
    # every code unused by the first batch now sits on an encoder output
    dist = (q.codebook.weight[:, None] - flat[None]).norm(dim=-1).min(dim=1).values
    assert int((dist < 1e-6).sum()) == 7  # the eighth, chosen by all voxels, stays (it is not dead)
    q.eval()
    before = q.codebook.weight.clone()
    q(z)
    assert torch.equal(before, q.codebook.weight)  # no restarts outside training


def test_codebook_usage_counts_codes_and_perplexity():
    usage = codebook_usage(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 8)
    assert usage["codes_used"] == 4 and usage["fraction_used"] == 0.5
    assert math.isclose(usage["perplexity"], 4.0, rel_tol=1e-9)
    assert math.isclose(codebook_usage(torch.zeros(10, dtype=torch.long), 8)["perplexity"], 1.0)


def test_random_rolls_are_translations_and_pool_upsample_keeps_the_mean():
    torch.manual_seed(0)
    x = densities(3)
    rolled = random_rolls(x)
    for g, r in zip(x, rolled):
        assert torch.allclose(torch.sort(g.flatten()).values, torch.sort(r.flatten()).values)
    assert not torch.equal(rolled, x)
    rho = densities(1)[0].double().numpy()
    smooth = pool_upsample(rho)
    assert smooth.shape == rho.shape and math.isclose(smooth.mean(), rho.mean(), rel_tol=1e-12)
    const = np.full((32, 32, 32), 0.7)
    assert np.allclose(pool_upsample(const), const)


def test_checkpoint_round_trip(tmp_path):
    net = tiny(seed=3)
    path = tmp_path / "vq.pt"
    torch.save(net.checkpoint(train={"step": 7}), path)
    loaded = DensityVQVAE.load(str(path))
    rho = densities(1)
    assert torch.equal(loaded.encode(rho), net.encode(rho))
    assert loaded.config == net.config and loaded.meta["train"]["step"] == 7
    assert torch.equal(loaded.quantiser.usage, net.quantiser.usage)


def test_chgcar_reader_regrids_a_real_chgcar_keeping_its_electrons(shared_data, tmp_path):
    source = shared_data / "pmg" / "command_line_chargemol_spin_unpolarized_CHGCAR.gz"  # NaCl, 56^3, 8 e
    (tmp_path / "NaCl_CHGCAR.gz").symlink_to(source)
    (tmp_path / "notes.txt").write_text("not a density")
    (entry,) = read_chgcar_folder(tmp_path)
    original = read_density(source)
    assert original.dim == (56, 56, 56) and entry.rho.shape == (32, 32, 32)
    assert entry.structure.composition.reduced_formula == "NaCl"
    assert math.isclose(entry.electrons, original.data["total"].mean(), rel_tol=1e-6)
    assert math.isclose(entry.electrons, 8.0, rel_tol=1e-6)
    assert not np.allclose(entry.rho, entry.rho.mean())  # a real field, not its mean
    assert read_density_set(tmp_path)[0].name == "NaCl_CHGCAR.gz"


def test_resampling_a_72_cubed_chgcar_to_32_conserves_electrons(shared_data):
    chg = read_density(shared_data / "pmg" / "io_vasp_outputs_CHGCAR.Fe3O4_ref.gz")
    from diffase.data.electronic.density import regrid

    rho = chgcar_to_density(chg)
    coarse = regrid(rho, 32)
    volume = chg.structure.lattice.volume
    assert rho.shape == (72, 72, 72)
    assert math.isclose(coarse.mean() * volume, rho.mean() * volume, rel_tol=1e-9)


def _anchor_folder(root, units_scale=1.0):
    structure = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (root / "structure").mkdir(parents=True)
    (root / "charge_density").mkdir()
    rng = np.random.default_rng(0)
    rows, grids = [], {}
    for mid in ("mp-1", "mp-2"):
        grids[mid] = rng.uniform(0.01, 2.0, (32, 32, 32))
        np.save(root / "charge_density" / f"{mid}.npy", grids[mid] * units_scale)
        cif = structure.to(fmt="cif").replace('"', "'")
        rows.append(f'{mid},"{cif}"')
    (root / "structure" / "train.csv").write_text("material_id,cif\n" + "\n".join(rows) + "\n")
    return structure, grids


def test_anchor_layout_reader(tmp_path):
    _, grids = _anchor_folder(tmp_path / "a")
    entries = read_anchor_layout(tmp_path / "a", "train")
    assert [e.name for e in entries] == ["mp-1", "mp-2"]
    assert np.allclose(entries[1].rho, grids["mp-2"], rtol=1e-6)
    assert len(entries[0].structure) == 2 and math.isclose(entries[0].structure.volume, 64.0)
    assert [e.name for e in read_density_set(tmp_path / "a")] == ["mp-1", "mp-2"]
    _anchor_folder(tmp_path / "b", units_scale=64.0)  # VASP's rho x V
    assert np.allclose(read_anchor_layout(tmp_path / "b", units="e")[0].rho, grids["mp-1"], rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="structure/"):
        read_anchor_layout(tmp_path / "a", "val")
    (tmp_path / "a" / "charge_density" / "mp-2.npy").unlink()
    with pytest.raises(FileNotFoundError, match="mp-2"):
        read_anchor_layout(tmp_path / "a")


def test_label_folder_reader(shared_data):
    entries = read_density_set(shared_data / "electronic")
    assert len(entries) >= 100 and all(e.rho.shape == (32, 32, 32) for e in entries)
    assert all(e.rho.dtype == np.float32 for e in entries)


def test_the_shipped_checkpoint_loads_by_name():
    import diffase

    net = diffase.load_model("vqvae-density", device="cpu")
    assert isinstance(net, DensityVQVAE) and not net.training
    assert net.meta["held_out"]["n_materials"] >= 30 and net.meta["train"]["n_labels"] >= 100
    assert net.encode(densities(1)).shape == (1, net.config.latent_dim, 8, 8, 8)
