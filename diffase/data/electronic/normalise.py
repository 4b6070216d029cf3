"""The normalisation of charge densities for learning, with an exact inverse.

Densities span four decades (1e-3 e/A^3 in voids, 10+ e/A^3 near heavy cores), so a network sees
``y = (log(rho + offset) - mean) / std`` rather than ``rho``. ``offset`` (e/A^3) keeps the logarithm finite where a
Fourier-regridded density rings slightly below zero, and ``mean``/``std`` are fitted once on training densities.
:meth:`LogDensityScaler.inverse` undoes :meth:`LogDensityScaler.transform` exactly (to floating-point round-off).

The scaler is plain data (:meth:`as_dict` / :meth:`from_dict`), saved next to a checkpoint so a checkpoint folder is
self-contained. Both methods take numpy arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch


def _backend(x):
    return torch if isinstance(x, torch.Tensor) else np


@dataclass(frozen=True)
class LogDensityScaler:
    """``y = (log(rho + offset) - mean) / std`` for ``rho`` in e/Angstrom^3; ``offset`` in e/Angstrom^3."""

    offset: float = 1e-3
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.offset <= 0 or self.std <= 0:
            raise ValueError(f"offset and std must be positive, got offset={self.offset}, std={self.std}")

    @classmethod
    def fit(cls, densities: Iterable[np.ndarray], *, offset: float = 1e-3) -> LogDensityScaler:
        """Fit ``mean`` and ``std`` of ``log(rho + offset)`` over every grid point of ``densities`` (arrays, e/A^3)."""
        total, total_sq, count = 0.0, 0.0, 0
        for rho in densities:
            logs = np.log(cls._checked(np.asarray(rho, dtype=np.float64), offset))
            total, total_sq, count = total + logs.sum(), total_sq + np.square(logs).sum(), count + logs.size
        if count == 0:
            raise ValueError("LogDensityScaler.fit needs at least one density grid")
        mean = total / count
        return cls(offset=offset, mean=float(mean), std=float(np.sqrt(max(total_sq / count - mean**2, 1e-12))))

    @staticmethod
    def _checked(rho, offset: float):
        shifted = rho + offset
        if bool((shifted <= 0).any()):
            raise ValueError(
                f"density reaches {float(rho.min()):.3g} e/A^3, at or below -offset (-{offset:g}); the logarithm is "
                "undefined there: regrid with smear > 0, or clip the density at 0, or raise offset"
            )
        return shifted

    def transform(self, rho):
        """Normalised field ``y`` (same shape and kind as ``rho``: numpy array or torch tensor)."""
        return (_backend(rho).log(self._checked(rho, self.offset)) - self.mean) / self.std

    def inverse(self, y):
        """The density (e/Angstrom^3) whose :meth:`transform` is ``y``."""
        return _backend(y).exp(y * self.std + self.mean) - self.offset

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, float]) -> LogDensityScaler:
        return cls(**d)
