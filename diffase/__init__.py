"""diffase: diffusion models for crystal structures, from inside pymatgen and ASE scripts.

Importing diffase loads no model and no heavy dependency; the names below are imported on first use.

>>> from diffase import InpaintIntercalantTransformation
>>> t = InpaintIntercalantTransformation("Zn", count=2, n_samples=8)
>>> best = t.apply_transformation(mno2, return_ranked_list=5)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_model": "diffase.generators",
    "list_models": "diffase.hub",
    "InpaintIntercalantTransformation": "diffase.transformations",
    "inpaint_atoms": "diffase.transformations",
    "DOSConditionedGenerator": "diffase.generators.dos_conditioned",
    "ChargeGuidedGenerator": "diffase.generators.charge_guided",
    "get_calculator": "diffase.calculators",
    "relax": "diffase.simulate.relax",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diffase' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
