"""``SiteLabelPredictor``: a trained :class:`~diffase.predictors.site_net.SiteLabelNet` with its baseline, energy
grid and held-out errors, as users hold it; structures in, predicted site DOS and Bader charges out.

Checkpoint (kind :data:`CHECKPOINT_KIND`, read with ``weights_only=True`` through :mod:`diffase.hub`):
``model_config``, ``state_dict``, ``baseline`` (:meth:`ElementMeans.to_dict`), ``dos_grid`` (P,) eV,
``dos_sigma`` eV, ``train`` (the loop's record) and, once measured, ``held_out`` (the tables of
:func:`diffase.predictors.metrics.element_table` for the model and the baseline, with the split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pymatgen.core import Structure

from diffase.data import fields as F
from diffase.data.batch import collate, to_device
from diffase.data.electronic.dataset import PREDICTED_KEY
from diffase.data.structures import structure_to_record
from diffase.hub import network_from_checkpoint, read_checkpoint
from diffase.predictors.baseline import ElementMeans
from diffase.predictors.site_net import SiteLabelNet, SiteNetConfig
from diffase.runtime import resolve_device

CHECKPOINT_KIND = "diffase-site-labels-v1"


def make_checkpoint(net: SiteLabelNet, baseline: ElementMeans, dos_grid, dos_sigma: float, **extra) -> dict:
    """Checkpoint dict (tensors and JSON-like values only) of a site-label network and its baseline."""
    return {
        "kind": CHECKPOINT_KIND,
        "model_config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "baseline": baseline.to_dict(),
        "dos_grid": [float(e) for e in dos_grid],
        "dos_sigma": float(dos_sigma),
        **extra,
    }


class SiteLabelPredictor:
    """Network + per-element baseline on one device; ``name`` and ``sha256`` identify its checkpoint."""

    def __init__(self, net: SiteLabelNet, baseline: ElementMeans, dos_grid, dos_sigma: float,
                 device: str | torch.device = "cpu", meta: dict | None = None):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.baseline = baseline
        self.dos_grid = np.asarray(dos_grid, dtype=np.float32)
        self.dos_sigma = float(dos_sigma)
        self.meta = meta or {}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu") -> SiteLabelPredictor:
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, SiteLabelNet, SiteNetConfig,
                                            keep_out=("baseline", "dos_grid"))
        return cls(net, ElementMeans.from_dict(ckpt["baseline"]), ckpt["dos_grid"], ckpt["dos_sigma"], device, meta)

    @classmethod
    def load(cls, name: str, device: str | torch.device = "cpu") -> SiteLabelPredictor:
        """A named (``models/``, ``$DIFFASE_MODELS``, cache) or local checkpoint, read with ``weights_only=True``."""
        return cls.from_checkpoint(read_checkpoint(name), device)

    @property
    def name(self) -> str:
        """The checkpoint file's stem (``"site-labels-mp20"``), or ``"untrained"`` for a model built in memory."""
        path = self.meta.get("path")
        return Path(path).stem if path else "untrained"

    @torch.no_grad()
    def predict_records(self, records: Sequence[dict]) -> list[dict[str, np.ndarray]]:
        """Per crystal record: ``site_dos`` (n, P) states/eV (clipped at 0) and ``bader_charge`` (n,) e.

        Raises :class:`~diffase.errors.UnknownElementError` for an element the predictor never saw."""
        for record in records:
            self.baseline.rows(record[F.ATOMIC_NUMBERS])
        batch = to_device(collate(records), self.device)
        out = self.net(batch)
        bounds = np.cumsum([0] + [len(r[F.ATOMIC_NUMBERS]) for r in records])
        dos = out[F.SITE_DOS].clamp(min=0).cpu().numpy()
        charge = out[F.BADER_CHARGE].cpu().numpy()
        return [{F.SITE_DOS: dos[a:b], F.BADER_CHARGE: charge[a:b]} for a, b in zip(bounds[:-1], bounds[1:])]

    def predict(self, structure: Structure) -> dict[str, np.ndarray]:
        """Predicted ``site_dos`` (n, P) and ``bader_charge`` (n,) for one structure, rows in site order."""
        return self.predict_records([structure_to_record(structure)])[0]

    def held_out_summary(self) -> dict:
        """The model's held-out errors over all sites (the ``"all"`` row), or ``{}`` if never measured."""
        held_out = self.meta.get("held_out") or {}
        rows = [r for r in held_out.get("model", []) if r["element"] == "all"]
        return {**rows[0], "n_test_materials": held_out.get("n_test_materials")} if rows else {}

    def unseen(self, numbers) -> list[str]:
        """Symbols of the elements among atomic numbers ``numbers`` the predictor never saw (it refuses them)."""
        return self.baseline.unseen(numbers)

    def label(self, name: str, structure: Structure, prediction: dict[str, np.ndarray], sha256: str) -> dict[str, Any]:
        """A predicted label (the label-file format, marked with ``predicted_by``) from :meth:`predict` output."""
        return {
            **predicted_label(self, name, structure, sha256),
            "dos": prediction[F.SITE_DOS].astype(np.float32), "dos_grid": self.dos_grid,
            "dos_sigma": np.float64(self.dos_sigma),
            "bader": prediction[F.BADER_CHARGE].astype(np.float32),
        }


def predicted_label(predictor, name: str, structure: Structure, sha256: str) -> dict[str, Any]:
    """The entries every predicted label holds, whatever the predictor predicts: the structure, NaN for the DFT
    scalars (eV) and the per-site charges it does not predict (e), and the marker (``predicted_by`` = the
    predictor's ``name``, its checkpoint ``sha256`` and ``held_out_summary()`` as JSON)."""
    nan = np.float64(np.nan)
    return {
        "material_id": np.array(name), "cif": np.array(structure.to(fmt="cif")),
        "energy": nan, "efermi": nan, "gap": nan,
        "hirshfeld": np.full(len(structure), np.nan, dtype=np.float32),
        "bader": np.full(len(structure), np.nan, dtype=np.float32),
        PREDICTED_KEY: np.array(predictor.name), "predictor_sha256": np.array(sha256),
        "predictor_error": np.array(json.dumps(predictor.held_out_summary())),
    }
