"""The field registry (A/X/L as registered fields, checkpoints that list their fields, collate of graph and
grid fields) and the refactor's pins: the shipped joint-mp20 samples and the training loss are what the
three hard-coded processes gave before it (fixtures recorded with the code of de209bd)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.data.batch import collate, split
from diffase.data.structures import structure_to_record
from diffase.diffusion.field_registry import DiffusedField, FieldRegistry
from diffase.diffusion.wrapped_normal import WrappedNormalProcess
from diffase.generators import load_model
from diffase.generators.joint import encode_records
from diffase.generators.joint_fields import (
    STRUCTURE_FIELDS,
    fields_from_checkpoint,
    joint_fields,
)
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.train.joint_trainer import joint_loss
from tests.helpers import rocksalt, skewed_cell

FIXTURE = Path(__file__).parent / "data" / "joint_mp20_samples.npz"


def test_shipped_joint_model_gives_the_samples_of_the_three_hard_coded_processes():
    """Same seed, same crystals as before the registry: de novo (3 crystals, 10 levels) and from a template
    with a fixed lattice. Any change of the order of random draws or of a process step changes them."""
    model = load_model("joint-mp20", device="cpu")
    assert model.fields.names == list(STRUCTURE_FIELDS)  # read from the pre-registry "processes" entry
    expected = np.load(FIXTURE)
    recs = next(model.sample(3, num_atoms=[4, 6, 5], num_levels=10, n_corrector=1, seed=11, batch_size=3))
    for i, rec in enumerate(recs):
        assert np.array_equal(rec[F.ATOMIC_NUMBERS], expected[f"sample{i}_z"])
        assert np.allclose(rec[F.FRAC_COORDS], expected[f"sample{i}_frac"], atol=1e-6)
        assert np.allclose(rec[F.CELL], expected[f"sample{i}_cell"], atol=1e-5)
    [rec] = next(model.sample_from([rocksalt()], t_start=0.5, fix_lattice=True, num_levels=10, seed=5))
    assert np.array_equal(rec[F.ATOMIC_NUMBERS], expected["from_z"])
    assert np.allclose(rec[F.FRAC_COORDS], expected["from_frac"], atol=1e-6)
    assert np.allclose(rec[F.CELL], expected["from_cell"], atol=1e-5)


def test_training_loss_equals_the_three_hard_coded_processes():
    """The registry trainer noises and weighs A/X/L exactly as the old joint_loss (values recorded with it)."""
    torch.manual_seed(0)
    net = JointDenoiser(JointDenoiserConfig(num_elements=5, hidden=16, num_layers=2, num_freqs=4, time_dim=16))
    recs = encode_records([structure_to_record(s) for s in (rocksalt(), skewed_cell(), rocksalt(4.5))],
                          [1, 3, 8, 11, 17])
    total, parts = joint_loss(net, joint_fields(5, (1.0, 0.5, 2.0)), [{"record": r, "cond": {}} for r in recs],
                              p_uncond=0.2, generator=torch.Generator().manual_seed(3))
    assert float(total.detach()) == pytest.approx(5.044288158416748, rel=1e-6)
    assert float(parts["types"]) == pytest.approx(0.7165741920471191, rel=1e-6)
    assert float(parts["coords"]) == pytest.approx(1.6146490573883057, rel=1e-6)
    assert float(parts["lattice"]) == pytest.approx(1.7601946592330933, rel=1e-6)


def test_checkpoint_field_list_round_trips(tmp_path):
    fields = joint_fields(5, (1.0, 0.5, 2.0), {"bader_charge": 0.3})
    again = FieldRegistry.from_list(fields.to_list())
    assert again.to_list() == fields.to_list()
    assert again.names == ["types", "coords", "lattice", "bader_charge"]
    assert [f.loss_weight for f in again] == [1.0, 0.5, 2.0, 0.3]
    assert again["bader_charge"].projection == fields["bader_charge"].projection
    assert again.respaced(10).num_levels == 10 and again.num_levels == 1000
    ckpt = {"fields": fields.to_list()}
    assert fields_from_checkpoint(ckpt).to_list() == fields.to_list()
    torch.save(ckpt, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # plain data: loads without pickled code
    assert FieldRegistry.from_list(loaded["fields"]).to_list() == fields.to_list()


def test_registry_refuses_duplicates_and_mixed_level_grids():
    with pytest.raises(ValueError, match="unique"):
        FieldRegistry([DiffusedField("a", WrappedNormalProcess()), DiffusedField("b", WrappedNormalProcess())])
    fields = list(joint_fields(3))
    fields[1] = DiffusedField("coords", WrappedNormalProcess(num_levels=10))
    with pytest.raises(ValueError, match="num_levels"):
        FieldRegistry(fields)
    with pytest.raises(ValueError, match="unknown descriptor"):
        joint_fields(3, descriptors={"magic": 1.0})


def test_collate_stacks_graph_and_grid_fields_and_splits_them_back():
    recs = [structure_to_record(rocksalt()), structure_to_record(skewed_cell())]
    for i, rec in enumerate(recs):
        rec[F.CHARGE_DENSITY] = np.full((4, 4, 4), float(i))
        rec[F.BADER_CHARGE] = np.arange(len(rec[F.ATOMIC_NUMBERS]), dtype=float)
    batch = collate(recs)
    assert batch[F.CHARGE_DENSITY].shape == (2, 4, 4, 4)
    assert batch[F.BADER_CHARGE].shape == (sum(len(r[F.ATOMIC_NUMBERS]) for r in recs),)
    back = split(batch)
    for rec, got in zip(recs, back):
        assert np.array_equal(got[F.CHARGE_DENSITY], rec[F.CHARGE_DENSITY])
        assert np.array_equal(got[F.BADER_CHARGE], rec[F.BADER_CHARGE])
    recs[1][F.CHARGE_DENSITY] = np.zeros((5, 5, 5))
    with pytest.raises(ValueError, match="shape differs"):
        collate(recs)
