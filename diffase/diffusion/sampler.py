"""The one predictor-corrector sampling loop of diffase.

Every generator (unconditional generation, inpainting, later the joint type/coordinate/lattice models)
runs this loop. What varies is given to it as data:

* ``processes``: one corruption process per generated field (e.g. :class:`~diffase.diffusion.ve.VEProcess`
  for Cartesian positions), each providing ``prior``, ``predictor_step``, optional ``corrector_step``,
  ``noise_to`` (marginal at a level, for known values) and ``forward_step`` (re-noise by one level).
* ``score_fn(batch, level) -> {field: output}``: the network, with any guidance already folded in. The
  output is whatever the field's process reads in its steps: a score for VE positions, a normalised score
  for wrapped-normal fractional coordinates, predicted noise for the DDPM lattice, logits over clean tokens
  for discrete (D3PM) types. Fields may be continuous or integer tensors; the NaN check skips integer ones.
* ``schedule``: levels visited (see :mod:`diffase.diffusion.schedules`); a step down is a denoising step
  (M corrector steps at the current level, then one predictor step), a step up a RePaint re-noising.
* ``known``: per-field inpainting masks (one bool per row: per atom, or per crystal for the cell) and
  values. The known entries are replaced by the known values noised to the current level (inpainting paper
  eq. 11-12) before every predictor step, i.e. after the M corrector steps, which move every row (Algorithm
  1: the predictor always scores the unknown atoms against the given ones), and again after each predictor
  step at the new level, so at level -1 they equal the given values exactly.
* ``projections``: per-step constraints (:mod:`diffase.diffusion.constraints`, e.g. charge neutrality of a
  per-site charge field), each applied to its field after every predictor step (after the known rows are
  put back), at the time of the level reached; a constraint that holds at t = 0 holds for the output.
* ``generator``: a ``torch.Generator``, or :class:`~diffase.diffusion.noise.CrystalGenerators` (one stream
  per crystal, so each crystal's sample depends on its own seed alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
from tqdm.auto import tqdm

from diffase.diffusion.noise import Generator
from diffase.diffusion.schedules import level_timestep
from diffase.errors import SamplingError

ScoreFn = Callable[[dict, int], dict]


class Process(Protocol):
    """What the loop needs of a field's corruption process (levels as in :mod:`~diffase.diffusion.schedules`)."""

    key: str

    def prior(self, batch: dict, *, generator=None) -> torch.Tensor: ...
    def noise_to(self, x0: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor: ...
    def forward_step(self, x: torch.Tensor, level: int, batch: dict, *, generator=None) -> torch.Tensor: ...
    def predictor_step(self, x, score, level: int, batch: dict, *, generator=None) -> torch.Tensor: ...


class Projection(Protocol):
    """A per-step constraint on the field ``key``: ``(x, t, batch) -> x``, t in [0, 1] the time reached."""

    key: str

    def __call__(self, x: torch.Tensor, t: float, batch: dict) -> torch.Tensor: ...


def _project(batch, processes, projections, level):
    by_key = {proc.key: proc for proc in processes}
    for proj in projections:
        proc = by_key[proj.key]
        t = level_timestep(level, proc.num_levels, proc.num_steps) / proc.num_steps
        batch[proj.key] = proj(batch[proj.key], t, batch)


def _combine_known(batch, processes, known, level, generator):
    for proc in processes:
        if proc.key in known:
            mask, values = known[proc.key]
            noised = proc.noise_to(values, level, batch, generator=generator)
            current = batch[proc.key]
            # rows are the first axis of every field: (n,) types, (n, 3) coordinates, (B, 3, 3) cells
            rows = mask.reshape(mask.shape + (1,) * (current.dim() - mask.dim()))
            batch[proc.key] = torch.where(rows, noised, current)


def _check_finite(batch, processes, level):
    for proc in processes:
        x = batch[proc.key]
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise SamplingError(
                f"sampling produced NaN/inf in {proc.key!r} at level {level}; this usually means a "
                "checkpoint/elements mismatch or a step size too large (lower snr or n_corrector)"
            )


def sample(
    score_fn: ScoreFn,
    batch: dict,
    processes: Sequence[Process],
    schedule: Sequence[int],
    *,
    n_corrector: int = 5,
    snr: float = 0.2,
    known: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    template: dict[str, torch.Tensor] | None = None,
    projections: Sequence[Projection] = (),
    generator: Generator = None,
    progress: bool = False,
    desc: str = "sampling",
) -> dict:
    """Run the predictor-corrector loop; return a new batch holding the generated fields.

    ``known`` maps a field key to ``(mask, values)``: ``mask`` (n,) bool marks rows given by the user,
    ``values`` has the field's shape. Rows not masked start from the process prior, or, for fields in
    ``template``, from the template values noised to the schedule's first level (SDEdit-style start at
    ``t_start < T``: pass a schedule that starts below ``N-1``).
    """
    known = known or {}
    if len(schedule) < 2 or schedule[-1] != -1:
        raise ValueError("a schedule must end at level -1 (the clean data)")
    missing = {proj.key for proj in projections} - {proc.key for proc in processes}
    if missing:
        raise ValueError(f"projections on {sorted(missing)}, which no process generates")
    batch = dict(batch)
    start = schedule[0]
    template = template or {}
    for proc in processes:
        if proc.key in template:
            batch[proc.key] = proc.noise_to(template[proc.key], start, batch, generator=generator)
        else:
            batch[proc.key] = proc.prior(batch, generator=generator)
    _combine_known(batch, processes, known, start, generator)

    steps = list(zip(schedule[:-1], schedule[1:]))
    for level, nxt in tqdm(steps, desc=desc, disable=not progress, leave=False):
        if nxt == level - 1:
            for _ in range(n_corrector):
                scores = score_fn(batch, level)
                for proc in processes:
                    if hasattr(proc, "corrector_step"):
                        batch[proc.key] = proc.corrector_step(
                            batch[proc.key], scores[proc.key], level, batch, snr=snr, generator=generator
                        )
            if n_corrector:
                _combine_known(batch, processes, known, level, generator)
            scores = score_fn(batch, level)
            for proc in processes:
                batch[proc.key] = proc.predictor_step(batch[proc.key], scores[proc.key], level, batch, generator=generator)
            _combine_known(batch, processes, known, nxt, generator)
            _project(batch, processes, projections, nxt)
        elif nxt == level + 1:
            for proc in processes:
                batch[proc.key] = proc.forward_step(batch[proc.key], level, batch, generator=generator)
        else:
            raise ValueError(f"schedule steps must be +-1, got {level} -> {nxt}")
        _check_finite(batch, processes, nxt)
    return batch
