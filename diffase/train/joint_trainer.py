"""Training of the joint (types, fractional coordinates, lattice) model, resumable, on one device.

Loss per batch (one diffusion step t ~ U{1..T} per crystal, shared by its three fields, as in DiffCSP):
``w_A * D3PM hybrid loss + w_X * wrapped-normal score matching + w_L * lattice noise MSE``.
Classifier-free guidance training: all conditions of a crystal are dropped together (set to "not given")
with probability ``p_uncond`` (0.2), the case guided sampling calls; ``p_drop_each`` (default 0) also drops
each condition on its own (:func:`diffase.diffusion.guidance.training_dropout`). A crystal whose label is
missing is always unconditional for that condition.

Conditions come from label columns (band gap, formation energy, energy above hull, joined by
``material_id``) or are computed from the structure (:data:`COMPUTED_CONDITIONS`: density, space group,
chemical system). The loop itself (EMA, checkpoints, resume, time box) is :func:`diffase.train.loop.train_loop`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from diffase.data import fields as F
from diffase.data.batch import to_device
from diffase.data.dataset import load_records
from diffase.data.structures import record_to_structure
from diffase.diffusion.guidance import training_dropout
from diffase.generators.joint import (
    default_processes,
    encode_records,
    make_batch,
    make_checkpoint,
)
from diffase.nn.conditioning import ConditionSpec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.runtime import configure_threads, resolve_device
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop

#: Conditions computed from the structure itself, with their kind.
COMPUTED_CONDITIONS = {"density": "scalar", "space_group": "categorical", "chemical_system": "multi_hot"}


@dataclass
class JointTrainConfig(LoopConfig):
    """Loop settings plus the joint objective's: field weights and condition dropout."""

    p_uncond: float = 0.2  #: probability that a crystal's conditions are all dropped together
    p_drop_each: float = 0.0  #: extra probability that each condition is dropped on its own
    weight_types: float = 1.0
    weight_coords: float = 1.0
    weight_lattice: float = 1.0
    max_val: int | None = 1000  #: validation crystals (first N)
    conditions: list = field(default_factory=list)  #: condition names (label columns or COMPUTED_CONDITIONS)


def computed_condition(name: str, record: dict, elements: Sequence[int]) -> np.ndarray:
    """Value of a computed condition for one crystal record (see :data:`COMPUTED_CONDITIONS`)."""
    if name == "chemical_system":
        vec = np.zeros(len(elements))
        vec[[list(elements).index(int(z)) for z in set(record[F.ATOMIC_NUMBERS].tolist())]] = 1.0
        return vec
    structure = record_to_structure(record)
    if name == "density":
        return np.array(float(structure.density))
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return np.array(float(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()))


def condition_arrays(names: Sequence[str], records: Sequence[dict], ids: Sequence[str], elements: Sequence[int],
                     labels: str | Path | None) -> tuple[dict[str, np.ndarray], list[ConditionSpec]]:
    """Per-crystal condition values (NaN = unknown) and their specs (scalars normalised by the data)."""
    table = pd.read_csv(labels).set_index("material_id") if labels is not None else None
    values, specs = {}, []
    for name in names:
        if name in COMPUTED_CONDITIONS:
            kind = COMPUTED_CONDITIONS[name]
            arr = np.stack([computed_condition(name, r, elements) for r in records])
        elif table is not None and name in table.columns:
            kind = "scalar"
            arr = table[name].reindex(list(ids)).to_numpy(dtype=np.float64)
        else:
            raise ValueError(f"condition {name!r} is neither computed ({', '.join(COMPUTED_CONDITIONS)}) nor a "
                             f"column of the labels table {labels}")
        values[name] = arr
        if kind == "scalar":
            known = arr[~np.isnan(arr)]
            if known.size == 0:
                raise ValueError(f"condition {name!r}: no training crystal has a value")
            specs.append(ConditionSpec(name, "scalar", 1, float(known.mean()), float(known.std() or 1.0)))
        else:
            # space groups are classes by international number 1..230 (class 0 unused), as users give them
            specs.append(ConditionSpec(name, kind, 231 if name == "space_group" else len(elements)))
    return values, specs


