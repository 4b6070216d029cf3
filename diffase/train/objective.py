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


@torch.no_grad()
def dsm_by_sigma(net: ScoreNet, process: VEProcess, records, sigmas, *, batch_size: int = 32,
                 seed: int = 0) -> dict[float, float]:
    """DSM loss (lambda = sigma^2, unitless; a zero score gives ~3) of ``net`` on ``records`` at each fixed
    noise level in ``sigmas`` (Angstrom), with the noise drawn from ``seed``: the same for every network."""
    from diffase.data.batch import collate

    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in sigmas:
        total, count = 0.0, 0
        for lo in range(0, len(records), batch_size):
            batch = collate(records[lo : lo + batch_size])
            n = batch["num_atoms"].shape[0]
            noisy, target = process.corrupt(batch, torch.full((n,), float(sigma)), generator=gen)
            noisy = {k: v.to(device) for k, v in noisy.items()}
            total += float(process.loss(net(noisy), target.to(device), noisy)) * n
            count += n
        out[sigma] = total / count
    return out
