"""Per-element mean site DOS and mean Bader charge: the baseline every site-label predictor is measured against.

The network of :mod:`diffase.predictors.site_net` starts from these means and learns the correction, so the
baseline is also part of every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element

from diffase.errors import UnknownElementError


@dataclass
class ElementMeans:
    """Means over training sites, per element.

    ``elements`` (K,) atomic numbers, sorted; ``dos`` (K, P) mean site DOS, states/eV; ``charge`` (K,) mean Bader
    charge, e (0, a neutral atom, for an element no training site with a Bader charge had); ``n_dos`` / ``n_charge`` (K,) the
    number of training sites behind each mean.
    """

    elements: np.ndarray
    dos: np.ndarray
    charge: np.ndarray
    n_dos: np.ndarray
    n_charge: np.ndarray

    @classmethod
    def fit(cls, numbers: Sequence[np.ndarray], dos: Sequence[np.ndarray], charges: Sequence[np.ndarray]) -> ElementMeans:
        """Means from per-crystal arrays: atomic numbers (n,), site DOS (n, P), Bader charges (n,) (NaN = unknown)."""
        z = np.concatenate(numbers).astype(np.int64)
        d = np.concatenate(dos).astype(np.float64)
        q = np.concatenate(charges).astype(np.float64)
        elements = np.unique(z)
        mean_dos, mean_q, n_dos, n_q = [], [], [], []
        for el in elements:
            rows = z == el
            known = rows & np.isfinite(q)
            mean_dos.append(d[rows].mean(axis=0))
            mean_q.append(q[known].mean() if known.any() else 0.0)
            n_dos.append(int(rows.sum()))
            n_q.append(int(known.sum()))
        return cls(elements, np.stack(mean_dos), np.array(mean_q), np.array(n_dos), np.array(n_q))

    def unseen(self, numbers) -> list[str]:
        """Symbols of the elements among atomic numbers ``numbers`` that no training site had, sorted by Z."""
        return [Element.from_Z(int(z)).symbol for z in sorted(set(np.asarray(numbers).tolist()) - set(self.elements.tolist()))]

    def rows(self, numbers: np.ndarray) -> np.ndarray:
        """Row of each atomic number in the tables, (n,) int; :class:`UnknownElementError` for an unseen element."""
        if unseen := self.unseen(numbers):
            raise UnknownElementError(
                f"elements {', '.join(unseen)} were never seen in training; the predictor knows "
                f"{', '.join(Element.from_Z(int(z)).symbol for z in self.elements)}")
        return np.searchsorted(self.elements, np.asarray(numbers, dtype=np.int64))

    def predict(self, numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Baseline site DOS (n, P), states/eV, and Bader charges (n,), e, for atomic numbers (n,)."""
        rows = self.rows(numbers)
        return self.dos[rows], self.charge[rows]

    def to_dict(self) -> dict:
        """Plain lists (for a ``weights_only`` checkpoint)."""
        return {"elements": self.elements.tolist(), "dos": self.dos.tolist(), "charge": self.charge.tolist(),
                "n_dos": self.n_dos.tolist(), "n_charge": self.n_charge.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> ElementMeans:
        return cls(np.asarray(data["elements"], dtype=np.int64), np.asarray(data["dos"], dtype=np.float64),
                   np.asarray(data["charge"], dtype=np.float64), np.asarray(data["n_dos"], dtype=np.int64),
                   np.asarray(data["n_charge"], dtype=np.int64))
