"""Structure matching for generated crystals: uniqueness, novelty and reconstruction match rate.

All comparisons use pymatgen's ``StructureMatcher``; crystals are first grouped by reduced formula, so
only crystals of the same composition are ever compared (the matcher would reject the others anyway).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure


def _by_formula(structures: Sequence[Structure | None]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(structures):
        if s is not None:
            groups[s.composition.reduced_formula].append(i)
    return groups


def unique_mask(structures: Sequence[Structure | None], matcher: StructureMatcher | None = None) -> np.ndarray:
    """(n,) bool: True for the first crystal of each set of mutually matching crystals (None = not unique)."""
    matcher = matcher or StructureMatcher()
    out = np.zeros(len(structures), dtype=bool)
    for idx in _by_formula(structures).values():
        kept: list[int] = []
        for i in idx:
            if not any(matcher.fit(structures[i], structures[j]) for j in kept):
                kept.append(i)
        out[kept] = True
    return out


def novel_mask(structures: Sequence[Structure | None], reference: Sequence[Structure],
               matcher: StructureMatcher | None = None) -> np.ndarray:
    """(n,) bool: True for crystals that match no crystal of ``reference`` (e.g. the training set)."""
    matcher = matcher or StructureMatcher()
    ref = _by_formula(reference)
    out = np.zeros(len(structures), dtype=bool)
    for formula, idx in _by_formula(structures).items():
        for i in idx:
            out[i] = not any(matcher.fit(structures[i], reference[j]) for j in ref.get(formula, []))
    return out


def match_rate(generated: Sequence[Structure | None], targets: Sequence[Structure], *, stol: float = 0.5,
               angle_tol: float = 10.0, ltol: float = 0.3) -> dict[str, float]:
    """Reconstruction metrics (DiffCSP): fraction of ``generated[i]`` matching ``targets[i]`` and the mean
    normalised RMS displacement of the matches (StructureMatcher stol 0.5, angle_tol 10, ltol 0.3)."""
    if len(generated) != len(targets):
        raise ValueError(f"{len(generated)} generated but {len(targets)} target crystals")
    matcher = StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)
    rms = []
    for g, t in zip(generated, targets):
        res = matcher.get_rms_dist(g, t) if g is not None else None
        if res is not None:
            rms.append(res[0])
    n = max(len(targets), 1)
    return {"match_rate": len(rms) / n, "rms": float(np.mean(rms)) if rms else float("nan")}


def composition_match_rate(generated: Sequence[Structure | None], targets: Sequence[Structure]) -> float:
    """Fraction of ``generated[i]`` with the same reduced composition as ``targets[i]``."""
    hits = [g is not None and g.composition.reduced_composition == t.composition.reduced_composition
            for g, t in zip(generated, targets)]
    return float(np.mean(hits)) if hits else float("nan")
