"""Regions of a density grid drawn by fractional boxes: ChargeDIFF's 1D channel and 2D slab presets.

A region is a boolean grid ``(n1, n2, n3)`` on the points ``(i/n1, j/n2, k/n3)`` of the cell (the density
convention of :mod:`diffase.data.electronic.density`). Presets (``width``: the fraction of each confined axis
inside the region, centred on 1/2):

* ``channel-1d-x`` / ``-y`` / ``-z``: a square channel along that lattice axis (the other two confined);
* ``slab-2d-x`` / ``-y`` / ``-z``: a slab normal to that lattice axis (only that axis confined).

:func:`region_density` measures a density on a region (mean inside and outside, e/Angstrom^3), so a generated or
given density can be checked against the region it was asked to keep low.
"""

from __future__ import annotations

import numpy as np

from diffase.data.electronic.density import DEFAULT_GRID

#: Preset names accepted by :func:`region_mask`.
REGION_PRESETS = tuple(f"{kind}-{axis}" for kind in ("channel-1d", "slab-2d") for axis in "xyz")


def region_axes(preset: str) -> tuple[int, ...]:
    """The lattice axes (0, 1, 2) a preset confines: two for a channel, one for a slab."""
    if preset not in REGION_PRESETS:
        raise ValueError(f"unknown region preset {preset!r}; choose from {', '.join(REGION_PRESETS)}")
    axis = "xyz".index(preset[-1])
    return tuple(k for k in range(3) if k != axis) if preset.startswith("channel") else (axis,)


def region_mask(preset: str, grid: int | tuple[int, int, int] = DEFAULT_GRID, *, width: float = 0.25) -> np.ndarray:
    """Boolean region (grid shape) of a preset: on each confined axis the points with fractional coordinate in
    ``[1/2 - width/2, 1/2 + width/2)`` (``width * n`` points when that is whole), every point on the free axes."""
    if not 0 < width < 1:
        raise ValueError(f"region width is a fraction of the cell in (0, 1), got {width}")
    shape = (grid,) * 3 if isinstance(grid, int) else tuple(int(n) for n in grid)
    mask = np.ones(shape, dtype=bool)
    for axis in region_axes(preset):
        frac = np.arange(shape[axis]) / shape[axis]
        inside = (frac >= 0.5 - width / 2 - 1e-9) & (frac < 0.5 + width / 2 - 1e-9)
        if not inside.any():
            raise ValueError(f"a region of width {width} holds no point of a {shape[axis]}-point axis; widen it")
        mask &= inside.reshape([-1 if k == axis else 1 for k in range(3)])
    return mask


def region_density(rho: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean density inside and outside a region (e/Angstrom^3) and their ratio; ``rho`` and ``mask`` share a
    shape (n1, n2, n3). An empty or full mask is refused (nothing to compare)."""
    rho, mask = np.asarray(rho, dtype=np.float64), np.asarray(mask, dtype=bool)
    if rho.shape != mask.shape:
        raise ValueError(f"density grid {rho.shape} and region mask {mask.shape} differ in shape")
    if mask.all() or not mask.any():
        raise ValueError(f"a region mask must be neither empty nor full (it holds {int(mask.sum())} of {mask.size} "
                         "points)")
    inside, outside = float(rho[mask].mean()), float(rho[~mask].mean())
    return {"region_mean_density": inside, "outside_mean_density": outside,
            "region_density_ratio": inside / outside if outside > 0 else float("nan")}
