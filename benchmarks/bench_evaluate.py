"""``glmix-viz evaluate``'s time per image against its parts measured alone, in one run.

    python benchmarks/bench_evaluate.py                      # 8 photos of tests/data/voc_sample, demo model
    python benchmarks/bench_evaluate.py --images 16 --workers 2,4
    python benchmarks/bench_evaluate.py --voc-root ~/data/VOC --model glnet_stl --checkpoint glnet_stl.pth

On the same images (the real VOC sample by default, every GLMix block, the
defaults of ``evaluate``):

1. the forward alone (model, slot and feature capture, copies to the CPU),
   this process's threads;
2. the metrics alone on those maps (``SlotEvaluation.score``: 10 blocks x 7
   segmentations, one thread as in ``evaluate``);
3. ``evaluate_split`` with ``workers=0``: its time per image against the sum
   of 1 and 2 (the goal: no slower than its parts, image loading aside);
4. ``evaluate_split`` with each ``--workers`` N: images/s against 3, and
   whether the numbers equal 3's.

Run it alone on the machine: it warns when the load average at its start says other jobs run.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import glmix_viz  # noqa: F401
from glmix_viz._cli_evaluate import _forward, _load, evaluate_split
from glmix_viz._cli_run import build_model, select_blocks
from glmix_viz._pool import usable_cores
from glmix_viz.analysis import SlotEvaluation
from glmix_viz.images import Preprocess
from glmix_viz.voc import VOCLayout

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import load_warning  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "voc_sample"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voc-root", type=Path, default=SAMPLE)
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--model", default="glnet_demo")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--workers", default=None,
                   help="comma-separated worker counts (default: evaluate's, one per usable core up to 8)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cores = usable_cores()
    warning = load_warning(cores)
    if warning:
        print(warning)
    workers = [int(w) for w in args.workers.split(",")] if args.workers else [min(cores, 8)]
    layout = VOCLayout(args.voc_root)
    ids = layout.ids(args.split)[: args.images]
    model, source = build_model(args.model, args.checkpoint, trust=False, seed=0)
    blocks = [(o, n) for o, n, _ in select_blocks(model, ["all"])]
    ordinals = [o for o, _ in blocks]
    config = Preprocess(input_size=args.input_size, mode="whole")
    device = torch.device("cpu")
    print(f"{source.weights.model}, {len(blocks)} blocks, {len(ids)} images of {args.voc_root} "
          f"{args.split}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")

    samples = [_load(layout, i, config) for i in ids]
    _forward(model, ordinals, samples[0].x, device)  # warm-up
    forward, outputs = [], []
    for s in samples:
        t0 = time.perf_counter()
        outputs.append(_forward(model, ordinals, s.x, device))
        forward.append(time.perf_counter() - t0)
    scorer = SlotEvaluation(blocks)
    scorer.score(samples[0].image, samples[0].mask, samples[0].instances, *outputs[0],
                 keep_segmentations=False)  # warm-up: imports, caches
    metrics = []
    for s, (maps, feats) in zip(samples, outputs):
        t0 = time.perf_counter()
        scorer.score(s.image, s.mask, s.instances, maps, feats, keep_segmentations=False)
        metrics.append(time.perf_counter() - t0)
    f, m = statistics.mean(forward), statistics.mean(metrics)
    print(f"\n1. forward alone:  {f:.3f} s per image\n2. metrics alone:  {m:.3f} s per image "
          f"(one thread)\n   parts together: {f + m:.3f} s per image")

    runs, threads = {}, torch.get_num_threads()
    for n in [0, *workers]:
        torch.set_num_threads(max(1, cores - n) if n else threads)  # as the CLI sets them
        t0 = time.perf_counter()
        run = evaluate_split(layout, ids, model=model, blocks=blocks, config=config, device=device, workers=n)
        wall = time.perf_counter() - t0
        runs[n] = (wall / len(ids), json.dumps(run.evaluation.blocks(), sort_keys=True, default=str),
                   run.timing["load"] / len(ids))
    torch.set_num_threads(threads)
    seq, _, load = runs[0]
    print(f"3. evaluate, workers 0: {seq:.3f} s per image = {seq / (f + m):.2f}x its parts "
          f"(loading, {load:.3f} s per image, is not in them)")
    for n in workers:
        per, numbers, _ = runs[n]
        print(f"4. evaluate, workers {n}: {per:.3f} s per image, {seq / per:.2f}x workers 0 "
              f"(worker start-up included); numbers {'identical' if numbers == runs[0][1] else 'DIFFER'}")
    if warning:
        print(warning)


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
