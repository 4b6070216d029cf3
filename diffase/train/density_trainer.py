"""Training of the density predictor on a folder of DFT labels, then its held-out test beside the superposition.

Data: every DFT label in the folder (``index.csv``; the folder grows, so a run uses what is there and records how
many it saw); predicted labels are refused. Materials are split by :func:`~diffase.predictors.split.material_split`
(the site-label predictor's split: train / val / test, seeded, or one fold of a cross-validation). A fresh run first
fits the superposition of atomic Gaussians (:func:`~diffase.predictors.density_net.fit_superposition`) to every
``fit_stride``-th grid point of the training materials; the network starts there and learns the correction.

Loss per batch: for each crystal, ``probes_per_crystal`` grid points drawn at random (each step anew; validation
draws with the loop's seeded generator, so always the same points), ``sum (rho - rho_ref)^2 / sum rho_ref^2``
over them: the crystal's eps_msd estimated on the subset, averaged over the batch's crystals. The loop (EMA,
checkpoints, resume, best by validation loss) is :func:`diffase.train.loop.train_loop`. After it, ``best.pt`` is
scored on the full grids of the test materials beside the superposition alone, and the table is stored in it
(``held_out``) and in ``held_out.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from diffase.data import fields as F
from diffase.data.batch import collate, to_device
from diffase.data.electronic.dataset import (
    ElectronicDataset,
    label_structure,
    read_label,
    require_dft,
)
from diffase.data.structures import structure_to_record
from diffase.labeling.compare import density_errors
from diffase.predictors.density_model import DensityPredictor, make_density_checkpoint
from diffase.predictors.density_net import (
    DensityNetConfig,
    ProbeDensityNet,
    fit_superposition,
)
from diffase.predictors.probe_graph import grid_points, probe_atom_pairs
from diffase.predictors.split import material_split, refuse_changed_split
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop
from diffase.train.objective import estimate_avg_neighbors


@dataclass
class DensityTrainConfig(LoopConfig):
    """Loop settings plus the probe sampling, the superposition fit (every ``fit_stride``-th grid point of each
    training material, ridge factor ``ridge``) and the split: fractions of materials and seed, or with ``cv_fold``
    set, fold ``cv_fold`` of ``cv_folds``."""

    probes_per_crystal: int = 1024
    fit_stride: int = 7
    ridge: float = 1e-6
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_seed: int = 0
    cv_fold: int | None = None
    cv_folds: int = 5


def load_density_labels(folder: str | Path) -> list[dict]:
    """One item per DFT label of ``folder``: ``name``, ``formula``, ``record`` (crystal record in the stored cell,
    the one the grid is laid along), ``rho`` (N^3,) float32 tensor, e/Angstrom^3, in the C order of
    :func:`~diffase.predictors.probe_graph.grid_points`, and ``grid`` N."""
    items = []
    for path in ElectronicDataset(folder).files:
        label = require_dft(read_label(path), "a training label of a predictor")
        structure = label_structure(label)
        rho = np.asarray(label["rho32"], dtype=np.float32)
        items.append({"name": label["material_id"], "formula": structure.composition.reduced_formula,
                      "record": structure_to_record(structure, name=label["material_id"]),
                      "rho": torch.as_tensor(rho.reshape(-1)), "grid": rho.shape[0]})
    if len({it["grid"] for it in items}) > 1:
        raise ValueError(f"{folder}: labels on different density grids; a predictor needs one")
    return items


def _points(item: dict, dtype=torch.float64) -> torch.Tensor:
    return grid_points(torch.as_tensor(item["record"][F.CELL], dtype=dtype), item["grid"])


def density_loss(net: ProbeDensityNet, items: Sequence[dict], generator: torch.Generator | None, *,
                 probes_per_crystal: int) -> tuple[torch.Tensor, dict]:
    """Mean over crystals of the eps_msd of ``net`` on ``probes_per_crystal`` random grid points of each item
    (:func:`load_density_labels`); also that of the superposition alone (``baseline``)."""
    device = next(net.parameters()).device
    batch = to_device(collate([it["record"] for it in items]), device)
    probes, refs = [], []
    for it in items:
        index = torch.randint(0, it["rho"].numel(), (probes_per_crystal,), generator=generator,
                              device=generator.device if generator is not None else "cpu").cpu()
        probes.append(_points(it, batch[F.POSITIONS].dtype)[index].to(device))
        refs.append(it["rho"][index])
    pred, base = net(batch, probes)
    ref = torch.cat(refs).to(device)
    crystal = torch.arange(len(items), device=device).repeat_interleave(probes_per_crystal)

    def eps(values):
        per_crystal = torch.zeros(len(items), device=device).index_add_(0, crystal, (values - ref) ** 2)
        return (per_crystal / torch.zeros(len(items), device=device).index_add_(0, crystal, ref**2)).mean()

    loss = eps(pred)
    return loss, {"baseline": eps(base).detach()}


def held_out_density_errors(predictor: DensityPredictor, items: Sequence[dict]) -> list[dict]:
    """Per item (:func:`load_density_labels`) on its full grid: ``material``, ``formula``, ``n_atoms`` and the
    ``density_eps_msd`` / ``density_nmae`` (:func:`~diffase.labeling.compare.density_errors`) of the network
    (``model_*``) and of its superposition alone (``baseline_*``)."""
    rows = []
    for it in items:
        rho, base = predictor.density_at(it["record"], _points(it))
        ref = it["rho"].double().numpy()
        row = {"material": it["name"], "formula": it["formula"], "n_atoms": len(it["record"][F.ATOMIC_NUMBERS])}
        for prefix, values in (("model", rho), ("baseline", base)):
            row.update({f"{prefix}_{k.removeprefix('density_')}": v for k, v in density_errors(values, ref).items()})
        rows.append(row)
    return rows


def summarise(rows: Sequence[dict]) -> dict:
    """Mean and median of each error column of :func:`held_out_density_errors` rows, the number of materials and
    of those where the network's eps_msd is below the baseline's."""
    if not rows:
        return {"n_test_materials": 0}
    out = {"n_test_materials": len(rows),
           "n_model_better_eps_msd": int(sum(r["model_eps_msd"] < r["baseline_eps_msd"] for r in rows))}
    for key in ("model_eps_msd", "baseline_eps_msd", "model_nmae", "baseline_nmae"):
        values = np.array([r[key] for r in rows])
        out[f"mean_{key}"], out[f"median_{key}"] = float(values.mean()), float(np.median(values))
    return out


def train_density_model(
    labels: str | Path,
    out_dir: str | Path,
    *,
    model_config: dict | None = None,
    config: DensityTrainConfig | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a density predictor on the DFT labels in ``labels``; return ``best.pt`` (held-out table
    included). ``model_config``: :class:`DensityNetConfig` fields except ``avg_num_neighbors`` and
    ``avg_probe_neighbors`` (measured on the training materials)."""
    config = config or DensityTrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    items = load_density_labels(labels)
    parts = material_split([set(it["record"][F.ATOMIC_NUMBERS].tolist()) for it in items],
                           test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                           seed=config.split_seed, cv_fold=config.cv_fold, cv_folds=config.cv_folds)
    split = {part: [it for it, p in zip(items, parts) if p == part] for part in ("train", "val", "test")}
    names = {part: [it["name"] for it in split[part]] for part in split}
    state = read_resume_state(out_dir)
    refuse_changed_split(state, names, out_dir, labels)
    fit_set = [(torch.as_tensor(it["record"][F.ATOMIC_NUMBERS]), torch.as_tensor(it["record"][F.POSITIONS]),
                torch.as_tensor(it["record"][F.CELL]), _points(it)[:: config.fit_stride],
                it["rho"][:: config.fit_stride]) for it in split["train"]]
    if state is not None:
        net_config = DensityNetConfig(**state["model_config"])
    else:
        cutoff = (model_config or {}).get("cutoff", DensityNetConfig.cutoff)
        pairs = sum(len(probe_atom_pairs(p, pos, cell, cutoff)[0]) for _, pos, cell, p, _ in fit_set)
        net_config = DensityNetConfig(**(model_config or {}), avg_num_neighbors=estimate_avg_neighbors(
            [it["record"] for it in split["train"]], cutoff), avg_probe_neighbors=pairs / sum(
            len(c[3]) for c in fit_set))
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = ProbeDensityNet(net_config)
    if state is None:  # a resumed run loads the fitted coefficients with its weights
        fit_superposition(net.superposition, fit_set, net_config.cutoff, ridge=config.ridge)
    net = net.to(dev)
    grid = items[0]["grid"]

    def loss_fn(model, batch_items, generator):
        return density_loss(model, batch_items, generator, probes_per_crystal=config.probes_per_crystal)

    def checkpoint_fn(model, **extra):
        return make_density_checkpoint(model, grid, **extra)

    meta = {
        "data": str(labels), "val_data": None, "n_labels": len(items), "split": names,
        "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
        "n_fit_points": sum(len(c[3]) for c in fit_set),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads), "objective": asdict(config),
    }
    best = train_loop(net, split["train"], split["val"], loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    rows = held_out_density_errors(DensityPredictor.from_checkpoint(ckpt, dev), split["test"])
    ckpt["held_out"] = {"test_materials": names["test"], "rows": rows, "summary": summarise(rows)}
    torch.save(ckpt, best)
    (Path(out_dir) / "held_out.json").write_text(json.dumps(ckpt["held_out"], indent=1))
    return best