def joint_loss(net: JointDenoiser, processes: dict, items: Sequence[dict], *, p_uncond: float,
               weights: tuple[float, float, float], p_each: float = 0.0, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, dict]:
    """Noise a batch of encoded items (``record`` + ``cond`` dicts) at random steps; return the loss and parts."""
    device = next(net.parameters()).device
    names = list(items[0]["cond"])
    conds = {name: np.stack([it["cond"][name] for it in items]) for name in names}
    batch = to_device(make_batch([it["record"] for it in items], conds), device)
    types, coords, lattice = processes["types"], processes["coords"], processes["lattice"]
    n_graph, graph = batch[F.NUM_ATOMS].shape[0], batch[F.BATCH]
    steps = torch.randint(1, types.num_steps + 1, (n_graph,), generator=generator, device=device)
    batch = training_dropout(batch, p_uncond=p_uncond, p_each=p_each, generator=generator)
    x0_types = batch[F.TYPE_TOKENS]
    noisy = dict(batch)
    noisy[F.TYPE_TOKENS] = types.corrupt(x0_types, steps[graph], generator=generator)
    noisy[F.FRAC_COORDS], coord_target = coords.corrupt(batch[F.FRAC_COORDS], steps[graph],
                                                        generator=generator)
    noisy[F.CELL], lattice_target = lattice.corrupt(batch[F.CELL], steps, generator=generator)
    noisy[F.TIME] = (steps / types.num_steps).to(batch[F.CELL].dtype)
    out = net(noisy)
    parts = {
        "types": types.loss(out[F.TYPE_TOKENS], x0_types, noisy[F.TYPE_TOKENS], steps[graph]),
        "coords": coords.loss(out[F.FRAC_COORDS], coord_target),
        "lattice": lattice.loss(out[F.CELL], lattice_target),
    }
    total = weights[0] * parts["types"] + weights[1] * parts["coords"] + weights[2] * parts["lattice"]
    return total, {k: v.detach() for k, v in parts.items()}


def _items(records, ids, elements, names, labels):
    encoded = encode_records(records, elements)
    values, specs = condition_arrays(names, records, ids, elements, labels)
    return [{"record": r, "cond": {n: values[n][i] for n in names}} for i, r in enumerate(encoded)], specs


def train_joint_model(
    train_source,
    val_source,
    out_dir: str | Path,
    *,
    model_config: dict | None = None,
    config: JointTrainConfig | None = None,
    labels: str | Path | None = None,
    device: str = "auto",
    num_threads: int | None = None,
    limit_train: int | None = None,
    progress: bool = True,
) -> Path:
    """Train (or resume) a joint model; return the path of ``best.pt``.

    ``model_config``: :class:`JointDenoiserConfig` fields except ``num_elements`` and ``conditions`` (set
    from the data and ``config.conditions``). ``labels``: a CSV with ``material_id`` and label columns.
    Re-running with the same ``out_dir`` resumes from its ``last.pt`` (model settings come from there).
    """
    config = config or JointTrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    train_records, train_ids = load_records(train_source, limit=limit_train)
    val_records, val_ids = load_records(val_source, limit=config.max_val)
    elements = sorted({int(z) for r in train_records for z in r[F.ATOMIC_NUMBERS]})
    val_keep = [i for i, r in enumerate(val_records) if set(r[F.ATOMIC_NUMBERS].tolist()) <= set(elements)]
    if not val_keep:
        raise ValueError(f"none of the {len(val_records)} validation crystals uses only the {len(elements)} "
                         "training elements; use more training or validation crystals")
    val_records, val_ids = [val_records[i] for i in val_keep], [val_ids[i] for i in val_keep]
    counts = np.bincount([len(r[F.ATOMIC_NUMBERS]) for r in train_records]).tolist()

    train_items, specs = _items(train_records, train_ids, elements, config.conditions, labels)
    val_items, _ = _items(val_records, val_ids, elements, config.conditions, labels)
    state = read_resume_state(out_dir)
    net_config = JointDenoiserConfig(**state["model_config"]) if state is not None else JointDenoiserConfig(
        num_elements=len(elements), conditions=[s.to_dict() for s in specs], **(model_config or {}))
    processes = default_processes(len(elements))
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = JointDenoiser(net_config).to(dev)
    weights = (config.weight_types, config.weight_coords, config.weight_lattice)

    def loss_fn(model, items, generator):
        return joint_loss(model, processes, items, p_uncond=config.p_uncond, p_each=config.p_drop_each,
                          weights=weights, generator=generator)

    def checkpoint_fn(model, **extra):
        return make_checkpoint(model, processes, elements, counts, **extra)

    meta = {
        "data": str(train_source), "val_data": str(val_source), "labels": str(labels) if labels else None,
        "n_train": len(train_items), "n_val": len(val_items),
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads),
        "objective": asdict(config) | {"processes": {k: p.to_dict() for k, p in processes.items()}},
    }
    return train_loop(net, train_items, val_items, loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
