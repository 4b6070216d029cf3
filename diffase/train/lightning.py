"""Multi-GPU training of the score model with PyTorch Lightning DDP (optional extra ``diffase[lightning]``).

Same objective (:func:`diffase.train.objective.dsm_loss`), data order (:func:`diffase.train.loop.epoch_order`),
warm-up and checkpoint format as the single-device trainer; Lightning adds the processes, the gradient
all-reduce and its own resumable ``last.ckpt`` (under ``out_dir/lightning``). The EMA weights with the best
validation loss are exported on rank 0 to ``out_dir/best.pt`` in diffase's format (:func:`diffase.load_model`).

``config.batch_size`` is the **global** batch: every rank loads the same global batch, draws the noise of all
its crystals from one generator seeded by the step, and scores its share (``batch_size / devices`` crystals).
So N devices take the optimiser steps one device would take with the same batch, up to float rounding, and a
recipe means the same on any number of devices. Every rank validates on the whole validation set.
``config.max_time_s`` bounds each invocation (Lightning's ``max_time``), not the total over resumes.

Example (4 GPUs): ``diffase train train.csv.gz val.csv.gz --out runs/x --devices 4``.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffase.data import fields as F
from diffase.data.batch import collate
from diffase.data.dataset import CrystalDataset, load_records
from diffase.diffusion.ve import VEProcess
from diffase.generators.score_model import make_checkpoint
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.runtime import child_seed, configure_threads, make_generator
from diffase.train.loop import epoch_order, warmup_factor
from diffase.train.objective import dsm_loss, estimate_avg_neighbors
from diffase.train.score_trainer import TrainConfig


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("multi-GPU training needs Lightning: pip install 'diffase[lightning]'") from err
    return pl


class GlobalBatches(torch.utils.data.Sampler):
    """Global batches of item indices in :func:`~diffase.train.loop.epoch_order`, identical on every rank.

    A final batch with fewer than ``min_size`` items (the number of ranks: each needs a crystal) is skipped.
    Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, min_size: int = 1):
        self.n_items, self.batch_size, self.seed, self.min_size = n_items, batch_size, seed, min_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = epoch_order(self.n_items, self.seed, self.epoch)
        for lo in range(0, self.n_items, self.batch_size):
            if min(self.batch_size, self.n_items - lo) >= self.min_size:
                yield order[lo : lo + self.batch_size]

    def __len__(self) -> int:
        rest = self.n_items % self.batch_size
        return self.n_items // self.batch_size + int(rest > 0 and rest >= self.min_size)


