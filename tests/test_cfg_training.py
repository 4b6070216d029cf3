"""Classifier-free guidance training drops what guided sampling drops: all conditions of a crystal at once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffase.data import fields as F
from diffase.diffusion.guidance import training_dropout
from diffase.generators.joint import encode_records
from diffase.generators.joint_fields import joint_fields
from diffase.train.joint_trainer import joint_loss

ELEMENTS = [3, 8]


class RecordingNet(torch.nn.Module):
    """Stands in for the denoiser: records the conditions it is shown and predicts zeros of the right shapes."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen = {}

    def forward(self, batch):
        self.seen = {k: v.clone() for k, v in batch.items() if k.startswith(F.CONDITION_PREFIX)}
        n = batch[F.BATCH].shape[0]
        return {F.TYPE_TOKENS: torch.zeros(n, len(ELEMENTS)) + self.weight, F.FRAC_COORDS: torch.zeros(n, 3),
                F.CELL: torch.zeros_like(batch[F.CELL])}


def items(n_crystals: int) -> list[dict]:
    record = {F.ATOMIC_NUMBERS: np.array([3, 8]), F.POSITIONS: np.array([[0.0, 0, 0], [1.5, 1.5, 1.5]]),
              F.CELL: 3.0 * np.eye(3)}
    [encoded] = encode_records([record], ELEMENTS)
    return [{"record": encoded, "cond": {"band_gap": np.array(1.0), "chemical_system": np.array([1.0, 1.0])}}
            for _ in range(n_crystals)]


def dropped(net: RecordingNet) -> dict[str, np.ndarray]:
    return {k: torch.isnan(v.reshape(v.shape[0], -1)).any(-1).numpy() for k, v in net.seen.items()}


def test_training_drops_all_conditions_of_a_crystal_together():
    """With p_uncond 0.2 and two conditions, 20 % of crystals train the unconditional branch that sampling
    uses; dropping each condition on its own (the previous trainer) gave 0.2^2 = 4 %."""
    net = RecordingNet()
    joint_loss(net, joint_fields(len(ELEMENTS)), items(1000), p_uncond=0.2,
               generator=torch.Generator().manual_seed(0))
    gap, chemsys = dropped(net).values()
    assert np.array_equal(gap, chemsys), "a crystal lost one condition but kept the other"
    assert abs(gap.mean() - 0.2) < 0.04, gap.mean()  # 3 standard errors at n = 1000


def test_per_condition_drops_come_on_top_when_asked():
    net = RecordingNet()
    joint_loss(net, joint_fields(len(ELEMENTS)), items(1000), p_uncond=0.2, p_each=0.5,
               generator=torch.Generator().manual_seed(1))
    gap, chemsys = dropped(net).values()
    both = (gap & chemsys).mean()
    assert abs(both - (0.2 + 0.8 * 0.25)) < 0.05, both  # all together, or each of the two on its own
    assert abs(gap.mean() - (0.2 + 0.8 * 0.5)) < 0.05 and (gap != chemsys).any()


def test_dropout_probabilities_are_checked():
    batch = {F.NUM_ATOMS: torch.tensor([2]), F.condition_key("band_gap"): torch.tensor([1.0])}
    with pytest.raises(ValueError, match="p_uncond"):
        training_dropout(batch, p_uncond=1.5)
