"""Predicted labels for a structure table: the label-file format, marked as predicted, streamed and resumable.

``predict_labels(source, model, out_dir)`` writes ``out_dir/<name>.npz`` per structure and ``index.csv``. The
checkpoint's kind picks the predictor and what each file holds besides the structure and the marker (the
predictor's name, checkpoint hash and held-out errors):

* a site-label predictor (:meth:`~diffase.predictors.model.SiteLabelPredictor.label`): site DOS and Bader charges;
* a density predictor (:meth:`~diffase.predictors.density_model.DensityPredictor.label`): ``rho32``, the valence
  pseudo-density on the 32^3 grid of the cell (Bader charges NaN, no DOS).

One label format for both: a user who wants both runs the two models into two folders. Batches are predicted and
written one after another (each file atomically), so an interrupted run keeps what it finished; a re-run skips
files already there. The
folder's ``settings.json`` records the predictor (name and checkpoint SHA-256) and a re-run with another one is
refused before anything is written (:func:`diffase.resume.check_resume`). A structure with an element the predictor
never saw is reported and skipped.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from diffase.data.electronic.dataset import write_index, write_label
from diffase.data.io import read_structures
from diffase.data.structures import structure_to_record
from diffase.hub import find_checkpoint, read_checkpoint
from diffase.labeling.batch import file_stem
from diffase.predictors import density_model
from diffase.predictors import model as site_model
from diffase.resume import SETTINGS_FILE, check_resume, file_sha256, write_settings

log = logging.getLogger("diffase.predict_labels")


#: Checkpoint kind -> (predictor class, the ``kind`` recorded in the output folder's settings).
PREDICTORS = {site_model.CHECKPOINT_KIND: (site_model.SiteLabelPredictor, "predicted site labels"),
              density_model.CHECKPOINT_KIND: (density_model.DensityPredictor, "predicted density")}


def load_predictor(model: str, device: str = "cpu"):
    """The site-label or density predictor of checkpoint ``model`` (name or path) and its settings kind."""
    ckpt = read_checkpoint(model)
    if ckpt["kind"] not in PREDICTORS:
        raise ValueError(f"{ckpt['path']} is a {ckpt['kind']!r} checkpoint, not a label predictor; predict-labels "
                         f"takes {', '.join(PREDICTORS)} (e.g. site-labels-mp20 or density-mp20)")
    cls, kind = PREDICTORS[ckpt["kind"]]
    return cls.from_checkpoint(ckpt, device), kind


@dataclass
class PredictReport:
    """What a :func:`predict_labels` run did: names written, skipped (already there) and refused (name -> the
    elements the predictor never saw)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: dict[str, list[str]] = field(default_factory=dict)


def predict_labels(source, model: str, out_dir: str | Path, *, batch_size: int = 32, limit: int | None = None,
                   device: str = "cpu") -> PredictReport:
    """Write predicted labels of the structures in ``source`` (paths or anything
    :func:`~diffase.data.io.read_structures` reads) with the predictor ``model`` (name or checkpoint path)."""
    out_dir = Path(out_dir)
    sha256 = file_sha256(find_checkpoint(model))
    predictor, kind = load_predictor(model, device)
    settings = {"kind": kind, "predictor": predictor.name, "predictor_sha256": sha256}
    check_resume(out_dir / SETTINGS_FILE, settings, what="predict-labels")
    named = [pair for path in ([source] if isinstance(source, (str, Path)) else source)
             for pair in read_structures(path, limit=limit)]
    stems = Counter(file_stem(name) for name, _ in named)
    if repeated := sorted(s for s, n in stems.items() if n > 1):
        raise ValueError(f"structure names repeat ({', '.join(repeated[:5])}): each label file is named after its "
                         "structure, so give every structure its own name")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_settings(out_dir / SETTINGS_FILE, settings)
    report = PredictReport()
    todo = []
    for name, structure in named:
        if (out_dir / f"{file_stem(name)}.npz").exists():
            report.skipped.append(name)
            continue
        if unseen := predictor.unseen([site.specie.Z for site in structure]):
            report.refused[name] = unseen
            log.info("%s %s skipped: the predictor never saw %s", name, structure.formula, ", ".join(unseen))
            continue
        todo.append((name, structure))
    for lo in range(0, len(todo), batch_size):
        chunk = todo[lo : lo + batch_size]
        predictions = predictor.predict_records([structure_to_record(s, name=n) for n, s in chunk])
        for (name, structure), prediction in zip(chunk, predictions):
            write_label(out_dir / f"{file_stem(name)}.npz", predictor.label(name, structure, prediction, sha256))
            report.written.append(name)
        log.info("%d / %d predicted -> %s", lo + len(chunk), len(todo), out_dir)
    write_index(out_dir)
    return report
