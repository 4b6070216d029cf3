"""Before/after comparison of two tables written by ``inpainting_reconstruction.py``.

Rows are matched by (cases, method); the top-1 reconstruction counts are compared with a two-proportion
z-test (unpaired: it treats the two runs as independent draws of hosts' outcomes). Prints a Markdown table.

    python benchmarks/compare_inpainting_tables.py OLD.md NEW.md
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def table_rows(path: Path) -> dict[tuple[str, str], list[str]]:
    """The 9-column rows of a reconstruction table keyed by (cases, method)."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[2].isdigit():
            rows[(cells[0], cells[1])] = cells
    return rows


def two_proportion_z(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float] | None:
    """(z, two-sided p) of k2/n2 - k1/n1; None where both proportions are 0 or 1 (no variance)."""
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return None
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (k2 / n2 - k1 / n1) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


def count(percent: str, n: int) -> int:
    return round(float(percent.rstrip("%")) / 100 * n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = p.parse_args()
    before, after = table_rows(args.before), table_rows(args.after)
    print("| cases | method | n | top-1 before | top-1 after | any-of-k before | any-of-k after | z (after - before) "
          "| p | guest RMSE median before / after (A) | Fmax median before / after (eV/A) | s / host before / after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, b in before.items():
        a = after.get(key)
        if a is None:
            continue
        n = int(b[2])
        if int(a[2]) != n:
            raise SystemExit(f"{key}: {n} cases before, {a[2]} after; the runs are not comparable")
        kb, ka = count(b[3], n), count(a[3], n)
        test = two_proportion_z(kb, n, ka, n)
        z, pval = (f"{test[0]:+.2f}", f"{test[1]:.2f}") if test else ("same", "")
        any_b = f"{count(b[4], n)}/{n}" if b[4] else ""
        any_a = f"{count(a[4], n)}/{n}" if a[4] else ""
        fmax_b, fmax_a = b[6].split(" / ")[0], a[6].split(" / ")[0]
        print(f"| {key[0]} | {key[1]} | {n} | {kb}/{n} ({b[3]}) | {ka}/{n} ({a[3]}) | {any_b} | {any_a} | {z} | {pval} "
              f"| {b[5]} / {a[5]} | {fmax_b} / {fmax_a} | {b[8]} / {a[8]} |")


if __name__ == "__main__":
    main()
