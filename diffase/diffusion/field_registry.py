"""The registry of generated fields: which batch fields a joint model diffuses, with which process and weight.

A generated field is a :class:`DiffusedField`: a name (``"types"``, ``"coords"``, ``"lattice"``,
``"bader_charge"``, ...), its corruption process (whose ``key`` is the batch key it acts on, and whose kind,
node / graph / grid, :func:`diffase.data.fields.field_kind` gives), its loss weight, and optionally a
per-step projection of the sampling loop (:mod:`diffase.diffusion.constraints`). A :class:`FieldRegistry` is
the ordered set of a model's fields: the sampler drives their processes in this order (which fixes the
order of random draws, so a seeded run repeats), the trainer noises them and sums their weighted losses,
and a checkpoint stores it (:meth:`FieldRegistry.to_list`), so a model says which fields it generates.

How a field is noised for training and scored is uniform over processes: ``corrupt(x0, t_rows) -> (x_t,
target)`` and ``loss(output, target, x_t, t_rows)``, with ``t_rows`` the integer step of each row (the
crystal's step for every atom of a node field, per crystal for graph and grid fields). The denoiser's head
for each field is the network's business (:mod:`diffase.nn`); this module knows no architecture.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch

from diffase.data import fields as F
from diffase.diffusion.constraints import PROJECTIONS
from diffase.diffusion.d3pm import AbsorbingD3PM
from diffase.diffusion.ddpm import DDPM, LatticeDDPM
from diffase.diffusion.schedules import level_timestep
from diffase.diffusion.wrapped_normal import WrappedNormalProcess

#: Process classes by the name a checkpoint stores.
PROCESSES = {cls.__name__: cls for cls in (AbsorbingD3PM, WrappedNormalProcess, DDPM, LatticeDDPM)}


@dataclass
class DiffusedField:
    """One generated field: ``name``, its ``process`` (acting on ``process.key``), ``loss_weight`` and an
    optional per-step ``projection`` applied by the sampling loop."""

    name: str
    process: object
    loss_weight: float = 1.0
    projection: object | None = None

    def __post_init__(self):
        if type(self.process).__name__ not in PROCESSES:
            raise ValueError(f"field {self.name!r}: unknown process {type(self.process).__name__}; "
                             f"known: {', '.join(PROCESSES)}")
        if self.projection is not None and self.projection.key != self.key:
            raise ValueError(f"field {self.name!r}: its projection acts on {self.projection.key!r}, not {self.key!r}")

    @property
    def key(self) -> str:
        """The batch key of the field."""
        return self.process.key

    @property
    def kind(self) -> str:
        """``"node"``, ``"graph"`` or ``"grid"``."""
        return F.field_kind(self.key)

    def to_dict(self) -> dict:
        proj = self.projection
        return {"name": self.name, "process": type(self.process).__name__, "settings": self.process.to_dict(),
                "loss_weight": float(self.loss_weight),
                "projection": None if proj is None else {"type": type(proj).__name__, "settings": proj.to_dict()}}

    @classmethod
    def from_dict(cls, data: dict) -> DiffusedField:
        proj = data.get("projection")
        return cls(data["name"], PROCESSES[data["process"]](**data["settings"]), data.get("loss_weight", 1.0),
                   None if proj is None else PROJECTIONS[proj["type"]](**proj["settings"]))

    def step_rows(self, steps: torch.Tensor, batch: dict) -> torch.Tensor:
        """Integer steps (B,) of the crystals spread over this field's rows: per atom or per crystal."""
        return steps[batch[F.BATCH]] if self.kind == "node" else steps

    def corrupt(self, x0: torch.Tensor, t_rows: torch.Tensor, *, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy field and the network's training target at steps ``t_rows`` (one per row)."""
        return self.process.corrupt(x0, t_rows, generator=generator)

    def loss(self, output: torch.Tensor, target: torch.Tensor, x_t: torch.Tensor, t_rows: torch.Tensor) -> torch.Tensor:
        """The process's loss of the network output (unweighted)."""
        return self.process.loss(output, target, x_t, t_rows)


class FieldRegistry:
    """The ordered generated fields of a model, all on one level grid (same ``num_steps`` and ``num_levels``)."""

    def __init__(self, fields: Sequence[DiffusedField]):
        self.fields = list(fields)
        if not self.fields:
            raise ValueError("a model generates at least one field")
        for attr in ("name", "key"):
            values = [getattr(f, attr) for f in self.fields]
            if len(set(values)) != len(values):
                raise ValueError(f"field {attr}s must be unique, got {values}")
        grids = {(f.process.num_steps, f.process.num_levels) for f in self.fields}
        if len(grids) > 1:
            raise ValueError(f"all fields must share num_steps and num_levels, got {sorted(grids)}")

    def __iter__(self) -> Iterator[DiffusedField]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, name: str) -> DiffusedField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"no field {name!r}; this model generates {', '.join(self.names)}")

    def __contains__(self, name: str) -> bool:
        return name in self.names

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def keys(self) -> list[str]:
        """Batch keys of the fields, in order."""
        return [f.key for f in self.fields]

    @property
    def processes(self) -> list:
        """The processes in field order: what :func:`diffase.diffusion.sampler.sample` drives."""
        return [f.process for f in self.fields]

    @property
    def projections(self) -> list:
        """The fields' per-step projections (constraints), in field order."""
        return [f.projection for f in self.fields if f.projection is not None]

    @property
    def num_steps(self) -> int:
        return self.fields[0].process.num_steps

    @property
    def num_levels(self) -> int:
        return self.fields[0].process.num_levels

    def time_at(self, level: int) -> float:
        """Diffusion time in [0, 1] of a sampling level (1 at level N-1, 0 at level -1)."""
        return level_timestep(level, self.num_levels, self.num_steps) / self.num_steps

    def respaced(self, num_levels: int | None) -> FieldRegistry:
        """The same fields sampled on ``num_levels`` levels (None: unchanged)."""
        if num_levels is None:
            return self
        return FieldRegistry([replace(f, process=replace(f.process, num_levels=num_levels)) for f in self.fields])

    def to_list(self) -> list[dict]:
        """JSON-friendly description, as checkpoints store it."""
        return [f.to_dict() for f in self.fields]

    @classmethod
    def from_list(cls, data: Sequence[dict]) -> FieldRegistry:
        return cls([DiffusedField.from_dict(d) for d in data])
