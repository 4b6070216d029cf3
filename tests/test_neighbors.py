import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from diffase.data import fields as F
from diffase.data.batch import collate
from diffase.data.neighbors import edge_vectors, radius_graph_pbc
from diffase.data.structures import structure_to_record
from tests.helpers import rocksalt, skewed_cell


def _cases(shared_data):
    from diffase.data.io import read_table

    table = [s for _, s in read_table(shared_data / "mp20" / "val.csv.gz", limit=6)]
    return table + [
        skewed_cell(),
        Structure(Lattice.cubic(1.9), ["Cu"], [[0, 0, 0]]),  # one atom, 6 A cutoff >> cell
        Structure(Lattice.hexagonal(2.5, 9.0), ["C", "C"], [[0, 0, 0], [1 / 3, 2 / 3, 0.5]]),
        rocksalt(),
    ]


@pytest.mark.parametrize("cutoff", [3.0, 6.0])
def test_matches_pymatgen_on_small_and_skewed_cells(shared_data, cutoff):
    structures = _cases(shared_data)
    batch = collate([structure_to_record(s) for s in structures], dtype=torch.float64)
    # unwrapped input positions must give the same graph
    batch[F.POSITIONS] = batch[F.POSITIONS] + torch.tensor([3.1, -7.4, 11.9], dtype=torch.float64)
    edge_index, shift = radius_graph_pbc(batch, cutoff)
    batch[F.EDGE_INDEX], batch[F.EDGE_CELL_SHIFT] = edge_index, shift
    lengths = edge_vectors(batch).norm(dim=-1).numpy()
    offsets = np.cumsum([0] + [len(s) for s in structures])
    for g, s in enumerate(structures):
        centers, neighbors, _, dists = s.get_neighbor_list(cutoff)
        mine = (edge_index[0] >= offsets[g]) & (edge_index[0] < offsets[g + 1])
        got = sorted(zip((edge_index[0][mine] - offsets[g]).tolist(), (edge_index[1][mine] - offsets[g]).tolist(),
                         lengths[mine.numpy()].tolist()))
        ref = sorted(zip(centers.tolist(), neighbors.tolist(), dists.tolist()))
        assert [p[:2] for p in got] == [p[:2] for p in ref], f"structure {g} ({s.formula}) pairs differ from pymatgen"
        np.testing.assert_allclose([p[2] for p in got], [p[2] for p in ref], atol=1e-8)


def test_atom_neighbours_its_own_images():
    s = Structure(Lattice.cubic(2.0), ["Cu"], [[0, 0, 0]])
    batch = collate([structure_to_record(s)])
    edge_index, shift = radius_graph_pbc(batch, 2.5)
    assert edge_index.shape[1] == 6  # the six images at 2.0 A; the next shell is at 2.83 A
    assert (edge_index == 0).all() and (shift.abs().sum(-1) > 0).all()
