"""S.U.N. evaluation of generated crystals: validity, uniqueness, novelty, stability and their conjunctions.

Every fraction is over all ``n`` generated samples (invalid samples included in the denominator):

* ``validity``: SMACT (smact14) and structural validity (:mod:`diffase.analysis.validity`);
* ``uniqueness``: first of its StructureMatcher class among the samples;
* ``novelty``: matches nothing in the reference set (the training crystals); ``unique_novel``: both;
* ``stability``: energy above hull <= ``stable_threshold`` eV/atom (0.1 by default, MatterGen's S.U.N.
  criterion), measured only where needed, i.e. on the unique, novel and structurally valid samples (or a
  random subset of them), by the function passed as ``e_above_hull`` (e.g.
  :class:`diffase.analysis.stability.MLIPHull`); samples with atoms closer than 0.5 Angstrom count as
  unstable without a calculation (an MLIP graph of such a cell can take minutes and gigabytes);
* ``sun`` = stable & unique & novel, ``vsun`` = valid & sun.

Plus :func:`property_success_rate` for conditional generation (within 10% of the target) and
:func:`two_proportion_z_test` to tell whether two models' fractions differ by more than sampling noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from pymatgen.core import Structure

from diffase.analysis.matching import novel_mask, unique_mask
from diffase.analysis.validity import validity


def property_success_rate(values: Sequence[float], target: float, rel_tol: float = 0.1) -> float:
    """Fraction of ``values`` within ``rel_tol`` (relative) of ``target``; NaN values count as misses."""
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return float("nan")
    return float(np.mean(np.abs(v - target) <= rel_tol * abs(target)))


def two_proportion_z_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``k1/n1`` against ``k2/n2`` (counts of successes among samples): the z
    statistic and the two-sided p-value (normal approximation; NaN when both proportions are 0 or 1)."""
    if min(n1, n2) < 1 or not (0 <= k1 <= n1 and 0 <= k2 <= n2):
        raise ValueError(f"need 0 <= k <= n and n >= 1, got {k1}/{n1} and {k2}/{n2}")
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return float("nan"), float("nan")
    z = (k1 / n1 - k2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def sun_metrics(structures: Sequence[Structure | None], reference: Sequence[Structure], *,
                e_above_hull: Callable[[list[Structure]], Sequence[float]] | None = None,
                stable_threshold: float = 0.1, max_stability: int | None = None, seed: int = 0) -> dict:
    """Per-sample masks and fractions of validity, uniqueness, novelty, stability, S.U.N. and V.S.U.N.

    ``structures``: generated crystals (None for a sample that could not be decoded, e.g. a mask left).
    Without ``e_above_hull`` the stability entries are absent and only V/U/N are reported.
    ``max_stability``: evaluate stability on at most this many unique-novel, structurally valid samples (a
    seeded random subset, when MLIP relaxations of all of them are too costly); S.U.N. and V.S.U.N. are then
    estimated as ``(unique, novel, structurally valid fraction) * (fraction stable in the subset)``.
    Returns ``{"n", "fractions", "masks", "e_above_hull" (NaN where not computed), "n_stability"}``.
    """
    n = len(structures)
    if n == 0:
        raise ValueError("no structures to evaluate")
    val = validity(structures)
    uniq = unique_mask(structures)
    novel = novel_mask(structures, reference)
    un = uniq & novel
    e_hull = np.full(n, np.nan)
    masks = {"composition_valid": val["composition"], "structure_valid": val["structure"], "valid": val["valid"],
             "unique": uniq, "novel": novel, "unique_novel": un}
    fractions = {k: float(v.mean()) for k, v in masks.items()}
    idx = np.flatnonzero(un & val["structure"])  # overlapping atoms: unstable without a calculation
    if max_stability is not None and idx.size > max_stability:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_stability, replace=False))
    if e_above_hull is not None:
        if idx.size:
            e_hull[idx] = np.asarray(e_above_hull([structures[i] for i in idx]), dtype=float)
        stable = e_hull <= stable_threshold  # NaN (not computed or failed) is not stable
        masks["sun"] = stable & un
        masks["vsun"] = masks["sun"] & val["valid"]
        rate = float(stable[idx].mean()) if idx.size else float("nan")
        vrate = float((stable & val["valid"])[idx].mean()) if idx.size else float("nan")
        fractions["stable_among_unique_novel"] = rate
        candidates = float((un & val["structure"]).mean())
        fractions["sun"] = candidates * rate if idx.size else 0.0
        fractions["vsun"] = candidates * vrate if idx.size else 0.0
    return {"n": n, "fractions": fractions, "masks": masks, "e_above_hull": e_hull,
            "stable_threshold": stable_threshold, "n_stability": int(idx.size)}
