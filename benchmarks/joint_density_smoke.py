"""Issue 12 smoke measurement: does the joint backbone with the charge-density field train?

Reads the run folder of ``diffase train --recipe recipes/experimental/joint-density-finetune.json`` and measures, on
its validation materials (held out by the recipe's ``hold_out_from``), the unweighted loss of every field
(``joint_loss`` with no condition dropout, averaged over ``--repeats`` seeded draws of steps and noise, the same
draws for every network) for:

* the network the run started from (``init_from``'s weights, the probe branch initialised as the trainer does:
  ``torch.manual_seed(seed)`` before the network is built);
* the run's ``best.pt`` (lowest weighted validation loss) and ``last.pt`` (the end of the run; both EMA weights);
* for the density latent, the trivial prediction eps = 0 (loss = E[eps^2] = 1).

Then it samples ``--samples`` crystals from ``last.pt`` (seconds per sample on this machine, validity, electrons
per cell of the decoded densities, beside those of the validation labels). Writes ``benchmarks/results/joint_density_smoke.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from site_label_predictor import machine  # benchmarks/ is on sys.path when this file runs as a script

from diffase.data import fields as F
from diffase.data.electronic.density_sets import read_density_set
from diffase.generators.joint import JointModel, encode_records
from diffase.generators.joint_fields import fields_from_checkpoint
from diffase.hub import read_checkpoint
from diffase.nn.joint_denoiser import JointDenoiser, JointDenoiserConfig
from diffase.train.density_labels import DensityLatents
from diffase.train.joint_trainer import joint_loss


def field_losses(net, fields, items, repeats: int, batch_size: int = 8) -> dict[str, float]:
    """Mean unweighted loss per field over ``repeats`` seeded passes through ``items``."""
    sums, count = {}, 0
    net.eval()
    with torch.no_grad():
        for r in range(repeats):
            for lo in range(0, len(items), batch_size):
                gen = torch.Generator().manual_seed(1000 * r + lo)
                _, parts = joint_loss(net, fields, items[lo : lo + batch_size], p_uncond=0.0, generator=gen)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                count += 1
    return {k: v / count for k, v in sums.items()}


def start_network(ckpt: dict) -> JointDenoiser:
    """The network the fine-tuning run started from (pretrained weights, fresh probe branch seeded as trained)."""
    objective = ckpt["train"]["objective"]
    torch.manual_seed(objective["seed"])
    net = JointDenoiser(JointDenoiserConfig(**ckpt["model_config"]))
    pretrained = read_checkpoint(objective["init_from"])
    missing, unexpected = net.load_state_dict(pretrained["state_dict"], strict=False)
    assert not unexpected and all(k.startswith("probes.") for k in missing), (missing, unexpected)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/joint-density-finetune")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16, help="crystals to sample from last.pt (0: none)")
    parser.add_argument("--num-levels", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/joint_density_smoke.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = machine()

    ckpt = read_checkpoint(Path(args.run) / "best.pt")
    last = read_checkpoint(Path(args.run) / "last.pt")
    train = last["train"]
    fields = fields_from_checkpoint(ckpt)
    labels = DensityLatents(train["objective"]["density_vqvae"])
    assert labels.entry["sha256"] == ckpt["density_vqvae"]["sha256"], "the VQ-VAE changed since the run"
    val_ids = train["held_out"]["val"]
    records, names, _ = labels.load(train["val_data"], only=val_ids)
    items = [{"record": r, "cond": {}} for r in encode_records(records, ckpt["elements"])]

    model = JointModel.from_checkpoint(last, device="cpu")
    rows = {"start (joint-mp20 + fresh probe branch)": field_losses(start_network(ckpt), fields, items, args.repeats),
            f"best.pt (step {ckpt['train']['step']})":
                field_losses(JointModel.from_checkpoint(ckpt, device="cpu").net, fields, items, args.repeats),
            f"last.pt (step {train['step']})": field_losses(model.net, fields, items, args.repeats)}
    label_electrons = [e.electrons for e in read_density_set(train["val_data"]) if e.name in set(val_ids)]

    weights = {f.name: f.loss_weight for f in fields}
    lines = [
        "# Charge-density field on the joint backbone: smoke fine-tune (issue 12; not a shipped model)",
        "",
        f"Machine: {info}. Run `{args.run}` (`recipes/experimental/joint-density-finetune.json`): step "
        f"{train['step']}, {train['wall_time_s']:.0f} s of training, {train['n_train']} training / {train['n_val']} "
        f"validation crystals (validation = the VQ-VAE's validation materials, {len(names)} read here), "
        f"{train['n_parameters']:,} parameters, loss weights {weights}, VQ-VAE `{labels.entry['name']}` "
        f"(sha256 {labels.entry['sha256'][:12]}).",
        "",
        f"Validation loss per field (unweighted; mean over {args.repeats} seeded draws of steps and noise x "
        f"{len(items)} crystals, the same draws for each row):",
        "",
        "| network | " + " | ".join(fields.names) + " |",
        "| --- | " + " | ".join("---" for _ in fields.names) + " |",
        *[f"| {name} | " + " | ".join(f"{losses[k]:.4f}" for k in fields.names) + " |" for name, losses in rows.items()],
        "| eps = 0 (density latent only) | " + " | ".join("1" if k == "density_latent" else "" for k in fields.names)
        + " |",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")  # kept if the sampling below is interrupted
    print("\n".join(lines), flush=True)
    if args.samples:
        t0 = time.perf_counter()
        samples = [r for batch in model.sample(args.samples, seed=0, num_levels=args.num_levels,
                                               batch_size=args.samples) for r in batch]
        seconds = time.perf_counter() - t0
        valid = [r for r in samples if r["valid"]]
        electrons = [float(r[F.CHARGE_DENSITY].mean() * abs(np.linalg.det(r[F.CELL]))) for r in valid]
        lines += [
            "",
            f"Sampling `last.pt`: {args.samples} crystals, {args.num_levels} levels, 1 corrector step, seed 0: "
            f"{seconds:.1f} s ({seconds / args.samples:.2f} s per crystal, one batch); valid {len(valid)}/"
            f"{len(samples)}; electrons per cell of the decoded densities (mean(rho) x V): "
            + (f"median {np.median(electrons):.1f}, range {min(electrons):.1f}-{max(electrons):.1f}." if electrons
               else "none valid.")
            + f" Validation labels: median {np.median(label_electrons):.1f}, range {min(label_electrons):.1f}-"
            f"{max(label_electrons):.1f} ({len(label_electrons)} materials).",
        ]
        Path(args.out).write_text("\n".join(lines) + "\n")
        print("\n".join(lines[-2:]))


if __name__ == "__main__":
    main()
