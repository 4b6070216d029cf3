"""``diffase label --workers N``: N single-threaded worker processes labelling one folder on one machine.

Worker ``w`` of a run on shard ``i/n`` is shard ``i + n w`` of ``n N``: it takes every (n N)-th structure from
``i + n w``, so the workers together take exactly shard ``i/n`` (structures ``i, i + n, i + 2n, ...``), none twice,
and a cluster job array of ``--shard i/n`` runs, each with ``--workers N``, still splits the input without
overlap. Each worker is a fresh (spawned) Python whose environment pins every thread pool to one thread
(``OMP_NUM_THREADS=1`` and friends, read when numpy / BLAS load); GPAW's own worker subprocess is pinned the same
way. Resuming works as for one process: finished structures are skipped, and a folder made with other settings
is refused before any worker starts.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
from pathlib import Path

from diffase.data.electronic.dataset import write_index
from diffase.labeling.batch import LabelReport, check_resume, label_structures
from diffase.labeling.settings import LabelSettings

#: Environment variables that cap a thread pool (OpenMP, OpenBLAS, MKL, numexpr, Apple Accelerate, diffase/torch).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "DIFFASE_NUM_THREADS")


def worker_shards(shard: tuple[int, int], workers: int) -> list[tuple[int, int]]:
    """The sub-shards ``(i + n w, n N)`` for ``w = 0 .. N-1`` of shard ``(i, n)`` split over ``N`` workers."""
    index, count = shard
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return [(index + count * w, count * workers) for w in range(workers)]


@contextlib.contextmanager
def single_threaded_environment():
    """Set :data:`THREAD_VARIABLES` to 1 in ``os.environ`` inside the block (processes started there inherit
    them), and restore them after."""
    saved = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_worker(source, out_dir: str, settings: LabelSettings, shard: tuple[int, int], limit: int | None):
    index, count = shard
    handlers = [logging.StreamHandler(), logging.FileHandler(Path(out_dir) / f"label-{index}-of-{count}.log")]
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [worker {index}/{count}] %(message)s",
                        handlers=handlers, force=True)
    return label_structures(source, out_dir, settings=settings, shard=shard, limit=limit)


def label_structures_in_parallel(
    source,
    out_dir: str | Path,
    *,
    workers: int,
    settings: LabelSettings = LabelSettings(),
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
) -> LabelReport:
    """:func:`~diffase.labeling.batch.label_structures` over ``workers`` single-threaded processes; one merged report.

    ``source`` must be picklable (a path, or a list of structures). Each worker logs to
    ``OUT/label-<i>-of-<n>.log`` with its sub-shard and records failures in its own ``failures-<i>-of-<n>.jsonl``.
    """
    out_dir = Path(out_dir)
    check_resume(out_dir, settings)  # refuse before any process starts
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(source, str(out_dir), settings, sub, limit) for sub in worker_shards(shard, workers)]
    with single_threaded_environment():
        pool = multiprocessing.get_context("spawn").Pool(workers)  # spawned now, inheriting the pinned environment
    with pool:
        reports = pool.starmap(_run_worker, jobs)
    write_index(out_dir)
    merged = LabelReport(seconds=max(r.seconds for r in reports))
    for report in reports:
        merged.labelled += report.labelled
        merged.skipped += report.skipped
        merged.failed += report.failed
    return merged
