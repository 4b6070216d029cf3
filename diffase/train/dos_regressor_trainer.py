"""Training of the time-dependent site-DOS regressor (:mod:`diffase.generators.dos_regressor`) on noisy crystals.

Per batch, one diffusion step t ~ U{1..T} per crystal (as the joint trainer): the fractional coordinates and the
cell are corrupted with the joint model's processes (wrapped normal, lattice DDPM), the atom types stay clean,
and the network predicts every site's DOS at time t; the loss is the mean squared error against the site-DOS
labels in the transformed units of dos-mp20 (log1p of states/eV on 128 points over E - E_F in [-10, 10] eV).
The labels are read exactly as for dos-mp20 (:func:`diffase.train.joint_trainer._site_dos_data`: DFT label
folder first, then predicted-label folders, held-out materials of ``hold_out_from`` never trained on). The trunk
can start from a joint checkpoint (``init_from``, e.g. joint-mp20: its weights, the DOS head fresh). The loop is
:func:`diffase.train.loop.train_loop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from diffase.data import fields as F
from diffase.data.batch import to_device
from diffase.generators.dos_regressor import CHECKPOINT_KIND, PRED_KEY, predict_site_dos
from diffase.generators.joint import encode_records, make_batch
from diffase.generators.joint_fields import structure_fields
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.runtime import configure_threads, resolve_device
from diffase.train.joint_trainer import (
    JointTrainConfig,
    _load_pretrained_weights,
    _site_dos_data,
    pretrained_checkpoint,
)
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop


@dataclass
class DosRegressorTrainConfig(LoopConfig):
    """Loop settings plus the site-DOS labels' (as :class:`~diffase.train.joint_trainer.JointTrainConfig`)."""

    init_from: str | None = None  #: joint checkpoint (name or path) whose trunk weights start a fresh run
    max_val: int | None = 100  #: validation crystals (first N)
    node_condition_points: int = 128  #: site-DOS grid: points from e_min to e_max (E - E_F, eV)
    node_condition_e_min: float = -10.0
    node_condition_e_max: float = 10.0
    node_condition_transform: str = "log1p"
    label_folders: list = field(default_factory=list)  #: more label folders after ``train`` (predicted labels)
    hold_out_from: str | None = None  #: site-label predictor whose val/test materials are never trained on


def regressor_loss(net: JointDenoiser, items: Sequence[dict], *, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, dict]:
    """Noise coordinates and cell of encoded records (with ``node_cond`` site DOS, transformed) at one random
    step per crystal; return the MSE of the predicted site DOS over the sites with a label, and its parts."""
    device = next(net.parameters()).device
    batch = to_device(make_batch(items), device)
    _, coords, lattice = (f.process for f in structure_fields(net.config.num_elements))
    n_graph = batch[F.NUM_ATOMS].shape[0]
    steps = torch.randint(1, coords.num_steps + 1, (n_graph,), generator=generator, device=device)
    noisy = dict(batch)
    noisy[F.FRAC_COORDS], _ = coords.corrupt(batch[F.FRAC_COORDS], steps[batch[F.BATCH]], generator=generator)
    noisy[F.CELL], _ = lattice.corrupt(batch[F.CELL], steps, generator=generator)
    pred = predict_site_dos(net, noisy, (steps / coords.num_steps).to(batch[F.CELL].dtype))
    target = batch[F.NODE_COND]
    given = torch.isfinite(target).all(-1)
    loss = ((pred[given] - target[given]) ** 2).mean()
    return loss, {"site_dos": loss.detach()}


def train_dos_regressor(train_source, val_source, out_dir: str | Path, *, model_config: dict | None = None,
                        config: DosRegressorTrainConfig | None = None, device: str = "auto",
                        num_threads: int | None = None, limit_train: int | None = None, progress: bool = True) -> Path:
    """Train (or resume) a site-DOS regressor on label folders; return the path of ``best.pt``.

    ``model_config``: :class:`JointDenoiserConfig` fields but ``num_elements`` and ``node_fields`` (a fresh
    network; with ``init_from`` the pretrained network's settings are kept and ``model_config`` must be empty).
    """
    config = config or DosRegressorTrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    labels = JointTrainConfig(node_condition="site_dos", max_val=config.max_val,
                              node_condition_points=config.node_condition_points,
                              node_condition_e_min=config.node_condition_e_min,
                              node_condition_e_max=config.node_condition_e_max,
                              node_condition_transform=config.node_condition_transform,
                              label_folders=config.label_folders, hold_out_from=config.hold_out_from)
    train_records, _, val_records, _, spec, info = _site_dos_data(train_source, val_source, labels, limit_train)
    elements = sorted({int(z) for r in train_records for z in r[F.ATOMIC_NUMBERS]})
    pretrained = pretrained_checkpoint(config.init_from, elements) if config.init_from else None
    if pretrained is not None:
        elements = pretrained["elements"]
    val_records = [r for r in val_records if set(r[F.ATOMIC_NUMBERS].tolist()) <= set(elements)]
    head = {PRED_KEY: [spec["n_points"]]}
    state = read_resume_state(out_dir)
    if state is not None:
        net_config = JointDenoiserConfig(**state["model_config"])
    elif pretrained is not None:
        if model_config:
            raise ValueError("init_from keeps the pretrained network's settings; drop model_config")
        net_config = JointDenoiserConfig(**{**pretrained["model_config"], "node_fields": head, "node_cond_dim": 0})
    else:
        net_config = JointDenoiserConfig(num_elements=len(elements), node_fields=head, **(model_config or {}))
    torch.manual_seed(config.seed)
    net = JointDenoiser(net_config)
    if pretrained is not None and state is None:
        _load_pretrained_weights(net, pretrained)
    net = net.to(dev)
    train_items, val_items = encode_records(train_records, elements), encode_records(val_records, elements)

    def loss_fn(model, items, generator):
        return regressor_loss(model, items, generator=generator)

    def checkpoint_fn(model, **extra):
        return {"kind": CHECKPOINT_KIND, "model_config": model.config.to_dict(), "node_condition": spec,
                "elements": [int(z) for z in elements],
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}

    meta = {"data": str(train_source), "val_data": str(val_source), "n_train": len(train_items),
            "n_val": len(val_items), **info, "n_parameters": sum(p.numel() for p in net.parameters()),
            "hardware": hardware_info(dev, threads), "objective": asdict(config)}
    return train_loop(net, train_items, val_items, loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
