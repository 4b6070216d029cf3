"""A model-agnostic, resumable training loop (Adam, warm-up then reduce-on-plateau, EMA, time box).

The loop knows no model: it is given a network, a ``loss_fn(net, items, generator) -> (loss, parts)``
and a ``checkpoint_fn(model, **extra) -> dict`` that turns a network into the model's checkpoint dict.
It writes into ``out_dir``:

* ``last.pt``: the checkpoint plus everything to resume (EMA weights, optimiser, schedulers, RNG state,
  position in the epoch), every ``checkpoint_every`` steps, at each epoch end and when time runs out;
* ``best.pt``: the EMA weights with the lowest validation loss (a shippable checkpoint);
* ``log.csv``: one row per epoch (step, train loss and its parts, validation loss, lr, wall time).

Running it again on the same ``out_dir`` resumes where it stopped, also mid-epoch. Used by the joint
(types, coordinates, lattice) trainer; it follows :mod:`diffase.train.score_trainer`'s file layout.
"""

from __future__ import annotations

import csv
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from diffase.hub import read_checkpoint

LossFn = Callable[[torch.nn.Module, Sequence, torch.Generator | None], tuple[torch.Tensor, dict]]


@dataclass
class LoopConfig:
    """Optimisation settings of :func:`train_loop`."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    plateau_factor: float = 0.6
    plateau_patience: int = 3  #: epochs without validation improvement before the LR drops
    min_lr: float = 1e-5
    grad_clip: float = 1.0  #: max gradient norm
    ema_decay: float = 0.999
    checkpoint_every: int = 100  #: steps
    max_steps: int | None = None  #: stop after this many optimiser steps in total
    max_time_s: float | None = None  #: stop (resumably) after this much training wall time in total
    seed: int = 0
    extra: dict = field(default_factory=dict)  #: free-form notes copied into checkpoints

    def to_dict(self) -> dict:
        return asdict(self)


def hardware_info(device: torch.device, threads: int | None) -> dict:
    """The ``hardware`` entry of a run's metadata: device, its name (GPU model or CPU), torch CPU threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "torch_threads": threads}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits ``n`` training items (a seeded permutation of 0..n-1)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Learning-rate multiplier of optimiser step ``step`` (0-based): linear from 1/warmup_steps up to 1."""
    return min(1.0, (step + 1) / max(1, warmup_steps))


def read_resume_state(out_dir: str | Path) -> dict | None:
    """The ``last.pt`` of a run folder, read like every checkpoint (:func:`diffase.hub.read_checkpoint`,
    ``weights_only=True``), or None for a fresh run."""
    last = Path(out_dir) / "last.pt"
    return read_checkpoint(last) if last.exists() else None


def _save(path: Path, ckpt: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)


def _validate(model, loss_fn, val, batch_size, seed, device) -> float:
    gen = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for lo in range(0, len(val), batch_size):
            items = val[lo : lo + batch_size]
            total += float(loss_fn(model, items, gen)[0]) * len(items)
            count += len(items)
    return total / max(count, 1)


def train_loop(
    net: torch.nn.Module,
    train: Sequence,
    val: Sequence,
    loss_fn: LossFn,
    checkpoint_fn: Callable[..., dict],
    out_dir: str | Path,
    config: LoopConfig,
    *,
    device: torch.device,
    state: dict | None = None,
    meta: dict | None = None,
    progress: bool = True,
) -> Path:
    """Train ``net`` (already on ``device``) and return the path of ``best.pt``.

    ``state`` is :func:`read_resume_state`'s result (None for a fresh run); ``meta`` (JSON-like) is stored
    in every checkpoint under ``"train"`` with the step, epoch, wall time and best validation loss.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_factor(s, config.warmup_steps))
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_lr)
    step, epoch, batch_in_epoch, wall, best_val = 0, 0, 0, 0.0, math.inf
    torch.manual_seed(config.seed)
    if state is not None:
        net.load_state_dict(state["state_dict"])
        ema.load_state_dict(state["ema_state_dict"])
        opt.load_state_dict(state["optimizer"])
        warmup.load_state_dict(state["warmup"])
        plateau.load_state_dict(state["plateau"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        wall, best_val = state["wall_time_s"], state["best_val"]
        torch.set_rng_state(state["rng"])

    def checkpoint(path: Path, model: torch.nn.Module, **extra) -> None:
        info = {**(meta or {}), "step": step, "epoch": epoch, "wall_time_s": round(wall, 1),
                "best_val_loss": best_val, "config": config.to_dict()}
        inner = model.module if isinstance(model, AveragedModel) else model
        _save(path, checkpoint_fn(inner, train=info, **extra))

    def save_resume_state() -> None:
        checkpoint(out / "last.pt", net, ema_state_dict=ema.state_dict(), optimizer=opt.state_dict(),
                   warmup=warmup.state_dict(), plateau=plateau.state_dict(), step=step, epoch=epoch,
                   batch_in_epoch=batch_in_epoch, wall_time_s=wall, best_val=best_val, rng=torch.get_rng_state())

    def out_of_budget() -> bool:
        return (config.max_steps is not None and step >= config.max_steps) or (
            config.max_time_s is not None and wall >= config.max_time_s)

    log_path = out / "log.csv"
    n_batches = math.ceil(len(train) / config.batch_size)
    while epoch < config.epochs and not out_of_budget():
        perm = epoch_order(len(train), config.seed, epoch)
        net.train()
        sums: dict[str, float] = {}
        seen = 0
        bar = tqdm(range(batch_in_epoch, n_batches), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress)
        for b in bar:
            t0 = time.perf_counter()
            items = [train[i] for i in perm[b * config.batch_size : (b + 1) * config.batch_size]]
            loss, parts = loss_fn(net, items, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            opt.step()
            ema.update_parameters(net)
            if step < config.warmup_steps:
                warmup.step()
            step += 1
            batch_in_epoch = b + 1
            for k, v in {"loss": float(loss.detach()), **{k: float(v) for k, v in parts.items()}}.items():
                sums[k] = sums.get(k, 0.0) + v
            seen += 1
            wall += time.perf_counter() - t0
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", lr=f"{opt.param_groups[0]['lr']:.2e}")
            if step % config.checkpoint_every == 0:
                save_resume_state()
            if out_of_budget():
                break
        if batch_in_epoch < n_batches:  # stopped by the step or time budget mid-epoch
            save_resume_state()
            break
        t0 = time.perf_counter()
        val_loss = _validate(ema.module, loss_fn, val, config.batch_size, config.seed, device)
        wall += time.perf_counter() - t0
        plateau.step(val_loss)
        epoch += 1
        batch_in_epoch = 0
        means = {k: v / max(seen, 1) for k, v in sums.items()}
        if val_loss < best_val:
            best_val = val_loss
            checkpoint(out / "best.pt", ema, val_loss=val_loss, train_loss=means.get("loss"))
        new_log = not log_path.exists()
        with open(log_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new_log:
                writer.writerow(["epoch", "step", *[f"train_{k}" for k in means], "val_loss", "lr", "wall_time_s"])
            writer.writerow([epoch, step, *[f"{v:.5f}" for v in means.values()], f"{val_loss:.5f}",
                             f"{opt.param_groups[0]['lr']:.3e}", f"{wall:.1f}"])
        save_resume_state()
    if not (out / "best.pt").exists():  # time-boxed run that never finished an epoch
        checkpoint(out / "best.pt", ema)
    return out / "best.pt"
