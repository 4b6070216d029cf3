"""Symmetries of the score network: rotation/inversion, translation, permutation, cell choice, wrapping.

Each check is also run on a deliberately broken variant of the network that violates the symmetry it names
(and only that one, where possible), so the suite itself shows the check can fail.
"""

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
    return net, batch


def broken(net, change):
    """A deliberately non-symmetric variant of ``net``: ``change(batch, output) -> output``."""
    return lambda batch: change(batch, net(batch))


def error(fn, batch, move_input, move_output) -> float:
    """Largest deviation (1/Angstrom) of ``fn(move_input(batch))`` from ``move_output(fn(batch))``."""
    return (fn(move_input(batch)) - move_output(fn(batch))).abs().max().item()


def unchanged(out):
    """The output map of an invariance."""
    return out


def per_atom(batch, per_crystal):
    """(n_crystals,) values repeated to (n_atoms, 1)."""
    return per_crystal[batch[F.BATCH]].unsqueeze(-1)


def test_output_shape_and_noise_conditioning(setup):
    """The noise level is an input of the network, not only the 1/sigma factor of its output: both the score
    s and sigma * s (the predicted -epsilon) change when sigma does."""
    net, batch = setup
    assert net(batch).shape == batch[F.POSITIONS].shape

    def noise_conditioned(fn):
        s, s3 = fn(batch), fn({**batch, F.SIGMA: 3 * batch[F.SIGMA]})
        sigma = per_atom(batch, batch[F.SIGMA])
        return not torch.allclose(s, s3) and not torch.allclose(sigma * s, 3 * sigma * s3)

    def at_sigma_one(b):
        return {**b, F.SIGMA: torch.ones_like(b[F.SIGMA])}

    assert noise_conditioned(net)
    assert not noise_conditioned(lambda b: net(at_sigma_one(b)))  # never sees sigma
    assert not noise_conditioned(lambda b: net(at_sigma_one(b)) / per_atom(b, b[F.SIGMA]))  # only the 1/sigma


def test_rotation_and_inversion_equivariance(setup):
    net, batch = setup
    stretch = torch.tensor([1.0, 1.0, 1.5], dtype=torch.float64)

    def anisotropic(b):  # reads Cartesian z apart from x and y
        return net({**b, F.POSITIONS: b[F.POSITIONS] * stretch, F.CELL: b[F.CELL] * stretch})

    pseudovector = broken(net, lambda b, out: out * per_atom(b, torch.sign(torch.det(b[F.CELL]))))  # axial output
    for rot in (o3.rand_matrix(dtype=torch.float64), -o3.rand_matrix(dtype=torch.float64)):
        def move(b):
            return {**b, F.POSITIONS: b[F.POSITIONS] @ rot.T, F.CELL: b[F.CELL] @ rot.T}

        assert error(net, batch, move, lambda out: out @ rot.T) < 1e-7
        assert error(anisotropic, batch, move, lambda out: out @ rot.T) > 1e-3
        inversion = bool(torch.det(rot) < 0)
        assert (error(pseudovector, batch, move, lambda out: out @ rot.T) > 1e-3) == inversion


def test_translation_and_wrapping_invariance(setup):
    net, batch = setup
    translation = torch.tensor([1.7, -4.2, 9.3], dtype=torch.float64)
    lattice_shift = torch.randint(-2, 3, batch[F.POSITIONS].shape).double()  # move atoms by whole cells

    def translate(b):
        return {**b, F.POSITIONS: b[F.POSITIONS] + translation}

    def unwrap(b):
        return {**b, F.POSITIONS: b[F.POSITIONS] + torch.einsum("ni,nij->nj", lattice_shift, b[F.CELL][b[F.BATCH]])}

    def spread(b):  # distance of every atom from its crystal's centroid, unwrapped coordinates: (n, 1) Angstrom
        counts = b[F.NUM_ATOMS].unsqueeze(-1).double()
        centroid = torch.zeros_like(b[F.CELL][:, 0]).index_add_(0, b[F.BATCH], b[F.POSITIONS]) / counts
        return (b[F.POSITIONS] - centroid[b[F.BATCH]]).norm(dim=-1, keepdim=True)

    absolute = broken(net, lambda b, out: out + 0.1 * torch.sin(b[F.POSITIONS]))  # reads absolute positions
    unwrapped = broken(net, lambda b, out: out * (1 + 0.01 * spread(b)))  # reads positions unwrapped
    assert error(net, batch, translate, unchanged) < 1e-7 and error(absolute, batch, translate, unchanged) > 1e-3
    assert error(net, batch, unwrap, unchanged) < 1e-7 and error(unwrapped, batch, unwrap, unchanged) > 1e-3
    assert error(unwrapped, batch, translate, unchanged) < 1e-7  # which a translation alone cannot show


def test_permutation_equivariance(setup):
    net, batch = setup
    perm = torch.randperm(len(batch[F.POSITIONS]))
    graph = batch[F.BATCH][perm]
    order = torch.argsort(graph, stable=True)  # keep atoms grouped by crystal, shuffled within
    perm = perm[order]
    assert not torch.equal(perm, torch.arange(len(perm)))

    def shuffle(b):
        return {**b, **{key: b[key][perm] for key in (F.POSITIONS, F.ATOMIC_NUMBERS, F.BATCH)}}

    by_index = broken(net, lambda b, out: out * (1 + 0.1 * torch.arange(len(out), dtype=out.dtype)).unsqueeze(-1))
    assert error(net, batch, shuffle, lambda out: out[perm]) < 1e-7
    assert error(by_index, batch, shuffle, lambda out: out[perm]) > 1e-3


def test_equivalent_cell_choices(setup):
    net, batch = setup
    unimodular = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 1]], dtype=torch.float64)  # det = 1
    assert torch.det(unimodular).round() == 1

    def rechoose(b):
        return {**b, F.CELL: unimodular @ b[F.CELL]}

    cell_lengths = broken(net, lambda b, out: out * (1 + 0.01 * per_atom(b, b[F.CELL].norm(dim=-1).sum(-1))))
    assert error(net, batch, rechoose, unchanged) < 1e-7
    assert error(cell_lengths, batch, rechoose, unchanged) > 1e-3


def test_default_network_has_paper_shape():
    net = ScoreNet()
    assert len(net.layers) == 4 and net.config.cutoff == 6.0
    assert 2.5e6 < net.num_parameters < 3.0e6  # "about 2.7M parameters"
