"""The pymatgen base of diffase's generators: one structure (or none) in, a ranked list out, no inverse, and the
network loaded only on first use, so ``as_dict()`` holds the arguments, never a model."""

from __future__ import annotations

import os

from pymatgen.transformations.transformation_abc import AbstractTransformation


class OneToManyTransformation(AbstractTransformation):
    """An :class:`AbstractTransformation` that returns many candidates and has no inverse."""

    @property
    def inverse(self):
        return None

    @property
    def is_one_to_many(self) -> bool:
        return True


def resolve_model(model, device: str = "auto"):
    """``model`` loaded by :func:`diffase.generators.load_model` when it is a name or a path; else ``model`` itself
    (an already loaded model, e.g. a :class:`~diffase.generators.joint.JointModel`)."""
    if isinstance(model, (str, os.PathLike)):
        from diffase.generators import load_model

        return load_model(model, device)
    return model
