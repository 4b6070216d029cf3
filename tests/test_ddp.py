"""Lightning DDP: two CPU processes (gloo) train the weights one process trains with the same global batch."""

import json
import os
import subprocess
import sys

import torch

from diffase.data.batch import collate, select_crystals
from diffase.data.structures import structure_to_record
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.train.lightning import GlobalBatches, rank_share, train_score_model_lightning
from diffase.train.loop import epoch_order
from diffase.train.score_trainer import TrainConfig
from tests.helpers import rocksalt, skewed_cell, tiny_config

# 24 crystals, global batch 8: 3 steps in one epoch. EMA off, so best.pt holds the trained weights.
LOOP = {"epochs": 1, "batch_size": 8, "max_val": 4, "warmup_steps": 2, "ema_decay": 0.0}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())


def test_two_ddp_processes_train_the_weights_of_one_process(shared_data, tmp_path):
    train, val = shared_data / "mp20" / "train.csv.gz", shared_data / "mp20" / "val.csv.gz"
    net_config = {k: v for k, v in tiny_config().to_dict().items() if k != "avg_num_neighbors"}
    recipe = tmp_path / "tiny.json"
    recipe.write_text(json.dumps({"model": "score", "model_config": net_config, "config": LOOP}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DIFFASE_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "diffase.cli", "train", str(train), str(val), "--recipe", str(recipe),
                    "--out", str(tmp_path / "two"), "--limit-train", "24", "--devices", "2", "--device", "cpu",
                    "--threads", "1"], check=True, env=env, timeout=300)
    one = train_score_model_lightning(train, val, tmp_path / "one", model_config=tiny_config(),
                                      config=TrainConfig(**LOOP), devices=1, accelerator="cpu", num_threads=1,
                                      limit_train=24, progress=False)
    a = torch.load(one, weights_only=True)
    b = torch.load(tmp_path / "two" / "best.pt", weights_only=True)
    assert (a["train"]["devices"], b["train"]["devices"]) == (1, 2) and a["train"]["step"] == b["train"]["step"] == 3
    torch.manual_seed(0)  # the initial weights of both runs (seed 0)
    start = ScoreNet(ScoreNetConfig(**a["model_config"])).state_dict()
    # measured: 2.4e-7 apart (float rounding of the all-reduce) after moving 2.5e-3 from the start
    assert _max_diff(a["state_dict"], b["state_dict"]) < 1e-5
    assert _max_diff(a["state_dict"], start) > 1e-3


def test_global_batches_follow_the_epoch_order_and_ranks_share_each_batch():
    sampler = GlobalBatches(10, 4, seed=3, min_size=3)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert [i for b in batches for i in b] == epoch_order(10, 3, 2)[:8] and len(sampler) == 2  # last 2 < 3 ranks
    assert len(GlobalBatches(10, 4, seed=3)) == 3
    shares = [rank_share(7, rank, 3) for rank in range(3)]
    assert [(s.start, s.stop) for s in shares] == [(0, 2), (2, 4), (4, 7)]


def test_select_crystals_equals_collating_those_crystals():
    records = [structure_to_record(s) for s in (rocksalt(), skewed_cell(), rocksalt(4.5, ("Li", "F")))]
    part, atoms = select_crystals(collate(records), slice(1, 3))
    expected = collate(records[1:])
    assert part.keys() == expected.keys() and atoms == slice(8, 19)  # 8 + 3 + 8 atoms
    for key in expected:
        torch.testing.assert_close(part[key], expected[key])
