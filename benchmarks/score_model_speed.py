"""Speed of the score model on this machine: forward time, training throughput, sampler overhead.

* forward time of the score network (neighbour list included) for batches of 1, 8 and 32 MP-20 crystals of
  8-12 atoms, at each thread count given;
* training throughput (crystals/s) of a full DSM step (forward, backward, Adam) with batches of 32;
* sampler overhead: the fraction of a predictor-corrector run spent outside the network call.

Writes a markdown table to ``benchmarks/results/score_model_speed.md``. Timings are medians of repeats; the
machine's load average is printed because other processes distort CPU timings.

    python benchmarks/score_model_speed.py --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")

from diffase.data import fields as F  # noqa: E402
from diffase.data.batch import collate  # noqa: E402
from diffase.data.dataset import load_records  # noqa: E402
from diffase.diffusion.sampler import sample  # noqa: E402
from diffase.diffusion.schedules import monotone_schedule  # noqa: E402
from diffase.diffusion.ve import VEProcess  # noqa: E402
from diffase.nn.score_net import ScoreNet  # noqa: E402
from diffase.train.objective import dsm_loss  # noqa: E402


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (e3nn code generation, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/mp20/val.csv.gz"))
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sampler-levels", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/score_model_speed.md")
    args = p.parse_args()

    records, _ = load_records(args.data, limit=600)
    small = [r for r in records if 8 <= len(r[F.ATOMIC_NUMBERS]) <= 12][:32]
    mean_atoms = sum(len(r[F.ATOMIC_NUMBERS]) for r in small) / len(small)
    torch.manual_seed(0)
    net = ScoreNet()
    process = VEProcess()
    header = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, torch "
              f"{torch.__version__}, load average at start {os.getloadavg()[0]:.2f}\n"
              f"model: ScoreNet defaults ({net.num_parameters / 1e6:.2f} M parameters, 4 layers, cutoff 6 A); "
              f"crystals: MP-20 val, 8-12 atoms (mean {mean_atoms:.1f}); median of {args.repeats} repeats\n")
    print(header)
    rows = ["| threads | forward, 1 crystal (ms) | forward, 8 (ms) | forward, 32 (ms) | train step, 32 (s) "
            "| training (crystals/s) | sampler: time in network | sampler overhead |",
            "|---|---|---|---|---|---|---|---|"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        fwd = {}
        for n in (1, 8, 32):
            batch = collate(small[:n])
            batch[F.SIGMA] = torch.full((n,), 0.3)
            with torch.no_grad():
                fwd[n] = median_time(lambda: net(dict(batch)), args.repeats)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        batch32 = collate(small)

        def train_step():
            opt.zero_grad()
            dsm_loss(net, process, batch32).backward()
            opt.step()

        step = median_time(train_step, args.repeats)

        in_net = [0.0]
        proc = VEProcess(num_levels=args.sampler_levels)

        def score_fn(b, level):
            t = time.perf_counter()
            b[F.SIGMA] = torch.full((b[F.NUM_ATOMS].shape[0],), proc.sigma_at(level))
            with torch.no_grad():
                out = {F.POSITIONS: net(b)}
            in_net[0] += time.perf_counter() - t
            return out

        t = time.perf_counter()
        sample(score_fn, collate(small), [proc], monotone_schedule(args.sampler_levels), n_corrector=5, snr=0.2,
               generator=torch.Generator().manual_seed(0))
        total = time.perf_counter() - t
        rows.append(f"| {threads} | {fwd[1] * 1e3:.1f} | {fwd[8] * 1e3:.1f} | {fwd[32] * 1e3:.1f} | {step:.2f} | "
                    f"{32 / step:.1f} | {in_net[0] / total:.1%} | {1 - in_net[0] / total:.1%} |")
        print(rows[-1])
    text = ("# Score model speed\n\n" + header.replace("\n", "  \n") + "\n"
            f"Sampler: {args.sampler_levels} levels x (5 corrector + 1 predictor) network calls on 32 crystals; "
            "'time in network' counts the score-function call (neighbour list + network).\n\n" + "\n".join(rows) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
