"""Held-out error of the time-dependent site-DOS regressor (classifier guidance, issue 16) against diffusion time.

For each held-out material (the test part of site-labels-mp20's split by material, which the regressor never
trained on, from any label folder), its DFT site DOS on the regressor's grid (128 points over E - E_F in
[-10, 10] eV, states/eV) is predicted from its Niggli-reduced crystal with coordinates and cell noised to time t
by the joint model's processes (types clean; t = 0: the clean crystal), ``--draws`` noise draws per material and
t. Reported per t: MAE over sites and energies of log1p(DOS) (the units the regressor is trained in) and of the
DOS in states/eV (predictions mapped back with expm1), averaged over sites; n = materials x draws, sites counted.

Run from the repository root (one CPU thread):
``python benchmarks/dos_regressor.py --model models/dos-regressor-mp20.pt`` -> benchmarks/results/dos_regressor.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dos-regressor-mp20")
    p.add_argument("--labels", default=str(DATA / "electronic"))
    p.add_argument("--split-from", default="site-labels-mp20", help="predictor whose test materials are held out")
    p.add_argument("--times", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.5, 1.0])
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dos_regressor"))
    args = p.parse_args()
    torch.set_num_threads(1)

    from diffase.data import fields as F
    from diffase.data.descriptor_records import load_site_dos_records
    from diffase.generators.dos_regressor import load_dos_regressor, predict_site_dos
    from diffase.generators.joint import encode_records, make_batch
    from diffase.generators.joint_fields import structure_fields
    from diffase.train.joint_trainer import held_out_materials

    t_all = time.perf_counter()
    reg = load_dos_regressor(args.model, device="cpu")
    test = held_out_materials(args.split_from)["test"]
    records, ids, _ = load_site_dos_records([args.labels], reg.node_condition, only=test)
    batch = make_batch(encode_records(records, reg.elements))
    target = batch[F.NODE_COND]
    _, coords, lattice = (f.process for f in structure_fields(len(reg.elements)))
    n_graph = len(records)
    rows = []
    for t in args.times:
        log_err, raw_err = [], []
        for draw in range(args.draws if t > 0 else 1):
            gen = torch.Generator().manual_seed(draw)
            noisy = dict(batch)
            if t > 0:
                steps = torch.full((n_graph,), round(t * coords.num_steps), dtype=torch.long)
                noisy[F.FRAC_COORDS], _ = coords.corrupt(batch[F.FRAC_COORDS], steps[batch[F.BATCH]], generator=gen)
                noisy[F.CELL], _ = lattice.corrupt(batch[F.CELL], steps, generator=gen)
            with torch.no_grad():
                pred = predict_site_dos(reg.net, noisy, torch.full((n_graph,), t, dtype=batch[F.CELL].dtype))
            log_err.append((pred - target).abs().mean(-1))
            raw_err.append((torch.expm1(pred.clamp_min(0)) - torch.expm1(target)).abs().mean(-1))
        rows.append({"t": t, "n_materials": n_graph, "draws": args.draws if t > 0 else 1,
                     "n_sites": int(target.shape[0]),
                     "mae_log1p": float(torch.cat(log_err).mean()), "mae_states_per_eV": float(torch.cat(raw_err).mean())})
        print(json.dumps(rows[-1]), flush=True)
    train = reg.meta.get("train", {})
    result = {"model": args.model, "step": train.get("step"), "label_sources": train.get("node_condition_label_sources"),
              "held_out": ids, "rows": rows,
              "machine": f"{platform.machine()} {platform.processor() or ''} CPU, 1 torch thread, load "
                         f"{os.getloadavg()[0]:.2f}, torch {torch.__version__}",
              "wall_s": round(time.perf_counter() - t_all, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["# Site-DOS regressor on noisy crystals: held-out error against diffusion time", "",
             (f"Model `{Path(args.model).stem}` (step {result['step']}; labels {result['label_sources']}), "
              f"{n_graph} held-out materials (test part of {args.split_from}'s split by material), DFT site DOS on "
              f"{reg.node_condition['n_points']} points over E - E_F in [{reg.node_condition['e_min']}, "
              f"{reg.node_condition['e_max']}] eV; coordinates and cell noised to t by the joint model's processes, "
              f"{args.draws} noise draws per material for t > 0. Machine: {result['machine']}; run "
              f"{result['wall_s']:.0f} s."), "",
             "| t | materials | draws | sites | MAE log1p(DOS) | MAE DOS (states/eV) |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['t']:g} | {r['n_materials']} | {r['draws']} | {r['n_sites']} | {r['mae_log1p']:.4f} | "
              f"{r['mae_states_per_eV']:.4f} |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
