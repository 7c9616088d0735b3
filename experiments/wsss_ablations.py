"""The choices behind the WSSS defaults: every slot variant scored side by side, on fresh EmojiVOC.

    python -m experiments.wsss_ablations                      # bundled demo model, 100 fresh train images
    python -m experiments.wsss_ablations --images 48 --seed 2025

The quality rows of ``benchmarks/bench_wsss.py`` (CAM only, the default
pipeline; throughput stays there), plus the grid the defaults were chosen from: slot blocks (the
last, the last two or three, 20/50/100 % of the depth, all), mix (0.5, 1),
sharpness (1, 4, 16) and median baseline (0, 0.5), each scored with the
background fixed and swept; CRF rows for the best variant and the default
without its baseline; and region relabelling after the default. Evidence is
computed once per image with every GLMix block captured, then each variant
is scored, by the benchmark's own scoring (``quality(..., grid=...)``): this
script only chooses the grid. The runs and what they decided:
docs/experiments.md.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

import glmix_viz  # noqa: F401
from glmix_viz.capture import glmix_blocks
from wsss.refine import SlotRefineParams

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_wsss.py"


def _bench_wsss():
    """``benchmarks/bench_wsss.py`` as a module (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_wsss", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grid(n_blocks: int) -> list:
    """The slot-refinement variants the defaults were chosen from."""
    block_sets = [(n_blocks,), (n_blocks - 2, n_blocks), (n_blocks - 4, n_blocks - 2, n_blocks),
                  (2, n_blocks // 2, n_blocks), tuple(range(1, n_blocks + 1))]
    return [SlotRefineParams(blocks, mix, sharpness, baseline) for blocks in block_sets for mix in (0.5, 1.0)
            for sharpness in (1.0, 4.0, 16.0) for baseline in (0.0, 0.5)]


def main() -> None:
    bench = _bench_wsss()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.quality_args(p)
    args = p.parse_args()
    demo, origin = bench.demo_model(args.checkpoint)
    print(f"model: {origin}")
    with torch.no_grad():
        bench.quality_on_fresh_split(demo, args, grid=grid(len(glmix_blocks(demo))))


if __name__ == "__main__":
    main()
