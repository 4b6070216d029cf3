"""Exceptions raised by diffase. Each message names the problem and the fix."""

from __future__ import annotations


class DiffaseError(Exception):
    """Base class of every diffase error. ``exit_code``: what the ``diffase`` command exits with."""

    exit_code = 2  # bad input (the convention of argparse and most Unix tools)


class DisorderedStructureError(DiffaseError, ValueError):
    """A structure has partially occupied or mixed sites; diffase models need one species per site."""


class UnknownElementError(DiffaseError, ValueError):
    """A structure contains an element that the model (or the periodic table) does not know."""


class InvalidStructureError(DiffaseError, ValueError):
    """A structure cannot be used as given (no periodic cell, degenerate lattice, overlapping atoms...)."""


class StructureReadError(InvalidStructureError):
    """A structure file cannot be read (empty, truncated, corrupt, non-finite numbers); the message names the file."""


class SettingsMismatchError(DiffaseError, ValueError):
    """An output folder holds a run started with other settings; resuming into it would mix two runs."""


class NoValidCandidateError(DiffaseError, RuntimeError):
    """A run finished without a single valid result (every candidate screened out or every method failed)."""

    exit_code = 1


class HostTooDenseError(DiffaseError, ValueError):
    """A host has no room for the requested guests at sensible interatomic distances."""


class CheckpointNotFoundError(DiffaseError, FileNotFoundError):
    """A named model or checkpoint path was not found in any of the places diffase looks."""


class SamplingError(DiffaseError, RuntimeError):
    """Sampling diverged (NaN or infinite coordinates); nothing was written for the failed batch."""


class PredictedLabelError(DiffaseError, ValueError):
    """A predicted (surrogate) label was given where a DFT label is required."""


class SiteIndexError(DiffaseError, IndexError):
    """A site index (a conditioned or fixed site) lies outside the crystal it refers to."""
