"""ChargeDIFF's charge-density latent as a generated grid field of the joint backbone (issue 12): the probe branch's
symmetries (rotation, atom permutation, translation by one voxel), the field's DDPM and batching, a training step
through joint_loss, old checkpoints unchanged, sampling with the decoded density, and the CHGCAR writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Chgcar

from diffase.data import fields as F
from diffase.data.batch import split
from diffase.data.electronic.density import grid_in_cell, write_record_chgcar
from diffase.data.structures import structure_to_record
from diffase.generators.descriptor_decoding import VQVAE_ENTRY, decode_density
from diffase.generators.joint import JointModel, encode_records, make_batch
from diffase.generators.joint_fields import density_field
from diffase.hub import read_checkpoint
from diffase.nn.probe_branch import nearest_probes
from diffase.train.joint_trainer import joint_loss
from tests.helpers import DENSITY_ELEMENTS as ELEMENTS
from tests.helpers import DENSITY_LATENT as LATENT
from tests.helpers import (
    density_fields,
    density_model,
    density_net,
    skewed_cell,
    tiny_vqvae,
)


def primitive_rocksalt(a: float = 4.4) -> Structure:
    return Structure(Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), ["Na", "Cl"],
                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def generic_cell() -> Structure:
    """Four atoms at generic positions of a triclinic cell."""
    return Structure(Lattice.from_parameters(4.1, 4.6, 5.2, 80, 95, 105), ["Li", "O", "Cl", "O"],
                     [[0.11, 0.23, 0.37], [0.52, 0.61, 0.18], [0.83, 0.05, 0.71], [0.3, 0.9, 0.55]])


def noisy_batch(structures=None, dtype=torch.float64, seed: int = 1) -> dict:
    structures = structures or [primitive_rocksalt(), skewed_cell(), generic_cell()]
    batch = make_batch(encode_records([structure_to_record(s) for s in structures], ELEMENTS), dtype=dtype)
    batch[F.TIME] = torch.tensor([0.3, 0.6, 0.8][: len(structures)], dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    batch[F.DENSITY_LATENT] = torch.randn(len(structures), *LATENT, generator=gen, dtype=dtype)
    return batch


@pytest.fixture(scope="module")
def net():
    return density_net(density_fields()).eval()


# --- symmetries of the probe branch -------------------------------------------------------------------
def test_outputs_are_invariant_to_rotating_the_cartesian_frame(net):
    batch = noisy_batch()
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    rotated = {**batch, F.CELL: batch[F.CELL] @ q.T}  # every lattice vector rotated; fractional coordinates kept
    with torch.no_grad():
        out, out_rot = net(batch), net(rotated)
    assert out[F.DENSITY_LATENT].shape == (3, *LATENT)
    for key in (F.DENSITY_LATENT, F.TYPE_TOKENS, F.FRAC_COORDS):
        torch.testing.assert_close(out_rot[key], out[key], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out_rot[F.CELL], out[F.CELL] @ q.T, rtol=1e-9, atol=1e-9)


def test_atom_outputs_follow_a_permutation_and_the_latent_output_does_not_change(net):
    batch = noisy_batch()
    perm = torch.tensor([1, 0, 4, 2, 3, 8, 6, 5, 7])  # atoms permuted within each crystal (2 + 3 + 4 atoms)
    permuted = {**batch, **{k: batch[k][perm] for k in (F.TYPE_TOKENS, F.FRAC_COORDS, F.POSITIONS,
                                                         F.ATOMIC_NUMBERS)}}
    with torch.no_grad():
        out, out_perm = net(batch), net(permuted)
    torch.testing.assert_close(out_perm[F.DENSITY_LATENT], out[F.DENSITY_LATENT], rtol=1e-9, atol=1e-9)
    for key in (F.TYPE_TOKENS, F.FRAC_COORDS):
        torch.testing.assert_close(out_perm[key], out[key][perm], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out_perm[F.CELL], out[F.CELL], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_translating_every_atom_by_one_voxel_rolls_the_probe_grid_output(net, axis):
    """Rock salt's atoms sit on probes (ties among nearest probes): the kept ties make the roll exact too. The
    tolerance is the backbone's: its atom-atom Fourier features use float32-rounded 2 pi k, periodic to ~1e-7."""
    batch = noisy_batch()
    shift = torch.zeros(3, dtype=torch.float64)
    shift[axis] = 1.0 / LATENT[0]
    moved = {**batch, F.FRAC_COORDS: torch.remainder(batch[F.FRAC_COORDS] + shift, 1.0),
             F.DENSITY_LATENT: torch.roll(batch[F.DENSITY_LATENT], 1, dims=1 + axis)}
    with torch.no_grad():
        out, out_moved = net(batch), net(moved)
    torch.testing.assert_close(out_moved[F.DENSITY_LATENT], torch.roll(out[F.DENSITY_LATENT], 1, dims=1 + axis),
                               rtol=1e-6, atol=1e-6)
    for key in (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL):
        torch.testing.assert_close(out_moved[key], out[key], rtol=1e-6, atol=1e-6)
    assert not torch.allclose(out_moved[F.DENSITY_LATENT], out[F.DENSITY_LATENT], atol=1e-3)  # it did move


