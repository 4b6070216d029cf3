"""Per-atom conditions (``node_cond``) of the joint backbone: a "not given" value per atom, dropped in training and
by guidance, and accepted by ``sample_from`` with per-structure masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.diffusion.guidance import guided_score_fn, training_dropout
from diffase.generators.joint import JointModel
from diffase.generators.joint_fields import joint_fields
from diffase.nn.conditioning import NodeConditionEmbedding
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from tests.helpers import rocksalt
from tests.test_joint import ELEMENTS, _batch

DIM = 4


def node_model(seed: int = 0) -> JointModel:
    torch.manual_seed(seed)
    cfg = JointDenoiserConfig(num_elements=len(ELEMENTS), hidden=16, num_layers=2, num_freqs=4, time_dim=16,
                              node_cond_dim=DIM)
    net = JointDenoiser(cfg).to(torch.float64)
    with torch.no_grad():  # a visible null vector, so "not given" differs from a given zero row
        net.node_cond.null.normal_()
    return JointModel(net, joint_fields(len(ELEMENTS)), ELEMENTS, [0, 1, 2, 3, 2], device="cpu")


def test_nan_rows_and_a_missing_field_take_the_null_vector():
    emb = NodeConditionEmbedding(DIM, 8).double()
    torch.nn.init.normal_(emb.null)
    value = torch.randn(3, DIM, dtype=torch.float64)
    value[1] = float("nan")
    out = emb(value, 3, value)
    assert torch.equal(out[1], emb.null) and not torch.allclose(out[0], emb.null)
    assert torch.allclose(out[0], emb.map(value[0]))
    assert torch.equal(emb(None, 3, value), emb.null.expand(3, -1))


def test_guidance_drops_per_atom_conditions():
    """Scale 0 is the model with every site "not given", scale 1 the conditional model, and they differ:
    before the fix guidance left node_cond in place, so scale 0 silently stayed conditional."""
    model = node_model()
    batch = _batch()
    batch[F.NODE_COND] = torch.randn(batch[F.BATCH].shape[0], DIM, dtype=torch.float64)
    free = {**batch, F.NODE_COND: torch.full_like(batch[F.NODE_COND], float("nan"))}
    fn = model.model_fn(model.fields)
    uncond, cond = guided_score_fn(fn, 0.0)(batch, 500), guided_score_fn(fn, 1.0)(batch, 500)
    reference = fn(free, 500)
    for key in (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL):
        assert torch.equal(uncond[key], reference[key])
    assert not torch.allclose(uncond[F.FRAC_COORDS], cond[F.FRAC_COORDS])


def test_training_drops_the_sites_of_a_dropped_crystal_with_its_graph_conditions():
    counts = torch.tensor([2, 3] * 500)
    batch = {F.NUM_ATOMS: counts, F.BATCH: torch.repeat_interleave(torch.arange(1000), counts),
             F.condition_key("band_gap"): torch.ones(1000), F.NODE_COND: torch.ones(int(counts.sum()), DIM)}
    out = training_dropout(batch, p_uncond=0.3, generator=torch.Generator().manual_seed(0))
    crystal_dropped = torch.isnan(out[F.condition_key("band_gap")])
    site_dropped = torch.isnan(out[F.NODE_COND]).all(-1)
    assert torch.equal(site_dropped, crystal_dropped[batch[F.BATCH]])
    assert abs(crystal_dropped.double().mean().item() - 0.3) < 0.05


def test_sample_from_passes_masked_per_atom_conditions(monkeypatch):
    """Conditioned sites reach the network with their values, free (NaN) sites as "not given", and the
    unconditional branch of guidance sees no site conditioned."""
    model = node_model()
    seen = []
    real = model.net.forward

    def spy(batch):
        seen.append(batch[F.NODE_COND].clone())
        return real(batch)

    monkeypatch.setattr(model.net, "forward", spy)
    s = rocksalt()
    values = np.full((len(s), DIM), np.nan)
    values[0] = [1.0, 2.0, 3.0, 4.0]
    [[record]] = list(model.sample_from([s], t_start=0.05, node_conditions=[values], guidance_scale=2.0,
                                        num_levels=5, seed=0))
    assert record["valid"] in (True, False)
    conditional = [x for x in seen if not torch.isnan(x).all()]
    assert conditional and len(conditional) < len(seen)  # guided: one conditional and one unconditional call
    for x in conditional:
        assert torch.equal(x[0], torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=x.dtype))
        assert torch.isnan(x[1:]).all()


def test_sample_from_refuses_bad_per_atom_conditions():
    s = rocksalt()
    with pytest.raises(ValueError, match="not trained with per-atom conditions"):
        from tests.test_joint import tiny_model

        next(tiny_model().sample_from([s], t_start=0.1, node_conditions=[np.zeros((len(s), DIM))], num_levels=3))
    model = node_model()
    with pytest.raises(ValueError, match=r"shape \(\d+, 3\)"):
        next(model.sample_from([s], t_start=0.1, node_conditions=[np.zeros((len(s), 3))], num_levels=3))
    with pytest.raises(ValueError, match="1 crystals"):
        next(model.sample_from([s], t_start=0.1, node_conditions=[np.zeros((len(s), DIM))] * 2, num_levels=3))
