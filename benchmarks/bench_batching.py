"""Would several images per batch speed up the evidence? Its forwards at one image's batch sizes against
two and four images' batches, interleaved, in one run.

    python benchmarks/bench_batching.py                   # glnet_demo, a 500x375 image, the demo's preset
    python benchmarks/bench_batching.py --model glnet_stl --device cuda

``compute_evidence`` already runs one image's passes of one input size as a
batch: for a 500x375 image and the demo's preset (scales 1, 0.5 and 0.375,
flips, 4x4 shift-and-stitch at the two smaller scales) that is a batch of 2
at 500x375 and two batches of 32 at 256x192 and 192x144. Images of the same
size (most of VOC is 500x375 or 375x500) could share batches: 2 images give
batches of 4, 64 and 64. This times the model's features (the evidence's
forward, but for the CAM head's small product) per image at 1, 2 and 4 images
per batch, round by round, and prints the medians and the ratios. Run it alone
on the machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

import glmix_viz  # noqa: F401
from glmix_viz.models.demo import load_demo_model

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import load_warning  # noqa: E402

# (height, width, passes of one image) of the demo preset's evidence on a 500x375 image
SHAPES = ((375, 500, 2), (192, 256, 32), (144, 192, 32))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="glnet_demo")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", default="1,2,4", help="images per batch to compare")
    args = p.parse_args()
    warning = load_warning(os.cpu_count() or 1)
    if warning:
        print(warning)
    device = torch.device(args.device)
    if args.model == "glnet_demo":
        model, _ = load_demo_model()
    else:
        model = timm.create_model(args.model).eval()
    model = model.to(device)
    per_batch = [int(n) for n in args.images.split(",")]
    print(f"{args.model} on {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"forward per image (s) of the evidence's batches, {args.rounds} rounds, medians")

    def one_image(n: int) -> float:
        """Seconds per image of the three batches, ``n`` images' passes per batch."""
        t = 0.0
        for h, w, passes in SHAPES:
            x = torch.randn(n * passes, 3, h, w, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.forward_features(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t += time.perf_counter() - t0
        return t / n

    for n in per_batch:
        one_image(n)  # warm-up: packed weights, allocator
    times = {n: [] for n in per_batch}
    for _ in range(args.rounds):
        for n in per_batch:
            times[n].append(one_image(n))
    base = statistics.median(times[per_batch[0]])
    for n in per_batch:
        m = statistics.median(times[n])
        print(f"  {n} image(s) per batch: {m:.3f} s per image, {base / m:.2f}x "
              f"(range {min(times[n]):.3f}-{max(times[n]):.3f})")
    if warning:
        print(warning)


if __name__ == "__main__":
    main()
