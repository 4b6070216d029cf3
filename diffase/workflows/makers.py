"""jobflow Makers for diffase's steps, and the flow "inpaint hosts -> relax -> NEB of the best".

jobflow (the workflow library of atomate2 and the Materials Project) runs a ``Flow`` of ``Job`` objects
with ``jobflow.run_locally`` on one machine, or on a cluster through FireWorks (``flow_to_workflow``) or
jobflow-remote (``submit_flow``); every job's output goes into a ``JobStore`` (MongoDB, or a JSON/memory store).
Each Maker here runs one function of :mod:`diffase.workflows.tasks` and returns its document: plain numbers,
strings, lists and pymatgen Structures, which a ``JobStore`` keeps and gives back as they were.

====================  ===================================================================================
Maker                 job output
====================  ===================================================================================
``InpaintMaker``      guests inpainted into one host, ranked (:func:`~diffase.workflows.tasks.inpaint_host`)
``CSPMaker``          the CHGGen CSP rows of one composition (:func:`~diffase.workflows.csp.run_csp`)
:func:`relax_maker`   atomate2's ``ForceFieldRelaxMaker`` (CHGNet, MatterSim or any ASE calculator class)
``NEBMaker``          vacancy-hop NEB barriers of one structure (:func:`~diffase.simulate.migration_barriers`)
``LabelMaker``        a GPAW DFT label of one structure (:func:`~diffase.workflows.tasks.label_structure`)
====================  ===================================================================================

Relaxation is not written again here: atomate2's ``ForceFieldRelaxMaker`` (``atomate2.forcefields.jobs``)
already relaxes with CHGNet through ASE (FIRE, ``FrechetCellFilter``, ``fmax`` 0.1 eV/Angstrom, 500 steps by
default: the protocol diffase uses) and returns a ``ForceFieldTaskDocument`` (relaxed structure in
``output.structure``, eV in ``output.energy``) that the rest of the atomate2 ecosystem reads. It installs
without pulling torch (atomate2 0.1.5: jobflow, emmet-core, custodian, pymatgen; checked with
``pip install --dry-run``), so it is part of the ``htp`` extra. :func:`relax_maker` sets it up with
diffase's names: ``"chgnet"`` (weights from the chgnet wheel), ``"mattersim"`` (a local checkpoint only,
never a download), or the import path of any ASE calculator class.

Makers hold their calculator as a name (``"chgnet"``, ``"mattersim"``) or as the import path of an ASE calculator
class with its keyword arguments (``"ase.calculators.lj.LennardJones"``, ``calculator_kwargs``): jobflow
serialises every job, even under ``run_locally``, and a calculator object does not serialise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from jobflow import Flow, Maker, job
from pymatgen.core import Structure

from diffase.workflows import tasks


def calculator_from_spec(calculator: str, kwargs: dict | None = None):
    """A diffase potential name is returned as it is (loaded later, once per process); an import path
    ``"module.Class"`` is imported and instantiated with ``kwargs``."""
    if "." not in calculator:
        if kwargs:
            raise ValueError(f"calculator_kwargs apply to an import path, not to the name {calculator!r}")
        return calculator
    module, _, cls = calculator.rpartition(".")
    return getattr(import_module(module), cls)(**(kwargs or {}))


@job
def lowest_energy(structures: list[Structure], energies_per_atom: list[float]) -> dict:
    """Job: the structure of lowest energy per atom (see :func:`diffase.workflows.tasks.lowest_energy`)."""
    return tasks.lowest_energy(structures, energies_per_atom)


@dataclass
class InpaintMaker(Maker):
    """Guests inpainted into one host and ranked: the ``n_best`` candidates of ``transformation``.

    ``transformation``: an :class:`~diffase.transformations.InpaintIntercalantTransformation` (MSONable, so
    the Maker serialises with it); the job's output equals ``transformation.apply_transformation(host,
    return_ranked_list=n_best)`` with the same seed, as a document (:func:`~diffase.workflows.tasks.inpaint_host`).
    """

    name: str = "diffase inpaint"
    transformation: object = None
    n_best: int = 5

    @job
    def make(self, host: Structure) -> dict:
        if self.transformation is None:
            raise ValueError("InpaintMaker needs a transformation: InpaintMaker(transformation="
                             "InpaintIntercalantTransformation('Li', count=2, ...))")
        return tasks.inpaint_host(host, self.transformation, self.n_best)


@dataclass
class CSPMaker(Maker):
    """CHGGen host-guided crystal structure prediction of one composition (:func:`~diffase.workflows.csp.run_csp`).

    ``settings``: :class:`~diffase.workflows.csp.CSPSettings` fields (absent ones take CHGGen's values;
    ``inpainting`` as a dict of :class:`~diffase.generators.inpainting.InpaintingSettings` fields).
    ``out``: the run's folder, relative to the job's working directory (jobflow-remote and FireWorks give each
    job its own); re-running the job there resumes. Output: ``composition``, ``out`` (absolute) and ``rows``.
    """

    name: str = "diffase csp"
    settings: dict = field(default_factory=dict)
    model: str = "score-mp20"
    calculator: str = "chgnet"
    calculator_kwargs: dict = field(default_factory=dict)
    out: str = "csp"
    device: str = "auto"

    @job
    def make(self, composition: str) -> dict:
        from diffase.generators.inpainting import InpaintingSettings
        from diffase.workflows.csp import CSPSettings, run_csp

        kw = dict(self.settings)
        if isinstance(kw.get("inpainting"), dict):
            kw["inpainting"] = InpaintingSettings(**kw["inpainting"])
        out = Path(self.out).resolve()
        rows = run_csp(composition, out, CSPSettings(**kw), model=self.model, device=self.device,
                       calculator=calculator_from_spec(self.calculator, self.calculator_kwargs))
        return {"composition": str(composition), "out": str(out), "rows": tasks.plain(rows)}


@dataclass
class NEBMaker(Maker):
    """Vacancy-hop NEB barriers of ``species`` in one (relaxed) structure, every distinct hop up to
    ``max_hop_length`` Angstrom (at most ``max_hops``); ``neb_kwargs`` go to
    :func:`~diffase.simulate.neb_barrier` (``n_images``, ``supercell``, ``min_length``, ``fmax``, ``steps``).
    Output: :func:`~diffase.workflows.tasks.migration_barriers_document` (``hops``, ``lowest_barrier`` in eV).
    """

    name: str = "diffase neb"
    species: str = "Li"
    calculator: str = "chgnet"
    calculator_kwargs: dict = field(default_factory=dict)
    max_hop_length: float = 4.0
    max_hops: int = 10
    neb_kwargs: dict = field(default_factory=dict)
    device: str = "auto"

    @job
    def make(self, structure: Structure) -> dict:
        calculator = calculator_from_spec(self.calculator, self.calculator_kwargs)
        return tasks.migration_barriers_document(structure, self.species, calculator,
                                                 max_hop_length=self.max_hop_length, max_hops=self.max_hops,
                                                 device=self.device, **self.neb_kwargs)


@dataclass
class LabelMaker(Maker):
    """A GPAW DFT label (density, site DOS, Bader charges, gap) of one structure; ``settings`` are
    :class:`~diffase.labeling.settings.LabelSettings` fields. GPAW must be installed where the job runs
    (``apt-get install gpaw gpaw-data``); output: :func:`~diffase.workflows.tasks.label_structure`."""

    name: str = "diffase label"
    settings: dict = field(default_factory=dict)

    @job
    def make(self, structure: Structure, label_name: str = "structure") -> dict:
        return tasks.label_structure(structure, self.settings, label_name)


def relax_maker(calculator: str = "chgnet", *, fmax: float = 0.1, steps: int = 500, relax_cell: bool = True,
                calculator_kwargs: dict | None = None, checkpoint: str | None = None, name: str | None = None):
    """atomate2's ``ForceFieldRelaxMaker`` with diffase's relaxation protocol (FIRE, ``FrechetCellFilter``
    when ``relax_cell``, ``fmax`` in eV/Angstrom, at most ``steps`` steps).

    ``calculator``: ``"chgnet"``, ``"mattersim"`` (with ``checkpoint``, else ``$DIFFASE_MATTERSIM_CHECKPOINT``;
    read as a local file, never downloaded) or the import path of an ASE calculator class
    (``"ase.calculators.lj.LennardJones"``). ``calculator_kwargs`` go to the calculator's constructor.
    The job's output is a ``ForceFieldTaskDocument``: ``.output.structure``, ``.output.energy_per_atom`` (eV/atom).
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    kwargs = dict(calculator_kwargs or {})
    common = dict(relax_cell=relax_cell, steps=steps, relax_kwargs={"fmax": fmax}, optimizer_kwargs={"optimizer": "FIRE"})
    if name is not None:
        common["name"] = name
    key = calculator.lower()
    if key == "chgnet":
        return ForceFieldRelaxMaker(force_field_name="CHGNet", calculator_kwargs=kwargs, **common)
    if key == "mattersim":
        from diffase.calculators import mattersim_checkpoint

        kwargs.setdefault("load_path", str(mattersim_checkpoint(checkpoint)))
        kwargs.setdefault("load_training_state", False)
        return ForceFieldRelaxMaker(force_field_name="MatterSim", calculator_kwargs=kwargs, **common)
    if "." not in calculator:
        raise ValueError(f"unknown calculator {calculator!r}: give 'chgnet', 'mattersim' or the import path of an "
                         "ASE calculator class, e.g. 'ase.calculators.lj.LennardJones'")
    return ForceFieldRelaxMaker(calculator_meta=calculator, calculator_kwargs=kwargs, **common)


