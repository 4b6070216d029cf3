"""Symmetries of the score network: rotation/inversion, translation, permutation, cell choice, wrapping."""

import pytest
import torch
from e3nn import o3

from diffase.data import fields as F
from diffase.data.batch import collate
from diffase.data.structures import structure_to_record
from diffase.nn.score_net import ScoreNet
from tests.helpers import rocksalt, skewed_cell, tiny_net


@pytest.fixture(scope="module")
def setup(shared_data):
    from pymatgen.core import Structure

    structures = [Structure.from_file(shared_data / "pmg" / "cif_LiFePO4.cif"), skewed_cell(), rocksalt()]
    batch = collate([structure_to_record(s) for s in structures], dtype=torch.float64)
    torch.manual_seed(1)
    batch[F.POSITIONS] = batch[F.POSITIONS] + 0.3 * torch.randn_like(batch[F.POSITIONS])
    batch[F.SIGMA] = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)
    net = tiny_net(cutoff=5.0).double()
    return net, batch, net(batch)


def test_output_shape_and_noise_conditioning(setup):
    net, batch, out = setup
    assert out.shape == batch[F.POSITIONS].shape
    other = dict(batch)
    other[F.SIGMA] = batch[F.SIGMA] * 3
    assert not torch.allclose(net(other) * 3, out)  # the noise level is an input, not only a 1/sigma factor


def test_rotation_and_inversion_equivariance(setup):
    net, batch, out = setup
    for rot in (o3.rand_matrix(dtype=torch.float64), -o3.rand_matrix(dtype=torch.float64)):
        moved = dict(batch)
        moved[F.POSITIONS] = batch[F.POSITIONS] @ rot.T
        moved[F.CELL] = batch[F.CELL] @ rot.T
        torch.testing.assert_close(net(moved), out @ rot.T)


def test_translation_and_wrapping_invariance(setup):
    net, batch, out = setup
    moved = dict(batch)
    moved[F.POSITIONS] = batch[F.POSITIONS] + torch.tensor([1.7, -4.2, 9.3], dtype=torch.float64)
    torch.testing.assert_close(net(moved), out)
    lattice_shift = torch.randint(-2, 3, batch[F.POSITIONS].shape).double()  # move atoms by whole cells
    moved[F.POSITIONS] = batch[F.POSITIONS] + torch.einsum("ni,nij->nj", lattice_shift, batch[F.CELL][batch[F.BATCH]])
    torch.testing.assert_close(net(moved), out)


def test_permutation_equivariance(setup):
    net, batch, out = setup
    perm = torch.randperm(len(batch[F.POSITIONS]))
    graph = batch[F.BATCH][perm]
    order = torch.argsort(graph, stable=True)  # keep atoms grouped by crystal, shuffled within
    perm = perm[order]
    moved = dict(batch)
    for key in (F.POSITIONS, F.ATOMIC_NUMBERS, F.BATCH):
        moved[key] = batch[key][perm]
    torch.testing.assert_close(net(moved), out[perm])


def test_equivalent_cell_choices(setup):
    net, batch, out = setup
    unimodular = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=torch.float64)  # det = 1
    assert torch.det(unimodular).round() == 1
    moved = dict(batch)
    moved[F.CELL] = unimodular @ batch[F.CELL]
    torch.testing.assert_close(net(moved), out)


def test_default_network_has_paper_shape():
    net = ScoreNet()
    assert len(net.layers) == 4 and net.config.cutoff == 6.0
    assert 2.5e6 < net.num_parameters < 3.0e6  # "about 2.7M parameters"
