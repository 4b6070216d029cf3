"""The held-out-by-material split of a label folder, with every held-out element also seen in training.

A per-element baseline (and a network built on it) cannot predict an element it never saw, so a plain random
split of ~100 materials would leave held-out sites without any prediction. :func:`split_by_material` therefore
visits the materials in a seeded random order and holds one out (test first, then validation) only while each of
its elements remains in at least one training material. Each material, with all its sites, is in one part.
:func:`cross_validation_split` does the same for fold k of n: materials are dealt to n folds in a seeded order and
those of fold k whose elements all occur in another fold are the test part, so over the n folds every material
that can be held out is tested once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def _hold_out(elements: Sequence[set[int]], parts: list[str], part: str, wanted: int, order) -> None:
    """Move up to ``wanted`` training materials, visited in ``order``, to ``part`` while each of their elements
    stays in another training material (in place)."""
    left = Counter(z for els, p in zip(elements, parts) if p == "train" for z in els)
    for i in order:
        if wanted == 0:
            break
        if parts[i] == "train" and all(left[z] > 1 for z in elements[i]):
            parts[i] = part
            left.subtract(elements[i])
            wanted -= 1


def split_by_material(elements: Sequence[set[int]], *, test_fraction: float = 0.2, val_fraction: float = 0.1,
                      seed: int = 0) -> list[str]:
    """``"train"``, ``"val"`` or ``"test"`` for each material, given the set of atomic numbers of each.

    At most ``round(fraction * n)`` materials go to each held-out part (fewer when the element rule stops it).
    """
    n = len(elements)
    parts = ["train"] * n
    order = np.random.default_rng(seed).permutation(n)
    _hold_out(elements, parts, "test", round(test_fraction * n), order)
    _hold_out(elements, parts, "val", round(val_fraction * n), order)
    return parts


def cross_validation_split(elements: Sequence[set[int]], fold: int, n_folds: int, *, val_fraction: float = 0.1,
                           seed: int = 0) -> list[str]:
    """Parts of fold ``fold`` (0-based) of ``n_folds``: test = the fold's materials whose elements all occur in
    other folds, validation = up to ``round(val_fraction * n)`` of the rest (element rule as above), else train."""
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    n = len(elements)
    order = np.random.default_rng(seed).permutation(n)
    in_fold = np.zeros(n, bool)
    in_fold[order[fold::n_folds]] = True
    outside = Counter(z for els, f in zip(elements, in_fold) if not f for z in els)
    parts = ["test" if f and all(outside[z] for z in els) else "train" for els, f in zip(elements, in_fold)]
    _hold_out(elements, parts, "val", round(val_fraction * n), order)
    return parts


def material_split(elements: Sequence[set[int]], *, test_fraction: float, val_fraction: float, seed: int,
                   cv_fold: int | None = None, cv_folds: int = 5) -> list[str]:
    """The parts a predictor trainer uses: :func:`split_by_material` (``cv_fold`` None) or fold ``cv_fold`` of
    ``cv_folds`` (:func:`cross_validation_split`)."""
    if cv_fold is None:
        return split_by_material(elements, test_fraction=test_fraction, val_fraction=val_fraction, seed=seed)
    return cross_validation_split(elements, cv_fold, cv_folds, val_fraction=val_fraction, seed=seed)


def refuse_changed_split(state: dict | None, names: dict[str, list[str]], out_dir, labels) -> None:
    """Raise ``ValueError`` when a run being resumed (``state``: its ``last.pt``, None for a fresh run) was
    trained on another split than ``names`` (part -> material names): resuming would test on training materials."""
    if state is not None and state.get("train", {}).get("split") != names:
        raise ValueError(f"{out_dir} was trained on another split of the labels (the label folder {labels} changed "
                         "since the run started, or the split settings did); resuming would test on training "
                         "materials: start a new output folder")
