"""``ChargeGuidedGenerator``: crystals generated with their valence charge density, optionally around a region of
the density drawn by the user (ChargeDIFF; Park, Choi & Jung 2025), as a pymatgen transformation.

It drives a joint model with the ``density_latent`` grid field (A/X/L/C, e.g. ``chargediff-mp20``) through
:meth:`~diffase.generators.joint.JointModel.sample` / ``sample_from``: the one sampler loop, classifier-free
guidance on the model's graph conditions (band gap, density, space group, ``chemsys_groups`` as ChargeDIFF's 17
element groups, :mod:`diffase.data.element_groups`, ...), and the loop's ``known`` mechanism for the region:

* ``region``: a preset of :mod:`diffase.data.electronic.regions` (``channel-1d-x/y/z``, ``slab-2d-x/y/z``, ``width``
  = ``region_width``) or any (N, N, N) bool mask on the fractional points ``i / N`` of the generated cell (N = the
  model's VQ-VAE grid, 32). It is moved to the 8^3 latent grid by
  :meth:`~diffase.nn.vqvae3d.DensityVQVAE.latent_mask` (a latent voxel is known when at least half of the 4^3
  density points nearest to its centre are in the region).
* ``target``: what the region should hold, turned into latent values by the model's own VQ-VAE
  (:meth:`~diffase.nn.vqvae3d.DensityVQVAE.encode_field`) of an N^3 density: for ``"low"``, ``"high"`` or a number
  (e/Angstrom^3) that density is the target inside the region and :data:`BACKGROUND_DENSITY` outside; a given
  (N, N, N) density grid (e/Angstrom^3) is encoded as it is. A uniform grid would not do: the encoder's group
  normalisations see only contrasts. Measured with ``vqvae-density``: uniform grids of 0.01 and 1.0 e/Angstrom^3
  encode to latents within 0.03 of each other (latent std 0.11) and both decode to 1.5e-4 e/Angstrom^3, whereas the
  ``channel-1d-z`` grids built here decode to 0.043 ("low") and 0.39 ("high") e/Angstrom^3 in the channel, 0.29 and
  0.24 outside it; with ``vqvae-density-mp20`` (the default model's) the "low" channel decodes to 0.0039
  e/Angstrom^3 (benchmarks/results/chargediff_inpainting.md). The known latent voxels are those values noised to
  each level and exactly those values at the end (in a crystal whose sampled cell was flipped to right-handed,
  at the flipped voxels; the region reported with the result is flipped alike).
* ``"low"`` is :data:`LOW_DENSITY` = 0.01 e/Angstrom^3 and ``"high"`` :data:`HIGH_DENSITY` = 1.0 e/Angstrom^3,
  against :data:`BACKGROUND_DENSITY` = 0.22 e/Angstrom^3. Chosen from the 110 GPAW density labels (32^3 smooth
  valence pseudo-densities of small MP-20 crystals) in ``../shared/data/electronic`` on 2026-12-06, the data the
  density models are trained on: of their 3,604,480 grid points 51,423 (1.4 %) lie below 0.01 e/Angstrom^3, the
  vacuum-like end the data still holds (the VQ-VAE's log-scale floor, 1e-4 e/Angstrom^3, holds 16,310 points,
  0.45 %: hardly anything the models learnt from), 85,617 (2.4 %) above 1.0 e/Angstrom^3, and the median is
  0.216 e/Angstrom^3.
* ``resample=(jump_length, n_resample)``: RePaint resampling (re-noise ``jump_length`` levels and denoise again,
  ``n_resample - 1`` times) so the generated atoms and density agree with the known voxels; None: one pass, as
  the anchor does.
* With a template ``Structure``, its number of atoms and species (in its Niggli-reduced site order) are kept
  (``sample_from(fix_types=True)``); lattice, coordinates and density are generated around the region.

Each result holds the ``Structure``, its ``charge_density`` (N, N, N) e/Angstrom^3 on the fractional points of the
structure's cell (CHGCARs in physical units, rho x V, with :meth:`ChargeGuidedGenerator.write_chgcars`), the region
in that cell and its statistics (:func:`~diffase.data.electronic.regions.region_density` of the generated density),
and ``region_score`` (e/Angstrom^3, **lower is better**): the mean density inside the region for ``"low"``, minus it
for ``"high"``, its distance from the number for a number, and the mean absolute difference from the target grid
inside the region for a grid. With ``predict_density`` the score is taken on the predicted density of the generated
structure instead (``score_source`` "predicted", beside ``predicted_region_mean_density`` and
``predicted_outside_mean_density``), because the generated density obeys the region whether or not the atoms do
(benchmarks/results/chargediff_inpainting.md): the ranking then prefers structures that have the region
themselves; results the predictor cannot describe keep the generated score and rank after them. Crystals in which
a mask token is left (``valid`` False) are dropped and counted (:attr:`ChargeGuidedGenerator.counts`).

MSONable like every pymatgen transformation: each ``__init__`` argument is kept as an attribute (arrays as numpy
arrays); the model loads on first use, so ``as_dict()`` never holds a network.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from diffase.data import fields as F
from diffase.data.electronic.density import grid_in_cell, write_chgcar
from diffase.data.electronic.regions import REGION_PRESETS, region_density, region_mask
from diffase.data.structures import record_to_structure, to_structure
from diffase.errors import NoValidCandidateError
from diffase.generators.one_to_many import OneToManyTransformation, resolve_model

#: e/Angstrom^3, the density of ``target="low"`` (module docstring: 1.4 % of the training grid points lie below).
LOW_DENSITY = 0.01
#: e/Angstrom^3, the density of ``target="high"`` (2.4 % of the training grid points lie above).
HIGH_DENSITY = 1.0
#: e/Angstrom^3, the density outside the region of a ``"low"``/``"high"``/number target (the training median).
BACKGROUND_DENSITY = 0.22
#: Named targets and their densities, e/Angstrom^3.
NAMED_TARGETS = {"low": LOW_DENSITY, "high": HIGH_DENSITY}


class ChargeGuidedGenerator(OneToManyTransformation):
    """Generate crystals with their charge density, conditioned and/or around a density region (module docstring).

    Args:
        n_samples: crystals generated per call (per template).
        conditions: the model's graph conditions, e.g. ``{"chemsys_groups": ["tm3d", "oxide"], "band_gap": 2.0}``.
        region: a preset name, an (N, N, N) bool mask, or None (no region: plain generation, ``target`` unused).
        target: ``"low"``, ``"high"``, a density in e/Angstrom^3, or an (N, N, N) density grid in e/Angstrom^3.
        guidance_scale: classifier-free guidance (0 = unconditional, 1 = conditional, > 1 stronger); None = 1 with
            conditions, 0 without.
        model: a joint checkpoint with the ``density_latent`` field (name or path; a loaded ``JointModel`` too).
        num_levels: respaced sampler levels (None: the model's own). resample: ``(jump_length, n_resample)``.
        region_width: fraction of each confined axis inside a preset region. seed: random seed (batch b draws
            from ``(seed, b)``). batch_size: crystals per network call. device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        progress: show a progress bar over the crystals.
        predict_density: a density predictor (name or path, e.g. ``"density-mp20"``): each result also holds its
            ``predicted_density`` for the generated structure (32^3 e/Angstrom^3 on the structure's cell; None for a
            structure with an element it never saw). Measured against GPAW recomputes of generated crystals
            (benchmarks/results/chargediff_self_consistency-chargediff-mp20.md) it is far closer to DFT than the
            generated density: use it for anything that needs the density of the generated structure.
    """

    def __init__(self, n_samples: int = 16, conditions: dict | None = None, region=None, target="low",
                 guidance_scale: float | None = None, model="chargediff-mp20", num_levels: int | None = None,
                 resample: Sequence[int] | None = None, region_width: float = 0.25, seed: int = 0,
                 batch_size: int = 64, device: str = "auto", progress: bool = True,
                 predict_density: str | None = None):
        if n_samples < 1 or batch_size < 1:
            raise ValueError(f"n_samples and batch_size must be >= 1, got {n_samples}, {batch_size}")
        if guidance_scale is not None and guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (0 = unconditional, 1 = conditional), got {guidance_scale}")
        if resample is not None and (len(resample) != 2 or min(int(v) for v in resample) < 1):
            raise ValueError(f"resample is (jump_length, n_resample), both >= 1 (e.g. (10, 3)), got {resample}")
        self.n_samples, self.conditions, self.region, self.target = n_samples, conditions, region, target
        self.guidance_scale, self.model, self.num_levels, self.resample = guidance_scale, model, num_levels, resample
        self.region_width, self.seed, self.batch_size, self.device = region_width, seed, batch_size, device
        self.progress, self.predict_density = progress, predict_density
        _check_region(region, region_width)
        _check_target(target, region)
        #: Crystals of the last run: ``{"generated": ..., "valid": ..., "invalid": ...}``.
        self.counts: dict[str, int] = {}
        self._loaded: dict = {}

    def __repr__(self) -> str:
        region = self.region if isinstance(self.region, (str, type(None))) else "<mask>"
        target = self.target if isinstance(self.target, (str, numbers.Number)) else "<grid>"
        return (f"ChargeGuidedGenerator(n_samples={self.n_samples}, conditions={self.conditions}, region={region!r}, "
                f"target={target!r}, guidance_scale={self.guidance_scale}, model={self.model!r})")

    # --- the model and what it is given (loaded and checked once) ----------------------------------------------
    def joint_model(self):
        """The joint model, checked to generate the ``density_latent`` field and to know the conditions."""
        if "model" not in self._loaded:
            model = resolve_model(self.model, self.device)
            if F.DENSITY_LATENT not in getattr(model, "descriptor_keys", ()):
                name = getattr(model, "meta", {}).get("path") or type(model).__name__
                raise ValueError(f"model {name} does not generate the charge density (no {F.DENSITY_LATENT!r} field); "
                                 "use a joint checkpoint trained with it, e.g. model='chargediff-mp20'")
            if self.conditions:
                model.condition_values(self.conditions, 1)  # an unknown condition or element group fails here
            self._loaded["model"] = model
        return self._loaded["model"]

    def vqvae(self):
        """The model's frozen density VQ-VAE (:class:`~diffase.nn.vqvae3d.DensityVQVAE`)."""
        if "vqvae" not in self._loaded:
            from diffase.generators.descriptor_decoding import density_decoder

            self._loaded["vqvae"] = density_decoder(self.joint_model().meta)
        return self._loaded["vqvae"]

    def density_predictor(self):
        """The structure -> density model of ``predict_density`` (:class:`~diffase.predictors.density_model.
        DensityPredictor`), loaded once."""
        if "predictor" not in self._loaded:
            from diffase.predictors.density_model import DensityPredictor

            self._loaded["predictor"] = DensityPredictor.load(self.predict_density)
        return self._loaded["predictor"]

    def region_grid(self) -> np.ndarray | None:
        """The region as an (N, N, N) bool mask on the model's density grid (None without a region)."""
        if self.region is None:
            return None
        n = self.vqvae().config.grid
        if isinstance(self.region, str):
            return region_mask(self.region, n, width=self.region_width)
        mask = np.asarray(self.region, dtype=bool)
        if mask.shape != (n,) * 3:
            raise ValueError(f"the region mask must be ({n}, {n}, {n}) bool (the model's density grid), got "
                             f"{mask.shape}")
        return mask

    def target_grid(self) -> np.ndarray | None:
        """The (N, N, N) density (e/Angstrom^3) encoded for the known voxels (module docstring); None without a
        region."""
        mask = self.region_grid()
        if mask is None:
            return None
        if isinstance(self.target, (str, numbers.Number)):
            grid = np.full(mask.shape, BACKGROUND_DENSITY)
            grid[mask] = NAMED_TARGETS[self.target] if isinstance(self.target, str) else float(self.target)
            return grid
        grid = np.asarray(self.target, dtype=np.float64)
        if grid.shape != mask.shape:
            raise ValueError(f"the target density grid must be {mask.shape} (the model's density grid), got "
                             f"{grid.shape}")
        return grid

    def known_grids(self) -> dict | None:
        """``known_grids`` of :meth:`~diffase.generators.joint.JointModel.sample`: ``{"density_latent": (latent
        mask (n, n, n) bool, values (n, n, n, d))}``, or None without a region."""
        if self.region is None:
            return None
        if "known" not in self._loaded:
            vq = self.vqvae()
            latent_mask = vq.latent_mask(self.region_grid()).numpy()
            if not latent_mask.any() or latent_mask.all():
                raise ValueError(f"the region covers {'every' if latent_mask.any() else 'no'} latent voxel (a voxel "
                                 "counts when half of its 4^3 density points are inside): "
                                 f"{'shrink' if latent_mask.any() else 'widen'} it")
            rho = torch.as_tensor(self.target_grid(), dtype=next(vq.parameters()).dtype)[None]
            values = vq.encode_field(rho)[0].double().numpy()
            self._loaded["known"] = {F.DENSITY_LATENT: (latent_mask, values)}
        return self._loaded["known"]

    # --- sampling and ranking ---------------------------------------------------------------------------------
    def iter_results(self, structure: Structure | None = None) -> Iterator[dict]:
        """Valid results (module docstring), batch by batch as they are generated, in generation order; counts in
        :attr:`counts`. ``structure``: a template whose atom count and species are kept (None: de novo)."""
        from tqdm.auto import tqdm

        model, known = self.joint_model(), self.known_grids()
        mask, target = self.region_grid(), self.target_grid()
        kw = {"conditions": self.conditions or None, "guidance_scale": self.guidance_scale, "seed": self.seed,
              "batch_size": self.batch_size, "num_levels": self.num_levels, "known_grids": known,
              "resample": None if self.resample is None else tuple(int(v) for v in self.resample),
              "progress": self.progress}
        if structure is None:
            batches = model.sample(self.n_samples, **kw)
        else:
            template = to_structure(structure, name="template")
            batches = model.sample_from([template] * self.n_samples, fix_types=True, **kw)
        self.counts = {"generated": 0, "valid": 0, "invalid": 0}
        with tqdm(total=self.n_samples, desc="generating", unit="crystal", disable=not self.progress) as bar:
            for records in batches:
                for rec in records:
                    index = self.counts["generated"]
                    self.counts["generated"] += 1
                    if not rec["valid"]:
                        self.counts["invalid"] += 1
                        continue
                    self.counts["valid"] += 1
                    yield self._result(rec, index, mask, target)
                bar.update(len(records))

    def _result(self, rec: dict, index: int, mask: np.ndarray | None, target: np.ndarray | None) -> dict:
        """The result dict of one valid record; ``mask`` and ``target`` (N, N, N) in the sampled cell."""
        rho = rec[F.CHARGE_DENSITY]
        out = {"structure": record_to_structure(rec), "charge_density": rho, "density_latent": rec[F.DENSITY_LATENT],
               "sample_index": index, "region_mask": None, "region_score": None}
        if self.predict_density is not None:
            out["predicted_density"] = self.density_predictor().predict_if_known(out["structure"])
        if mask is None:
            return out
        if rec["cell_flipped"]:  # the known voxels went along with the grids: voxel m -> -m
            flip = (-rec[F.CELL], rec[F.CELL])
            mask, target = grid_in_cell(mask, *flip), grid_in_cell(target, *flip)
        stats = region_density(rho, mask)
        out.update(stats, region_mask=mask, region_score=self._score(stats["region_mean_density"], rho, target, mask),
                   score_source="generated")
        predicted = out.get("predicted_density")
        if predicted is not None:  # the structure's own density decides the ranking (module docstring)
            p = region_density(predicted, mask)
            out.update(predicted_region_mean_density=p["region_mean_density"],
                       predicted_outside_mean_density=p["outside_mean_density"],
                       region_score=self._score(p["region_mean_density"], predicted, target, mask),
                       score_source="predicted")
        return out

    def _score(self, inside: float, rho: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
        if isinstance(self.target, str):
            return inside if self.target == "low" else -inside
        if isinstance(self.target, numbers.Number):
            return abs(inside - float(self.target))
        return float(np.mean(np.abs(rho[mask] - target[mask])))

    def candidates(self, structure: Structure | None = None) -> list[dict]:
        """Every valid result of a run (:meth:`iter_results`), ranked: lowest ``region_score`` first (generation
        order without a region); with ``predict_density``, the results scored on their predicted density first."""
        results = list(self.iter_results(structure))
        if self.region is None:
            return results
        return sorted(results, key=lambda r: (r["score_source"] != "predicted", r["region_score"]))

    def density_items(self, structure: Structure | None = None) -> Iterator[tuple[str, Structure, np.ndarray]]:
        """``("gen-<sample>", Structure, rho)`` of each valid crystal as it is generated: the items
        :func:`diffase.workflows.cathode.cathode_screen` screens."""
        for r in self.iter_results(structure):
            yield f"gen-{r['sample_index']:04d}", r["structure"], r["charge_density"]

    def apply_transformation(self, structure: Structure | None = None, return_ranked_list: bool | int = False):
        """Generate ``n_samples`` crystals (de novo, or keeping a template's atom count and species) and rank them
        by ``region_score``.

        ``return_ranked_list``: False -> the best ``Structure``; an int k -> the k best result dicts
        (``structure``, ``charge_density`` (N, N, N) e/Angstrom^3, ``density_latent`` (n, n, n, d) it was decoded
        from, ``region_mask`` (N, N, N) bool in the structure's cell, ``region_mean_density``,
        ``outside_mean_density``, ``region_density_ratio``, ``region_score``, ``score_source``, ``sample_index``;
        with ``predict_density`` also ``predicted_density`` and, with a region, ``predicted_region_mean_density``
        and ``predicted_outside_mean_density``); True -> every valid one.
        :class:`~diffase.errors.NoValidCandidateError` when none is valid.
        """
        ranked = self.candidates(structure)
        if not ranked:
            raise NoValidCandidateError(f"none of the {self.counts['generated']} generated crystals is valid (a "
                                        "mask token was left in each); try more samples or levels")
        if return_ranked_list is False:
            return ranked[0]["structure"]
        return ranked if return_ranked_list is True else ranked[: max(1, int(return_ranked_list))]

    @staticmethod
    def write_chgcars(results: Sequence[dict], folder: str | Path) -> list[Path]:
        """Write each result's density as ``<folder>/CHGCAR-<sample_index>`` (VASP CHGCAR, values rho x V in e, so
        ``data["total"].mean()`` is the electron count ``mean(rho) * V``); returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return [write_chgcar(r["structure"], r["charge_density"], folder / f"CHGCAR-{r['sample_index']}")
                for r in results]


def _check_region(region, width: float) -> None:
    """Refuse an unknown preset, a bad width, or a mask that is not 3D, empty or full (its grid size is checked
    against the model when it loads)."""
    if region is None:
        return
    if isinstance(region, str):
        if region not in REGION_PRESETS:
            raise ValueError(f"unknown region preset {region!r}; choose from {', '.join(REGION_PRESETS)}, or give an "
                             "(N, N, N) bool mask")
        region_mask(region, width=width)  # a width holding no grid point is refused here
        return
    mask = np.asarray(region)
    if mask.dtype != bool or mask.ndim != 3:
        raise ValueError(f"a region mask is an (N, N, N) bool array (N = 32 for the shipped models), got "
                         f"{mask.dtype} {mask.shape}")
    if not mask.any() or mask.all():
        raise ValueError(f"the region mask is {'empty' if not mask.any() else 'full'}: mark some but not all grid "
                         "points (region=None for generation without a region)")


def _check_target(target, region) -> None:
    if isinstance(target, str):
        if target not in NAMED_TARGETS:
            raise ValueError(f"target is 'low', 'high', a density in e/A^3 or a density grid, got {target!r}")
    elif isinstance(target, numbers.Number):
        if not np.isfinite(target) or target <= 0:
            raise ValueError(f"a target density is a positive number of e/A^3, got {target}")
    else:
        grid = np.asarray(target, dtype=np.float64)
        if grid.ndim != 3 or not np.isfinite(grid).all():
            raise ValueError(f"a target density grid is a finite (N, N, N) array in e/A^3, got shape {grid.shape}")
        if region is None:
            raise ValueError("a target density grid needs a region (the points whose density it gives)")
