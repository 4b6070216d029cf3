"""Training recipes: every hyper-parameter of a training run in one JSON file, run by ``diffase train --recipe``.

A recipe is a JSON object with these keys (all but ``model`` optional):

* ``model``: ``"score"`` (:func:`~diffase.train.score_trainer.train_score_model`; several devices:
  :func:`~diffase.train.lightning.train_score_model_lightning`), ``"joint"``
  (:func:`~diffase.train.joint_trainer.train_joint_model`, one device), ``"dos-regressor"`` (the time-dependent
  site-DOS regressor of classifier guidance, :func:`~diffase.train.dos_regressor_trainer.train_dos_regressor`;
  ``train`` / ``val`` are label folders as for a site-DOS joint model), ``"site-labels"`` (the site-DOS and
  Bader predictor, :func:`~diffase.train.site_trainer.train_site_model`; ``train`` is a DFT label folder, split by
  material inside, no ``val``), ``"dos-autoencoder"`` (the atomic-DOS autoencoder,
  :func:`~diffase.train.dos_autoencoder_trainer.train_dos_autoencoder`; ``train`` is a DFT label folder, split by
  material inside, no ``val``), ``"density"`` (the valence-density predictor,
  :func:`~diffase.train.density_trainer.train_density_model`; likewise a DFT label folder, no ``val``) or
  ``"vqvae"`` (the charge-density VQ-VAE, :func:`~diffase.train.vqvae_trainer.train_vqvae`; ``train`` is a label
  folder, a CHGCAR folder or ChargeDIFF's layout, split by material inside, no ``val``);
* ``train``, ``val``: data paths (relative paths are read from the current directory); ``out``: run folder;
  ``labels``: label CSV of a conditional joint model;
* ``model_config``: the network's settings (score: :class:`~diffase.nn.score_net.ScoreNetConfig` except
  ``avg_num_neighbors``, which is measured on the data; joint: :class:`~diffase.nn.joint_denoiser.JointDenoiserConfig`
  except ``num_elements``, ``conditions``, ``node_fields`` and ``grid_fields``, which come from the data,
  ``config.conditions``, ``config.descriptor_fields`` and ``config.grid_fields``);
* ``process``: the score model's :class:`~diffase.diffusion.ve.VEProcess` settings (the joint model's
  fields and processes are :func:`~diffase.generators.joint_fields.joint_fields`: A/X/L plus
  ``config.descriptor_fields``, loss weights from ``config``);
* ``config``: the loop settings (:class:`~diffase.train.score_trainer.TrainConfig` or
  :class:`~diffase.train.joint_trainer.JointTrainConfig`);
* ``about``: free text (where the recipe comes from).

A key the trainer does not accept is refused when the recipe is read, naming the key and the accepted ones.
The recipes of the shipped models live in ``recipes/`` at the top of the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

#: Network settings a recipe must not give: the trainer sets them from the data.
_FROM_DATA = {"score": {"avg_num_neighbors"}, "joint": {"num_elements", "conditions", "node_fields", "grid_fields"},
              "site-labels": {"avg_num_neighbors", "dos_points"}, "dos-autoencoder": {"dos_points", "e_min", "e_max"},
              "density": {"avg_num_neighbors", "avg_probe_neighbors"}, "vqvae": set(),
              "dos-regressor": {"num_elements", "node_fields"}}
#: Recipe models trained on one DFT label folder, split by material inside (no ``val``).
_LABEL_FOLDER_MODELS = ("site-labels", "dos-autoencoder", "density", "vqvae")


@dataclass
class Recipe:
    """A training run's settings (see the module docstring for each key)."""

    model: str
    train: str | None = None
    val: str | None = None
    out: str | None = None
    labels: str | None = None
    model_config: dict = field(default_factory=dict)
    process: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    about: str = ""


def _accepted(model: str) -> dict[str, set[str]]:
    """Keys each section of a ``model`` recipe may hold."""
    if model == "score":
        from diffase.diffusion.ve import VEProcess
        from diffase.nn.score_net import ScoreNetConfig
        from diffase.train.score_trainer import TrainConfig

        net, process, loop = ScoreNetConfig, {f.name for f in fields(VEProcess)}, TrainConfig
    elif model == "joint":
        from diffase.nn.joint_denoiser import JointDenoiserConfig
        from diffase.train.joint_trainer import JointTrainConfig

        net, process, loop = JointDenoiserConfig, set(), JointTrainConfig
    elif model == "dos-regressor":
        from diffase.nn.joint_denoiser import JointDenoiserConfig
        from diffase.train.dos_regressor_trainer import DosRegressorTrainConfig

        net, process, loop = JointDenoiserConfig, set(), DosRegressorTrainConfig
    elif model == "site-labels":
        from diffase.predictors.site_net import SiteNetConfig
        from diffase.train.site_trainer import SiteTrainConfig

        net, process, loop = SiteNetConfig, set(), SiteTrainConfig
    elif model == "dos-autoencoder":
        from diffase.nn.dos_autoencoder import DosAutoencoderConfig
        from diffase.train.dos_autoencoder_trainer import DosAutoencoderTrainConfig

        net, process, loop = DosAutoencoderConfig, set(), DosAutoencoderTrainConfig
    elif model == "density":
        from diffase.predictors.density_net import DensityNetConfig
        from diffase.train.density_trainer import DensityTrainConfig

        net, process, loop = DensityNetConfig, set(), DensityTrainConfig
    elif model == "vqvae":
        from diffase.nn.vqvae3d import VQVAE3DConfig
        from diffase.train.vqvae_trainer import VQVAETrainConfig

        net, process, loop = VQVAE3DConfig, set(), VQVAETrainConfig
    else:
        raise ValueError(f"recipe model must be 'score', 'joint', 'dos-regressor', 'site-labels', 'dos-autoencoder', "
                         f"'density' or 'vqvae', got {model!r}")
    return {"model_config": {f.name for f in fields(net)} - _FROM_DATA[model], "process": process,
            "config": {f.name for f in fields(loop)}}


