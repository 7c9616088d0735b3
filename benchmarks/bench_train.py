"""Training throughput of the demo configuration on the CPU (glnet_demo, 192 px, batch 32, AdamW).

    python benchmarks/bench_train.py [--threads 1 2] [--steps 6]

Prints images/s of full training steps (forward, BCE, backward, clipping,
AdamW) on random images for each thread count, side by side, and the same for
inference. Run it on an otherwise idle machine: with another busy process,
two threads run several times slower than one.
"""
from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import glmix_viz  # noqa: F401


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=192)
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = (torch.rand(args.batch_size, 20) < 0.1).float()
    print(f"glnet_demo, {args.size} px, batch {args.batch_size}, torch {torch.__version__}")
    print(f"  {'threads':>7s} {'train img/s':>12s} {'eval img/s':>11s}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        model = timm.create_model("glnet_demo")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        times = []
        for step in range(args.steps + 1):
            t = time.perf_counter()
            loss = F.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step:  # the first step warms up
                times.append(time.perf_counter() - t)
        model.eval()
        with torch.no_grad():
            model(x)
            ev = []
            for _ in range(args.steps):
                t = time.perf_counter()
                model(x)
                ev.append(time.perf_counter() - t)
        print(f"  {threads:7d} {args.batch_size / statistics.median(times):12.1f} "
              f"{args.batch_size / statistics.median(ev):11.1f}")


if __name__ == "__main__":
    main()