def test_each_atom_talks_to_its_k_nearest_probes_and_ties_are_all_kept():
    cell = torch.tensor(primitive_rocksalt().lattice.matrix, dtype=torch.float64)
    frac = torch.tensor([[0.0, 0.0, 0.0], [0.51, 0.47, 0.33]], dtype=torch.float64)
    atom, probe = nearest_probes(frac, (cell @ cell.T)[None], torch.zeros(2, dtype=torch.long), 8, 5)
    counts = torch.bincount(atom, minlength=2).tolist()
    assert counts[1] == 5  # a generic position: exactly k
    assert counts[0] > 5  # the atom on probe 0: its 12 fcc neighbour probes tie for second place, all kept
    assert 0 in probe[atom == 0].tolist()


# --- the field: DDPM, batching, training ----------------------------------------------------------------
def test_ddpm_corrupts_and_scores_one_latent_row_per_crystal():
    field = density_field(1.0, LATENT)
    assert field.kind == "grid" and field.key == F.DENSITY_LATENT
    batch = noisy_batch(dtype=torch.float32)
    x0 = batch[F.DENSITY_LATENT]
    t_rows = field.step_rows(torch.tensor([1, 500, 1000]), batch)
    assert t_rows.shape == (3,)
    x_t, eps = field.corrupt(x0, t_rows, generator=torch.Generator().manual_seed(0))
    assert x_t.shape == eps.shape == (3, *LATENT)
    torch.testing.assert_close(x_t[0], x0[0], atol=0.05, rtol=0)  # t = 1: barely noised
    assert field.loss(torch.zeros_like(eps), eps, x_t, t_rows).shape == ()
    assert field.process.prior(batch).shape == (3, *LATENT)
    with pytest.raises(ValueError, match="n, n, n, d"):
        density_field(1.0, (8, 8, 3))


def test_make_batch_carries_the_latent_per_crystal_and_split_gives_it_back():
    records = encode_records([structure_to_record(s) for s in (primitive_rocksalt(), skewed_cell())], ELEMENTS)
    latents = [np.full(LATENT, float(i), dtype=np.float32) for i in range(2)]
    batch = make_batch([{**r, F.DENSITY_LATENT: z} for r, z in zip(records, latents)])
    assert batch[F.DENSITY_LATENT].shape == (2, *LATENT) and batch[F.DENSITY_LATENT].dtype == torch.float32
    for rec, z in zip(split(batch), latents):
        np.testing.assert_array_equal(rec[F.DENSITY_LATENT], z)


def test_a_training_step_through_joint_loss_lowers_the_loss_on_one_batch():
    fields = density_fields(weights=(10.0, 1.0, 1.0))  # the paper's A 10, X 1, L 1, C 1
    net = density_net(fields, dtype=torch.float32)
    records = encode_records([structure_to_record(s) for s in (primitive_rocksalt(), generic_cell())], ELEMENTS)
    rng = np.random.default_rng(0)
    items = [{"record": {**r, F.DENSITY_LATENT: rng.normal(size=LATENT).astype(np.float32)}, "cond": {}}
             for r in records]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)

    def loss():
        total, parts = joint_loss(net, fields, items, p_uncond=0.0, generator=torch.Generator().manual_seed(0))
        assert set(parts) == {"types", "coords", "lattice", "density_latent"}
        return total

    first = loss()
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.8 * first.item()