def check_recipe(recipe: Recipe) -> Recipe:
    """Return ``recipe`` if its trainer accepts every key it names; raise ``ValueError`` naming any other."""
    for section, accepted in _accepted(recipe.model).items():
        unknown = sorted(set(getattr(recipe, section)) - accepted)
        if unknown:
            raise ValueError(f"{recipe.model} recipe: {section} key(s) {', '.join(map(repr, unknown))} are not "
                             f"accepted by the trainer; accepted: {', '.join(sorted(accepted)) or 'none'}")
    if recipe.labels is not None and recipe.model != "joint":
        raise ValueError("recipe: 'labels' is for conditional joint models only")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe JSON file."""
    data = json.loads(Path(path).read_text())
    unknown = sorted(set(data) - {f.name for f in fields(Recipe)})
    if unknown:
        raise ValueError(f"recipe {path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(f.name for f in fields(Recipe))}")
    if "model" not in data:
        raise ValueError(f"recipe {path}: no 'model' ('score', 'joint', 'site-labels', 'dos-autoencoder', "
                         "'density' or 'vqvae')")
    return check_recipe(Recipe(**data))


def train_recipe(recipe: Recipe, *, train=None, val=None, out=None, overrides: dict | None = None, devices: int = 1,
                 device: str = "auto", num_threads: int | None = None, limit_train: int | None = None,
                 progress: bool = True) -> Path:
    """Run ``recipe`` and return the path of its ``best.pt``.

    ``train`` / ``val`` / ``out`` replace the recipe's paths; ``overrides`` replace ``config`` entries (e.g.
    ``{"max_steps": 1}``). ``devices`` > 1 trains the score model with Lightning DDP (``device="cpu"``:
    CPU processes over gloo; otherwise GPUs). Re-running on the same ``out`` resumes.
    """
    recipe = check_recipe(replace(recipe, config={**recipe.config, **(overrides or {})}))
    train, val, out = train or recipe.train, val or recipe.val, out or recipe.out
    if recipe.model in _LABEL_FOLDER_MODELS:
        if train is None or out is None or devices > 1:
            raise ValueError(f"a {recipe.model} recipe trains on one device and needs a DFT label folder ('train') "
                             "and a run folder ('out'); its validation materials are split off the folder")
        if recipe.model == "dos-autoencoder":
            from diffase.train.dos_autoencoder_trainer import (
                DosAutoencoderTrainConfig,
                train_dos_autoencoder,
            )

            return train_dos_autoencoder(train, out, model_config=recipe.model_config,
                                         config=DosAutoencoderTrainConfig(**recipe.config), device=device,
                                         num_threads=num_threads, progress=progress)
        if recipe.model == "density":
            from diffase.train.density_trainer import DensityTrainConfig, train_density_model

            return train_density_model(train, out, model_config=recipe.model_config,
                                       config=DensityTrainConfig(**recipe.config), device=device,
                                       num_threads=num_threads, progress=progress)
        if recipe.model == "vqvae":
            from diffase.train.vqvae_trainer import VQVAETrainConfig, train_vqvae

            return train_vqvae(train, out, model_config=recipe.model_config, config=VQVAETrainConfig(**recipe.config),
                               device=device, num_threads=num_threads, progress=progress)
        from diffase.train.site_trainer import SiteTrainConfig, train_site_model

        return train_site_model(train, out, model_config=recipe.model_config, config=SiteTrainConfig(**recipe.config),
                                device=device, num_threads=num_threads, progress=progress)
    if train is None or val is None or out is None:
        raise ValueError("training needs training data, validation data and a run folder: give them or name "
                         "them in the recipe ('train', 'val', 'out')")
    if recipe.model == "joint":
        if devices > 1:
            raise ValueError("the joint model trains on one device; multi-device (DDP) training is for the score model")
        from diffase.train.joint_trainer import JointTrainConfig, train_joint_model

        return train_joint_model(train, val, out, model_config=recipe.model_config,
                                 config=JointTrainConfig(**recipe.config), labels=recipe.labels, device=device,
                                 num_threads=num_threads, limit_train=limit_train, progress=progress)
    if recipe.model == "dos-regressor":
        if devices > 1:
            raise ValueError("the DOS regressor trains on one device")
        from diffase.train.dos_regressor_trainer import (
            DosRegressorTrainConfig,
            train_dos_regressor,
        )

        return train_dos_regressor(train, val, out, model_config=recipe.model_config,
                                   config=DosRegressorTrainConfig(**recipe.config), device=device,
                                   num_threads=num_threads, limit_train=limit_train, progress=progress)
    from diffase.diffusion.ve import VEProcess
    from diffase.nn.score_net import ScoreNetConfig
    from diffase.train.score_trainer import TrainConfig

    kwargs = {"model_config": ScoreNetConfig(**recipe.model_config), "process": VEProcess(**recipe.process),
              "config": TrainConfig(**recipe.config), "num_threads": num_threads, "limit_train": limit_train,
              "progress": progress}
    if devices > 1:
        from diffase.train.lightning import train_score_model_lightning

        accelerator = "cpu" if device == "cpu" else "auto" if device == "auto" else "gpu"
        return train_score_model_lightning(train, val, out, devices=devices, accelerator=accelerator, **kwargs)
    from diffase.train.score_trainer import train_score_model

    return train_score_model(train, val, out, device=device, **kwargs)
