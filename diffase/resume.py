"""Resuming a run into its output folder: the settings it was started with, checked before any work.

``diffase inpaint``, ``csp`` and ``generate`` stream results to disk and resume when run again. A re-run
with another host, guest, model or sampler would otherwise add its results to the old ones and label them
all with the new settings. Each run therefore records what identifies it (:func:`write_settings`), and a
re-run compares its own settings with that record first (:func:`check_resume`): any difference is refused,
naming the keys, before anything is sampled or written.

What identifies a run is content, not names: a host structure by :func:`structure_fingerprint` (a moved or
renamed file with the same crystal resumes; an edited file does not), a model by its name and the SHA-256 of
its checkpoint file (:func:`model_fingerprint`: a retrained ``score-mp20`` is another model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from diffase.errors import SettingsMismatchError

#: Name of the settings record inside an output folder.
SETTINGS_FILE = "settings.json"


def structure_fingerprint(structure: Structure) -> str:
    """SHA-256 (hex) of a crystal's content: lattice (Angstrom), atomic numbers and fractional coordinates,
    rounded to 1e-6 so that the same file read twice always gives the same value."""
    content = {"lattice": np.round(structure.lattice.matrix, 6).tolist(),
               "numbers": [site.specie.Z for site in structure],
               "frac_coords": np.round(structure.frac_coords, 6).tolist()}
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model) -> dict:
    """``{"model": name or path, "model_sha256": checkpoint hash or None}`` of a model given by name/path
    (a missing checkpoint raises :class:`~diffase.errors.CheckpointNotFoundError` here, before any output)
    or already loaded (its ``meta["path"]`` when it was read from a file)."""
    from diffase.hub import find_checkpoint

    if isinstance(model, (str, os.PathLike)):
        return {"model": str(model), "model_sha256": file_sha256(find_checkpoint(model))}
    path = getattr(model, "meta", {}).get("path")
    return {"model": str(path or type(model).__name__),
            "model_sha256": file_sha256(path) if path and Path(path).is_file() else None}


def _as_json(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


def settings_differences(old: dict, new: dict) -> list[str]:
    """Keys (sorted) whose values differ between two settings records, a key missing on one side included."""
    return sorted(k for k in set(old) | set(new) if old.get(k, "<missing>") != new.get(k, "<missing>"))


def check_resume(path: str | os.PathLike, settings: dict, *, what: str, only_given: bool = False) -> bool:
    """Refuse to resume a run recorded in ``path`` (a settings JSON file) with other ``settings``.

    Returns False when ``path`` does not exist (a new run), True when it records the same settings (a
    resume). Raises :class:`~diffase.errors.SettingsMismatchError` naming each differing key with its old and
    new value otherwise. ``only_given`` compares only the keys of ``settings`` (a check made before the rest
    of the settings are known). Reads only: nothing is written.
    """
    path = Path(path)
    if not path.exists():
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SettingsMismatchError(f"cannot read {path} ({err}); use a new output location") from err
    new = _as_json(settings)
    keys = settings_differences({k: old.get(k, "<missing>") for k in new} if only_given else old, new)
    if keys:
        changes = "; ".join(f"{k}: {_short(old.get(k, '<missing>'))} -> {_short(new.get(k, '<missing>'))}"
                            for k in keys)
        raise SettingsMismatchError(
            f"{path.parent} holds a {what} run started with other settings (different settings: {changes}; "
            f"recorded in {path}). "
            "Use a new output location, or the same settings to resume.")
    return True


def write_settings(path: str | os.PathLike, settings: dict) -> None:
    """Record ``settings`` (JSON, keys sorted) in ``path``; call it only after :func:`check_resume` passed."""
    Path(path).write_text(json.dumps(_as_json(settings), indent=1, sort_keys=True))


def _short(value, width: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."
