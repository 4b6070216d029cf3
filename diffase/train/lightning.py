"""Multi-GPU training of the score model with PyTorch Lightning DDP (optional extra ``diffase[lightning]``).

Same objective (:func:`diffase.train.objective.dsm_loss`), data and checkpoint format as the single-device
trainer; Lightning adds the distributed sampler, gradient all-reduce and its own resumable ``last.ckpt``
(under ``out_dir/lightning``). The EMA weights with the best validation loss are exported on rank 0 to
``out_dir/best.pt`` in diffase's format, loadable with :func:`diffase.load_model`.

Example (4 GPUs): ``diffase train train.csv.gz val.csv.gz --out runs/x --devices 4``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffase.data.batch import collate
from diffase.data.dataset import CrystalDataset, load_records
from diffase.diffusion.ve import VEProcess
from diffase.generators.score_model import make_checkpoint
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.train.objective import dsm_loss, estimate_avg_neighbors
from diffase.train.score_trainer import TrainConfig


def _lightning():
    try:
        import lightning.pytorch as pl
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("multi-GPU training needs Lightning: pip install 'diffase[lightning]'") from err
    return pl


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
    limit_train: int | None = None,
    progress: bool = True,
) -> Path:
    """Train with Lightning on ``devices`` devices (DDP when > 1); return the path of ``best.pt``."""
    pl = _lightning()
    config = config or TrainConfig()
    process = process or VEProcess()
    out = Path(out_dir)
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
            self.best_val = math.inf

        def training_step(self, batch, _):
            loss = dsm_loss(self.net, process, batch)
            self.log("train_loss", loss, prog_bar=True, batch_size=int(batch["num_atoms"].shape[0]), sync_dist=True)
            return loss

        def on_train_batch_end(self, *_):
            self.ema.update_parameters(self.net)

        def validation_step(self, batch, idx):
            gen = torch.Generator(device=self.device).manual_seed(config.seed + idx)
            loss = dsm_loss(self.ema.module, process, batch, generator=gen)
            self.log("val_loss", loss, prog_bar=True, batch_size=int(batch["num_atoms"].shape[0]), sync_dist=True)

        def on_validation_epoch_end(self):
            val_loss = float(self.trainer.callback_metrics.get("val_loss", math.inf))
            if self.trainer.is_global_zero and not self.trainer.sanity_checking and val_loss < self.best_val:
                self.best_val = val_loss
                ckpt = make_checkpoint(self.ema.module, process, elements, val_loss=val_loss, train={
                    "data": str(train_source), "val_data": str(val_source), "epoch": self.current_epoch + 1,
                    "step": self.global_step, "devices": devices, "strategy": "lightning-ddp" if devices > 1 else "lightning",
                })
                torch.save(ckpt, out / "best.pt")

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.net.parameters(), lr=config.lr)
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}

    out.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(CrystalDataset(train), batch_size=config.batch_size, shuffle=True,
                                         collate_fn=collate)
    val_loader = torch.utils.data.DataLoader(CrystalDataset(val), batch_size=config.batch_size, collate_fn=collate)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=out / "lightning", save_last=True)
    trainer = pl.Trainer(
        max_epochs=config.epochs, max_steps=config.max_steps or -1, devices=devices, accelerator=accelerator,
        strategy="ddp" if devices > 1 else "auto", gradient_clip_val=config.grad_clip, callbacks=[ckpt_cb],
        default_root_dir=out, enable_progress_bar=progress, logger=False, num_sanity_val_steps=0,
    )
    resume = out / "lightning" / "last.ckpt"
    pl.seed_everything(config.seed, workers=True)
    trainer.fit(ScoreModule(), loader, val_loader, ckpt_path=str(resume) if resume.exists() else None)
    return out / "best.pt"