def rank_share(n_crystals: int, rank: int, world: int) -> slice:
    """The consecutive crystals of a global batch of ``n_crystals`` that rank ``rank`` of ``world`` scores."""
    return slice(rank * n_crystals // world, (rank + 1) * n_crystals // world)


def train_score_model_lightning(
    train_source,
    val_source,
    out_dir: str | Path,
    *,
    model_config: ScoreNetConfig | None = None,
    process: VEProcess | None = None,
    config: TrainConfig | None = None,
    devices: int = 1,
    accelerator: str = "auto",
    num_threads: int | None = None,
    limit_train: int | None = None,
    progress: bool = True,
) -> Path:
    """Train with Lightning on ``devices`` devices (DDP when > 1); return the path of ``best.pt``.

    ``accelerator``: "auto" (CUDA if present), "gpu" or "cpu" (DDP over CPU processes with gloo);
    ``num_threads``: torch CPU threads per process when training on the CPU.
    """
    pl = _lightning()
    config = config or TrainConfig()
    process = process or VEProcess()
    out = Path(out_dir)
    if accelerator == "cpu" or not torch.cuda.is_available():
        configure_threads(num_threads)
    train, _ = load_records(train_source, limit=limit_train)
    val, _ = load_records(val_source, limit=config.max_val)
    elements = sorted({int(z) for r in train for z in r["atomic_numbers"]})
    model_config = model_config or ScoreNetConfig()
    model_config.avg_num_neighbors = round(estimate_avg_neighbors(train, model_config.cutoff), 2)

    class ScoreModule(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = ScoreNet(model_config)
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
            # the EMA copy is not trained: with gradients on, DDP waits for gradients of its parameters that
            # never come and fails at the second step
            self.ema.requires_grad_(False)
            self.best_val = math.inf
            self.train_batches = None

        def train_dataloader(self):
            self.train_batches = GlobalBatches(len(train), config.batch_size, config.seed,
                                               min_size=self.trainer.world_size)
            return torch.utils.data.DataLoader(CrystalDataset(train), batch_sampler=self.train_batches,
                                               collate_fn=collate)

        def val_dataloader(self):
            return torch.utils.data.DataLoader(CrystalDataset(val), batch_size=config.batch_size, collate_fn=collate)

        def on_train_epoch_start(self):
            self.train_batches.set_epoch(self.current_epoch)

        def on_train_batch_start(self, *_):
            if self.global_step < config.warmup_steps:
                for group in self.trainer.optimizers[0].param_groups:
                    group["lr"] = config.lr * warmup_factor(self.global_step, config.warmup_steps)

        def training_step(self, batch, _):
            world, n_crystals = self.trainer.world_size, int(batch[F.NUM_ATOMS].shape[0])
            share = rank_share(n_crystals, self.global_rank, world)
            gen = make_generator(child_seed(config.seed, self.global_step), self.device)
            loss = dsm_loss(self.net, process, batch, generator=gen, crystals=share)
            n_share = share.stop - share.start
            self.log("train_loss", loss, prog_bar=True, batch_size=n_share, sync_dist=True)
            # DDP averages gradients over ranks; weighting each rank by its share of the global batch makes
            # that average the gradient of the global batch's mean loss, as on one device
            return loss * (world * n_share / n_crystals)

        def on_train_batch_end(self, *_):
            self.ema.update_parameters(self.net)

        def validation_step(self, batch, idx):
            gen = make_generator(config.seed + idx, self.device)
            loss = dsm_loss(self.ema.module, process, batch, generator=gen)
            self.log("val_loss", loss, prog_bar=True, batch_size=int(batch[F.NUM_ATOMS].shape[0]), sync_dist=True)

        def on_validation_epoch_end(self):
            val_loss = float(self.trainer.callback_metrics.get("val_loss", math.inf))
            if self.trainer.sanity_checking or val_loss >= self.best_val:
                return
            self.best_val = val_loss
            if self.trainer.is_global_zero:
                ckpt = make_checkpoint(self.ema.module, process, elements, val_loss=val_loss, train={
                    "data": str(train_source), "val_data": str(val_source), "n_train": len(train),
                    "n_val": len(val), "epoch": self.current_epoch + 1, "step": self.global_step,
                    "devices": self.trainer.world_size, "config": config.to_dict(),
                    "strategy": "lightning-ddp" if self.trainer.world_size > 1 else "lightning",
                })
                torch.save(ckpt, out / "best.pt")

        def on_save_checkpoint(self, checkpoint):
            checkpoint["best_val"] = self.best_val

        def on_load_checkpoint(self, checkpoint):
            self.best_val = checkpoint.get("best_val", math.inf)

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}

    out.mkdir(parents=True, exist_ok=True)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=out / "lightning", save_last=True)
    trainer = pl.Trainer(
        max_epochs=config.epochs, max_steps=config.max_steps or -1, devices=devices, accelerator=accelerator,
        strategy="ddp" if devices > 1 else "auto", gradient_clip_val=config.grad_clip, callbacks=[ckpt_cb],
        default_root_dir=out, enable_progress_bar=progress, logger=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # GlobalBatches gives every rank the global batch
        max_time=timedelta(seconds=config.max_time_s) if config.max_time_s else None,
    )
    resume = out / "lightning" / "last.ckpt"
    pl.seed_everything(config.seed, workers=True)  # the initial weights, as in the single-device trainer
    trainer.fit(ScoreModule(), ckpt_path=str(resume) if resume.exists() else None)
    return out / "best.pt"
