"""Reading several data folders as one set, each material once: the selection shared by the label readers
(:func:`~diffase.data.descriptor_records.read_label_records`) and the density readers
(:func:`~diffase.data.electronic.density_sets.read_density_sets`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def read_each_material_once(folders: str | Path | Sequence[str | Path],
                            read_folder: Callable[[str | Path], Iterable[tuple[str, str, Any]]],
                            make: Callable[[Any], Any | None] = lambda item: item, *,
                            exclude: Collection[str] = (), only: Collection[str] | None = None,
                            limit: int | None = None) -> tuple[list, list[str], dict]:
    """What ``make`` makes of the items of ``folders``, read in order, each material once: a material read from an
    earlier folder is not read again (list DFT folders first, so that theirs win over predicted copies).

    ``read_folder(folder)``: the folder's ``(material name, source, item)`` triples, source ``"dft"`` or the name
    of the predictor that wrote the item; pulled one at a time and not once ``limit`` results are made.
    ``make(item)``: the result, or None for an item it cannot use (counted as skipped; a later folder may still
    give that material). ``exclude``: names never read (held-out materials); ``only``: read only these.

    Returns the results, their names and counts ``{"sources": {source: n}, "skipped": n, "excluded": n,
    "duplicates": n, "folders": {folder: n read}}``.
    """
    folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
    excluded, wanted = set(exclude), None if only is None else set(only)
    results, names, seen = [], [], set()
    counts = {"sources": {}, "skipped": 0, "excluded": 0, "duplicates": 0, "folders": {}}

    def until_limit(items: Iterable) -> Iterator:
        items = iter(items)
        while limit is None or len(results) < limit:
            item = next(items, None)
            if item is None:
                return
            yield item

    for folder in folders:
        n_read = 0
        for name, source, item in until_limit(read_folder(folder)):
            if name in excluded or (wanted is not None and name not in wanted):
                counts["excluded"] += name in excluded
                continue
            if name in seen:
                counts["duplicates"] += 1
                continue
            result = make(item)
            if result is None:
                counts["skipped"] += 1
                continue
            results.append(result)
            names.append(name)
            seen.add(name)
            counts["sources"][source] = counts["sources"].get(source, 0) + 1
            n_read += 1
        counts["folders"][str(folder)] = n_read
    return results, names, counts
