"""Tables and figures of CSP runs: the unconditional-vs-inpainting comparison, E_d histogram, success rates.

Input is the list of result rows of :func:`diffase.workflows.csp.run_csp` (or ``results.jsonl`` lines), of
one or several compositions. Medians ignore crystals where a quantity was not measured. Definitions:

* ``success_rate``: symmetric crystals (final space group, 0.1 Angstrom / 10 degrees, not in the excluded set)
  over all *generated* crystals of the route, those screened out or failed counted as failures (CHGGen's
  success rate); ``success_rate_relaxed``: the same over the crystals that were relaxed.
* ``delta_e``: relaxed - generated energy, eV/atom. ``rms_dist``/``max_pair_dist``: StructureMatcher RMS and
  largest paired-site distance between generated and relaxed crystal, in (V/n)^(1/3); ``matched``: fraction
  of relaxed crystals where the matcher found a match at all.
* ``decomposition_energy``: CHGGen's E_d, signed energy relative to the hull of the competing phases (negative:
  stable against them), eV/atom; ``e_above_hull`` (>= 0, the hull including the crystal) is in ranking.csv.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from diffase.analysis.symmetry import LOW_SYMMETRY, symmetry_success_rate

#: Columns of the comparison table: (key, header, format).
COLUMNS = (
    ("composition", "composition", "{}"), ("stage", "route", "{}"), ("n_generated", "generated", "{}"),
    ("n_relaxed", "relaxed", "{}"), ("n_symmetric", "symmetric", "{}"), ("success_rate", "success rate", "{:.2f}"),
    ("success_rate_relaxed", "success (of relaxed)", "{:.2f}"),
    ("median_delta_e", "median dE relax (eV/atom)", "{:.3f}"),
    ("matched", "matched", "{:.2f}"), ("median_rms_dist", "median RMS", "{:.3f}"),
    ("median_max_pair_dist", "median max-pair", "{:.3f}"), ("median_decomposition_energy", "median E_d (eV/atom)", "{:.3f}"),
    ("min_decomposition_energy", "min E_d (eV/atom)", "{:.3f}"), ("n_below_hull", "E_d <= 0", "{}"),
    ("n_frameworks", "frameworks", "{}"),
)


def _values(rows: Sequence[dict], key: str) -> np.ndarray:
    vals = [r.get(key) for r in rows]
    return np.array([float(v) for v in vals if v is not None and math.isfinite(float(v))])


def _median(rows, key) -> float:
    v = _values(rows, key)
    return float(np.median(v)) if v.size else float("nan")


def summarize(rows: Iterable[dict], excluded: Iterable[int] = LOW_SYMMETRY) -> list[dict]:
    """One summary dict per (composition, route), keys as in :data:`COLUMNS` (module docstring)."""
    rows = list(rows)
    excluded = frozenset(excluded)
    out = []
    for composition in dict.fromkeys(r["composition"] for r in rows):
        for stage in ("unconditional", "inpainting"):
            group = [r for r in rows if r["composition"] == composition and r["stage"] == stage]
            if not group:
                continue
            relaxed = [r for r in group if r.get("valid")]
            numbers = [r.get("spacegroup_number") if r.get("valid") else None for r in group]
            e_d = _values(relaxed, "decomposition_energy")
            out.append({
                "composition": composition, "stage": stage, "n_generated": len(group), "n_relaxed": len(relaxed),
                "n_symmetric": sum(n is not None and n not in excluded for n in numbers),
                "success_rate": symmetry_success_rate(numbers, excluded),
                "success_rate_relaxed": symmetry_success_rate([r["spacegroup_number"] for r in relaxed], excluded),
                "median_delta_e": _median(relaxed, "delta_e"),
                "matched": float(_values(relaxed, "rms_dist").size / len(relaxed)) if relaxed else float("nan"),
                "median_rms_dist": _median(relaxed, "rms_dist"),
                "median_max_pair_dist": _median(relaxed, "max_pair_dist"),
                "median_decomposition_energy": float(np.median(e_d)) if e_d.size else float("nan"),
                "min_decomposition_energy": float(e_d.min()) if e_d.size else float("nan"),
                "n_below_hull": int((e_d <= 0).sum()) if e_d.size else None,
                "n_frameworks": len({r["framework"] for r in group}) if stage == "inpainting" else None,
            })
    return out


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def markdown_table(summary: Sequence[dict]) -> str:
    """The comparison table as markdown ('-' where not measured)."""
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for s in summary:
        lines.append("| " + " | ".join(_cell(s.get(k), f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def plot_energy_histogram(rows: Sequence[dict], path: str | Path, *, bins: int = 20) -> Path | None:
    """Histogram (PNG) of E_d of the relaxed crystals, unconditional and inpainting overlaid; None (nothing
    written) when no E_d was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {stage: _values([r for r in rows if r["stage"] == stage and r.get("valid")], "decomposition_energy")
            for stage in ("unconditional", "inpainting")}
    every = np.concatenate(list(data.values()))
    if every.size == 0:
        return None
    edges = np.histogram_bin_edges(every, bins=bins)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (stage, values), color in zip(data.items(), ("tab:gray", "tab:blue")):
        if values.size:
            ax.hist(values, bins=edges, alpha=0.6, color=color, label=f"{stage} (n={values.size})")
    ax.axvline(0.0, color="k", lw=0.8, ls="--")
    ax.set_xlabel("E_d vs reference hull (eV/atom)")
    ax.set_ylabel("relaxed crystals")
    ax.set_title(", ".join(dict.fromkeys(r["composition"] for r in rows)))
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def plot_success_rates(summary: Sequence[dict], path: str | Path) -> Path:
    """Bar chart (PNG) of the symmetry success rate per composition, unconditional next to inpainting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compositions = list(dict.fromkeys(s["composition"] for s in summary))
    x = np.arange(len(compositions))
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(compositions), 3.5))
    for shift, stage, color in ((-0.2, "unconditional", "tab:gray"), (0.2, "inpainting", "tab:blue")):
        rates = [next((s["success_rate"] for s in summary if s["composition"] == c and s["stage"] == stage), np.nan)
                 for c in compositions]
        counts = [next((s["n_generated"] for s in summary if s["composition"] == c and s["stage"] == stage), 0)
                  for c in compositions]
        bars = ax.bar(x + shift, rates, width=0.4, color=color, label=stage)
        for bar, rate, n in zip(bars, rates, counts):
            if n:
                ax.annotate(f"{rate:.2f}\nn={n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.set_xticks(x, compositions)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("symmetry success rate")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def write_ranking(rows: Sequence[dict], path: str | Path) -> list[dict]:
    """Distinct relaxed crystals by energy per atom, lowest first (pymatgen StructureMatcher, via
    :func:`diffase.transformations.rank_results`), written as CSV; returns the ranked rows."""
    from pymatgen.core import Structure

    from diffase.transformations import rank_results

    pool = [{**r, "energy_per_atom": r["energy_relaxed"], "structure": Structure.from_dict(r["relaxed_structure"])}
            for r in rows if r.get("valid") and r.get("relaxed_structure")]
    ranked = rank_results(pool)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "id", "route", "formula", "spacegroup", "energy_eV_atom", "e_above_hull_eV_atom",
                         "decomposition_energy_eV_atom", "n_duplicates", "cif"])
        for k, r in enumerate(ranked, 1):
            writer.writerow([k, r["id"], r["stage"], r["formula"], r["spacegroup_symbol"], f"{r['energy_relaxed']:.5f}",
                             _cell(r.get("e_above_hull"), "{:.5f}"), _cell(r.get("decomposition_energy"), "{:.5f}"),
                             r["n_duplicates"], r.get("cif", "")])
    return ranked


def write_report(rows: Sequence[dict], out: str | Path, excluded: Iterable[int] = LOW_SYMMETRY) -> list[dict]:
    """Write ``summary.csv``, ``summary.md``, ``ranking.csv``, ``success_rates.png`` and, when E_d was
    measured, ``ed_histogram.png`` into ``out``; return the summary."""
    out = Path(out)
    summary = summarize(rows, excluded)
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for k, _, _ in COLUMNS])
        writer.writeheader()
        writer.writerows({k: s.get(k) for k, _, _ in COLUMNS} for s in summary)
    (out / "summary.md").write_text(markdown_table(summary) + "\n")
    write_ranking(rows, out / "ranking.csv")
    plot_success_rates(summary, out / "success_rates.png")
    plot_energy_histogram(rows, out / "ed_histogram.png")
    return summary
