"""Training of the joint model over its registry of generated fields, resumable, on one device.

Loss per batch (one diffusion step t ~ U{1..T} per crystal, shared by all its fields, as in DiffCSP): the sum
over the model's fields (:mod:`diffase.generators.joint_fields`) of ``loss_weight * process loss``:
``w_A * D3PM hybrid loss + w_X * wrapped-normal score matching + w_L * lattice noise MSE`` for the structure,
plus e.g. ``w_q * Bader-charge noise MSE`` for a descriptor field (``descriptor_fields``) or ``w_C * density-latent
noise MSE`` for ChargeDIFF's charge density (``grid_fields``, densities encoded by a frozen VQ-VAE: paper weights
A 10, X 1, L 1, C 1). Descriptor labels come from an electronic label folder (:func:`descriptor_records`);
crystals without them are skipped and counted.
Classifier-free guidance training: all conditions of a crystal are dropped together (set to "not given")
with probability ``p_uncond`` (0.2), the case guided sampling calls; ``p_drop_each`` (default 0) also drops
each condition on its own (:func:`diffase.diffusion.guidance.training_dropout`). A crystal whose label is
missing is always unconditional for that condition.

Conditions come from label columns (band gap, formation energy, energy above hull, joined by
``material_id``) or are computed from the structure (:data:`COMPUTED_CONDITIONS`: density, space group,
chemical system as elements or as ChargeDIFF's 17 element groups, :mod:`diffase.data.element_groups`). The loop
itself (EMA, checkpoints, resume, time box) is :func:`diffase.train.loop.train_loop`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Element

from diffase.data import fields as F
from diffase.data.batch import to_device
from diffase.data.dataset import load_records
from diffase.data.element_groups import GROUP_NAMES, element_groups
from diffase.data.structures import record_to_structure
from diffase.diffusion.field_registry import FieldRegistry
from diffase.diffusion.guidance import training_dropout
from diffase.generators.joint import (
    CHECKPOINT_KIND,
    encode_records,
    make_batch,
    make_checkpoint,
)
from diffase.generators.joint_fields import (
    descriptor_fields,
    descriptor_row_shapes,
    grid_fields,
    grid_row_shapes,
    structure_fields,
)
from diffase.hub import read_checkpoint
from diffase.nn.conditioning import ConditionSpec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.runtime import configure_threads, resolve_device
from diffase.train.density_labels import DensityLatents
from diffase.train.descriptor_labels import DescriptorLabels
from diffase.train.loop import LoopConfig, hardware_info, read_resume_state, train_loop

#: Conditions computed from the structure itself, with their kind.
COMPUTED_CONDITIONS = {"density": "scalar", "space_group": "categorical", "chemical_system": "multi_hot",
                       "chemsys_groups": "multi_hot"}


@dataclass
class JointTrainConfig(LoopConfig):
    """Loop settings plus the joint objective's: field weights and condition dropout."""

    p_uncond: float = 0.2  #: probability that a crystal's conditions are all dropped together
    p_drop_each: float = 0.0  #: extra probability that each condition is dropped on its own
    weight_types: float = 1.0
    weight_coords: float = 1.0
    weight_lattice: float = 1.0
    descriptor_fields: dict = field(default_factory=dict)  #: descriptor field name -> loss weight ({"bader_charge": 1})
    init_from: str | None = None  #: joint checkpoint (name or path) whose weights start a fresh run (fine-tuning)
    dos_autoencoder: str | None = "ados-autoencoder"  #: frozen autoencoder encoding the ados_latent labels
    max_val: int | None = 1000  #: validation crystals (first N)
    conditions: list = field(default_factory=list)  #: condition names (label columns or COMPUTED_CONDITIONS)
    #: per-atom condition: "site_dos" = each site's DOS from label folders (train/val sources are label folders)
    node_condition: str | None = None
    node_condition_points: int = 128  #: site-DOS grid: points from e_min to e_max (E - E_F, eV)
    node_condition_e_min: float = -10.0
    node_condition_e_max: float = 10.0
    node_condition_transform: str = "log1p"  #: what the network sees of a DOS row (stored in the checkpoint)
    label_folders: list = field(default_factory=list)  #: more label folders to train on (e.g. predicted labels)
    #: more label folders to validate on (descriptor and density runs)
    val_label_folders: list = field(default_factory=list)
    #: per-site labels every training and validation crystal must carry, whether or not a field generates them
    #: (descriptor runs): the models of an ablation then see the very same crystals
    require_labels: list = field(default_factory=list)
    #: a site-label predictor checkpoint (e.g. "site-labels-mp20") whose split by material is reused: its test
    #: and validation materials are never trained on (from any folder), its validation materials validate
    #: (descriptor runs: besides every crystal of ``val_label_folders`` that is neither trained on nor a test one)
    hold_out_from: str | None = None
    #: generated grid fields -> loss weight ({"density_latent": 1.0}: ChargeDIFF's charge density; train and val
    #: are then density sets, :class:`~diffase.train.density_labels.DensityLatents`; hold_out_from may name the
    #: VQ-VAE, whose split by material it then follows)
    grid_fields: dict = field(default_factory=dict)
    density_vqvae: str | None = "vqvae-density"  #: frozen density VQ-VAE encoding the density_latent labels
    #: read the crystals as density sets (as a run with the density field does) without generating the density:
    #: a structure-only control trained on exactly the crystals of an A/X/L/C run
    density_crystals: bool = False


