"""``DOSConditionedGenerator``: crystals whose site DOS matches a target (DOSMatGen; Jia, Ganesh, Fung 2025), ranked by
a surrogate's predicted DOS.

It drives a joint model trained with per-site DOS conditions (``model.node_condition["kind"] == "site_dos"``, e.g.
``dos-mp20``) through :meth:`~diffase.generators.joint.JointModel.sample` / ``sample_from``: the one sampler loop,
with classifier-free guidance on the per-site conditions. The tasks of the paper, each set **per structure** of a
batch (one condition array and one fixed-type mask per crystal; nothing is pinned batch-wide):

* masked conditioning: ``sites`` picks the sites that get the target DOS, every other site is free (a NaN row: "not
  given" to the network);
* template-guided: ``apply_transformation(template)`` starts from the template noised to ``t_start`` (0.2, 0.5, 1.0
  in the paper; 1.0 keeps only its number of atoms, and the elements of ``fix_species`` sites);
* fixed atom types: ``fix_species`` keeps the element of chosen sites (site indices: the template's element; a
  mapping ``{site: element}``: that element, with or without a template);
* de novo (no template): ``num_atoms`` atoms (default: the target structure's, or one per target row).

Guidance: one ``guidance_scale`` s (0 = unconditional, 1 = conditional, > 1 stronger). DOSMatGen writes the guided
noise as ``(1 + w) eps_cond - w eps_uncond``; that is s = 1 + w, so their w is ``guidance_scale - 1`` (their w = 1 is
s = 2, the default here).

Ranking: each valid sample's site DOS is predicted by the surrogate (``site-labels-mp20``, a structure -> site DOS
model, see its card for its held-out error) and compared with the target on the model's grid. The similarity is
``dos_mae``: the mean absolute difference in states/eV over the conditioned sites and the grid's energies, **lower is
better**. For a total-DOS target (``total=True``, see :mod:`diffase.data.electronic.dos_targets`) it is the mean
absolute difference of the predicted total DOS per atom (site DOS summed / n_atoms) from target total / n_atoms.

MSONable like every pymatgen transformation: each ``__init__`` argument is kept as an attribute; the models load on
first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from diffase.analysis.validity import structure_valid
from diffase.data import fields as F
from diffase.data.electronic.dos import DosWindow
from diffase.data.electronic.dos_targets import (
    DOSTarget,
    check_sites,
    on_window,
    resolve_target,
)
from diffase.data.structures import (
    MIN_DISTANCE,
    record_to_structure,
    structure_to_record,
    to_structure,
)
from diffase.errors import InvalidStructureError, NoValidCandidateError
from diffase.generators.one_to_many import OneToManyTransformation, resolve_model
from diffase.runtime import child_seed

#: ``node_condition["kind"]`` of a joint checkpoint conditioned on per-site DOS.
SITE_DOS_KIND = "site_dos"


def site_dos_condition(model) -> dict:
    """The ``node_condition`` record of a joint model conditioned on per-site DOS (``kind``, ``e_min``, ``e_max``,
    ``n_points``, ``sigma_eV``, ``transform``); ``ValueError`` telling what to use when it has none."""
    cond = getattr(model, "node_condition", None)
    if cond is None:
        name = getattr(model, "meta", {}).get("path") or type(model).__name__
        raise ValueError(f"model {name} has no DOS conditioning (its node_condition is None): it was not trained "
                         "with per-site DOS conditions; use model='dos-mp20' or a joint checkpoint trained on site "
                         "DOS (node_condition kind 'site_dos')")
    if cond.get("kind") != SITE_DOS_KIND:
        raise ValueError(f"the model's per-atom conditions are {cond.get('kind')!r}, not site DOS ({SITE_DOS_KIND!r}); "
                         "use a model trained on site DOS, e.g. dos-mp20")
    return cond


@dataclass
class Job:
    """One crystal to generate: its start (``structure``: a template or a placeholder holding fixed species; None =
    de novo), ``n_atoms``, fixed-type mask (n_atoms,) bool or None, per-site conditions (n_atoms, P) states/eV with
    NaN rows for free sites, and where it comes from (``template_index``, ``sample_index``)."""

    template_index: int | None
    sample_index: int
    structure: Structure | None
    n_atoms: int
    fix_types: np.ndarray | None
    node_condition: np.ndarray
    target: DOSTarget


class DOSConditionedGenerator(OneToManyTransformation):
    """Generate crystals whose site DOS matches ``target`` and rank them by the surrogate's DOS similarity.

    Args:
        target: a pymatgen ``CompleteDos``, a label file path (or :func:`read_label` dict), or an array
            (n_sites, n_energies) / (n_energies,) in states/eV (see :func:`~diffase.data.electronic.dos_targets.
            resolve_target`).
        sites: indices of the sites that get the target DOS (the others are free); None = every target row.
        n_samples: crystals generated per template (or de novo).
        guidance_scale: classifier-free guidance s (DOSMatGen's w = s - 1); 0 = the unconditional model.
        model: joint checkpoint with per-site DOS conditions (name or path; a loaded ``JointModel`` also works).
        t_start: template start time in (0, 1] (paper: 0.2 / 0.5 / 1.0); None with a template = 1.0.
        fix_species: site indices whose element is kept, or ``{site: element}``; with several templates, a list of
            one such entry per template.
        num_atoms: atoms of a de novo crystal (default: the target's structure's, or one per target row).
        surrogate: structure -> site DOS predictor for ranking (name or path; a loaded ``SiteLabelPredictor`` too).
        seed: random seed; batch b of a run draws from ``(seed, b)`` alone.
        energies: the target array's energy grid, E - E_F in eV (not needed on the model's own grid).
        total: the target is a material-level total DOS (states/eV per cell).
        sigma: smearing of a ``CompleteDos`` target, eV (None: the larger of 0.0707 eV and its energy step).
        classifier: a site-DOS regressor on noisy crystals (name or path, e.g. ``"dos-regressor-mp20"``) adding
            classifier guidance with strength ``classifier_scale`` on top of CFG (None: off). Measured not to help
            yet: see ``models/dos-regressor-mp20.md``.
        num_levels: respaced sampler levels (None: the model's own). batch_size: crystals per network call.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, target, sites: Sequence[int] | None = None, n_samples: int = 50, guidance_scale: float = 2.0,
                 model="dos-mp20", t_start: float | None = None, fix_species=None, num_atoms: int | None = None,
                 surrogate="site-labels-mp20", seed: int = 0, energies=None, total: bool = False,
                 sigma: float | None = None, num_levels: int | None = None, batch_size: int = 64,
                 device: str = "auto", classifier=None, classifier_scale: float = 1.0):
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (0 = unconditional, 1 = conditional), got {guidance_scale}")
        if t_start is not None and not 0 < t_start <= 1:
            raise ValueError(f"t_start must be in (0, 1] (paper: 0.2, 0.5, 1.0), got {t_start}")
        self.target, self.sites, self.n_samples, self.guidance_scale = target, sites, n_samples, guidance_scale
        self.model, self.t_start, self.fix_species, self.num_atoms = model, t_start, fix_species, num_atoms
        self.surrogate, self.seed, self.energies, self.total, self.sigma = surrogate, seed, energies, total, sigma
        self.num_levels, self.batch_size, self.device = num_levels, batch_size, device
        self.classifier, self.classifier_scale = classifier, classifier_scale
        self._loaded: dict = {}

    def __repr__(self) -> str:
        return (f"DOSConditionedGenerator(sites={self.sites}, n_samples={self.n_samples}, "
                f"guidance_scale={self.guidance_scale}, model={self.model!r}, t_start={self.t_start})")

    # --- models and target (loaded once) ------------------------------------------------------------------
    def joint_model(self):
        """The conditional joint model, checked to be conditioned on site DOS."""
        if "model" not in self._loaded:
            model = resolve_model(self.model, self.device)
            site_dos_condition(model)
            self._loaded["model"] = model
        return self._loaded["model"]

    def window(self) -> DosWindow:
        """The model's energy grid (E - E_F, eV)."""
        cond = site_dos_condition(self.joint_model())
        return DosWindow(float(cond["e_min"]), float(cond["e_max"]), int(cond["n_points"]))

    def predictor(self):
        """The surrogate structure -> site DOS model used for ranking."""
        if "surrogate" not in self._loaded:
            from diffase.predictors.model import SiteLabelPredictor

            self._loaded["surrogate"] = (SiteLabelPredictor.load(self.surrogate) if isinstance(
                self.surrogate, (str, os.PathLike)) else self.surrogate)
        return self._loaded["surrogate"]

    def dos_target(self, n_atoms: int | None = None) -> DOSTarget:
        """The target on the model's grid (for a total-DOS target, spread over ``n_atoms`` sites)."""
        key = ("target", n_atoms if self.total else None)
        if key not in self._loaded:
            self._loaded[key] = resolve_target(self.target, self.window(), sites=self.sites, energies=self.energies,
                                               sigma=self.sigma, total=self.total,
                                               num_atoms=n_atoms if n_atoms is not None else self.num_atoms)
        return self._loaded[key]

    # --- what to generate -----------------------------------------------------------------------------------
    def jobs(self, templates: Sequence[Structure] | None = None) -> list[Job]:
        """The crystals of one run: ``n_samples`` per template (or de novo when ``templates`` is None), each with its
        own per-site conditions and fixed-type mask. Raises before any sampling for a site out of range, an element
        the model never saw, or fixed species without the element they keep."""
        model = self.joint_model()
        items = [None] if templates is None else [to_structure(t, name=f"template {i}") for i, t in
                                                  enumerate(templates)]
        specs = self._fix_specs(len(items))
        jobs = []
        for k, (template, spec) in enumerate(zip(items, specs)):
            n_atoms = len(template) if template is not None else self._de_novo_atoms()
            target = self.dos_target(n_atoms)
            conditions = target.node_conditions(n_atoms)
            start, mask = self._start(template, spec, n_atoms, model.elements)
            jobs += [Job(None if template is None else k, s, start, n_atoms, mask, conditions, target)
                     for s in range(self.n_samples)]
        return jobs

    def _de_novo_atoms(self) -> int:
        if self.num_atoms is not None:
            return int(self.num_atoms)
        target = self.dos_target()
        if target.structure is not None:
            return len(target.structure)
        if self.sites is None:
            return len(target.sites)
        raise ValueError("de novo generation with a DOS for chosen sites needs num_atoms (the crystal's size) "
                         "or a template")

    def _fix_specs(self, n_templates: int) -> list:
        spec = self.fix_species
        per_template = (isinstance(spec, Sequence) and not isinstance(spec, str) and len(spec) > 0
                        and not all(isinstance(x, (int, np.integer)) for x in spec))
        if not per_template:
            return [spec] * n_templates
        if len(spec) != n_templates:
            raise ValueError(f"fix_species has {len(spec)} entries for {n_templates} template(s): give one per "
                             "template, or one list of site indices / {site: element} for all")
        return list(spec)

    def _start(self, template, spec, n_atoms: int, elements: Sequence[int]):
        """(start structure or None, fixed-type mask or None) of one template (None = de novo) and its spec."""
        if spec is None or (not isinstance(spec, Mapping) and len(spec) == 0):
            return template, None
        if isinstance(spec, Mapping):
            fixed = {int(i): Element(e).symbol for i, e in spec.items()}
        elif template is None:
            raise ValueError("fix_species as site indices keeps a template's elements; without a template give "
                             "{site: element}, e.g. {0: 'Ni'}")
        else:
            fixed = {int(i): None for i in spec}
        check_sites(fixed, n_atoms, "the crystal of fix_species")
        if template is None:  # a placeholder holding the fixed elements; every other field starts from the prior
            filler = Element.from_Z(elements[0]).symbol
            species = [fixed.get(i) or filler for i in range(n_atoms)]
            template = Structure(Lattice.cubic((15.0 * n_atoms) ** (1 / 3)), species,
                                 (np.arange(n_atoms)[:, None] * [0.37, 0.61, 0.83]) % 1.0)
        else:
            template = template.copy()
            for i, element in fixed.items():
                if element is not None:
                    template.replace(i, element)
        mask = np.zeros(n_atoms, dtype=bool)
        mask[list(fixed)] = True
        return template, mask

    # --- sampling and ranking -------------------------------------------------------------------------------
    def iter_batches(self, templates: Sequence[Structure] | None = None, *, start_batch: int = 0,
                     progress: bool = False) -> Iterator[tuple[int, list[Job], list[dict]]]:
        """``(batch index, jobs, generated records)`` batch by batch (``batch_size`` crystals); batch b draws from
        ``(seed, b)`` alone, so ``start_batch`` resumes a run with the same crystals."""
        model = self.joint_model()
        jobs = self.jobs(templates)
        for b, lo in enumerate(range(0, len(jobs), self.batch_size)):
            if b < start_batch:
                continue
            chunk = jobs[lo : lo + self.batch_size]
            kw = {"node_conditions": [j.node_condition for j in chunk], "guidance_scale": self.guidance_scale,
                  "seed": child_seed(self.seed, b), "batch_size": len(chunk), "num_levels": self.num_levels,
                  "progress": progress, "classifier": self.classifier, "classifier_scale": self.classifier_scale}
            if all(j.structure is None for j in chunk):
                records = model.sample(len(chunk), num_atoms=[j.n_atoms for j in chunk], **kw)
            else:
                de_novo = all(j.template_index is None for j in chunk)  # placeholders: only fixed types are kept
                t_start = None if de_novo else (self.t_start or 1.0)
                masks = [j.fix_types if j.fix_types is not None else np.zeros(j.n_atoms, bool) for j in chunk]
                records = model.sample_from([j.structure for j in chunk], t_start=t_start,
                                            fix_types=masks if any(j.fix_types is not None for j in chunk) else None,
                                            **kw)
            yield b, chunk, [r for batch in records for r in batch]

    def score(self, jobs: Sequence[Job], structures: Sequence[Structure | None]) -> list[dict]:
        """Surrogate DOS similarity of each structure to its job's target (module docstring): dicts with
        ``dos_mae`` (states/eV, lower is better), ``predicted_site_dos`` (k, P) at the conditioned sites (and
        ``predicted_total_dos`` (P,) states/eV per cell for a total target), ``target_dos``, ``sites``, ``valid``
        and ``error``: an invalid sample (a masked atom type left, atoms closer than 0.5 Angstrom or a collapsed
        cell: :func:`~diffase.analysis.validity.structure_valid`) or an element the surrogate never saw."""
        predictor = self.predictor()
        window = jobs[0].target.window if jobs else self.window()
        same = len(predictor.dos_grid) == window.n_points and np.allclose(predictor.dos_grid, window.grid(), atol=1e-4)
        grid = None if same else predictor.dos_grid
        out = [{"structure": s, "sample_index": j.sample_index, "template_index": j.template_index,
                "sites": list(j.target.sites), "target_dos": j.target.site_dos, "valid": s is not None,
                "error": None if s is not None else "invalid sample (an atom type was left masked)"}
               for j, s in zip(jobs, structures, strict=True)]
        todo = []  # (result, job) pairs the surrogate can predict
        for r, job in zip(out, jobs):
            if not r["valid"]:
                continue
            if not structure_valid(r["structure"]):
                r.update(valid=False, error=f"atoms closer than {MIN_DISTANCE} Angstrom or a collapsed cell")
            elif unseen := predictor.baseline.unseen([site.specie.Z for site in r["structure"]]):
                r.update(valid=False, error=f"the surrogate never saw {', '.join(unseen)}")
            else:
                todo.append((r, job))
        predictions = predictor.predict_records([structure_to_record(r["structure"]) for r, _ in todo]) if todo else []
        for (r, job), pred in zip(todo, predictions):
            dos = on_window(pred[F.SITE_DOS], window, grid, what="the surrogate's site DOS")
            r["predicted_site_dos"] = dos[list(job.target.sites)]
            if job.target.total is not None:
                r["predicted_total_dos"] = dos.sum(0)
            r["dos_mae"] = dos_similarity(job.target, dos)
        return out

    def candidates(self, templates: Sequence[Structure] | None = None, *, progress: bool = False) -> list[dict]:
        """Every generated crystal of a run, scored (:meth:`score`), in generation order."""
        out = []
        for _, jobs, records in self.iter_batches(templates, progress=progress):
            out += self.score(jobs, records_to_structures(records))
        return out

    def apply_transformation(self, structure: Structure | None = None, return_ranked_list: bool | int = False):
        """Generate ``n_samples`` crystals from ``structure`` (a template; None = de novo) and rank them by
        ``dos_mae`` (lowest first).

        ``return_ranked_list``: False -> the best structure; an int k -> the k best as dicts (``structure``,
        ``dos_mae`` states/eV, ``predicted_site_dos`` (k, P) at the conditioned sites, ``target_dos``, ``sites``,
        ``sample_index``); True -> every valid one. :class:`~diffase.errors.NoValidCandidateError` when none is valid.
        """
        results = self.candidates(None if structure is None else [structure])
        ranked = rank_by_similarity(results)
        if not ranked:
            first = next((r["error"] for r in results if r["error"]), "not valid")
            raise NoValidCandidateError(f"none of the {len(results)} generated crystals is valid (first: {first}); "
                                        "try more samples or another template")
        if return_ranked_list is False:
            return ranked[0]["structure"]
        return ranked if return_ranked_list is True else ranked[: max(1, int(return_ranked_list))]


def dos_similarity(target: DOSTarget, site_dos: np.ndarray) -> float:
    """``dos_mae`` of a crystal's site DOS (n_atoms, P) states/eV on the target's grid (module docstring): mean
    absolute difference over the conditioned sites and energies, or for a total-DOS target of the total per atom;
    states/eV, lower is better."""
    site_dos = np.asarray(site_dos, dtype=np.float64)
    if target.total is not None:
        return float(np.mean(np.abs(site_dos.sum(0) - target.total)) / len(site_dos))
    return float(np.mean(np.abs(site_dos[list(target.sites)] - target.site_dos)))


def rank_by_similarity(results: Sequence[dict]) -> list[dict]:
    """Valid results by ``dos_mae``, lowest (most similar) first."""
    return sorted((r for r in results if r["valid"]), key=lambda r: r["dos_mae"])


def records_to_structures(records: Sequence[dict]) -> list[Structure | None]:
    """Structures of generated records, None for an invalid one."""
    out = []
    for r in records:
        try:
            out.append(record_to_structure(r))
        except InvalidStructureError:
            out.append(None)
    return out
