"""Resumable training of the score model on one device (CPU or one GPU).

``train_score_model`` runs :func:`diffase.train.loop.train_loop` with the denoising-score-matching loss and
writes into ``out_dir``:

* ``last.pt``: everything needed to resume (weights, EMA weights, optimiser, LR scheduler, RNG state,
  position in the epoch), written every ``checkpoint_every`` steps and at each epoch end;
* ``best.pt``: the EMA weights with the lowest validation loss, a shippable model checkpoint;
* ``log.csv``: one row per epoch (step, train and validation DSM loss, learning rate, wall time).

Run it again with the same ``out_dir`` and it resumes where it stopped (also mid-epoch). For several
GPUs use :mod:`diffase.train.lightning` (DDP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from diffase.data.batch import collate, to_device
from diffase.data.dataset import load_records
from diffase.diffusion.ve import VEProcess
from diffase.generators.score_model import make_checkpoint
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop
from diffase.train.objective import dsm_loss, estimate_avg_neighbors


@dataclass
class TrainConfig(LoopConfig):
    """Loop settings with the score model's defaults, plus the validation subset size."""

    epochs: int = 30
    batch_size: int = 32
    plateau_patience: int = 2
    max_val: int | None = 2000  #: validation crystals per evaluation (first N, fixed noise)


def train_score_model(
    train_source,
    val_source,
    out_dir: str | Path,
    *,
    model_config: ScoreNetConfig | None = None,
    process: VEProcess | None = None,
    config: TrainConfig | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    limit_train: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume training) a score model; return the path of ``best.pt``.

    ``train_source`` / ``val_source``: anything :func:`diffase.data.dataset.load_records` reads (e.g. the
    MP-20 CSV tables). ``limit_train`` keeps the first rows only (smoke tests).
    """
    config = config or TrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    train, _ = load_records(train_source, limit=limit_train)
    val, _ = load_records(val_source, limit=config.max_val)
    elements = sorted({int(z) for r in train for z in r["atomic_numbers"]})

    state = read_resume_state(out_dir)
    if state is not None:
        model_config = ScoreNetConfig(**state["model_config"])
        process = VEProcess(**state["process"])
    else:
        model_config = model_config or ScoreNetConfig()
        model_config.avg_num_neighbors = round(estimate_avg_neighbors(train, model_config.cutoff), 2)
        process = process or VEProcess()
    torch.manual_seed(config.seed)  # initial weights are reproducible
    net = ScoreNet(model_config).to(dev)

    def loss_fn(model, records, generator):
        return dsm_loss(model, process, to_device(collate(records), dev), generator=generator), {}

    def checkpoint_fn(model, **extra):
        return make_checkpoint(model, process, elements, **extra)

    meta = {
        "data": str(train_source), "val_data": str(val_source), "n_train": len(train), "n_val": len(val),
        "hardware": hardware_info(dev, threads),
    }
    return train_loop(net, train, val, loss_fn, checkpoint_fn, out_dir, config, device=dev, state=state, meta=meta,
                      progress=progress)
