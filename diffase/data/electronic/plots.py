"""PNG figures of electronic fields: density slices, a density isosurface, overlaid site DOS.

Figures are matplotlib ``Figure`` objects saved straight to PNG, never pyplot: the caller's backend and open figures
stay as they are. Isosurfaces use scikit-image's marching cubes (``pip install scikit-image``, in the ``electronic``
extra).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from pymatgen.core import Structure


def plot_density_slices(
    structure: Structure,
    rho: np.ndarray,
    path: str | Path,
    *,
    axis: int = 2,
    fractions: Sequence[float] = (0.0, 0.25, 0.5),
    log: bool = True,
    region: np.ndarray | None = None,
) -> Path:
    """Draw the grid planes of ``rho`` (n1, n2, n3) e/A^3 nearest the fractional coordinates ``fractions`` along
    lattice ``axis`` (each panel is titled with the plane drawn).

    Each panel is drawn in Cartesian coordinates of the two in-plane lattice vectors (skewed cells look skewed);
    atoms within half a grid step of the plane are marked. ``log`` colours by log10(rho). ``region``: a boolean
    grid of ``rho``'s shape (e.g. :func:`~diffase.data.electronic.regions.region_mask`) outlined in red.
    """
    rho = np.asarray(rho, dtype=np.float64)
    u, v = [i for i in range(3) if i != axis]
    a, b = structure.lattice.matrix[u], structure.lattice.matrix[v]
    # in-plane frame: x along a, y perpendicular to a in the (a, b) plane
    ex = a / np.linalg.norm(a)
    ey = b - (b @ ex) * ex
    ey /= np.linalg.norm(ey)
    fu, fv = np.meshgrid(np.linspace(0, 1, rho.shape[u] + 1), np.linspace(0, 1, rho.shape[v] + 1), indexing="ij")
    corners = fu[..., None] * a + fv[..., None] * b
    x, y = corners @ ex, corners @ ey
    fig = Figure(figsize=(4.2 * len(fractions), 3.8))
    axes = fig.subplots(1, len(fractions), squeeze=False)
    values = np.log10(np.clip(rho, 1e-6, None)) if log else rho
    vmin, vmax = values.min(), values.max()
    for ax, wanted in zip(axes[0], fractions):
        k = round(wanted * rho.shape[axis]) % rho.shape[axis]  # the grid plane nearest the fraction asked for
        frac = k / rho.shape[axis]
        plane = np.take(values, k, axis=axis)
        mesh = ax.pcolormesh(x, y, plane, shading="flat", cmap="viridis", vmin=vmin, vmax=vmax)
        if region is not None and np.take(region, k, axis=axis).any():
            # each value fills the cell after its grid point (shading "flat"): outline through the cells' centres
            xc, yc = (0.25 * (c[:-1, :-1] + c[1:, :-1] + c[:-1, 1:] + c[1:, 1:]) for c in (x, y))
            ax.contour(xc, yc, np.take(region, k, axis=axis).astype(float), levels=[0.5], colors="red",
                       linewidths=1.5)
        near = np.abs(((structure.frac_coords[:, axis] - frac + 0.5) % 1.0) - 0.5) < 0.5 / rho.shape[axis]
        for site in np.array(structure)[near]:
            xy = site.frac_coords[u] % 1.0 * a + site.frac_coords[v] % 1.0 * b
            ax.plot(xy @ ex, xy @ ey, "o", mfc="none", mec="white", ms=8)
            ax.annotate(site.specie.symbol, (xy @ ex, xy @ ey), color="white", ha="center", va="center", fontsize=6)
        ax.set_aspect("equal")
        ax.set_title(f"{structure.composition.reduced_formula}: plane {'abc'[axis]} = {frac:.2f}")
        ax.set_xlabel("x (Angstrom)")
        ax.set_ylabel("y (Angstrom)")
    fig.colorbar(mesh, ax=axes[0].tolist(), label="log10 rho (e/A^3)" if log else "rho (e/A^3)")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_isosurface(structure: Structure, rho: np.ndarray, path: str | Path, *, level: float | None = None) -> Path:
    """Draw the ``level`` isosurface (e/A^3; default: mean density) of ``rho`` in the cell, with atoms and cell edges.

    The grid is closed periodically (one wrapped layer) before marching cubes, so surfaces meet at cell faces.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    rho = np.asarray(rho, dtype=np.float64)
    level = float(rho.mean()) if level is None else float(level)
    if not rho.min() < level < rho.max():
        raise ValueError(f"level {level:g} e/A^3 lies outside the density range [{rho.min():g}, {rho.max():g}]")
    closed = np.pad(rho, [(0, 1)] * 3, mode="wrap")
    verts, faces, _, _ = marching_cubes(closed, level)
    cart = (verts / np.array(rho.shape)) @ structure.lattice.matrix
    fig = Figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    ax.add_collection3d(Poly3DCollection(cart[faces], alpha=0.35, facecolor="tab:blue", edgecolor="none"))
    for i, j, k in [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 0, 1), (0, 1, 1)]:
        for d in np.eye(3, dtype=int):
            start = np.array([i, j, k])
            end = start + d
            if end.max() <= 1:
                seg = np.stack([start, end]) @ structure.lattice.matrix
                ax.plot(*seg.T, color="0.4", lw=0.8)
    xyz = (structure.frac_coords % 1.0) @ structure.lattice.matrix
    for symbol in sorted({s.specie.symbol for s in structure}):
        mask = np.array([s.specie.symbol == symbol for s in structure])
        ax.scatter(*xyz[mask].T, s=60, label=symbol, depthshade=False)
    ax.legend(loc="upper left")
    ax.set_title(f"{structure.composition.reduced_formula}: rho = {level:.3g} e/A^3")
    span = np.ptp(np.concatenate([cart, xyz]), axis=0)
    ax.set_box_aspect(np.maximum(span, 1e-3))
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_site_dos(
    energies: np.ndarray,
    dos_sets: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    site_labels: Sequence[str] | None = None,
    max_sites: int = 8,
) -> Path:
    """Overlay site DOS curves: one panel per site, one line per entry of ``dos_sets`` (name -> (n_sites, P) states/eV).

    ``energies`` (P,) is E - E_F in eV; at most ``max_sites`` sites are drawn.
    """
    arrays = {name: np.atleast_2d(np.asarray(d)) for name, d in dos_sets.items()}
    n_sites = min(max_sites, min(a.shape[0] for a in arrays.values()))
    fig = Figure(figsize=(6.5, 1.6 * n_sites + 0.6))
    axes = fig.subplots(n_sites, 1, sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        for name, array in arrays.items():
            ax.plot(energies, array[i], lw=1.0, label=name)
        ax.axvline(0.0, color="0.5", lw=0.6, ls="--")
        ax.set_ylabel(site_labels[i] if site_labels else f"site {i}", rotation=0, ha="right", va="center")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    axes[-1, 0].set_xlabel("E - E_F (eV)")
    fig.suptitle("site DOS (states/eV)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
