"""Training of the site-label predictor (site DOS + Bader charges) on a folder of DFT labels, then its held-out test.

Data: every DFT label in the folder (``index.csv``; the folder grows, so a run uses what is there and records how
many it saw); predicted labels are refused. Materials are split by :func:`~diffase.predictors.split.split_by_material`
(train / val / test, seeded); the per-element baseline is fitted on the training materials only and is the
network's starting point. Loss per batch: ``weight_dos * mean |dos - dos_ref|`` (states/eV, over sites and
energies) ``+ weight_bader * mean |q - q_ref|`` (e, over sites with a Bader charge; format-1 labels have none).
The loop (EMA, checkpoints, resume, best by validation loss) is :func:`diffase.train.loop.train_loop`. After it,
``best.pt`` is scored on the test materials beside the baseline and the tables are stored in it (``held_out``)
and in ``held_out.json``.
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
from diffase.data.electronic.dos import DEFAULT_SIGMA
from diffase.data.electronic.dataset import ElectronicDataset, label_structure, read_label, require_dft
from diffase.data.structures import structure_to_record
from diffase.predictors.baseline import ElementMeans
from diffase.predictors.metrics import element_table, site_errors
from diffase.predictors.model import SiteLabelPredictor, make_checkpoint
from diffase.predictors.site_net import SiteLabelNet, SiteNetConfig
from diffase.predictors.split import material_split, refuse_changed_split
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop
from diffase.train.objective import estimate_avg_neighbors


@dataclass
class SiteTrainConfig(LoopConfig):
    """Loop settings plus the objective's weights and the split: fractions of materials and seed, or with
    ``cv_fold`` set, fold ``cv_fold`` of ``cv_folds`` (:func:`~diffase.predictors.split.cross_validation_split`)."""

    weight_dos: float = 1.0
    weight_bader: float = 1.0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    split_seed: int = 0
    cv_fold: int | None = None
    cv_folds: int = 5


def load_site_labels(folder: str | Path) -> list[dict]:
    """One item per DFT label of ``folder``: ``name``, ``record`` (crystal record with ``site_dos`` (n, P)
    states/eV and ``bader_charge`` (n,) e, NaN when absent), ``dos_grid`` (P,) eV, ``dos_sigma`` eV."""
    items = []
    for path in ElectronicDataset(folder).files:
        label = require_dft(read_label(path), "a training label of a predictor")
        record = structure_to_record(label_structure(label), name=label["material_id"])
        record[F.SITE_DOS] = label["dos"].astype(np.float32)
        record[F.BADER_CHARGE] = label["bader"].astype(np.float32)
        # format 1 stores no sigma: its GPAW width 0.1 eV is the Gaussian sigma 0.1 / sqrt(2) of DEFAULT_SIGMA
        items.append({"name": label["material_id"], "record": record, "dos_grid": label["dos_grid"],
                      "dos_sigma": float(label.get("dos_sigma", DEFAULT_SIGMA))})
    grids = {(tuple(np.round(it["dos_grid"], 4)), round(it["dos_sigma"], 4)) for it in items}
    if len(grids) > 1:
        raise ValueError(f"{folder}: labels on {len(grids)} different DOS grids or widths; a predictor needs one")
    return items


def site_loss(net: SiteLabelNet, records: Sequence[dict], *, weight_dos: float, weight_bader: float
              ) -> tuple[torch.Tensor, dict]:
    """Weighted L1 loss of ``net`` on crystal records holding ``site_dos`` and ``bader_charge``; loss and parts."""
    batch = to_device(collate(records), next(net.parameters()).device)
    out = net(batch)
    dos = (out[F.SITE_DOS] - batch[F.SITE_DOS]).abs().mean()
    known = torch.isfinite(batch[F.BADER_CHARGE])
    bader = (out[F.BADER_CHARGE][known] - batch[F.BADER_CHARGE][known]).abs().mean() if known.any() else dos * 0
    return weight_dos * dos + weight_bader * bader, {"dos": dos.detach(), "bader": bader.detach()}


def held_out_errors(predictor: SiteLabelPredictor, items: Sequence[dict]) -> tuple[np.ndarray, dict]:
    """Atomic numbers (n_sites,) of ``items`` (as :func:`load_site_labels` gives) and the per-site errors
    (:func:`~diffase.predictors.metrics.site_errors`) of the predictor (``model``), of its per-element-mean baseline
    (``baseline``) and of that baseline with each crystal's charges shifted to sum to zero (``baseline_neutral``:
    the network's own neutrality projection applied to the means; same DOS)."""
    records = [it["record"] for it in items]
    numbers = np.concatenate([r[F.ATOMIC_NUMBERS] for r in records])
    dos_ref = np.concatenate([r[F.SITE_DOS] for r in records])
    q_ref = np.concatenate([r[F.BADER_CHARGE] for r in records])
    predictions = predictor.predict_records(records)
    model_dos = np.concatenate([p[F.SITE_DOS] for p in predictions])
    model_q = np.concatenate([p[F.BADER_CHARGE] for p in predictions])
    base_dos, base_q = predictor.baseline.predict(numbers)
    crystal = np.repeat(np.arange(len(records)), [len(r[F.ATOMIC_NUMBERS]) for r in records])
    neutral_q = base_q - (np.bincount(crystal, base_q) / np.bincount(crystal))[crystal]
    grid = predictor.dos_grid
    return numbers, {"model": site_errors(model_dos, dos_ref, model_q, q_ref, grid),
                     "baseline": site_errors(base_dos, dos_ref, base_q, q_ref, grid),
                     "baseline_neutral": site_errors(base_dos, dos_ref, neutral_q, q_ref, grid)}


