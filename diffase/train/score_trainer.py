"""Resumable training of the score model on one device (CPU or one GPU).

``train_score_model`` writes into ``out_dir``:

* ``last.pt``: everything needed to resume (weights, EMA weights, optimiser, LR scheduler, RNG state,
  position in the epoch), written every ``checkpoint_every`` steps and at each epoch end;
* ``best.pt``: the EMA weights with the lowest validation loss, a shippable model checkpoint;
* ``log.csv``: one row per epoch (step, train and validation DSM loss, learning rate, wall time).

Run it again with the same ``out_dir`` and it resumes where it stopped (also mid-epoch). For several
GPUs use :mod:`diffase.train.lightning` (DDP).
"""

from __future__ import annotations

import csv
import math
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from diffase.data.batch import collate, to_device
from diffase.data.dataset import load_records
from diffase.diffusion.ve import VEProcess
from diffase.generators.score_model import make_checkpoint
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.runtime import configure_threads, resolve_device
from diffase.train.objective import dsm_loss, estimate_avg_neighbors


@dataclass
class TrainConfig:
    """Optimisation settings (Adam, warm-up then reduce-on-plateau, EMA of weights)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    plateau_factor: float = 0.6
    plateau_patience: int = 2  #: epochs without validation improvement before the LR drops
    min_lr: float = 1e-5
    grad_clip: float = 1.0  #: max gradient norm
    ema_decay: float = 0.999
    max_val: int | None = 2000  #: validation crystals per evaluation (fixed subset, fixed noise)
    checkpoint_every: int = 100  #: steps
    max_steps: int | None = None  #: stop after this many optimiser steps in total (for time-boxed runs)
    seed: int = 0
    extra: dict = field(default_factory=dict)  #: free-form notes copied into checkpoints


def _validation_loss(net, process, records, batch_size, device, seed) -> float:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    net.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(records), batch_size):
            batch = to_device(collate(records[lo : lo + batch_size]), device)
            n = batch["num_atoms"].shape[0]
            total += float(dsm_loss(net, process, batch, generator=gen)) * n
            count += n
    return total / max(count, 1)


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
    process = process or VEProcess()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, _ = load_records(train_source, limit=limit_train)
    val, _ = load_records(val_source, limit=config.max_val)
    elements = sorted({int(z) for r in train for z in r["atomic_numbers"]})

    last = out / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if last.exists() else None
    if state is not None:
        model_config = ScoreNetConfig(**state["model_config"])
        process = VEProcess(**state["process"])
    else:
        model_config = model_config or ScoreNetConfig()
        model_config.avg_num_neighbors = round(estimate_avg_neighbors(train, model_config.cutoff), 2)
    torch.manual_seed(config.seed)  # initial weights and noise draws are reproducible
    net = ScoreNet(model_config).to(dev)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_lr
    )
    step, epoch, batch_in_epoch, wall, best_val = 0, 0, 0, 0.0, math.inf
    if state is not None:
        net.load_state_dict(state["state_dict"])
        ema.load_state_dict(state["ema_state_dict"])
        opt.load_state_dict(state["optimizer"])
        warmup.load_state_dict(state["warmup"])
        plateau.load_state_dict(state["plateau"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        wall, best_val = state["wall_time_s"], state["best_val"]
        torch.set_rng_state(state["rng"])

    hardware = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": threads,
    }

    def checkpoint(path: Path, model: torch.nn.Module, **extra) -> None:
        meta = {
            "train": {
                "data": str(train_source), "val_data": str(val_source), "n_train": len(train), "n_val": len(val),
                "step": step, "epoch": epoch, "wall_time_s": round(wall, 1), "best_val_loss": best_val,
                "config": asdict(config), "hardware": hardware,
            }
        }
        inner = model.module if isinstance(model, AveragedModel) else model
        ckpt = make_checkpoint(inner, process, elements, **meta, **extra)
        tmp = path.with_suffix(".tmp")
        torch.save(ckpt, tmp)
        tmp.replace(path)

    def save_resume_state() -> None:
        checkpoint(
            last, net, ema_state_dict=ema.state_dict(), optimizer=opt.state_dict(), warmup=warmup.state_dict(),
            plateau=plateau.state_dict(), step=step, epoch=epoch, batch_in_epoch=batch_in_epoch,
            wall_time_s=wall, best_val=best_val, rng=torch.get_rng_state(),
        )

    log_path = out / "log.csv"
    n_batches = math.ceil(len(train) / config.batch_size)
    while epoch < config.epochs and (config.max_steps is None or step < config.max_steps):
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + epoch)).tolist()
        net.train()
        running, seen = 0.0, 0
        bar = tqdm(range(batch_in_epoch, n_batches), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for b in bar:
            t0 = time.perf_counter()
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            batch = to_device(collate([train[i] for i in idx]), dev)
            loss = dsm_loss(net, process, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            ema.update_parameters(net)
            if step < config.warmup_steps:
                warmup.step()
            step += 1
            batch_in_epoch = b + 1
            running += float(loss)
            seen += 1
            wall += time.perf_counter() - t0
            bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            if step % config.checkpoint_every == 0:
                save_resume_state()
            if config.max_steps is not None and step >= config.max_steps:
                break
        if batch_in_epoch < n_batches:  # stopped by max_steps mid-epoch
            save_resume_state()
            break
        t0 = time.perf_counter()
        val_loss = _validation_loss(ema.module, process, val, config.batch_size, dev, config.seed)
        wall += time.perf_counter() - t0
        plateau.step(val_loss)
        epoch += 1
        batch_in_epoch = 0
        if val_loss < best_val:
            best_val = val_loss
            checkpoint(out / "best.pt", ema, val_loss=val_loss, train_loss=running / max(seen, 1))
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new_log:
                writer.writerow(["epoch", "step", "train_loss", "val_loss", "lr", "wall_time_s"])
            writer.writerow([epoch, step, f"{running / max(seen, 1):.5f}", f"{val_loss:.5f}",
                             f"{opt.param_groups[0]['lr']:.3e}", f"{wall:.1f}"])
        save_resume_state()
    if not (out / "best.pt").exists():  # time-boxed run that never finished an epoch
        checkpoint(out / "best.pt", ema)
    return out / "best.pt"
