"""Label many structures with GPAW: resumable, shardable over workers, logged, failures recorded and skipped.

Output folder layout (the label format of :mod:`diffase.data.electronic.dataset`)::

    OUT/<name>.npz                      one label per structure, written atomically when its calculation is done
    OUT/index.csv                       rebuilt from the .npz files at the end of every run
    OUT/settings.json                   the label settings of the folder (written by the first run)
    OUT/logs/<name>.txt                 GPAW's own text log of each calculation
    OUT/failures-<i>-of-<n>.jsonl       one JSON line per failed structure of shard i (name, formula, error, seconds)

A structure whose ``.npz`` exists is skipped, so re-running the same command resumes; failed structures are tried
again on the next run. Shard ``i`` of ``n`` takes every n-th structure starting at i (0-based), so ``n`` workers
started with ``--shard 0/n`` ... ``--shard n-1/n`` on the same input and folder split the work without overlap.
:func:`~diffase.labeling.workers.label_structures_in_parallel` (``--workers N``) starts N single-threaded worker
processes on one machine, each a sub-shard of the run's shard.

A run into a folder that holds labels made with other settings is refused before anything is computed or
written (:class:`~diffase.errors.SettingsMismatchError`, naming each differing field): a folder holds one kind
of label. Only the per-structure ``timeout`` may change between runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffase.data.electronic.dataset import write_index, write_label
from diffase.data.io import read_structures
from diffase.errors import SettingsMismatchError
from diffase.labeling.gpaw_runner import find_gpaw_python, label_from_raw, run_single_point
from diffase.labeling.settings import LabelSettings, settings_differences, unsupported_elements
from diffase.resume import SETTINGS_FILE

log = logging.getLogger("diffase.label")


@dataclass
class LabelReport:
    """What a :func:`label_structures` run did: names labelled, skipped (already done) and failed, wall seconds."""

    labelled: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def folder_settings(out_dir: str | Path) -> LabelSettings | None:
    """The settings a label folder was made with: ``settings.json``, else those stored in its first label (folders
    written before ``settings.json`` existed), else ``None`` (a new or empty folder)."""
    out_dir = Path(out_dir)
    if (out_dir / SETTINGS_FILE).exists():
        return LabelSettings.from_dict(json.loads((out_dir / SETTINGS_FILE).read_text()))
    for path in sorted(out_dir.glob("*.npz")) if out_dir.is_dir() else []:
        if not path.name.endswith(".part.npz"):
            with np.load(path, allow_pickle=False) as npz:
                if "settings" in npz.files:
                    return LabelSettings.from_dict(json.loads(str(npz["settings"])))
    return None


def check_resume(out_dir: str | Path, settings: LabelSettings) -> None:
    """Raise :class:`~diffase.errors.SettingsMismatchError` (listing ``field: folder's -> requested``) if ``out_dir``
    holds labels made with settings that differ from ``settings`` in anything but the timeout; reads, never writes.

    Like :func:`diffase.resume.check_resume` (inpaint, csp, generate) and the same record file, but the recorded
    settings are read through :meth:`LabelSettings.from_dict`, so a field added to the labeller later (with a
    default that keeps the old behaviour) does not count as a difference, and a folder from before the record
    existed is checked against its labels' own settings."""
    existing = folder_settings(out_dir)
    if existing is not None and (differences := settings_differences(existing, settings)):
        raise SettingsMismatchError(
            f"{out_dir} holds labels made with other settings ({'; '.join(differences)}): a resumed run must use "
            f"the folder's settings (preset {existing.preset!r} plus the fields above), or write to a new --out folder"
        )


def write_folder_settings(out_dir: Path, settings: LabelSettings) -> None:
    """Write ``settings.json`` atomically (a temporary name per process, then a rename: workers may race)."""
    tmp = out_dir / f"{SETTINGS_FILE}.{os.getpid()}.part"
    tmp.write_text(json.dumps(settings.as_dict(), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, out_dir / SETTINGS_FILE)


def file_stem(name: str) -> str:
    """A file-system-safe stem for a structure name (anything but letters, digits, ``.-_`` becomes ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "structure"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise ValueError(f"shard must be 'i/n' with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(match[1]), int(match[2])


def label_structures(
    source,
    out_dir: str | Path,
    *,
    settings: LabelSettings = LabelSettings(),
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
) -> LabelReport:
    """Label the structures of ``source`` (anything :func:`~diffase.data.io.read_structures` reads) into ``out_dir``.

    Structures with elements GPAW cannot treat are found before any calculation starts. Never raises for one
    structure: an unsupported element, a GPAW error or a timeout is logged and written to the shard's failures
    file, and the run goes on. Raises :class:`~diffase.errors.SettingsMismatchError` before anything is written if
    ``out_dir`` holds labels made with other settings, and :class:`~diffase.labeling.gpaw_runner.GPAWNotFoundError`
    up front if there is work to do and no GPAW.
    """
    start = time.perf_counter()
    index, count = shard
    out_dir = Path(out_dir)
    check_resume(out_dir, settings)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    write_folder_settings(out_dir, settings)
    failures = out_dir / f"failures-{index}-of-{count}.jsonl"
    report = LabelReport()

    def record_failure(name: str, structure, error: str, seconds: float, trace: str = "") -> None:
        report.failed.append(name)
        with open(failures, "a") as fh:
            fh.write(json.dumps({"name": name, "formula": structure.formula, "error": error, "traceback": trace,
                                 "seconds": round(seconds, 1)}) + "\n")

    todo, unsupported = [], set()
    for name, structure in read_structures(source, limit=limit)[index::count]:
        if (out_dir / f"{file_stem(name)}.npz").exists():
            report.skipped.append(name)
        elif missing := unsupported_elements({el.symbol for el in structure.composition.elements}, settings):
            unsupported.update(missing)
            record_failure(name, structure, f"unsupported elements (no GPAW setup/basis): {', '.join(missing)}", 0.0)
        else:
            todo.append((name, structure))
    log.info("shard %d/%d -> %s: %d to label, %d already done, %d with unsupported elements (%s); settings %s",
             index, count, out_dir, len(todo), len(report.skipped), len(report.failed),
             ", ".join(sorted(unsupported)) or "none",
             settings.as_dict())
    if todo:
        find_gpaw_python()  # a missing GPAW is a set-up error, not a failure of each structure: raise it once
    for k, (name, structure) in enumerate(todo, start=1):
        stem = file_stem(name)
        t0 = time.perf_counter()
        try:
            raw = run_single_point(structure, settings, log_path=out_dir / "logs" / f"{stem}.txt")
            write_label(out_dir / f"{stem}.npz", label_from_raw(name, structure, raw, settings))
        except Exception as exc:  # noqa: BLE001 - one bad structure must not stop the run
            seconds = time.perf_counter() - t0
            record_failure(name, structure, f"{type(exc).__name__}: {exc}", seconds, traceback.format_exc(limit=3))
            log.warning("[%d/%d] %s %s FAILED after %.0f s: %s", k, len(todo), name, structure.formula, seconds, exc)
            continue
        report.labelled.append(name)
        per_structure = (time.perf_counter() - start) / k
        log.info("[%d/%d] %s %s: %d atoms, k-mesh %s (%d irreducible), %.0f s; about %.0f min left", k, len(todo),
                 name, structure.formula, len(structure), raw["kpts"].tolist(), int(raw["n_ibz_kpts"]),
                 time.perf_counter() - t0, per_structure * (len(todo) - k) / 60)
    write_index(out_dir)
    report.seconds = time.perf_counter() - start
    log.info("shard %d/%d done: %d labelled, %d already there, %d failed, %.0f s", index, count,
             len(report.labelled), len(report.skipped), len(report.failed), report.seconds)
    return report
