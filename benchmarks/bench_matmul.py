"""Wide 1x1 convolutions as matrix products: oneDNN's convolution against its matrix product, side by side.

    python benchmarks/bench_matmul.py               # layers, then glnet_stl forwards and one evidence
    python benchmarks/bench_matmul.py --rounds 7

1. Single layers ``(rows, C_in) -> C_out`` through the fused path's 1x1
   convolution and through oneDNN's matrix product (``_linear_pointwise``),
   GFLOP/s of each: where the convolution's kernel is slow (3072 inputs).
2. ``glnet_stl`` (random weights) forwards at 224 px, batch 1 and 8, and the
   default evidence of one 500x375 image, with the matrix product from
   ``MATMUL_MIN_CHANNELS`` input channels (today's rule) and with none
   (every layer a convolution), interleaved round by round; medians and the
   ratio, and whether the outputs agree (1e-5 relative).

Run it alone on the machine (the load average is printed).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch

import glmix_viz  # noqa: F401
from glmix_viz.images import normalize
from glmix_viz.memory import reuse_freed_memory
from glmix_viz.models import _fused
from wsss.evidence import ClassHead, compute_evidence
from wsss.presets import resolve_settings

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import load_warning, median_seconds  # noqa: E402


def layers(repeats: int) -> None:
    print("1. one layer, GFLOP/s (1x1 convolution / matrix product):")
    for rows in (49, 392, 2016):
        for cin, cout in ((768, 3072), (1536, 384), (2304, 768), (3072, 768), (3072, 1024)):
            x, w, b = torch.randn(rows, cin), torch.randn(cout, cin) / cin ** 0.5, torch.randn(cout)
            gflop = 2 * rows * cin * cout / 1e9
            image = x.view(1, rows, 1, cin).permute(0, 3, 1, 2)
            conv = median_seconds(lambda: _fused._ops._convolution_pointwise(
                image, _fused._packed(w, image, [0, 0], 1), b, [0, 0], [1, 1], [1, 1], 1, "none", [None],
                "none"), repeats)
            matmul = median_seconds(lambda: _fused._ops._linear_pointwise(x, w, b, "none", [], ""), repeats)
            route = "matrix product" if _fused._matmul(w, image, [0, 0], 1) else "convolution"
            print(f"  {rows:5d} rows, {cin:4d} -> {cout:4d}: {gflop / conv:5.0f} / {gflop / matmul:5.0f}"
                  f"  (runs as: {route})")


def models(rounds: int) -> None:
    torch.manual_seed(0)
    model = timm.create_model("glnet_stl").eval()
    head = ClassHead.imagenet(model)
    config = resolve_settings(model).config.for_model(model)
    image = (np.random.default_rng(0).random((375, 500, 3)) * 255).astype(np.uint8)
    x_img, x1, x8 = normalize(image), torch.randn(1, 3, 224, 224), torch.randn(8, 3, 224, 224)
    work = {
        "forward 224 px, batch 1": lambda: model(x1),
        "forward 224 px, batch 8": lambda: model(x8),
        "evidence, 500x375 image": lambda: compute_evidence(model, x_img, [8, 15], head, config.evidence,
                                                            slot_blocks=config.capture_blocks()).cams,
    }
    rule = _fused.MATMUL_MIN_CHANNELS
    times = {(k, r): [] for k in work for r in ("matmul", "conv")}
    outs = {}
    print(f"\n2. glnet_stl, {torch.get_num_threads()} torch threads, {rounds} rounds, medians:")
    with torch.no_grad():
        for _ in range(rounds):
            for route, channels in (("matmul", rule), ("conv", 1 << 30)):
                _fused.MATMUL_MIN_CHANNELS = channels
                for key, fn in work.items():
                    fn()  # packs for this route
                    t = time.perf_counter()
                    outs[key, route] = fn()
                    times[key, route].append(time.perf_counter() - t)
    _fused.MATMUL_MIN_CHANNELS = rule
    for key in work:
        m, c = statistics.median(times[key, "matmul"]), statistics.median(times[key, "conv"])
        a, b = outs[key, "matmul"], outs[key, "conv"]
        same = bool((a - b).abs().max() <= 1e-5 * b.abs().max())
        print(f"  {key:26s} {c * 1000:7.0f} ms all convolutions, {m * 1000:7.0f} ms with the rule: "
              f"{c / m:.2f}x (outputs agree: {'yes' if same else 'NO'})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    reuse_freed_memory()
    warning = load_warning(os.cpu_count() or 1)
    if warning:
        print(warning)
    print(f"load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}; {torch.get_num_threads()} "
          f"threads; MATMUL_MIN_CHANNELS {_fused.MATMUL_MIN_CHANNELS}; {time.strftime('%Y-%m-%d %H:%M')}")
    layers(args.rounds)
    models(args.rounds)


if __name__ == "__main__":
    main()
