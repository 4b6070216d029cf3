"""The held-out-by-material split of a label folder, with every held-out element also seen in training.

A per-element baseline (and a network built on it) cannot predict an element it never saw, so a plain random
split of ~100 materials would leave held-out sites without any prediction. :func:`split_by_material` therefore
visits the materials in a seeded random order and holds one out (test first, then validation) only while each of
its elements remains in at least one training material. Each material, with all its sites, is in one part.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def split_by_material(elements: Sequence[set[int]], *, test_fraction: float = 0.2, val_fraction: float = 0.1,
                      seed: int = 0) -> list[str]:
    """``"train"``, ``"val"`` or ``"test"`` for each material, given the set of atomic numbers of each.

    At most ``round(fraction * n)`` materials go to each held-out part (fewer when the element rule stops it).
    """
    n = len(elements)
    left = Counter(z for els in elements for z in els)  # training materials holding each element
    parts = ["train"] * n
    order = np.random.default_rng(seed).permutation(n)
    for part, fraction in (("test", test_fraction), ("val", val_fraction)):
        wanted = round(fraction * n)
        for i in order:
            if wanted == 0:
                break
            if parts[i] == "train" and all(left[z] > 1 for z in elements[i]):
                parts[i] = part
                left.subtract(elements[i])
                wanted -= 1
    return parts
