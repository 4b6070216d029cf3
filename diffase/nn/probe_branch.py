"""Probe nodes of the joint denoiser: ChargeDIFF's heterogeneous graph of atoms and a grid of charge-density probes.

A crystal carrying a generated grid field (the density VQ-VAE latent, (n, n, n, d) per crystal, channels last;
:data:`diffase.data.fields.DENSITY_LATENT`) gets n^3 probe nodes, probe m = (m1, m2, m3) at the fractional point
``m / n`` of its cell (the point on which the VQ-VAE encoder's strided convolutions centre latent voxel m).
A probe starts from a linear map of its noisy latent value plus the crystal's time/condition features. After each
atom layer of :class:`~diffase.nn.joint_denoiser.JointDenoiser`, one :class:`AtomProbeLayer`:

* exchanges messages between every atom and its k nearest probes (``probe_neighbours``; periodic Cartesian
  distance, minimum image over the 27 neighbouring cells, computed from ``L L^T``; probes whose squared distance
  is within a relative 1e-6 of the k-th are all kept, so no tie is broken by probe index): a message is built from
  both nodes' features, Fourier features ``sin/cos(2 pi k df)``, k = 1..``num_freqs``, of ``df = f_probe - f_atom``
  (wrapped into [-1/2, 1/2]) and the lattice inner products ``L L^T``, and is averaged per atom and per probe (a
  probe no atom chose gets none);
* mixes probes with probes by a circular-padded 3^3 convolution over the grid (GroupNorm, SiLU), residual.

The head maps each probe to its predicted latent noise (d values). Width ``probe_hidden`` is separate from the
atoms' (a 3D convolution over 8^3 probes at the atoms' width would dominate the cost on a CPU).

Symmetry, by construction: invariant to rotations of the Cartesian frame (only ``L L^T`` and fractional
differences enter), equivariant to permutations of atoms (mean aggregation, per-atom edges), and a translation
of every atom by one voxel (``1/n`` along a cell vector) with the latent rolled by one voxel rolls the probe
output by one voxel (only periodic functions of ``df`` and circular convolutions; tested).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from diffase.nn.scatter import mean_over
from diffase.nn.vqvae3d import circular_conv

#: The 27 integer image shifts searched for the minimum-image distance (enough for Niggli-reduced cells).
_IMAGES = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.float64)
#: Probes whose squared distance is within this relative tolerance of the k-th nearest count as tied and are kept.
_TIE_TOLERANCE = 1e-6


def probe_fractions(n: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Fractional coordinates (n^3, 3) of the probes, ``m / n`` in C order of (m1, m2, m3)."""
    axis = torch.arange(n, dtype=dtype, device=device) / n
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def nearest_probes(frac: torch.Tensor, gram: torch.Tensor, atom_graph: torch.Tensor, n: int, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges (atom index, probe index within its crystal) from every atom to its ``k`` nearest probes of an n^3
    grid (and to any probe tied with the k-th); ``frac`` (n_atoms, 3), ``gram`` (B, 3, 3) = ``L L^T``
    Angstrom^2, ``atom_graph`` (n_atoms,) crystal of each atom."""
    probes = probe_fractions(n, dtype=frac.dtype, device=frac.device)
    with torch.no_grad():
        df = probes.unsqueeze(0) - frac.unsqueeze(1)  # (n_atoms, P, 3)
        df = df - torch.round(df)
        shifted = df.unsqueeze(2) + _IMAGES.to(frac.device, frac.dtype)  # (n_atoms, P, 27, 3)
        g = gram[atom_graph]  # (n_atoms, 3, 3)
        d2 = torch.einsum("apsi,aij,apsj->aps", shifted, g, shifted).amin(dim=2)  # (n_atoms, P)
        kth = d2.topk(min(k, probes.shape[0]), dim=1, largest=False).values[:, -1:]
        atom, probe = torch.nonzero(d2 <= kth * (1 + _TIE_TOLERANCE), as_tuple=True)
    return atom, probe


@dataclass
class ProbeGraph:
    """The atom<->probe edges of a batch and their features: ``atom`` / ``probe`` (E,) (probe index over all
    crystals' probes, crystal-major), ``edge_feat`` (E, 6 num_freqs), ``graph_feat`` (E, 6) = ``L L^T`` / 36 of the
    edge's crystal, ``n_crystals``, ``n`` (grid side)."""

    atom: torch.Tensor
    probe: torch.Tensor
    edge_feat: torch.Tensor
    graph_feat: torch.Tensor
    n_crystals: int
    n: int

    @property
    def n_probes(self) -> int:
        return self.n_crystals * self.n**3


class AtomProbeLayer(nn.Module):
    """Atom<->probe messages, then probe<->probe mixing by a circular 3D convolution (see the module docstring)."""

    def __init__(self, hidden: int, probe_hidden: int, edge_dim: int, graph_dim: int):
        super().__init__()
        self.norm_atom = nn.LayerNorm(hidden)
        self.norm_probe = nn.LayerNorm(probe_hidden)
        self.msg_atom = nn.Linear(hidden, probe_hidden)
        self.msg_probe = nn.Linear(probe_hidden, probe_hidden, bias=False)
        self.msg_edge = nn.Linear(edge_dim, probe_hidden, bias=False)
        self.msg_graph = nn.Linear(graph_dim, probe_hidden, bias=False)
        self.msg_out = nn.Sequential(nn.SiLU(), nn.Linear(probe_hidden, 2 * probe_hidden), nn.SiLU())
        self.atom_update = nn.Sequential(nn.Linear(hidden + probe_hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.probe_update = nn.Sequential(nn.Linear(2 * probe_hidden, probe_hidden), nn.SiLU(),
                                          nn.Linear(probe_hidden, probe_hidden))
        self.mix = nn.Sequential(nn.GroupNorm(min(8, probe_hidden), probe_hidden), nn.SiLU(),
                                 circular_conv(probe_hidden, probe_hidden))

    def forward(self, h: torch.Tensor, p: torch.Tensor, graph: ProbeGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Updated atom features ``h`` (n_atoms, hidden) and probe features ``p`` (B n^3, probe_hidden)."""
        xa, xp = self.norm_atom(h), self.norm_probe(p)
        pre = (self.msg_atom(xa)[graph.atom] + self.msg_probe(xp)[graph.probe] + self.msg_edge(graph.edge_feat)
               + self.msg_graph(graph.graph_feat))
        to_atom, to_probe = self.msg_out(pre).chunk(2, dim=-1)
        h = h + self.atom_update(torch.cat([xa, mean_over(to_atom, graph.atom, h.shape[0])], dim=-1))
        p = p + self.probe_update(torch.cat([xp, mean_over(to_probe, graph.probe, p.shape[0])], dim=-1))
        n, width = graph.n, p.shape[-1]
        grid = p.view(graph.n_crystals, n, n, n, width).permute(0, 4, 1, 2, 3)
        return h, p + self.mix(grid).permute(0, 2, 3, 4, 1).reshape(-1, width)


class ProbeBranch(nn.Module):
    """Probe nodes for one grid field of row shape (n, n, n, d): embedding, one :class:`AtomProbeLayer` per atom
    layer of the backbone, and the noise head."""

    def __init__(self, row_shape, hidden: int, probe_hidden: int, num_layers: int, num_freqs: int,
                 neighbours: int):
        super().__init__()
        n, n2, n3, d = (int(s) for s in row_shape)
        if not n == n2 == n3:
            raise ValueError(f"a probe grid is n x n x n, got {tuple(row_shape)}")
        self.n, self.d, self.neighbours = n, d, int(neighbours)
        self.embed = nn.Linear(d, probe_hidden)
        self.time = nn.Linear(hidden, probe_hidden)
        self.layers = nn.ModuleList(AtomProbeLayer(hidden, probe_hidden, 6 * num_freqs, 6) for _ in range(num_layers))
        self.out_norm = nn.LayerNorm(probe_hidden)
        self.head = nn.Linear(probe_hidden, d)

    def build(self, frac: torch.Tensor, gram: torch.Tensor, atom_graph: torch.Tensor, freqs: torch.Tensor,
              graph_feat: torch.Tensor) -> ProbeGraph:
        """The atom<->probe edges of a batch: ``frac`` (n_atoms, 3), ``gram`` (B, 3, 3) Angstrom^2, ``freqs`` (k,)
        the backbone's Fourier frequencies ``2 pi k``, ``graph_feat`` (B, 6) its lattice features."""
        atom, local = nearest_probes(frac, gram, atom_graph, self.n, self.neighbours)
        crystal = atom_graph[atom]
        probes = probe_fractions(self.n, dtype=frac.dtype, device=frac.device)
        df = probes[local] - frac[atom]
        # wrapped first: the stored 2 pi k are float32-rounded, so sin(2 pi k df) is periodic in df only to ~1e-7
        args = (df - torch.round(df)).unsqueeze(-1) * freqs.to(frac.dtype)  # (E, 3, k)
        edge_feat = torch.cat([torch.sin(args), torch.cos(args)], dim=-1).reshape(atom.shape[0], -1)
        return ProbeGraph(atom, crystal * self.n**3 + local, edge_feat, graph_feat[crystal], gram.shape[0], self.n)

    def embed_probes(self, latent: torch.Tensor, crystal_feat: torch.Tensor) -> torch.Tensor:
        """Initial probe features (B n^3, probe_hidden) from the noisy latent (B, n, n, n, d) and the crystals'
        time/condition features (B, hidden)."""
        b = latent.shape[0]
        p = self.embed(latent.reshape(b, -1, self.d)) + self.time(crystal_feat).unsqueeze(1)
        return p.reshape(-1, p.shape[-1])

    def output(self, p: torch.Tensor, n_crystals: int) -> torch.Tensor:
        """Predicted latent noise (B, n, n, n, d) of the final probe features."""
        return self.head(self.out_norm(p)).view(n_crystals, self.n, self.n, self.n, self.d)
