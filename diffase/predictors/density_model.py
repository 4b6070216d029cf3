"""``DensityPredictor``: a trained :class:`~diffase.predictors.density_net.ProbeDensityNet` as users hold it;
structures in, valence pseudo-density (e/Angstrom^3) out, on the labels' grid or at any points.

Checkpoint (kind :data:`CHECKPOINT_KIND`, read with ``weights_only=True`` through :mod:`diffase.hub`):
``model_config``, ``state_dict`` (the fitted superposition's coefficients and the elements it knows included),
``grid`` (N of the N^3 label grid it was trained on), ``train`` (the loop's record) and, once measured,
``held_out`` (per test material eps_msd and NMAE of the network and of the superposition baseline, with the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pymatgen.core import Element, Structure

from diffase.data import fields as F
from diffase.data.batch import collate, to_device
from diffase.data.structures import structure_to_record
from diffase.errors import UnknownElementError
from diffase.hub import network_from_checkpoint, read_checkpoint
from diffase.predictors.density_net import DensityNetConfig, ProbeDensityNet
from diffase.predictors.model import SiteLabelPredictor, predicted_label
from diffase.predictors.probe_graph import grid_points
from diffase.runtime import resolve_device

CHECKPOINT_KIND = "diffase-density-v1"


def make_density_checkpoint(net: ProbeDensityNet, grid: int, **extra) -> dict:
    """Checkpoint dict (tensors and JSON-like values only) of a density network trained on N^3 = ``grid``^3 labels."""
    return {
        "kind": CHECKPOINT_KIND,
        "model_config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "grid": int(grid),
        **extra,
    }


class DensityPredictor:
    """Network on one device; ``grid`` the N of its training labels' N^3 grid; ``meta`` the checkpoint's other
    entries (``path``, ``train``, ``held_out``). ``chunk``: probe points per network call (memory ~ chunk x 30
    atom images x hidden floats)."""

    name = SiteLabelPredictor.name  #: the checkpoint file's stem, as for the site-label predictor

    def __init__(self, net: ProbeDensityNet, grid: int = 32, device: str | torch.device = "cpu",
                 meta: dict | None = None, chunk: int = 4096):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.grid = int(grid)
        self.meta = meta or {}
        self.chunk = chunk

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "cpu") -> DensityPredictor:
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, ProbeDensityNet, DensityNetConfig,
                                            keep_out=("grid",))
        return cls(net, ckpt["grid"], device, meta)

    @classmethod
    def load(cls, name: str, device: str | torch.device = "cpu") -> DensityPredictor:
        """A named (``models/``, ``$DIFFASE_MODELS``, cache) or local checkpoint, read with ``weights_only=True``."""
        return cls.from_checkpoint(read_checkpoint(name), device)

    def unseen(self, numbers) -> list[str]:
        """Symbols of the elements among atomic numbers ``numbers`` the superposition was not fitted for."""
        known = self.net.superposition.known.cpu()
        return [Element.from_Z(z).symbol for z in sorted({int(v) for v in np.asarray(numbers)}) if not known[z]]

    @torch.no_grad()
    def density_at(self, record: dict, points: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Density and its superposition baseline, both (P,) float64 e/Angstrom^3, of a crystal record at
        Cartesian ``points`` (P, 3), Angstrom. Raises :class:`UnknownElementError` for an element never seen."""
        if unseen := self.unseen(record[F.ATOMIC_NUMBERS]):
            known = torch.nonzero(self.net.superposition.known.cpu()).flatten().tolist()
            raise UnknownElementError(
                f"elements {', '.join(unseen)} were never seen in training; the density predictor knows "
                f"{', '.join(Element.from_Z(z).symbol for z in known)}")
        batch = to_device(collate([record]), self.device)
        h = self.net.encode(batch)[0]
        points = torch.as_tensor(points, dtype=batch[F.POSITIONS].dtype, device=self.device)
        out = [self.net.at_probes(batch, h, [points[lo : lo + self.chunk]])
               for lo in range(0, points.shape[0], self.chunk)]
        return (torch.cat([o[0] for o in out]).double().cpu().numpy(),
                torch.cat([o[1] for o in out]).double().cpu().numpy())

    def predict_at(self, structure: Structure, points_cartesian) -> np.ndarray:
        """Predicted valence pseudo-density (P,) float64, e/Angstrom^3, at Cartesian points (P, 3), Angstrom."""
        return self.density_at(structure_to_record(structure), points_cartesian)[0]

    def predict(self, structure: Structure, grid: int | None = None) -> np.ndarray:
        """Predicted valence pseudo-density (grid, grid, grid) float64, e/Angstrom^3, at the fractional points
        (i/grid, j/grid, k/grid) of ``structure``'s cell: the convention of the labels' ``rho32``. ``grid``
        defaults to the training labels' N (32)."""
        return self.predict_records([structure_to_record(structure)], grid)[0]["rho32"]

    def predict_if_known(self, structure: Structure, grid: int | None = None) -> np.ndarray | None:
        """:meth:`predict`, or None when ``structure`` holds an element the model never saw."""
        try:
            return self.predict(structure, grid)
        except UnknownElementError:
            return None

    def predict_records(self, records: Sequence[dict], grid: int | None = None) -> list[dict[str, np.ndarray]]:
        """Per crystal record: ``{"rho32": (N, N, N)}`` (see :meth:`predict`), one crystal at a time."""
        n = grid or self.grid
        out = []
        for record in records:
            points = grid_points(torch.as_tensor(record[F.CELL], dtype=torch.float64), n)
            out.append({"rho32": self.density_at(record, points)[0].reshape(n, n, n)})
        return out

    def held_out_summary(self) -> dict:
        """Mean and median held-out eps_msd and NMAE of the model and the baseline, with the number of test
        materials, or ``{}`` if never measured."""
        return (self.meta.get("held_out") or {}).get("summary", {})

    def label(self, name: str, structure: Structure, prediction: dict[str, np.ndarray], sha256: str) -> dict[str, Any]:
        """A predicted label (the label-file format, marked with ``predicted_by``): the structure and ``rho32``."""
        return {**predicted_label(self, name, structure, sha256), "rho32": prediction["rho32"].astype(np.float32)}