def computed_condition(name: str, record: dict, elements: Sequence[int]) -> np.ndarray:
    """Value of a computed condition for one crystal record (see :data:`COMPUTED_CONDITIONS`)."""
    if name == "chemical_system":
        vec = np.zeros(len(elements))
        vec[[list(elements).index(int(z)) for z in set(record[F.ATOMIC_NUMBERS].tolist())]] = 1.0
        return vec
    if name == "chemsys_groups":
        return element_groups(record[F.ATOMIC_NUMBERS])
    structure = record_to_structure(record)
    if name == "density":
        return np.array(float(structure.density))
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    return np.array(float(SpacegroupAnalyzer(structure, symprec=0.1).get_space_group_number()))


def condition_arrays(names: Sequence[str], records: Sequence[dict], ids: Sequence[str], elements: Sequence[int],
                     labels: str | Path | None, *, with_specs: bool = True
                     ) -> tuple[dict[str, np.ndarray], list[ConditionSpec]]:
    """Per-crystal condition values (NaN = unknown) and, ``with_specs`` (training crystals), their specs (scalars
    normalised by these crystals' values; an error when none has one). Validation crystals may all lack one."""
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
        if not with_specs:
            continue
        if kind == "scalar":
            known = arr[~np.isnan(arr)]
            if known.size == 0:
                raise ValueError(f"condition {name!r}: no training crystal has a value")
            specs.append(ConditionSpec(name, "scalar", 1, float(known.mean()), float(known.std() or 1.0)))
        else:
            # space groups are classes by international number 1..230 (class 0 unused), as users give them
            dims = {"space_group": 231, "chemsys_groups": len(GROUP_NAMES)}
            specs.append(ConditionSpec(name, kind, dims.get(name, len(elements))))
    return values, specs


