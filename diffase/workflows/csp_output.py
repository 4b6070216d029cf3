"""The output folder of a CSP run: written as results finish, read back to resume.

Layout of ``out/``:

* ``settings.json``: composition, settings, model and calculator of the run (a resumed run must match);
* ``results.jsonl``: one line per finished crystal (scalars of :func:`diffase.workflows.csp.evaluate_structure`
  plus ``id``, ``stage`` and the relaxed structure as a pymatgen dict, exact, for resuming);
* ``frameworks.jsonl``: one line per framework attempt (rewritten when the inpainting stage starts);
* ``structures/<id>.cif``: each relaxed crystal; ``generated.extxyz``: each crystal as generated (before
  relaxation), with its id in the frame header.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pymatgen.core import Structure

from diffase.data.io import append_extxyz, finite_or_none, json_line
from diffase.resume import SETTINGS_FILE, check_resume, write_settings


class CSPOutput:
    """Streaming writer and resume reader of one CSP output folder (module docstring)."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        (self.root / "structures").mkdir(parents=True, exist_ok=True)
        self.results_path = self.root / "results.jsonl"
        self.rows: list[dict] = []
        if self.results_path.exists():
            self.rows = [json.loads(line) for line in self.results_path.read_text().splitlines() if line.strip()]

    def check_settings(self, settings: dict) -> None:
        """Write ``settings.json``, or, when the folder holds a run already, refuse different settings
        (:func:`diffase.resume.check_resume`: the error names each differing key)."""
        path = self.root / SETTINGS_FILE
        check_resume(path, settings, what="CSP")
        write_settings(path, settings)

    def done(self, stage: str) -> set[str]:
        """Ids of the finished crystals of ``stage``."""
        return {r["id"] for r in self.rows if r["stage"] == stage}

    def relaxed_structure(self, row: dict) -> Structure | None:
        """The relaxed structure of a result row (None for a crystal that failed screening)."""
        return Structure.from_dict(row["relaxed_structure"]) if row.get("relaxed_structure") else None

    def write(self, row: dict, generated: Structure, relaxed: Structure | None) -> dict:
        """Append one finished crystal (row scalars, its generated and relaxed structures); return the row."""
        row = {k: finite_or_none(v) for k, v in row.items()}
        if relaxed is not None:
            cif = self.root / "structures" / f"{row['id']}.cif"
            relaxed.to(filename=str(cif))
            row["cif"] = str(cif.relative_to(self.root))
        append_extxyz(self.root / "generated.extxyz", [generated], [{"id": row["id"], "stage": row["stage"]}])
        line = {**row, "relaxed_structure": relaxed.as_dict() if relaxed is not None else None}
        with open(self.results_path, "a") as fh:
            fh.write(json_line(line) + "\n")
        self.rows.append(line)
        return row

    def write_frameworks(self, infos: Iterable[dict]) -> None:
        """(Re)write ``frameworks.jsonl`` with one JSON line per framework attempt."""
        with open(self.root / "frameworks.jsonl", "w") as fh:
            for info in infos:
                fh.write(json_line(info) + "\n")