# --- old checkpoints ------------------------------------------------------------------------------------
def test_a_checkpoint_without_the_grid_field_builds_no_probe_modules_and_ignores_a_latent():
    ckpt = read_checkpoint("joint-mp20")
    model = JointModel.from_checkpoint(ckpt, device="cpu")
    assert model.net.probes is None and model.net.config.grid_fields == {}
    assert set(model.net.state_dict()) == set(ckpt["state_dict"])
    s = Structure(Lattice.from_parameters(4.1, 4.4, 5.0, 85, 95, 100), ["O", "O", "Na"],
                  [[0.1, 0.2, 0.3], [0.6, 0.5, 0.8], [0.33, 0.7, 0.1]])
    batch = make_batch(encode_records([structure_to_record(s)], model.elements))
    batch[F.TIME] = torch.tensor([0.37])
    with torch.no_grad():
        out = model.net(batch)
        out_with_latent = model.net({**batch, F.DENSITY_LATENT: torch.randn(1, *LATENT)})
    assert set(out) == {F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL}
    for key, value in out.items():
        assert torch.equal(out_with_latent[key], value)


# --- sampling, decoding, CHGCAR -------------------------------------------------------------------------
def test_sample_returns_the_decoded_density_and_the_chgcar_holds_its_electrons(tmp_path):
    model = density_model()
    (records,) = model.sample(2, num_atoms=3, num_levels=4, seed=0)
    vq = tiny_vqvae()
    for rec in records:
        assert rec[F.DENSITY_LATENT].shape == LATENT
        rho = rec[F.CHARGE_DENSITY]
        assert rho.shape == (32, 32, 32) and rho.dtype == np.float64 and (rho > 0).all()
        assert np.linalg.det(rec[F.CELL]) > 0
    for rec in records:  # quantise + decode the latent; a cell flipped to right-handed maps both grids alike
        latent, flip = rec[F.DENSITY_LATENT], (np.eye(3), -np.eye(3))
        as_sampled = decode_density(latent, vq)
        flipped = grid_in_cell(decode_density(grid_in_cell(latent, *flip), vq), *flip)
        assert np.allclose(rec[F.CHARGE_DENSITY], as_sampled) or np.allclose(rec[F.CHARGE_DENSITY], flipped)
    rec = {**records[0], F.ATOMIC_NUMBERS: np.array([3, 8, 8]), "valid": True}
    path = write_record_chgcar(rec, tmp_path / "CHGCAR")
    chg = Chgcar.from_file(str(path))
    volume = abs(np.linalg.det(rec[F.CELL]))
    assert chg.data["total"].mean() == pytest.approx(rec[F.CHARGE_DENSITY].mean() * volume, rel=1e-6)
    with pytest.raises(ValueError, match="charge_density"):
        write_record_chgcar({F.ATOMIC_NUMBERS: np.array([3]), F.POSITIONS: np.zeros((1, 3)), F.CELL: np.eye(3)},
                            tmp_path / "x")


def test_a_density_model_checkpoint_round_trips_with_its_vqvae():
    model = density_model()
    again = JointModel.from_checkpoint(model.to_checkpoint(), device="cpu")
    assert again.meta[VQVAE_ENTRY]["model_config"] == model.meta[VQVAE_ENTRY]["model_config"]
    batch = noisy_batch()
    with torch.no_grad():
        a, b = model.net(batch), again.net.double()(batch)
    assert torch.equal(a[F.DENSITY_LATENT], b[F.DENSITY_LATENT])


# --- grids under a change of cell -------------------------------------------------------------------------
def test_niggli_regridding_keeps_the_density_on_the_atoms_and_the_electron_count():
    s = Structure(Lattice([[3.0, 0, 0], [2.5, 3.2, 0], [1.0, 1.2, 4.0]]), ["Na"], [[0.25, 0.5, 0.75]])
    reduced = s.get_reduced_structure()
    assert not np.allclose(reduced.lattice.matrix, s.lattice.matrix)
    n = 16
    frac = np.stack(np.meshgrid(*(np.arange(n) / n,) * 3, indexing="ij"), axis=-1)
    d = frac - s.frac_coords[0]
    d -= np.round(d)
    rho = np.exp(-20 * np.einsum("...i,ij,...j->...", d, s.lattice.matrix @ s.lattice.matrix.T, d))
    new = grid_in_cell(rho, s.lattice.matrix, reduced.lattice.matrix)
    assert new.mean() == pytest.approx(rho.mean(), rel=1e-12)
    peak = np.array(np.unravel_index(new.argmax(), new.shape)) / n
    assert np.allclose((peak - reduced.frac_coords[0] + 0.5) % 1 - 0.5, 0, atol=1e-9)
    flipped = grid_in_cell(rho, s.lattice.matrix, -s.lattice.matrix)  # the handedness flip of sampled cells
    assert flipped[1, 2, 3] == rho[-1, -2, -3]
    with pytest.raises(ValueError, match="same lattice"):
        grid_in_cell(rho, s.lattice.matrix, 2 * s.lattice.matrix)


