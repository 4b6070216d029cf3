"""The denoising-score-matching step shared by the plain and the Lightning training loops."""

from __future__ import annotations

import torch

from diffase.data.batch import select_crystals
from diffase.diffusion.ve import VEProcess
from diffase.nn.score_net import ScoreNet


def dsm_loss(net: ScoreNet, process: VEProcess, batch: dict, *, generator: torch.Generator | None = None,
             crystals: slice | None = None) -> torch.Tensor:
    """Noise ``batch`` at random levels and return the DSM loss of ``net`` on it (scalar, unitless).

    ``crystals``: score only these consecutive crystals of the batch. The noise is still drawn for the whole
    batch, so a data-parallel rank that scores its share of a global batch draws the noise one device would.
    """
    n_graph = batch["num_atoms"].shape[0]
    sigma = process.sample_sigma(n_graph, generator=generator, device=batch["pos"].device)
    noisy, target = process.corrupt(batch, sigma, generator=generator)
    if crystals is not None:
        noisy, atoms = select_crystals(noisy, crystals)
        target = target[atoms]
    return process.loss(net(noisy), target, noisy)


@torch.no_grad()
def estimate_avg_neighbors(records, cutoff: float, n: int = 500) -> float:
    """Mean number of neighbours within ``cutoff`` (Angstrom) over the first ``n`` crystals (message scale)."""
    from diffase.data.batch import collate
    from diffase.data.neighbors import radius_graph_pbc

    batch = collate(records[:n])
    edge_index, _ = radius_graph_pbc(batch, cutoff)
    return edge_index.shape[1] / batch["pos"].shape[0]