def joint_loss(net: JointDenoiser, fields: FieldRegistry, items: Sequence[dict], *, p_uncond: float,
               p_each: float = 0.0, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Noise a batch of encoded items (``record`` + ``cond`` dicts) at random steps, one per crystal shared by
    all ``fields``; return ``sum(loss_weight * loss)`` and the unweighted loss of each field by name."""
    device = next(net.parameters()).device
    names = list(items[0]["cond"])
    conds = {name: np.stack([it["cond"][name] for it in items]) for name in names}
    batch = to_device(make_batch([it["record"] for it in items], conds), device)
    n_graph = batch[F.NUM_ATOMS].shape[0]
    steps = torch.randint(1, fields.num_steps + 1, (n_graph,), generator=generator, device=device)
    batch = training_dropout(batch, p_uncond=p_uncond, p_each=p_each, generator=generator)
    noisy, targets = dict(batch), {}
    for f in fields:
        t_rows = f.step_rows(steps, batch)
        noisy[f.key], target = f.corrupt(batch[f.key], t_rows, generator=generator)
        targets[f.name] = (target, t_rows)
    noisy[F.TIME] = (steps / fields.num_steps).to(batch[F.CELL].dtype)
    out = net(noisy)
    parts = {f.name: f.loss(out[f.key], targets[f.name][0], noisy[f.key], targets[f.name][1]) for f in fields}
    total = sum(f.loss_weight * parts[f.name] for f in fields)
    return total, {k: v.detach() for k, v in parts.items()}


def pretrained_checkpoint(name: str | Path, data_elements: Sequence[int]) -> dict:
    """The joint checkpoint a fine-tuning run starts from (:func:`diffase.hub.read_checkpoint`); its element
    vocabulary must hold every element of the training data."""
    ckpt = read_checkpoint(name)
    if ckpt["kind"] != CHECKPOINT_KIND:
        raise ValueError(f"init_from {name}: checkpoint kind {ckpt['kind']!r} is not a joint model")
    unknown = sorted(set(data_elements) - set(ckpt["elements"]))
    if unknown:
        symbols = ", ".join(Element.from_Z(z).symbol for z in unknown)
        raise ValueError(f"init_from {name}: the pretrained model never saw {symbols}, which the training data holds; "
                         "drop those crystals or pretrain with them")
    return ckpt


def _fine_tune_config(pretrained: dict, model_config: dict | None, specs, node_fields: dict,
                      node_cond_dim: int = 0, grid_fields: dict | None = None) -> JointDenoiserConfig:
    """The pretrained network's settings plus the new descriptor heads (``node_fields``) and, for a model
    conditioned per atom, the per-atom condition input (``node_cond_dim``)."""
    if model_config:
        raise ValueError("init_from keeps the pretrained network's settings; drop model_config")
    stored = pretrained["model_config"]
    names = [c["name"] for c in stored["conditions"]]
    if [s.name for s in specs][:len(names)] != names:
        raise ValueError(f"init_from: the conditions {[s.name for s in specs]} do not start with the pretrained "
                         f"model's {names}; list those first, new ones after them")
    if stored.get("node_cond_dim") and node_cond_dim and stored["node_cond_dim"] != node_cond_dim:
        raise ValueError(f"init_from: the pretrained model takes {stored['node_cond_dim']} per-atom condition "
                         f"values, this run {node_cond_dim}")
    conditions = stored["conditions"] + [s.to_dict() for s in specs[len(names):]]
    return JointDenoiserConfig(**{**stored, "conditions": conditions, "node_fields": node_fields, "grid_fields": grid_fields or {},
                                  "node_cond_dim": node_cond_dim or stored.get("node_cond_dim", 0)})


def _load_pretrained_weights(net: JointDenoiser, pretrained: dict) -> None:
    """Copy the pretrained weights; only the descriptor fields' input maps and heads start fresh, and so do a
    per-atom condition input and graph conditions the pretrained model lacks: their maps and "not given" vectors
    start at zero, so at step 0 the fine-tuned network is the pretrained one whether or not a condition is
    given."""
    missing, unexpected = net.load_state_dict(pretrained["state_dict"], strict=False)
    fresh = [k for k in missing if not k.startswith(("field_inputs.", "field_heads.", "node_cond.", "conditions.",
                                                                "probes."))]
    if fresh or unexpected:
        raise ValueError(f"init_from: weights do not fit the network (missing {fresh}, unexpected {unexpected})")
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in missing and name.startswith(("node_cond.", "conditions.")):
                p.zero_()


def held_out_materials(predictor: str | Path) -> dict[str, list[str]]:
    """The split by material (``{"train": [...], "val": [...], "test": [...]}`` material ids) stored in a
    site-label predictor's checkpoint (:func:`diffase.train.site_trainer.train_site_model`)."""
    ckpt = read_checkpoint(predictor)
    split = (ckpt.get("train") or {}).get("split")
    if not split or "test" not in split:
        raise ValueError(f"hold_out_from {predictor}: the checkpoint records no split by material (a site-label "
                         "predictor trained by diffase train --recipe ... with model site-labels has one)")
    return {part: list(split.get(part, [])) for part in ("train", "val", "test")}


def _folders(source) -> list:
    """A data source given as one label folder or several, as a list."""
    return [source] if isinstance(source, (str, Path)) else list(source)


def _warn_predicted(sources: dict, n_train: int, what: str) -> None:
    """Warn when some of the ``n_train`` training labels (``sources``: label source -> count) were predicted."""
    predicted = {k: v for k, v in sources.items() if k != "dft"}
    if predicted:
        warnings.warn(f"{sum(predicted.values())} of the {n_train} training {what} were predicted ({predicted}), not "
                      f"computed with DFT ({sources.get('dft', 0)}); say so wherever the model is described",
                      stacklevel=4)


def _held_out_info(config: JointTrainConfig, split: dict | None) -> dict | None:
    """The checkpoint's record of the materials held out by ``hold_out_from`` (None without a split)."""
    return {"from": str(config.hold_out_from), "val": split["val"], "test": split["test"]} if split else None


def _site_dos_data(train_source, val_source, config: JointTrainConfig, limit_train: int | None):
    """Training and validation records with the site DOS as ``node_cond``, the node-condition spec and the
    counts stored in the checkpoint (label sources, skipped, held out)."""
    from diffase.data.descriptor_records import load_site_dos_records
    from diffase.generators.node_condition import site_dos_spec

    if config.node_condition != "site_dos":
        raise ValueError(f"node_condition must be 'site_dos' (or None), got {config.node_condition!r}")
    if config.descriptor_fields:
        raise ValueError("a site-DOS-conditioned run generates the structure only; drop descriptor_fields")
    spec = site_dos_spec(config.node_condition_points, config.node_condition_e_min, config.node_condition_e_max,
                         transform=config.node_condition_transform)
    split = held_out_materials(config.hold_out_from) if config.hold_out_from else None
    never = sorted({*split["val"], *split["test"]}) if split else []
    folders = _folders(train_source) + list(config.label_folders)
    train_records, train_ids, train_counts = load_site_dos_records(folders, spec, exclude=never, limit=limit_train)
    val_records, val_ids, val_counts = load_site_dos_records(
        _folders(val_source), spec, only=split["val"] if split else None, limit=config.max_val)
    sigmas = sorted({round(r["dos_sigma"], 6) for r in train_records if r["label_source"] == "dft"})
    if len(sigmas) > 1:
        warnings.warn(f"the DFT labels are smeared with different widths {sigmas} eV; the checkpoint records the "
                      "median", stacklevel=3)
    dft = [r["dos_sigma"] for r in train_records if r["label_source"] == "dft"] or \
          [r["dos_sigma"] for r in train_records]
    spec["sigma_eV"] = float(np.median(dft))
    _warn_predicted(train_counts["sources"], len(train_records), "site DOS")
    info = {"node_condition_label_sources": train_counts["sources"],
            "node_condition_counts": {"train": train_counts, "val": val_counts},
            "held_out": _held_out_info(config, split)}
    return train_records, train_ids, val_records, val_ids, spec, info


def _descriptor_data(train_source, val_source, config: JointTrainConfig, descriptor_labels: DescriptorLabels,
                     limit_train: int | None):
    """Training and validation records of a run on label folders (descriptor fields, or a structure-only model
    on the same crystals through ``require_labels``) and the counts stored in the checkpoint."""
    split = held_out_materials(config.hold_out_from) if config.hold_out_from else None
    select = {"require": config.require_labels}
    train_records, train_ids, train_counts = descriptor_labels.load(
        _folders(train_source) + list(config.label_folders), **select, limit=limit_train,
        exclude=sorted({*split["val"], *split["test"]}) if split else ())
    val_records, val_ids, val_counts = descriptor_labels.load(
        _folders(val_source) + list(config.val_label_folders), **select, limit=config.max_val,
        exclude=sorted({*train_ids, *split["test"]}) if split else ())
    _warn_predicted(train_counts["sources"], len(train_records), "labels")
    if train_counts["skipped"] or val_counts["skipped"]:
        wanted = ", ".join(dict.fromkeys([*descriptor_labels.keys, *config.require_labels]))
        warnings.warn(f"skipped {train_counts['skipped']} training and {val_counts['skipped']} validation label "
                      f"files without {wanted} at every site (version-1 labels carry no Bader charges); training on "
                      f"{len(train_records)}, validating on {len(val_records)}", stacklevel=3)
    info = {"descriptor_label_sources": train_counts["sources"],
            "skipped_without_descriptors": {"train": train_counts["skipped"], "val": val_counts["skipped"]},
            "label_counts": {"train": train_counts, "val": val_counts},
            "held_out": _held_out_info(config, split)}
    return train_records, train_ids, val_records, val_ids, info


def _density_labels(config: JointTrainConfig, descriptors: list) -> DensityLatents | None:
    """The frozen VQ-VAE's labels of a run generating the charge-density latent or reading its crystals
    (``density_crystals``; None otherwise)."""
    if not config.grid_fields and not config.density_crystals:
        return None
    if descriptors or config.node_condition is not None:
        raise ValueError("a run with grid_fields generates the structure and the density latent only; drop "
                         "descriptor_fields / node_condition (densities and per-site labels are not joined yet)")
    if config.grid_fields and "density_latent" not in config.grid_fields:
        return None  # grid_fields() names the unknown field
    if config.density_vqvae is None:
        raise ValueError("the density_latent field needs a frozen density VQ-VAE: set density_vqvae (e.g. "
                         "'vqvae-density', made by `diffase train --recipe recipes/vqvae-density.json`)")
    return DensityLatents(config.density_vqvae)


def _density_data(train_source, val_source, config: JointTrainConfig, density: DensityLatents,
                  limit_train: int | None):
    """Training and validation records of a run with the density field: density sets (label folders with rho32,
    CHGCAR folders, ChargeDIFF's layout) encoded once by the frozen VQ-VAE. With ``hold_out_from`` (a checkpoint
    with a split by material, e.g. the VQ-VAE's own) its validation and test materials are never trained on and
    its validation materials validate. ``label_folders`` / ``val_label_folders`` add more density sets (e.g.
    densities predicted by density-mp20: counted by source, warned about)."""
    split = held_out_materials(config.hold_out_from) if config.hold_out_from else None
    train_records, train_ids, train_counts = density.load(
        _folders(train_source) + list(config.label_folders), limit=limit_train,
        exclude=sorted({*split["val"], *split["test"]}) if split else ())
    val_records, val_ids, val_counts = density.load(
        _folders(val_source), limit=config.max_val, only=split["val"] if split else None)
    room = None if config.max_val is None else config.max_val - len(val_records)
    if config.val_label_folders and (room is None or room > 0):  # never a training or a held-out test crystal
        more, more_ids, more_counts = density.load(
            config.val_label_folders, limit=room,
            exclude=sorted({*train_ids, *val_ids, *(split["test"] if split else ())}))
        val_records, val_ids = val_records + more, val_ids + more_ids
        val_counts = {"first": val_counts, "more": more_counts}
    _warn_predicted(train_counts["sources"], len(train_records), "densities")
    info = {"descriptor_label_sources": train_counts["sources"],
            "density_counts": {"train": train_counts, "val": val_counts},
            "held_out": _held_out_info(config, split)}
    return train_records, train_ids, val_records, val_ids, info


def _items(records, ids, elements, names, labels, with_specs=True):
    encoded = encode_records(records, elements)
    values, specs = condition_arrays(names, records, ids, elements, labels, with_specs=with_specs)
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
    With ``config.descriptor_fields`` (e.g. ``{"bader_charge": 1.0}``) ``train_source`` and ``val_source`` are
    electronic label folders (:func:`~diffase.data.descriptor_records.load_descriptor_records`): files without
    the descriptors are skipped with a warning that counts them; a folder with none of them is an error.
    With ``config.grid_fields`` (``{"density_latent": 1.0}``) they are density sets
    (:class:`~diffase.train.density_labels.DensityLatents`: label folders with ``rho32``, CHGCAR folders, ChargeDIFF's
    layout), encoded once by the frozen VQ-VAE ``config.density_vqvae``, which the checkpoint carries.
    ``config.init_from``: fine-tune a pretrained joint checkpoint (e.g. ``"joint-mp20"``): its element vocabulary,
    network settings and weights; descriptor heads and the probe branch start fresh.
    Re-running with the same ``out_dir`` resumes from its ``last.pt`` (model settings come from there).
    """
    config = config or JointTrainConfig()
    dev = resolve_device(device)
    threads = configure_threads(num_threads) if dev.type == "cpu" else None
    descriptors = descriptor_fields(config.descriptor_fields)
    keys = [f.key for f in descriptors]
    descriptor_labels = DescriptorLabels(keys, config.dos_autoencoder)  # ados_latent: encoded site DOS
    density = _density_labels(config, descriptors)  # density_latent: densities encoded by the frozen VQ-VAE
    grids = grid_fields(config.grid_fields, {"density_latent": density.row_shape} if density else {})
    carry_vqvae = density is not None and bool(grids)  # a density_crystals control generates no density
    node_spec, data_info = None, {}
    if density is not None:
        train_records, train_ids, val_records, val_ids, data_info = _density_data(
            train_source, val_source, config, density, limit_train)
    elif config.node_condition is not None:
        train_records, train_ids, val_records, val_ids, node_spec, data_info = _site_dos_data(
            train_source, val_source, config, limit_train)
    elif keys or config.require_labels or config.label_folders:
        train_records, train_ids, val_records, val_ids, data_info = _descriptor_data(
            train_source, val_source, config, descriptor_labels, limit_train)
    else:
        train_records, train_ids = load_records(train_source, limit=limit_train)
        val_records, val_ids = load_records(val_source, limit=config.max_val)
    elements = sorted({int(z) for r in train_records for z in r[F.ATOMIC_NUMBERS]})
    pretrained = pretrained_checkpoint(config.init_from, elements) if config.init_from else None
    if pretrained is not None:
        elements = pretrained["elements"]
    val_keep = [i for i, r in enumerate(val_records) if set(r[F.ATOMIC_NUMBERS].tolist()) <= set(elements)]
    if not val_keep:
        raise ValueError(f"none of the {len(val_records)} validation crystals uses only the {len(elements)} "
                         "training elements; use more training or validation crystals")
    val_records, val_ids = [val_records[i] for i in val_keep], [val_ids[i] for i in val_keep]
    counts = np.bincount([len(r[F.ATOMIC_NUMBERS]) for r in train_records]).tolist()

    train_items, specs = _items(train_records, train_ids, elements, config.conditions, labels)
    val_items, _ = _items(val_records, val_ids, elements, config.conditions, labels, with_specs=False)
    state = read_resume_state(out_dir)
    weights = (config.weight_types, config.weight_coords, config.weight_lattice)
    fields = FieldRegistry(structure_fields(len(elements), weights) + descriptors + grids)
    if state is not None:
        net_config = JointDenoiserConfig(**state["model_config"])
    elif pretrained is not None:
        net_config = _fine_tune_config(pretrained, model_config, specs, descriptor_row_shapes(fields),
                                       node_spec["n_points"] if node_spec else 0, grid_row_shapes(fields))
    else:
        extra_config = dict(model_config or {})
        if node_spec is not None:
            if extra_config.get("node_cond_dim", node_spec["n_points"]) != node_spec["n_points"]:
                raise ValueError(f"model_config node_cond_dim {extra_config['node_cond_dim']} differs from "
                                 f"node_condition_points {node_spec['n_points']}; drop it")
            extra_config["node_cond_dim"] = node_spec["n_points"]
        net_config = JointDenoiserConfig(num_elements=len(elements), conditions=[s.to_dict() for s in specs],
                                         node_fields=descriptor_row_shapes(fields),
                                         grid_fields=grid_row_shapes(fields), **extra_config)
    torch.manual_seed(config.seed)  # the initial weights of a fresh run
    net = JointDenoiser(net_config)
    if pretrained is not None and state is None:
        _load_pretrained_weights(net, pretrained)
    net = net.to(dev)

    def loss_fn(model, items, generator):
        return joint_loss(model, fields, items, p_uncond=config.p_uncond, p_each=config.p_drop_each,
                          generator=generator)

    def checkpoint_fn(model, **extra):
        if node_spec is not None:
            extra = {"node_condition": node_spec, **extra}
        frozen = {**descriptor_labels.checkpoint_entries(), **(density.checkpoint_entries() if carry_vqvae else {})}
        return make_checkpoint(model, fields, elements, counts, **frozen, **extra)

    meta = {
        "data": str(train_source), "val_data": str(val_source), "labels": str(labels) if labels else None,
        "n_train": len(train_items), "n_val": len(val_items),
        **data_info,
        "n_parameters": sum(p.numel() for p in net.parameters()),
        "hardware": hardware_info(dev, threads),
        "objective": asdict(config) | {"fields": fields.to_list()},
    }
    return train_loop(net, train_items, val_items, loss_fn, checkpoint_fn, out_dir, config, device=dev,
                      state=state, meta=meta, progress=progress)
