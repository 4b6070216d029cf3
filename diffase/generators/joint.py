"""The joint generator: one network + a registry of generated fields (atom types A, fractional coordinates X,
lattice L, and optional per-site descriptors such as Bader charges).

``JointModel`` samples whole crystals with the shared predictor-corrector loop
(:func:`diffase.diffusion.sampler.sample`), driving the processes of its fields
(:class:`~diffase.diffusion.field_registry.FieldRegistry`, see :mod:`diffase.generators.joint_fields`):
absorbing D3PM on types, wrapped normal on fractional coordinates, DDPM on the lattice and on descriptor
fields, with the fields' per-step projections (charge neutrality); one network
(:class:`~diffase.nn.joint_denoiser.JointDenoiser`) for all of them, classifier-free guidance folded into the
score function (:mod:`diffase.diffusion.guidance`). The checkpoint records the fields.

* ``sample(n, ...)``: de novo crystals; the number of atoms is drawn from the training distribution or
  given; conditions (``{"band_gap": 2.0}``) with one ``guidance_scale`` (default 1 = conditional when a
  condition is given).
* ``sample_from(structures, ...)``: start from given crystals, either noised to ``t_start`` (a template,
  SDEdit-style) and/or with fixed fields (``fix_lattice``, per-atom ``fix_types`` / ``fix_coords``
  masks: inpainting), which end exactly as given.
* ``generate(n, path, ...)``: ``sample`` streamed to an extxyz file batch by batch, resumable.

Every method yields one list of records per batch (``atomic_numbers``, ``pos`` Angstrom, ``cell``,
``frac_coords``, ``valid``, plus each descriptor field, e.g. ``bader_charge`` (n,) e, and ``atomic_dos`` (n, P)
states/eV decoded from ``ados_latent``): a crystal in which a
mask token is left is returned with ``valid=False`` and atomic number 0 at the masked sites (never a made-up
element); :func:`diffase.data.structures.record_to_structure` refuses it, and puts descriptors into
``site_properties``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element

from diffase.data import fields as F
from diffase.data.batch import collate, split, to_device
from diffase.data.electronic.density import grid_in_cell, write_record_chgcar
from diffase.data.element_groups import groups_vector
from diffase.data.structures import (
    check_elements,
    record_to_structure,
    structure_to_record,
    to_structure,
)
from diffase.diffusion.field_registry import FieldRegistry
from diffase.diffusion.guidance import classifier_guided_score_fn, guided_score_fn
from diffase.diffusion.sampler import sample
from diffase.diffusion.schedules import monotone_schedule, repaint_schedule
from diffase.generators.descriptor_decoding import decode_descriptors, decoder_entries
from diffase.generators.dos_regressor import check_compatible, load_dos_regressor
from diffase.generators.joint_fields import (
    STRUCTURE_FIELDS,
    descriptor_row_shapes,
    fields_from_checkpoint,
    grid_row_shapes,
)
from diffase.generators.node_condition import apply_transform, check_site_dos
from diffase.hub import network_from_checkpoint
from diffase.nn.conditioning import ConditionSpec
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.runtime import make_generator, resolve_device

CHECKPOINT_KIND = "diffase-joint-v1"


# --- records <-> batches ------------------------------------------------------------------------------
def encode_records(records: Sequence[dict], elements: Sequence[int]) -> list[dict]:
    """Add ``frac_coords`` (in [0, 1)) and ``type_tokens`` (index into ``elements``) to crystal records."""
    check_elements(list(records), set(elements))
    lookup = np.full(max(elements) + 1, -1, dtype=np.int64)
    lookup[np.asarray(elements)] = np.arange(len(elements))
    out = []
    for rec in records:
        cell = np.asarray(rec[F.CELL], dtype=np.float64)
        frac = np.asarray(rec[F.POSITIONS], dtype=np.float64) @ np.linalg.inv(cell)
        out.append({**rec, F.FRAC_COORDS: np.mod(frac, 1.0), F.TYPE_TOKENS: lookup[np.asarray(rec[F.ATOMIC_NUMBERS])]})
    return out


def make_batch(records: Sequence[dict], conditions: dict[str, np.ndarray] | None = None,
               dtype: torch.dtype = torch.float32) -> dict:
    """Collate encoded records into a batch (every float field in ``dtype``); ``conditions`` maps a name to
    per-crystal values (B,) or (B, d)."""
    batch = collate(records, dtype=dtype)
    for key, value in batch.items():
        if value.is_floating_point():
            batch[key] = value.to(dtype)
    for name, values in (conditions or {}).items():
        batch[F.condition_key(name)] = torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype)
    return batch


def decode_tokens(tokens: np.ndarray, elements: Sequence[int]) -> tuple[np.ndarray, bool]:
    """Atomic numbers of tokens and whether all are real elements; mask tokens decode to 0 (invalid)."""
    tokens = np.asarray(tokens)
    table = np.append(np.asarray(elements, dtype=np.int64), 0)
    valid = bool((tokens < len(elements)).all())
    return table[np.clip(tokens, 0, len(elements))], valid


def make_checkpoint(net: JointDenoiser, fields: FieldRegistry, elements: Sequence[int],
                    num_atoms_counts: Sequence[int], **extra) -> dict:
    """Checkpoint dict: weights, architecture, fields (processes, loss weights, projections), element
    vocabulary, atom-count histogram, ``extra``."""
    return {
        "kind": CHECKPOINT_KIND,
        "model_config": net.config.to_dict(),
        "fields": fields.to_list(),
        "elements": [int(z) for z in elements],
        "num_atoms_counts": [int(c) for c in num_atoms_counts],
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        **extra,
    }


def sampling_schedule(num_levels: int, resample: tuple[int, int] | None = None) -> list[int]:
    """Levels from ``num_levels - 1`` down to -1: one pass (``resample`` None) or RePaint's schedule of
    ``resample = (jump_length, n_resample)`` (:func:`~diffase.diffusion.schedules.repaint_schedule`)."""
    if resample is None:
        return monotone_schedule(num_levels)
    jump_length, n_resample = (int(v) for v in resample)
    if n_resample > 1 and not 1 <= jump_length < num_levels:
        raise ValueError(f"RePaint resampling needs 1 <= jump_length < the {num_levels} levels sampled, got "
                         f"resample={tuple(resample)}; shorten the jump or sample more levels (num_levels)")
    return repaint_schedule(num_levels, jump_length, n_resample)


class JointModel:
    """A joint denoiser, its generated fields, element vocabulary and atom-count distribution, on one device."""

    def __init__(self, net: JointDenoiser, fields: FieldRegistry, elements: Sequence[int],
                 num_atoms_counts: Sequence[int], device: str | torch.device = "auto", meta: dict | None = None,
                 node_condition: dict | None = None):
        if tuple(fields.names[:3]) != STRUCTURE_FIELDS:
            raise ValueError(f"a joint model generates {', '.join(STRUCTURE_FIELDS)} first; got {fields.names}")
        heads = descriptor_row_shapes(fields)
        if heads != {k: list(v) for k, v in net.config.node_fields.items()}:
            raise ValueError(f"the network's extra node fields {net.config.node_fields} do not match the model's "
                             f"descriptor fields {heads}")
        grids = grid_row_shapes(fields)
        if grids != {k: list(v) for k, v in net.config.grid_fields.items()}:
            raise ValueError(f"the network's grid fields {net.config.grid_fields} do not match the model's grid "
                             f"fields {grids}")
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.fields = fields
        self.elements = [int(z) for z in elements]
        self.num_atoms_counts = [int(c) for c in num_atoms_counts]
        self.meta = meta or {}
        if len(self.elements) != net.config.num_elements:
            raise ValueError(f"{len(self.elements)} elements but the network has {net.config.num_elements} types")
        if node_condition is not None and int(node_condition["n_points"]) != net.config.node_cond_dim:
            raise ValueError(f"node condition of {node_condition['n_points']} points but the network takes "
                             f"{net.config.node_cond_dim} values per atom")
        #: What the per-atom conditions are (``{"kind": "site_dos", "e_min", "e_max", "n_points", "sigma_eV",
        #: "transform"}``, :mod:`diffase.generators.node_condition`), or None for a model without them.
        self.node_condition = dict(node_condition) if node_condition is not None else None

    # --- checkpoints --------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, ckpt: dict, device: str | torch.device = "auto") -> JointModel:
        net, meta = network_from_checkpoint(ckpt, CHECKPOINT_KIND, JointDenoiser, JointDenoiserConfig,
                                            keep_out=("processes", "fields", "elements", "num_atoms_counts",
                                                      "node_condition"))
        return cls(net, fields_from_checkpoint(ckpt), ckpt["elements"], ckpt["num_atoms_counts"], device, meta,
                   node_condition=ckpt.get("node_condition"))

    def to_checkpoint(self, **extra) -> dict:
        if self.node_condition is not None:
            extra = {"node_condition": self.node_condition, **extra}
        extra = {**decoder_entries(self.meta), **extra}  # the networks decoding ados_latent / density_latent
        return make_checkpoint(self.net, self.fields, self.elements, self.num_atoms_counts, **extra)

    @property
    def descriptor_keys(self) -> list[str]:
        """Batch keys of the generated fields beyond the structure (e.g. ``["bader_charge"]``,
        ``["density_latent"]``)."""
        return [f.key for f in self.fields if f.name not in STRUCTURE_FIELDS]

    @property
    def condition_specs(self) -> dict[str, ConditionSpec]:
        """The graph conditions this model was trained with, by name."""
        return {s.name: s for s in self.net.config.condition_specs}

    # --- conditions -----------------------------------------------------------------------------------
    def condition_values(self, conditions: dict, n: int) -> dict[str, np.ndarray]:
        """Per-crystal arrays for user conditions: a number (scalar), a class index (categorical; a space
        group by its international number), a chemical system ``"Li-Fe-O"`` / element list (multi-hot over
        the model's elements), or for ``chemsys_groups`` names of ChargeDIFF's element groups (``["tm3d",
        "oxide"]``, :data:`~diffase.data.element_groups.GROUP_NAMES`)."""
        specs = self.condition_specs
        out = {}
        for name, value in conditions.items():
            if name not in specs:
                known = ", ".join(specs) or "none (an unconditional model)"
                raise ValueError(f"this model was not trained with condition {name!r}; its conditions: {known}. "
                                 "Use a checkpoint trained with it, or drop the condition.")
            spec = specs[name]
            if name == "chemsys_groups":
                out[name] = np.tile(groups_vector(value), (n, 1))
            elif spec.kind == "multi_hot":
                symbols = value.split("-") if isinstance(value, str) else list(value)
                zs = [Element(s).Z for s in symbols]
                check_elements([{F.ATOMIC_NUMBERS: np.array(zs)}], set(self.elements))
                vec = np.zeros(len(self.elements))
                vec[[self.elements.index(z) for z in zs]] = 1.0
                out[name] = np.tile(vec, (n, 1))
            else:
                number = float(value)
                if spec.kind == "categorical" and not (number.is_integer() and 0 <= number < spec.dim):
                    raise ValueError(f"condition {name!r} is a class index in 0..{spec.dim - 1} (a space group is "
                                     f"its number 1..230), got {value!r}")
                out[name] = np.full(n, number)
        return out

    # --- score ----------------------------------------------------------------------------------------
    def model_fn(self, fields: FieldRegistry):
        """``(batch, level) -> network outputs`` at the time of ``level`` under ``fields``' level grid."""

        @torch.no_grad()
        def fn(batch: dict, level: int) -> dict:
            t = fields.time_at(level)
            n_graph = batch[F.NUM_ATOMS].shape[0]
            batch = {**batch, F.TIME: torch.full((n_graph,), t, dtype=batch[F.CELL].dtype, device=self.device)}
            return self.net(batch)

        return fn

    # --- sampling -------------------------------------------------------------------------------------
    def _run(self, chunk, conditions, guidance_scale, fields, schedule, known_masks, template, n_corrector,
             generator, progress, desc, classifier=None, classifier_scale: float = 0.0) -> list[dict]:
        dtype = next(self.net.parameters()).dtype
        batch = to_device(make_batch(chunk, conditions, dtype=dtype), self.device)
        score_fn = guided_score_fn(self.model_fn(fields), guidance_scale)
        if classifier is not None:
            score_fn = classifier_guided_score_fn(score_fn, classifier.level_fn(fields), classifier_scale,
                                                  fields["coords"].process, fields["lattice"].process)
        known = {key: (mask.to(self.device), batch[key].clone()) for key, mask in known_masks.items()}
        tmpl = {key: batch[key].clone() for key in template}
        out = sample(score_fn, batch, fields.processes, schedule, n_corrector=n_corrector, known=known,
                     template=tmpl, projections=fields.projections, generator=generator, progress=progress,
                     desc=desc)
        return self._to_records(out)

    def _to_records(self, out: dict) -> list[dict]:
        keys = (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL, F.NUM_ATOMS, F.BATCH, *self.descriptor_keys)
        keep = {k: out[k] for k in keys}
        parts = split(keep)
        # decoded in the sampled cell: ados_latent -> atomic_dos (states/eV), density_latent -> charge_density
        decoded = decode_descriptors([{k: rec[k].astype(np.float64) for k in self.descriptor_keys} for rec in parts],
                                     self.meta)
        records = []
        for rec, values in zip(parts, decoded, strict=True):
            cell = rec[F.CELL].astype(np.float64)
            frac = rec[F.FRAC_COORDS].astype(np.float64)
            flipped = bool(np.linalg.det(cell) < 0)
            if flipped:  # same crystal, right-handed basis: L -> -L, f -> -f, grids follow
                values.update({k: grid_in_cell(v, cell, -cell) for k, v in values.items() if k in F.GRID_FIELDS})
                cell, frac = -cell, -frac
            frac = np.mod(frac, 1.0)
            z, valid = decode_tokens(rec[F.TYPE_TOKENS], self.elements)
            records.append({F.ATOMIC_NUMBERS: z, F.FRAC_COORDS: frac, F.POSITIONS: frac @ cell, F.CELL: cell,
                            "valid": valid, "cell_flipped": flipped, **values})
        return records

    def _check_guidance(self, conditions, guidance_scale) -> float:
        if conditions:
            return 1.0 if guidance_scale is None else float(guidance_scale)
        if guidance_scale not in (None, 0, 0.0):
            raise ValueError(f"guidance_scale={guidance_scale} needs conditions; pass conditions={{...}}")
        return 0.0

    def sample(self, n: int, *, num_atoms: int | Sequence[int] | None = None, conditions: dict | None = None,
               node_conditions: Sequence | None = None, guidance_scale: float | None = None, batch_size: int = 64,
               num_levels: int | None = None, n_corrector: int = 1, seed: int | None = None, progress: bool = False,
               start_batch: int = 0, classifier=None, classifier_scale: float = 1.0,
               known_grids: dict | None = None, resample: tuple[int, int] | None = None) -> Iterator[list[dict]]:
        """Generate ``n`` crystals, yielding one list of records per batch of ``batch_size``.

        ``num_atoms``: one count for all, a list of n counts, or None (drawn from the training distribution).
        ``conditions``: ``{name: value}`` for the model's conditions; ``guidance_scale`` defaults to 1
        (conditional) when conditions are given, 0 otherwise. ``num_levels`` < 1000 respaces all the
        fields' processes (fewer network calls). Batch b draws from its own seed (``seed``, b), so ``start_batch``
        resumes an interrupted run with the same crystals.
        ``node_conditions``: per-atom conditions of a model trained with them, one (n_atoms, d) array per crystal
        (n of them) in raw units (a site DOS in states/eV on the grid of :attr:`node_condition`; the model applies
        its transform); a NaN row leaves that atom free. The atom counts follow the arrays (``num_atoms``, if
        given, must agree). ``classifier`` / ``classifier_scale``: classifier guidance towards ``node_conditions``
        (see :meth:`sample_from`).
        ``known_grids``: inpainting of a generated grid field, ``{key: (mask, values)}`` (e.g. ``density_latent``:
        ``mask`` (n, n, n) bool over latent voxels, e.g. from
        :meth:`~diffase.nn.vqvae3d.DensityVQVAE.latent_mask`, ``values`` (n, n, n, d) the field's values there,
        e.g. from :meth:`~diffase.nn.vqvae3d.DensityVQVAE.encode_field`), the same for every crystal: the loop's
        ``known`` mechanism keeps those voxels on the given values noised to each level, exactly the given values
        at the end (in the sampled cell; a crystal whose cell is flipped to right-handed gets its grids flipped too,
        voxel m -> -m, and ``cell_flipped`` True in its record).
        ``resample``: ``(jump_length, n_resample)`` turns on RePaint resampling
        (:func:`~diffase.diffusion.schedules.repaint_schedule`: every ``jump_length`` levels the loop re-noises
        ``jump_length`` levels and denoises again, ``n_resample - 1`` times), which lets the generated parts agree
        with the known ones (``known_grids``); None: one pass down.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        known_grids = self._known_grid_arrays(known_grids)
        scale = self._check_guidance(conditions or node_conditions is not None, guidance_scale)
        if node_conditions is not None:
            if len(node_conditions) != n:
                raise ValueError(f"{len(node_conditions)} per-atom condition arrays for n={n} crystals")
            sizes = [np.shape(values)[0] if np.ndim(values) else 0 for values in node_conditions]
            if num_atoms is not None and self._num_atoms(n, num_atoms, seed) != sizes:
                raise ValueError(f"num_atoms {num_atoms} disagrees with the rows of node_conditions {sizes} "
                                 "(one row per atom); leave num_atoms out to take the counts from node_conditions")
            num_atoms = sizes
        counts = self._num_atoms(n, num_atoms, seed)
        regressor = self._classifier(classifier, node_conditions)
        node_values = None
        if node_conditions is not None:
            node_values = self._node_condition_arrays(
                node_conditions, [{F.ATOMIC_NUMBERS: np.zeros(c, dtype=np.int64)} for c in counts], regressor)
        fields = self.fields.respaced(num_levels)
        schedule = sampling_schedule(fields.num_levels, resample)
        for b, lo in enumerate(range(0, n, batch_size)):
            if b < start_batch:
                continue
            chunk = [{F.ATOMIC_NUMBERS: np.zeros(c, dtype=np.int64), F.POSITIONS: np.zeros((c, 3)),
                      F.CELL: np.eye(3), F.FRAC_COORDS: np.zeros((c, 3)), F.TYPE_TOKENS: np.zeros(c, dtype=np.int64)}
                     for c in counts[lo : lo + batch_size]]
            if node_values is not None:
                for rec, values in zip(chunk, node_values[lo : lo + batch_size], strict=True):
                    rec[F.NODE_COND] = values
            masks = self._add_known_grids(chunk, known_grids)
            conds = self.condition_values(conditions, len(chunk)) if conditions else None
            yield self._run(chunk, conds, scale, fields, schedule, masks, (), n_corrector,
                            self._batch_generator(seed, b), progress,
                            f"crystals {lo + 1}-{lo + len(chunk)} of {n}", regressor, classifier_scale)

    def sample_from(self, structures: Sequence, *, t_start: float | None = None, fix_lattice: bool = False,
                    fix_types: Sequence | bool | None = None, fix_coords: Sequence | bool | None = None,
                    conditions: dict | None = None, node_conditions: Sequence | None = None,
                    guidance_scale: float | None = None, batch_size: int = 64,
                    num_levels: int | None = None, n_corrector: int = 1, seed: int | None = None,
                    progress: bool = False, classifier=None, classifier_scale: float = 1.0,
                    known_grids: dict | None = None, resample: tuple[int, int] | None = None) -> Iterator[list[dict]]:
        """Generate from given crystals (``Structure``/``Atoms``), each taken in its Niggli-reduced cell (same
        crystal, same site order: the cell the model was trained on, whatever cell the input uses).

        ``t_start`` in (0, 1]: start from the crystals noised to that time (a template) instead of the prior;
        descriptor fields (e.g. Bader charges) are not taken from the input and start from their prior.
        ``fix_lattice``: keep every cell; ``fix_types`` / ``fix_coords``: True (all atoms) or one bool array per
        crystal (atoms in the input order of the reduced structure) whose entries end exactly as given.
        ``node_conditions``: per-atom conditions of a model trained with them, one (n_atoms, d) array per
        crystal (same atom order) in raw units (a site DOS in states/eV on the grid of :attr:`node_condition`;
        the model applies its transform); a row of NaN leaves that site free (masked conditioning). Guidance
        drops them with the graph conditions.
        ``classifier``: a site-DOS regressor on noisy crystals (name, path or
        :class:`~diffase.generators.dos_regressor.DOSRegressor`, e.g. ``"dos-regressor-mp20"``) for classifier
        guidance towards ``node_conditions`` with strength ``classifier_scale`` (0 = off, exactly unguided); it
        also guides a model without per-atom conditions (joint-mp20), whose ``node_conditions`` then follow the
        classifier's grid.
        ``known_grids`` / ``resample``: grid inpainting and RePaint resampling as in :meth:`sample` (a grid field
        starts from its prior, not from the input, whatever ``t_start``).
        """
        if t_start is None and not (fix_lattice or fix_types is not None or fix_coords is not None):
            raise ValueError("sample_from needs t_start (template) and/or fixed fields; use sample() for de novo")
        if t_start is not None and not 0 < t_start <= 1:
            raise ValueError(f"t_start must be in (0, 1], got {t_start}")
        scale = self._check_guidance(conditions or node_conditions is not None, guidance_scale)
        known_grids = self._known_grid_arrays(known_grids)
        regressor = self._classifier(classifier, node_conditions)
        records = encode_records([structure_to_record(to_structure(s, name=f"structure {i}").get_reduced_structure())
                                  for i, s in enumerate(structures)], self.elements)
        if node_conditions is not None:
            for rec, values in zip(records, self._node_condition_arrays(node_conditions, records, regressor),
                                   strict=True):
                rec[F.NODE_COND] = values
        fields = self.fields.respaced(num_levels)
        n_lev = fields.num_levels
        start = n_lev - 1 if t_start is None else max(0, round(t_start * n_lev) - 1)
        schedule = sampling_schedule(start + 1, resample)
        fixes = {F.TYPE_TOKENS: fix_types, F.FRAC_COORDS: fix_coords}
        for b, lo in enumerate(range(0, len(records), batch_size)):
            chunk = records[lo : lo + batch_size]
            masks = self._add_known_grids(chunk, known_grids)
            for key, fix in fixes.items():
                if fix is None or fix is False:
                    continue
                parts = [np.ones(len(r[F.ATOMIC_NUMBERS]), bool) if fix is True else np.asarray(fix[lo + i], bool)
                         for i, r in enumerate(chunk)]
                if any(len(m) != len(r[F.ATOMIC_NUMBERS]) for m, r in zip(parts, chunk)):
                    raise ValueError(f"{key} mask length differs from the number of atoms of a crystal")
                masks[key] = torch.as_tensor(np.concatenate(parts))
            if fix_lattice:
                masks[F.CELL] = torch.ones(len(chunk), dtype=torch.bool)
            template = (F.TYPE_TOKENS, F.FRAC_COORDS, F.CELL) if t_start is not None else ()
            conds = self.condition_values(conditions, len(chunk)) if conditions else None
            yield self._run(chunk, conds, scale, fields, schedule, masks, template, n_corrector,
                            self._batch_generator(seed, b), progress,
                            f"crystals {lo + 1}-{lo + len(chunk)} of {len(records)}", regressor, classifier_scale)

    def generate(self, n: int, path: str | Path, *, batch_size: int = 64, seed: int = 0, progress: bool = True,
                 **kw) -> dict:
        """Sample ``n`` crystals into the extxyz file ``path``, appending each batch as soon as it is done.

        A run interrupted and started again with the same arguments resumes after the last complete batch
        (a sidecar ``<path>.progress.json`` records the batches written). Each frame's ``sample`` info is its
        index in the run (0..n-1); invalid samples are not written but counted. ``progress`` shows one bar over crystals and one over the levels of the current batch.
        A model generating the charge density also writes each valid crystal's density as a CHGCAR (rho x V, e;
        :func:`~diffase.data.electronic.density.write_record_chgcar`) to ``<path>.chgcar/CHGCAR-<sample>``.
        Returns ``{"written": ..., "invalid": ..., "path": ...}``.
        """
        from tqdm.auto import tqdm

        from diffase.data.io import append_extxyz

        self._check_guidance(kw.get("conditions") or kw.get("node_conditions") is not None,
                             kw.get("guidance_scale"))  # bad input fails before any output
        if kw.get("conditions"):
            self.condition_values(kw["conditions"], 1)
        path = Path(path)
        state_file = path.with_name(path.name + ".progress.json")
        settings = {"n": n, "batch_size": batch_size, "seed": seed, **{k: repr(v) for k, v in kw.items()}}
        state = {"settings": settings, "batches": 0, "written": 0, "invalid": 0}
        if state_file.exists():
            old = json.loads(state_file.read_text())
            if old.get("settings") != settings:
                raise ValueError(f"{path} was started with other settings ({old.get('settings')}); "
                                 "choose another output file or delete it and its .progress.json")
            state = old
        elif path.exists():
            raise FileExistsError(f"{path} exists and has no .progress.json; choose another output file")
        bar = tqdm(total=n, initial=min(n, state["batches"] * batch_size), desc="generating", unit="crystal",
                   disable=not progress)
        for records in self.sample(n, batch_size=batch_size, seed=seed, start_batch=state["batches"],
                                   progress=progress, **kw):
            first = state["batches"] * batch_size  # "sample": index of the crystal in the whole run
            good = [(first + i, r) for i, r in enumerate(records) if r["valid"]]
            append_extxyz(path, [record_to_structure(r) for _, r in good], [{"sample": i} for i, _ in good])
            for i, r in good:
                if F.CHARGE_DENSITY in r:
                    folder = path.with_name(path.name + ".chgcar")
                    folder.mkdir(exist_ok=True)
                    write_record_chgcar(r, folder / f"CHGCAR-{i}")
            state["batches"] += 1
            state["written"] += len(good)
            state["invalid"] += len(records) - len(good)
            state_file.write_text(json.dumps(state))
            bar.update(len(records))
        bar.close()
        return {"written": state["written"], "invalid": state["invalid"], "path": str(path)}

    # --- helpers --------------------------------------------------------------------------------------
    def _known_grid_arrays(self, known_grids: dict | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Checked ``{key: (mask (n, n, n) bool, values (n, n, n, d))}`` of :meth:`sample`'s ``known_grids``."""
        shapes = grid_row_shapes(self.fields)
        out = {}
        for key, (mask, values) in (known_grids or {}).items():
            if key not in shapes:
                raise ValueError(f"known_grids: this model generates no grid field {key!r}; its grid fields: "
                                 f"{', '.join(shapes) or 'none'}")
            mask, values = np.asarray(mask, dtype=bool), np.asarray(values, dtype=np.float64)
            if mask.shape != tuple(shapes[key][:3]) or values.shape != tuple(shapes[key]):
                raise ValueError(f"known_grids[{key!r}]: mask {mask.shape} and values {values.shape} must be "
                                 f"{tuple(shapes[key][:3])} and {tuple(shapes[key])}")
            if not mask.any():
                raise ValueError(f"known_grids[{key!r}]: the mask is empty (no voxel given); drop it for de novo")
            if not np.isfinite(values[mask]).all():
                raise ValueError(f"known_grids[{key!r}]: the given values are not finite")
            out[key] = (mask, values)
        return out

    @staticmethod
    def _add_known_grids(chunk: list[dict], known_grids: dict) -> dict[str, torch.Tensor]:
        """Put each checked known grid's values into every record of ``chunk``; return the loop's masks
        ``{key: (B, n, n, n) bool}``."""
        masks = {}
        for key, (mask, values) in known_grids.items():
            for rec in chunk:
                rec[key] = values
            masks[key] = torch.as_tensor(np.stack([mask] * len(chunk)))
        return masks

    def _classifier(self, classifier, node_conditions):
        """The DOS regressor of classifier guidance, checked against this model (vocabulary, DOS grid); None if
        not given."""
        if classifier is None:
            return None
        if node_conditions is None:
            raise ValueError("classifier guidance steers towards per-atom targets; pass node_conditions (one "
                             "site-DOS array per crystal)")
        regressor = load_dos_regressor(classifier, self.device)
        check_compatible(self.node_condition, self.elements, regressor)
        return regressor

    def _node_condition_arrays(self, node_conditions: Sequence, records: Sequence[dict],
                               regressor=None) -> list[np.ndarray]:
        """Check raw per-atom conditions against the model and the crystals
        (:func:`~diffase.generators.node_condition.check_site_dos`) and return the network's input: (n_atoms, d)
        float arrays after the model's transform, NaN rows kept."""
        spec = self.node_condition if regressor is None else regressor.node_condition  # the same grid (checked)
        dim = self.net.config.node_cond_dim if regressor is None else int(spec["n_points"])
        if not dim:
            raise ValueError("this model was not trained with per-atom conditions (node_cond_dim = 0, no "
                             "node_condition in its checkpoint, e.g. joint-mp20); use a checkpoint trained with "
                             "them (dos-mp20 for a site DOS), or guide this one with a classifier (classifier='dos-regressor-mp20')")
        if len(node_conditions) != len(records):
            raise ValueError(f"{len(node_conditions)} per-atom condition arrays for {len(records)} crystals")
        return [apply_transform(spec, check_site_dos(values, len(rec[F.ATOMIC_NUMBERS]), dim, i))
                for i, (values, rec) in enumerate(zip(node_conditions, records))]

    def _batch_generator(self, seed: int | None, b: int):
        if seed is None:
            return None
        return make_generator(int(np.random.SeedSequence([int(seed), b]).generate_state(1)[0]), self.device)

    def _num_atoms(self, n: int, num_atoms, seed) -> list[int]:
        if num_atoms is None:
            probs = torch.as_tensor(self.num_atoms_counts, dtype=torch.float64)
            gen = None if seed is None else torch.Generator().manual_seed(int(seed))
            return torch.multinomial(probs, n, replacement=True, generator=gen).tolist()
        counts = [int(num_atoms)] * n if np.isscalar(num_atoms) else [int(c) for c in num_atoms]
        if len(counts) != n or min(counts) < 1:
            raise ValueError(f"num_atoms must be one positive count or {n} of them, got {num_atoms}")
        return counts
