"""The score model as users hold it: network + VE process + the elements it was trained on.

``ScoreModel`` turns crystals (records) into batches, runs the shared sampler with the network as the score
function, and returns records. Inpainting and unconditional generation of positions are both
:meth:`ScoreModel.sample_positions` with different masks and schedules.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from diffase.data import fields as F
from diffase.data.batch import batch_slices, collate, split, to_device
from diffase.data.structures import check_elements
from diffase.diffusion.noise import CrystalGenerators
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import repaint_schedule
from diffase.diffusion.ve import VEProcess
from diffase.hub import network_from_checkpoint
from diffase.nn.score_net import ScoreNet, ScoreNetConfig
from diffase.runtime import resolve_device

CHECKPOINT_KIND = "diffase-score-v1"


def make_checkpoint(net: ScoreNet, process: VEProcess, elements: Sequence[int] | None, **extra) -> dict:
    """Checkpoint dict of a score network: weights, architecture, process, elements, plus ``extra`` entries."""
    return {
        "kind": CHECKPOINT_KIND,
        "model_config": net.config.to_dict(),
        "process": process.to_dict(),
        "elements": sorted(int(z) for z in elements) if elements is not None else None,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        **extra,
    }


class ScoreModel:
    """An equivariant score network with its VE process, on one device.

    ``elements`` (atomic numbers seen in training) guards against silently sampling elements the model
    never learned. ``meta`` carries the training record stored in the checkpoint.
    """

    def __init__(self, net: ScoreNet, process: VEProcess, elements: Sequence[int] | None = None,
                 device: str | torch.device = "auto", meta: dict | None = None):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.process = process
        self.elements = sorted(int(z) for z in elements) if elements is not None else None
        self.meta = meta or {}

    # --- checkpoints ----------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "auto") -> ScoreModel:
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, ScoreNet, ScoreNetConfig,
                                            keep_out=("process", "elements"))
        return cls(net, VEProcess(**ckpt["process"]), ckpt.get("elements"), device, meta)

    def to_checkpoint(self, **extra) -> dict:
        """A checkpoint dict (tensors and JSON-like values only) of this model's weights and settings."""
        return make_checkpoint(self.net, self.process, self.elements, **extra)

    # --- score ----------------------------------------------------------------------------------
    def score_fn(self, process: VEProcess | None = None):
        """The sampler's score function ``(batch, level) -> {"pos": (n, 3) 1/Angstrom}`` for ``process``'s levels."""
        process = process or self.process

        @torch.no_grad()
        def score(batch: dict, level: int) -> dict:
            n_graph = batch[F.NUM_ATOMS].shape[0]
            batch[F.SIGMA] = torch.full((n_graph,), process.sigma_at(level), dtype=batch[F.POSITIONS].dtype,
                                        device=self.device)
            return {F.POSITIONS: self.net(batch)}

        return score

    # --- sampling -------------------------------------------------------------------------------
    def sample_positions(
        self,
        records: Sequence[dict],
        *,
        batch_size: int = 32,
        max_atoms: int | None = None,
        n_corrector: int = 5,
        snr: float = 0.2,
        jump_length: int = 10,
        n_resample: int = 1,
        num_levels: int | None = None,
        start_level: int | None = None,
        seeds: Sequence[int] | None = None,
        progress: bool = False,
    ) -> Iterator[tuple[int, list[dict]]]:
        """Generate atomic positions for crystals of given cell and species, batch by batch.

        Each record holds ``atomic_numbers``, ``cell`` and ``pos``; atoms with ``known_mask`` True keep
        their ``pos`` (inpainting: noised along the way and exactly restored at the end), the others are
        generated. ``n_resample > 1`` turns on RePaint resampling. ``start_level`` starts from the given
        positions noised to that level instead of from the prior (denoising / template sampling).
        ``seeds`` (one per record) seed each crystal's own random stream
        (:class:`~diffase.diffusion.noise.CrystalGenerators`): a crystal comes out the same whatever else is
        in its batch, so callers derive the seed of sample ``i`` from ``(seed, i)`` and a resumed or enlarged
        run reproduces a fresh one. ``seeds=None`` uses torch's global RNG.
        Yields ``(offset, records)`` per batch of at most ``batch_size`` crystals and ``max_atoms`` atoms
        (consecutive records, :func:`~diffase.data.batch.batch_slices`), ``offset`` being the index in
        ``records`` of the batch's first crystal, so callers can stream results to disk.
        """
        check_elements(list(records), set(self.elements) if self.elements else None)
        if seeds is not None and len(seeds) != len(records):
            raise ValueError(f"{len(seeds)} seeds for {len(records)} crystals")
        process = self.process if num_levels is None else dataclasses.replace(self.process, num_levels=num_levels)
        schedule = repaint_schedule(process.num_levels, jump_length, n_resample)
        if start_level is not None:
            if not 0 <= start_level < process.num_levels:
                raise ValueError(f"start_level must be in [0, {process.num_levels - 1}], got {start_level}")
            schedule = list(range(start_level, -2, -1))
        score_fn = self.score_fn(process)
        for part in batch_slices([len(r[F.ATOMIC_NUMBERS]) for r in records], batch_size, max_atoms):
            lo, chunk = part.start, records[part]
            generator = None if seeds is None else CrystalGenerators(seeds[part], self.device)
            batch = to_device(collate(chunk), self.device)
            given = batch[F.POSITIONS].clone()
            known = {}
            if F.KNOWN_MASK in batch:
                known[F.POSITIONS] = (batch[F.KNOWN_MASK].bool(), given)
            out = sample(
                score_fn, batch, [process], schedule, n_corrector=n_corrector, snr=snr, known=known,
                template={F.POSITIONS: given} if start_level is not None else None,
                generator=generator, progress=progress,
                desc=f"sampling crystals {lo + 1}-{lo + len(chunk)} of {len(records)}",
            )
            results = split({k: out[k] for k in (F.ATOMIC_NUMBERS, F.POSITIONS, F.CELL, F.NUM_ATOMS, F.BATCH)})
            for rec, src in zip(results, chunk):
                rec[F.POSITIONS] = rec[F.POSITIONS].astype(np.float64)
                rec[F.CELL] = np.asarray(src[F.CELL], dtype=np.float64)
                if F.KNOWN_MASK in src:
                    mask = np.asarray(src[F.KNOWN_MASK], dtype=bool)
                    rec[F.KNOWN_MASK] = mask
                    rec[F.POSITIONS][mask] = np.asarray(src[F.POSITIONS], dtype=np.float64)[mask]
            yield lo, results