def held_out_tables(predictor: SiteLabelPredictor, items: Sequence[dict]) -> dict:
    """Per-element tables (:func:`~diffase.predictors.metrics.element_table`) of :func:`held_out_errors` for
    ``model``, ``baseline`` and ``baseline_neutral``, with the numbers of materials and sites."""
    numbers, errors = held_out_errors(predictor, items)
    return {"n_test_materials": len(items), "n_test_sites": int(len(numbers)),
            "test_materials": [it["name"] for it in items],
            **{name: element_table(numbers, e) for name, e in errors.items()}}


def train_site_model(
    labels: str | Path,
    out_dir: str | Path,
    *,
    model_config: dict | None = None,
    config: SiteTrainConfig | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a site-label predictor on the DFT labels in ``labels``; return ``best.pt`` (held-out
    tables included). ``model_config``: :class:`SiteNetConfig` fields except ``avg_num_neighbors`` and
    ``dos_points`` (from the data)."""
    config = config or SiteTrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    items = load_site_labels(labels)
    elements = [set(it["record"][F.ATOMIC_NUMBERS].tolist()) for it in items]
    parts = material_split(elements, test_fraction=config.test_fraction, val_fraction=config.val_fraction,
                           seed=config.split_seed, cv_fold=config.cv_fold, cv_folds=config.cv_folds)
    split = {part: [it for it, p in zip(items, parts) if p == part] for part in ("train", "val", "test")}
    train_records = [it["record"] for it in split["train"]]
    baseline = ElementMeans.fit([r[F.ATOMIC_NUMBERS] for r in train_records], [r[F.SITE_DOS] for r in train_records],
                                [r[F.BADER_CHARGE] for r in train_records])
    grid, sigma = items[0]["dos_grid"], items[0]["dos_sigma"]
    state = read_resume_state(out_dir)
    names = {part: [it["name"] for it in split[part]] for part in split}
    refuse_changed_split(state, names, out_dir, labels)
    if state is not None:
        net_config = SiteNetConfig(**state["model_config"])
    else:
        net_config = SiteNetConfig(**(model_config or {}), dos_points=len(grid),
                                   avg_num_neighbors=estimate_avg_neighbors(
                                       train_records, (model_config or {}).get("cutoff", SiteNetConfig.cutoff)))
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = SiteLabelNet(net_config)
    net.set_baseline(baseline.elements, baseline.dos, baseline.charge)
    net = net.to(dev)

    def loss_fn(model, records, generator):
        return site_loss(model, records, weight_dos=config.weight_dos, weight_bader=config.weight_bader)

    def checkpoint_fn(model, **extra):
        return make_checkpoint(model, baseline, grid, sigma, **extra)

    meta = {
        "data": str(labels), "val_data": None, "n_labels": len(items),
        "n_labels_with_bader": sum(bool(np.isfinite(it["record"][F.BADER_CHARGE]).all()) for it in items),
        "split": names,
        "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads), "objective": asdict(config),
    }
    best = train_loop(net, train_records, [it["record"] for it in split["val"]], loss_fn, checkpoint_fn, out_dir,
                      config, device=dev, state=state, meta=meta, progress=progress)
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    ckpt["held_out"] = held_out_tables(SiteLabelPredictor.from_checkpoint(ckpt, dev), split["test"])
    torch.save(ckpt, best)
    (Path(out_dir) / "held_out.json").write_text(json.dumps(ckpt["held_out"], indent=1))
    return best