# --- training labels: density sets encoded by the frozen VQ-VAE -------------------------------------------
DENSITY_LABELS = ("mp-1000.npz", "mp-10015.npz")


def test_encode_field_standardises_the_latent_and_decode_field_inverts_it():
    vq = tiny_vqvae()
    rho = torch.rand(2, 32, 32, 32) + 0.01
    z = vq.encode_field(rho)
    mean, std = vq.latent_stats()
    assert z.shape == (2, *LATENT)
    torch.testing.assert_close(z * std + mean, vq.encode(rho).movedim(1, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(vq.decode_field(z), vq.reconstruct(rho), rtol=1e-5, atol=1e-6)


def test_density_latents_reads_a_label_folder_in_niggli_cells_and_carries_its_vqvae(shared_data, tmp_path):
    from diffase.data.electronic.dataset import label_structure, read_label
    from diffase.resume import file_sha256
    from diffase.train.density_labels import DensityLatents

    folder = tmp_path / "labels"
    folder.mkdir()
    for name in DENSITY_LABELS:
        (folder / name).write_bytes((shared_data / "electronic" / name).read_bytes())
    path = tmp_path / "vq.pt"
    torch.save(tiny_vqvae().checkpoint(), path)
    labels = DensityLatents(path)
    assert labels.row_shape == LATENT
    records, names, counts = labels.load(folder)
    assert sorted(names) == ["mp-1000", "mp-10015"] and counts["sources"] == {"dft": 2}
    for rec, name in zip(records, names):
        label = read_label(folder / f"{name}.npz")
        reduced = label_structure(label).get_reduced_structure()
        np.testing.assert_allclose(rec[F.CELL], reduced.lattice.matrix)
        assert rec[F.DENSITY_LATENT].shape == LATENT and F.CHARGE_DENSITY not in rec
        rho = grid_in_cell(label["rho32"], label_structure(label).lattice.matrix, reduced.lattice.matrix)
        expected = tiny_vqvae().encode_field(torch.as_tensor(rho, dtype=torch.float32)[None])[0].numpy()
        np.testing.assert_allclose(rec[F.DENSITY_LATENT], expected, rtol=1e-5, atol=1e-6)
    entry = labels.checkpoint_entries()[VQVAE_ENTRY]
    assert entry["sha256"] == file_sha256(path) and entry["model_config"]["latent_dim"] == LATENT[-1]
    assert labels.load(folder, exclude=["mp-1000"])[1] == ["mp-10015"]


# --- inpainting of the latent through the loop's known mechanism --------------------------------------------
def test_latent_mask_takes_the_voxels_whose_nearest_density_points_are_mostly_masked():
    vq = tiny_vqvae()
    mask = np.zeros((32, 32, 32), dtype=bool)
    mask[:, :, 14:18] = True  # a slab of 4 points around fractional z = 1/2: the block of voxel 4 (points 14..17)
    latent = vq.latent_mask(mask)
    assert latent.shape == (8, 8, 8) and latent[:, :, 4].all() and latent.sum() == 64
    assert vq.latent_mask(np.roll(mask, 4, axis=0)).equal(latent)  # a roll along a free axis changes nothing
    assert vq.latent_mask(np.roll(mask, 4, axis=2)).equal(torch.roll(latent, 1, dims=2))
    with pytest.raises(ValueError, match="density mask"):
        vq.latent_mask(mask[:16])


def test_known_latent_voxels_are_exact_at_the_end_of_sampling():
    model = density_model()
    mask = np.zeros(LATENT[:3], dtype=bool)
    mask[2:5, :, 3] = True
    values = np.random.default_rng(0).normal(size=LATENT)
    (records,) = model.sample(3, num_atoms=3, num_levels=5, seed=1, known_grids={F.DENSITY_LATENT: (mask, values)})
    flip = (np.eye(3), -np.eye(3))
    for rec in records:
        z = rec[F.DENSITY_LATENT]
        assert np.array_equal(z[mask], values[mask]) or np.array_equal(grid_in_cell(z, *flip)[mask], values[mask])
        assert not np.allclose(z[~mask], values[~mask])
    with pytest.raises(ValueError, match="empty"):
        next(model.sample(1, num_atoms=3, known_grids={F.DENSITY_LATENT: (np.zeros(LATENT[:3], bool), values)}))
    with pytest.raises(ValueError, match="must be"):
        next(model.sample(1, num_atoms=3, known_grids={F.DENSITY_LATENT: (mask[:4], values)}))
    with pytest.raises(ValueError, match="no grid field"):
        next(model.sample(1, num_atoms=3, known_grids={F.CHARGE_DENSITY: (mask, values)}))


def test_generate_writes_a_chgcar_per_valid_crystal_beside_the_extxyz(tmp_path):
    import ase.io

    model = density_model()
    out = model.generate(3, tmp_path / "gen.extxyz", num_atoms=3, num_levels=4, batch_size=2, progress=False)
    assert out["written"] >= 1
    frames = ase.io.read(tmp_path / "gen.extxyz", index=":")
    written = sorted(p.name for p in (tmp_path / "gen.extxyz.chgcar").glob("CHGCAR-*"))
    assert written == sorted(f"CHGCAR-{a.info['sample']}" for a in frames)
    for atoms in frames:
        chg = Chgcar.from_file(str(tmp_path / "gen.extxyz.chgcar" / f"CHGCAR-{atoms.info['sample']}"))
        assert len(chg.structure) == len(atoms) and chg.data["total"].shape == (32, 32, 32)


def test_the_joint_trainer_learns_the_density_field_and_the_checkpoint_generates_densities(shared_data, tmp_path):
    """One step of ``train_joint_model`` on two density labels with the field, its VQ-VAE copied into the
    checkpoint; the checkpoint samples crystals with their decoded density. A per-site field beside it and an
    unknown grid field are refused."""
    from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

    folder = tmp_path / "labels"
    folder.mkdir()
    for name in DENSITY_LABELS:
        (folder / name).write_bytes((shared_data / "electronic" / name).read_bytes())
    vq_path = tmp_path / "vq.pt"
    torch.save(tiny_vqvae().checkpoint(), vq_path)
    config = JointTrainConfig(max_steps=1, batch_size=2, epochs=1, warmup_steps=1, grid_fields={"density_latent": 1.0},
                              density_vqvae=str(vq_path), weight_types=10.0)
    model_config = {"hidden": 16, "num_layers": 1, "num_freqs": 2, "time_dim": 8, "probe_hidden": 8,
                    "probe_neighbours": 4}
    best = train_joint_model(folder, folder, tmp_path / "run", model_config=model_config, config=config,
                             device="cpu", num_threads=1, progress=False)
    ckpt = read_checkpoint(best)
    assert ckpt["fields"][-1]["name"] == "density_latent" and ckpt["fields"][0]["loss_weight"] == 10.0
    assert ckpt["model_config"]["grid_fields"] == {F.DENSITY_LATENT: list(LATENT)}
    assert ckpt[VQVAE_ENTRY]["name"] == str(vq_path) and ckpt["train"]["n_train"] == 2
    model = JointModel.from_checkpoint(ckpt, device="cpu")
    (records,) = model.sample(1, num_atoms=2, num_levels=3, seed=0)
    assert records[0][F.CHARGE_DENSITY].shape == (32, 32, 32)
    with pytest.raises(ValueError, match="density latent only"):
        train_joint_model(folder, folder, tmp_path / "run2", config=JointTrainConfig(
            grid_fields={"density_latent": 1.0}, descriptor_fields={"bader_charge": 1.0}), device="cpu")
    with pytest.raises(ValueError, match="unknown grid field"):
        train_joint_model(folder, folder, tmp_path / "run3", config=JointTrainConfig(grid_fields={"spin": 1.0}),
                          device="cpu")
