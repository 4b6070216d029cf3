"""Scatter independent structures over a Dask cluster: relax, label, or inpaint guests into each host.

The task functions (:func:`relax_task`, :func:`label_task`, :func:`inpaint_task`) are top-level and import
what they need inside, so ``client.map`` pickles them by name and a worker imports diffase only when it
runs one. Each pins its process to one thread first (torch through
:func:`diffase.runtime.configure_threads`, OpenMP/BLAS through the environment that subprocesses such as the
GPAW worker inherit): give each Dask worker one thread (``threads_per_worker=1``) and as many workers as
cores, since on a busy CPU two threads can be 30x slower than one (see :mod:`diffase.runtime`).

:func:`scatter_map` sends the structures to the workers, runs a task on each and returns the results in input
order; an item that fails comes back as an error entry, and the others go on::

    from dask.distributed import Client, LocalCluster
    from diffase.parallel import relax_task, scatter_map

    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        docs = scatter_map(client, relax_task, structures, calculator="chgnet", fmax=0.1)

On a cluster, make the ``Client`` from a dask-jobqueue ``SLURMCluster`` (see the README) instead.
Each worker process loads the MLIP or score model once, on its first task, and keeps it for the next ones.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence


def pin_threads() -> None:
    """One thread for torch in this process, and ``OMP_NUM_THREADS=1`` (and the other thread-pool variables
    of :data:`diffase.labeling.workers.THREAD_VARIABLES`) for the subprocesses it starts."""
    from diffase.labeling.workers import THREAD_VARIABLES
    from diffase.runtime import configure_threads

    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    configure_threads(1)


def relax_task(structure, calculator="chgnet", **relax_kw) -> dict:
    """Relax one structure on one thread (:func:`diffase.workflows.tasks.relax_structure`)."""
    from diffase.workflows.tasks import relax_structure

    pin_threads()
    return relax_structure(structure, calculator, **relax_kw)


def label_task(structure, settings: dict | None = None, name: str = "structure") -> dict:
    """DFT label of one structure on one thread (:func:`diffase.workflows.tasks.label_structure`)."""
    from diffase.workflows.tasks import label_structure

    pin_threads()
    return label_structure(structure, settings, name)


def inpaint_task(host, transformation, n_best: int = 5) -> dict:
    """Guests inpainted into one host on one thread (:func:`diffase.workflows.tasks.inpaint_host`);
    ``transformation`` is an :class:`~diffase.transformations.InpaintIntercalantTransformation`."""
    from diffase.workflows.tasks import inpaint_host

    pin_threads()
    return inpaint_host(host, transformation, n_best)


def error_entry(index: int, error: BaseException) -> dict:
    """What :func:`scatter_map` puts in place of a failed item: its ``index``, ``error`` (type and message)
    and ``traceback`` (the last frames, as text)."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__, limit=-3))
    return {"index": index, "error": f"{type(error).__name__}: {error}", "traceback": trace}


def scatter_map(client, task: Callable[..., dict], items: Sequence, **task_kw) -> list[dict]:
    """``task(item, **task_kw)`` for every item on the workers of ``client`` (a ``dask.distributed.Client``);
    the results in the order of ``items``.

    The items are scattered to the workers first (each is sent once, not inside the task graph), every call is
    a separate, impure task (run again if asked again), and an item whose task raises (or whose worker dies)
    gives :func:`error_entry` in its place while the others run to the end.
    """
    items = list(items)
    if not items:
        return []
    futures = client.map(task, client.scatter(items), pure=False, **task_kw)
    results = []
    for index, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as err:  # noqa: BLE001 - one failed item must not lose the others
            results.append(error_entry(index, err))
    return results