def inpaint_relax_neb_flow(hosts: Sequence[Structure], inpaint: InpaintMaker, neb: NEBMaker, relax=None, *,
                           n_relax: int = 1, name: str = "diffase inpaint -> relax -> NEB") -> Flow:
    """One flow: guests inpainted into each host (one job per host), the ``n_relax`` best candidates of each
    relaxed (one job each; ``relax`` defaults to ``relax_maker("chgnet")``), the lowest-energy relaxed crystal
    of them all picked, and its vacancy-hop barriers computed by ``neb``. Each host must give at least
    ``n_relax`` valid candidates (with fewer, its relaxation jobs fail, and the jobs after them).

    Jobs of different hosts do not depend on each other, so a cluster manager (FireWorks, jobflow-remote) runs
    them at once. The flow's output is the NEB job's document.
    """
    relax = relax if relax is not None else relax_maker("chgnet")
    if not hosts or not 1 <= n_relax <= inpaint.n_best:
        raise ValueError(f"need at least one host and 1 <= n_relax <= inpaint.n_best ({inpaint.n_best}), got "
                         f"{len(hosts)} hosts, n_relax={n_relax}")
    jobs, relaxed = [], []
    for h, host in enumerate(hosts):
        inpaint_job = inpaint.make(host)
        inpaint_job.name = f"{inpaint.name} host {h}"
        jobs.append(inpaint_job)
        for k in range(n_relax):
            relax_job = relax.make(inpaint_job.output["candidates"][k]["structure"])
            relax_job.name = f"{relax.name} host {h} candidate {k}"
            jobs.append(relax_job)
            relaxed.append(relax_job.output.output)
    best = lowest_energy([r.structure for r in relaxed], [r.energy_per_atom for r in relaxed])
    neb_job = neb.make(best.output["structure"])
    return Flow([*jobs, best, neb_job], output=neb_job.output, name=name)
