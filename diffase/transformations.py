"""pymatgen Transformations wrapping diffase's generators.

``InpaintIntercalantTransformation`` puts guest atoms into a host: "put 2 Zn into this MnO2 and give me the
5 best candidates". Candidates come from score-based inpainting (``method="diffusion"``, the paper), from
Voronoi sites with greedy MLIP insertion (``"voronoi"``, the classical baseline), or from both pooled
(``"hybrid"``); each is relaxed with an MLIP (CHGNet, FIRE + FrechetCellFilter, fmax 0.1 eV/Angstrom, as the
paper) and the pool is ranked by energy per atom after relaxation.

It is a one-to-many transformation and MSONable: every ``__init__`` argument is stored as an attribute and
is JSON-friendly; the score model and the MLIP are loaded lazily on first use, so ``as_dict()`` never
serialises a network. :func:`inpaint_atoms` is the same for ASE ``Atoms``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from diffase.data.structures import MIN_DISTANCE, StructureLike, to_structure
from diffase.errors import DiffaseError, InvalidStructureError, NoValidCandidateError
from diffase.generators.inpainting import (
    GuestCandidate,
    InpaintingSettings,
    inpaint_guests,
    inpainting_record,
    prepare_hosts,
)
from diffase.generators.one_to_many import OneToManyTransformation
from diffase.generators.voronoi import voronoi_insertion

log = logging.getLogger(__name__)

METHODS = ("diffusion", "voronoi", "hybrid")


def evaluate_candidate(candidate: GuestCandidate, potential, *, relax: bool, refine_guests: bool, fmax: float,
                       relax_steps: int) -> dict:
    """MLIP evaluation of one candidate: optional guest-only relaxation (host fixed, cell fixed), then Fmax
    and energy of the structure as generated and, if ``relax``, a full relaxation (positions + cell).

    Returns a JSON-friendly dict: ``structure`` (final), ``generated_structure``, ``energy_per_atom`` (eV/atom,
    the ranking key), ``fmax_before_relax`` (eV/Angstrom), ``relax_delta_e`` (eV/atom, final - start),
    ``max_displacement`` (Angstrom), ``relax_steps``, ``converged``, ``sample_index``, ``host_index``,
    ``method``, ``refined``. A candidate with overlapping atoms gets ``valid=False`` and an ``error``.
    """
    from diffase.simulate.relax import relax as mlip_relax
    from diffase.simulate.single_point import single_points

    out = {"generated_structure": candidate.structure, "sample_index": candidate.sample_index,
           "host_index": candidate.host_index, "method": candidate.method, "refined": refine_guests, "valid": True}
    host_atoms = [i for i in range(len(candidate.structure)) if i not in set(candidate.guest_indices)]
    try:
        start = candidate.structure
        if refine_guests:
            start = mlip_relax(start, potential, fixed=host_atoms, relax_cell=False, fmax=fmax,
                               steps=relax_steps).structure
        if relax:
            r = mlip_relax(start, potential, fmax=fmax, steps=relax_steps, optimizer="FIRE", relax_cell=True)
            out.update(structure=r.structure, energy_per_atom=r.final_energy_per_atom, fmax_before_relax=r.initial_fmax,
                       relax_delta_e=r.final_energy_per_atom - r.initial_energy_per_atom,
                       max_displacement=r.max_displacement, relax_steps=r.steps, converged=r.converged)
        else:
            sp = single_points([start], potential, min_distance=MIN_DISTANCE)[0]
            out.update(structure=start, energy_per_atom=sp.energy_per_atom, fmax_before_relax=sp.fmax)
    except InvalidStructureError as err:
        out.update(structure=candidate.structure, valid=False, error=str(err), energy_per_atom=float("inf"))
    return out


def rank_results(results: Sequence[dict], *, deduplicate: bool = True) -> list[dict]:
    """Valid results by energy per atom (lowest first); with ``deduplicate`` keep one per distinct structure
    (pymatgen ``StructureMatcher`` defaults) and count the others in ``n_duplicates``."""
    ranked = sorted((r for r in results if r["valid"]), key=lambda r: r["energy_per_atom"])
    if not deduplicate:
        return ranked
    matcher = StructureMatcher()
    unique: list[dict] = []
    for r in ranked:
        twin = next((u for u in unique if matcher.fit(u["structure"], r["structure"])), None)
        if twin is None:
            unique.append({**r, "n_duplicates": 0})
        else:
            twin["n_duplicates"] += 1
    return unique


def no_valid_candidate_reason(results: Sequence[dict], host_formula: str) -> str:
    """Why a run gave nothing to rank: how many candidates were screened out, and the first reason."""
    if not results:
        return f"no candidate was generated for {host_formula}"
    first = next((r.get("error") for r in results if r.get("error")), "not valid")
    return (f"all {len(results)} candidate(s) for {host_formula} were screened out (first: {first}); "
            "try more samples, fewer guests or the 'hybrid' method")


def _log_failure(method: str, err: Exception) -> None:
    log.warning("the %s half of the hybrid method failed (%s); ranking the other half's candidates", method, err)


class InpaintIntercalantTransformation(OneToManyTransformation):
    """Insert guest atoms into a host and return the best candidates, ranked by MLIP energy.

    Args:
        guest: element symbol, or a mapping ``{"Li": 2, "Na": 1}`` for several guest species.
        count: guests per host cell (with a single ``guest``); or give ``concentration``.
        concentration: guests per host formula unit (e.g. 0.5 for Zn0.5MnO2).
        n_samples: diffusion samples per host (and beam width of the Voronoi baseline in ``"hybrid"``).
        method: ``"diffusion"`` (score-based inpainting), ``"voronoi"`` (Voronoi sites + greedy MLIP insertion +
            guest-only relaxation) or ``"hybrid"`` (both pooled, ranked together).
        relax: relax every candidate (positions + cell) before ranking; if False rank by single-point energy.
        calculator: MLIP name (``"chgnet"``, ``"mattersim"``) used for insertion energies and relaxation.
        model: score-model name or checkpoint path (see ``diffase models``).
        refine_guests: guest-only MLIP relaxation (host and cell fixed) of each candidate before the full
            relaxation; None = on for the Voronoi baseline, off for diffusion samples (the paper has none).
        num_levels, n_resample, jump_length, n_corrector, snr: inpainting sampler (paper: 200, 3, 10, 5, 0.2).
        fmax: force threshold of relaxations, eV/Angstrom. relax_steps: optimizer step limit.
        deduplicate: drop candidates that match a lower-energy one (StructureMatcher).
        seed: random seed (same seed, same device: same candidates). device: ``"auto"``, ``"cpu"``, ``"cuda"``.
        batch_size, max_atoms: at most this many crystals and atoms per network call; the samples of several
            hosts (:meth:`apply_to_hosts`) share batches. They change the speed, not the samples.
    """

    def __init__(self, guest: str | Mapping[str, int], count: int | None = None, concentration: float | None = None,
                 n_samples: int = 8, method: str = "diffusion", relax: bool = True, calculator: str = "chgnet",
                 model: str = "score-mp20", refine_guests: bool | None = None, num_levels: int = 200,
                 n_resample: int = 3, jump_length: int = 10, n_corrector: int = 5, snr: float = 0.2,
                 fmax: float = 0.1, relax_steps: int = 500, deduplicate: bool = True, seed: int = 0,
                 device: str = "auto", batch_size: int = 32, max_atoms: int | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        self.guest = dict(guest) if isinstance(guest, Mapping) else guest
        self.count, self.concentration, self.n_samples, self.method = count, concentration, n_samples, method
        self.relax, self.calculator, self.model, self.refine_guests = relax, calculator, model, refine_guests
        self.num_levels, self.n_resample, self.jump_length = num_levels, n_resample, jump_length
        self.n_corrector, self.snr, self.fmax, self.relax_steps = n_corrector, snr, fmax, relax_steps
        self.deduplicate, self.seed, self.device = deduplicate, seed, device
        self.batch_size, self.max_atoms = batch_size, max_atoms
        self.settings = InpaintingSettings(num_levels, n_resample, jump_length, n_corrector, snr, batch_size,
                                           max_atoms)

    def __repr__(self) -> str:
        return (f"InpaintIntercalantTransformation(guest={self.guest!r}, count={self.count}, "
                f"concentration={self.concentration}, method={self.method!r}, n_samples={self.n_samples})")

    def _potential(self):
        from diffase.calculators import resolve_potential

        return resolve_potential(self.calculator, self.device)

    def prepare(self, host: StructureLike) -> tuple[list[Structure], list[dict[str, int]]]:
        """Check ``host`` and the guest request before any work (:func:`prepare_hosts`: ordered host, no
        overlapping atoms, known guest element, positive count, room to fit); return hosts and guest counts."""
        return prepare_hosts(host, self.guest, self.count, self.concentration)

    def screen_hosts(self, hosts: Sequence[StructureLike | Exception]) -> tuple[list[int], list[Structure],
                                                                               dict[int, Exception]]:
        """Check each host on its own (:meth:`prepare`, then the score model's elements): returns the indices
        of the accepted hosts, their structures, and ``{index: error}`` for the refused ones (an ``Exception``
        in ``hosts``, e.g. a file that could not be read, is refused as it is). When every host is refused the
        first error is raised, so a single bad host fails as :meth:`prepare` does."""
        accepted, structures, refused = [], [], {}
        for i, h in enumerate(hosts):
            try:
                if isinstance(h, Exception):
                    raise h
                [s], [g] = self.prepare(h)
                self.check_model_elements([s], [g])
            except (DiffaseError, ValueError) as err:
                refused[i] = err
                continue
            accepted.append(i)
            structures.append(s)
        if not accepted and refused:
            raise next(iter(refused.values()))
        return accepted, structures, refused

    def check_model_elements(self, hosts: Sequence[Structure], guests: Sequence[dict[str, int]]) -> None:
        """Load the score model (once per process and device) and refuse, before any sampling, hosts or guests
        with elements it never saw (:class:`~diffase.errors.UnknownElementError`). Nothing to check for the
        Voronoi baseline, which uses no score model."""
        if self.method == "voronoi":
            return
        from diffase.data.structures import check_elements
        from diffase.generators import load_model

        known = load_model(self.model, self.device).elements
        check_elements([inpainting_record(h, g) for h, g in zip(hosts, guests)], set(known) if known else None)

    def iter_candidates(self, host: StructureLike | Sequence[StructureLike], *,
                        skip: Collection[tuple[int, int]] = (), host_ids: Sequence[int] | None = None,
                        progress: bool = False, on_batch: Callable[[int, list[GuestCandidate]], None] | None = None,
                        on_failure: Callable[[str, Exception], None] | None = None) -> Iterator[GuestCandidate]:
        """Unevaluated candidates of one host or a list of hosts, as they are generated (the diffusion samples
        of all hosts in shared batches first, then the baseline host by host); ``candidate.host_index`` is the
        host's position in the list.

        Diffusion sample ``s`` of host ``h`` depends on ``(seed, host_ids[h], s)`` alone (``host_ids``
        default to the positions); the ``(h, s)`` pairs in ``skip`` are not generated (resume). With ``method="hybrid"`` a half that fails (a
        :class:`~diffase.errors.DiffaseError`, e.g. no free Voronoi site left for the last guest of a host) is
        passed to ``on_failure(method, error)`` (default: a logged warning) and the rest goes on, as is the
        baseline's failure on one host of several; :class:`~diffase.errors.NoValidCandidateError` when
        everything failed. A single method's failure on a single host is raised as it is.
        """
        hosts, guests = self.prepare(host)
        methods = ("diffusion", "voronoi") if self.method == "hybrid" else (self.method,)
        parts = []  # (method, host index or None for all hosts, candidate source)
        if "diffusion" in methods:
            parts.append(("diffusion", None, lambda: self._diffusion_candidates(hosts, guests, skip, host_ids, progress,
                                                                                   on_batch)))
        if "voronoi" in methods:
            parts += [("voronoi", h, functools.partial(self._voronoi_candidates, h, hosts[h], guests[h]))
                      for h in range(len(hosts))]
        failures = []
        for method, h, source in parts:
            try:
                yield from source()
            except DiffaseError as err:
                if len(parts) == 1:
                    raise
                if h is not None and len(hosts) > 1:
                    err = type(err)(f"host {h if host_ids is None else host_ids[h]}: {err}")
                failures.append((method, err))
                (on_failure or _log_failure)(method, err)
        if len(failures) == len(parts):
            raise NoValidCandidateError("every method failed: " + "; ".join(f"{m}: {err}" for m, err in failures))

    def _diffusion_candidates(self, hosts, guests, skip, host_ids, progress, on_batch) -> Iterator[GuestCandidate]:
        for batch in inpaint_guests(hosts, guests, n_samples=self.n_samples, model=self.model, settings=self.settings,
                                    seed=self.seed, device=self.device, skip=skip, host_ids=host_ids,
                                    progress=progress, on_batch=on_batch):
            yield from batch

    def _voronoi_candidates(self, host_index: int, host: Structure, guests: dict[str, int]) -> list[GuestCandidate]:
        from diffase.simulate.single_point import single_points

        beam = 1 if self.method == "voronoi" else max(1, self.n_samples // 2)
        return voronoi_insertion(host, guests, lambda ss: [p.energy for p in single_points(ss, self._potential())],
                                 beam_width=beam, host_index=host_index)

    def evaluate(self, candidate: GuestCandidate) -> dict:
        """Relax and score one candidate (see :func:`evaluate_candidate`)."""
        refine = (candidate.method == "voronoi") if self.refine_guests is None else self.refine_guests
        return evaluate_candidate(candidate, self._potential(), relax=self.relax, refine_guests=refine,
                                  fmax=self.fmax, relax_steps=self.relax_steps)

    def apply_transformation(self, structure: Structure, return_ranked_list: bool | int = False):
        """Insert the guests into ``structure``.

        ``return_ranked_list``: False -> the best structure; an int k -> the k best candidates as dicts
        (``structure``, ``energy_per_atom``, ``fmax_before_relax``, ``relax_delta_e``, ``max_displacement``,
        ``sample_index``, ...); True -> every valid candidate, ranked.
        """
        host = to_structure(structure, name="host")
        results = [self.evaluate(c) for c in self.iter_candidates(host)]
        ranked = rank_results(results, deduplicate=self.deduplicate)
        if not ranked:
            raise NoValidCandidateError(no_valid_candidate_reason(results, host.composition.reduced_formula))
        if return_ranked_list is False:
            return ranked[0]["structure"]
        return _top(ranked, return_ranked_list)

    def apply_to_hosts(self, hosts: Sequence[StructureLike], return_ranked_list: bool | int = True, *,
                       progress: bool = False) -> list[HostResult]:
        """Insert the guests into many hosts in one pass: the diffusion samples of all hosts share network
        batches (``batch_size`` crystals, ``max_atoms`` atoms), so a GPU is kept busy. A host that is refused
        (disordered, an element the model never saw, no room...) or gives no valid candidate gets a
        :class:`HostResult` with the ``error`` and does not stop the others. Sample ``s`` of the ``h``-th host
        in ``hosts`` is seeded by ``(seed, h, s)`` alone: its candidates do not depend on the other hosts or on
        how the samples are batched, up to floating-point rounding (the first host gets what
        ``apply_transformation`` gives it).

        ``return_ranked_list``: True -> every valid candidate per host; an int k -> the k best.
        """
        accepted, structures, refused = self.screen_hosts(list(hosts))
        results: list[list[dict]] = [[] for _ in accepted]
        stopped = ""  # why candidate generation stopped early, if it did
        try:
            for cand in self.iter_candidates(structures, host_ids=accepted, progress=progress):
                results[cand.host_index].append(self.evaluate(cand))
        except DiffaseError as err:  # every method failed (or the only one): each host without results says why
            stopped = str(err)
        out = [HostResult(i, error=str(err)) for i, err in refused.items()]
        for i, structure, rows in zip(accepted, structures, results):
            ranked = rank_results(rows, deduplicate=self.deduplicate)
            if ranked:
                out.append(HostResult(i, _top(ranked, return_ranked_list)))
            else:
                formula = structure.composition.reduced_formula
                out.append(HostResult(i, error=stopped or no_valid_candidate_reason(rows, formula)))
        return sorted(out, key=lambda r: r.host_index)


def _top(ranked: list[dict], return_ranked_list: bool | int) -> list[dict]:
    """All of ``ranked`` for True, else its ``return_ranked_list`` best (at least one)."""
    return ranked if return_ranked_list is True else ranked[: max(1, int(return_ranked_list))]


@dataclass
class HostResult:
    """What :meth:`InpaintIntercalantTransformation.apply_to_hosts` made of one host: ``ranked`` results (best
    first, dicts as :meth:`~InpaintIntercalantTransformation.apply_transformation` returns), or an ``error``
    saying why the host was refused or gave no valid candidate (``ranked`` empty)."""

    host_index: int
    ranked: list[dict] = field(default_factory=list)
    error: str | None = None


def inpaint_atoms(atoms: Atoms, guest, count: int | None = None, *, n_best: int = 5, **kw) -> list[Atoms]:
    """ASE front end: the ``n_best`` candidates as ``Atoms`` with the scores in ``atoms.info``.

    ``kw`` are :class:`InpaintIntercalantTransformation` arguments (``method``, ``n_samples``, ``seed``...).
    """
    transformation = InpaintIntercalantTransformation(guest, count=count, **kw)
    out = []
    for r in transformation.apply_transformation(to_structure(atoms, name="host"), return_ranked_list=n_best):
        a = AseAtomsAdaptor.get_atoms(r["structure"])
        a.info.update({k: (float(v) if isinstance(v, np.floating) else v) for k, v in r.items()
                       if isinstance(v, (int, float, str, bool, np.floating))})
        out.append(a)
    return out
