"""Named checkpoints: where diffase looks for them, how they are read, and the in-process cache.

Lookup order for ``name`` (no downloads, ever):

1. ``name`` itself if it is a path to a file;
2. ``$DIFFASE_MODELS/<name>.pt`` (a folder of your own checkpoints);
3. the ``models/`` folder of the diffase source tree (the shipped checkpoints);
4. ``~/.cache/diffase/models/<name>.pt``.

Checkpoints are plain dicts of tensors and JSON-like values, read with ``torch.load(weights_only=True)``:
data, never code. Each sits beside a model card (``<name>.md``) saying how it was trained.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from diffase.errors import CheckpointNotFoundError

#: The shipped default score model (inpainting, unconditional position generation).
DEFAULT_SCORE_MODEL = "score-mp20"

_CACHE: dict[tuple[str, str], object] = {}


def search_dirs() -> list[Path]:
    """Folders searched for named checkpoints, in order."""
    dirs = []
    if os.environ.get("DIFFASE_MODELS"):
        dirs.append(Path(os.environ["DIFFASE_MODELS"]))
    dirs.append(Path(__file__).resolve().parents[1] / "models")
    dirs.append(Path.home() / ".cache" / "diffase" / "models")
    return dirs


def find_checkpoint(name: str | os.PathLike) -> Path:
    """Path of a checkpoint given by name or path; :class:`CheckpointNotFoundError` lists where it looked."""
    path = Path(name)
    if path.is_file():
        return path
    if path.suffix or os.sep in str(name):
        raise CheckpointNotFoundError(f"checkpoint file {path} does not exist")
    tried = [d / f"{name}.pt" for d in search_dirs()]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    available = ", ".join(list_models()) or "none"
    raise CheckpointNotFoundError(
        f"no checkpoint named {name!r}; looked for: " + ", ".join(str(t) for t in tried)
        + f". Available models: {available}. Pass a path, or set DIFFASE_MODELS to a folder of checkpoints."
    )


def list_models() -> list[str]:
    """Names of every checkpoint found in :func:`search_dirs`."""
    names = []
    for d in search_dirs():
        if d.is_dir():
            names += [p.stem for p in sorted(d.glob("*.pt")) if p.stem not in names]
    return names


def read_checkpoint(name: str | os.PathLike) -> dict:
    """Load a checkpoint dict onto the CPU with ``weights_only=True``."""
    path = find_checkpoint(name)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "kind" not in ckpt:
        raise ValueError(f"{path} is not a diffase checkpoint (no 'kind' entry)")
    ckpt["path"] = str(path)
    return ckpt


def frozen_copy(name: str | os.PathLike) -> tuple[dict, dict]:
    """A checkpoint (:func:`read_checkpoint`) and the entry another checkpoint stores to carry it as a frozen network
    (a joint model's atomic-DOS autoencoder or density VQ-VAE): its ``kind``, ``model_config`` and ``state_dict``,
    the ``name`` it was read by and the ``sha256`` of its file."""
    from diffase.resume import file_sha256

    ckpt = read_checkpoint(name)
    entry = {k: ckpt[k] for k in ("kind", "model_config", "state_dict")} | {
        "name": str(name), "sha256": file_sha256(ckpt["path"])}
    return ckpt, entry


def network_from_checkpoint(ckpt: dict, kind: str, net_class, config_class, *, keep_out: tuple[str, ...] = ()):
    """The network of a checkpoint dict of kind ``kind`` (``ValueError`` otherwise): ``net_class(config_class(
    **ckpt["model_config"]))`` with its ``state_dict`` loaded, and the checkpoint's other entries (``meta``) but
    the weights, the config and ``keep_out``."""
    if ckpt.get("kind") != kind:
        raise ValueError(f"checkpoint kind {ckpt.get('kind')!r} is not {kind!r} ({net_class.__name__})")
    net = net_class(config_class(**ckpt["model_config"]))
    net.load_state_dict(ckpt["state_dict"])
    meta = {k: v for k, v in ckpt.items() if k not in {"state_dict", "model_config", *keep_out}}
    return net, meta


def cached(name: str | os.PathLike, device: torch.device, build):
    """Return ``build()`` once per (checkpoint path, device) in this process."""
    key = (str(find_checkpoint(name).resolve()), str(device))
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]
