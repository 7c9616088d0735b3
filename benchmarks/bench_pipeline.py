"""Pseudo-labels at scale: the sequential loop against the pipelined run, on the same images, in one run.

    python benchmarks/bench_pipeline.py                       # 48 EmojiVOC images at 500x375, demo model
    python benchmarks/bench_pipeline.py --workers 1,2,4       # several worker counts in one run
    python benchmarks/bench_pipeline.py --model glnet_stl     # random weights, the ImageNet head
    python benchmarks/bench_pipeline.py --images 100 --workers 4 --device cuda
    GLMIX_REUSE_MEMORY=0 python benchmarks/bench_pipeline.py  # glibc's malloc as it is (glmix_viz.memory)

Measures, on VOC-size images (500x375, EmojiVOC scenes resized) with the
bundled demo model and its preset (what ``glmix-wsss pseudo-labels`` runs),
or another registered model with random weights and its ImageNet head:

1. Where one image's time goes, stage by stage (median over a few images,
   this process's threads): loading, the evidence batched and pass by pass
   (``max_batch_pixels=1``), slot refinement, slot classifier, background,
   CRF, writing the PNG.
2. ``run_pseudo_labels`` with ``workers=0`` (every core as torch threads)
   and with ``workers=N`` for each N of ``--workers`` (default:
   ``default_workers``; threads as the CLI sets them: on the CPU the workers
   run the model on the cores shared out, on a GPU this process runs it with
   the cores the workers leave): images/s of each over the whole run (worker
   start-up included) and in steady state (from the PNGs' times after the
   first N), the ratios, the peak memory of the whole process tree (sampled),
   and whether the files are byte-identical to the sequential run's.

Run it alone on the machine: it warns when the load average at its start says other jobs run.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import glmix_viz  # noqa: F401
from glmix_viz.images import load_image, normalize
from glmix_viz.memory import reuse_freed_memory
from glmix_viz.models.demo import load_demo_model
from wsss.emojivoc import make_emojivoc
from wsss.evidence import MAX_BATCH_PIXELS, ClassHead, compute_evidence
from wsss.pipeline import (
    EvidenceLabeller,
    class_scores,
    default_workers,
    run_pseudo_labels,
    usable_cores,
)
from wsss.presets import resolve_settings
from wsss.voc import VOCLayout, save_mask


def load_warning(cores: int) -> str:
    """A warning when the 1-minute load average says other work runs (over a quarter of the cores busy)."""
    load = os.getloadavg()[0]
    if load > max(0.5, cores / 4):
        return (f"WARNING: load average {load:.2f} on {cores} cores: other jobs are running, the numbers "
                "are not reliable; run this alone")
    return ""


def median_seconds(fn, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``fn``, after one untimed call (warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def voc_size_images(root: Path, n: int, seed: int) -> VOCLayout:
    """``n`` EmojiVOC train images, each resized to 500x375 (image-level labels unchanged)."""
    layout = VOCLayout(make_emojivoc(root, train=n, val=1, seed=seed, progress=False))
    for image_id in layout.ids("train"):
        path = layout.image(image_id)
        Image.open(path).convert("RGB").resize((500, 375), Image.Resampling.BILINEAR).save(path, quality=95)
    return layout


def stage_times(model, head, layout: VOCLayout, ids, labels, config, device, repeats: int) -> None:
    rows = {k: [] for k in ("load", "evidence (batched)", "evidence (pass by pass)", "slot refinement",
                            "slot classifier", "background + mix", "CRF", "write PNG")}
    no_crf = replace(config, crf=None)
    x = normalize(np.asarray(load_image(layout.image(ids[0])))).to(device)
    for max_pixels in (MAX_BATCH_PIXELS, 1):  # warm-up: kernels, packed weights of the fused path
        compute_evidence(model, x, [1], head, config.evidence, slot_blocks=config.capture_blocks(),
                         max_batch_pixels=max_pixels)
    with tempfile.TemporaryDirectory() as tmp:
        for image_id in ids[:repeats]:
            classes = sorted(int(c) + 1 for c in np.flatnonzero(labels[image_id] > 0.5))
            if not classes:
                continue
            t0 = time.perf_counter()
            image = np.asarray(load_image(layout.image(image_id)))
            t1 = time.perf_counter()
            x = normalize(image).to(device)
            blocks = config.capture_blocks()
            ev = compute_evidence(model, x, classes, head, config.evidence, slot_blocks=blocks)
            t2 = time.perf_counter()
            compute_evidence(model, x, classes, head, config.evidence, slot_blocks=blocks, max_batch_pixels=1)
            t3 = time.perf_counter()
            class_scores(ev, config.slots)
            t4 = time.perf_counter()
            labeller = EvidenceLabeller(image, ev, no_crf)  # scores again + classifier
            t5 = time.perf_counter()
            labeller.result()
            t6 = time.perf_counter()
            labeller.config = config
            mask = labeller.result()
            t7 = time.perf_counter()
            save_mask(Path(tmp) / "m.png", mask.mask)
            t8 = time.perf_counter()
            for key, dt in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, (t5 - t4) - (t4 - t3), t6 - t5,
                                      (t7 - t6) - (t6 - t5), t8 - t7)):
                rows[key].append(dt)
    per_image = sum(statistics.median(v) for k, v in rows.items() if v and k != "evidence (pass by pass)")
    print(f"\n1. one image's stages (median of {len(rows['load'])} images, {torch.get_num_threads()} torch "
          f"threads, {device}):")
    for key, values in rows.items():
        if values:
            m = statistics.median(values)
            share = "" if key == "evidence (pass by pass)" else f" ({100 * m / per_image:4.1f}%)"
            print(f"  {key:26s} {m * 1000:8.0f} ms{share}")
    print(f"  {'total (batched evidence)':26s} {per_image * 1000:8.0f} ms")


class PeakMemory:
    """The largest summed resident memory of this process and its children, sampled every 0.1 s."""

    def __init__(self) -> None:
        import threading

        import psutil

        self.peak, self._stop = 0, threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.wait(0.1):
            total = 0
            for proc in [self._me, *self._me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def timed_run(model, head, layout, ids, labels, config, device, out: Path, workers: int, threads: int):
    torch.set_num_threads(threads)
    start = time.time()
    with PeakMemory() as memory:
        counts = run_pseudo_labels(model, layout, ids, labels, out, head=head, config=config, device=device,
                                   max_side=512, progress=False, workers=workers)
    wall = time.time() - start
    assert counts["written"] == len(ids) and not counts["failed"], counts
    done = sorted(p.stat().st_mtime for p in out.glob("*.png"))
    skip = min(workers, len(done) - 2)  # from the PNG after the first round of workers
    steady = (len(done) - 1 - skip) / max(done[-1] - done[skip], 1e-9) if len(done) >= 2 else float("nan")
    return len(ids) / wall, steady, wall, memory.peak / 2**30


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


def load_model(name: str, device: torch.device):
    """The bundled demo model and its head, or ``name`` with random weights and its ImageNet head."""
    if name == "glnet_demo":
        model, origin = load_demo_model()
        return model.to(device).eval(), ClassHead.from_model(model), origin
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name).to(device).eval()
    return model, ClassHead.imagenet(model), f"{name} (random weights, ImageNet head)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48, help="500x375 images in each run")
    p.add_argument("--seed", type=int, default=2024, help="EmojiVOC seed")
    p.add_argument("--model", default="glnet_demo",
                   help="glnet_demo (bundled, its preset) or a registered name (random weights, ImageNet "
                        "head)")
    p.add_argument("--workers",
                   help="worker counts of the pipelined runs, comma-separated (default: default_workers)")
    p.add_argument("--threads", type=int, help="torch threads of the sequential run (default: usable cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--stage-images", type=int, default=5, help="images timed stage by stage")
    p.add_argument("--skip-stages", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    reused = reuse_freed_memory()  # as the CLIs (and every worker) do; GLMIX_REUSE_MEMORY=0 measures without
    cores = usable_cores()
    device = torch.device(args.device)
    threads = args.threads or cores
    if args.workers:
        counts = [int(v) for v in args.workers.split(",")]
    else:
        counts = [max(1, default_workers(device, cores))]
    warning = load_warning(cores)
    if warning:
        print(warning)
    model, head, origin = load_model(args.model, device)
    config = resolve_settings(model).config
    print(f"model: {origin}; {cores} usable cores; {args.images} images of 500x375; torch "
          f"{torch.__version__}; freed memory kept for reuse: {'yes' if reused else 'no'}; "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        layout = voc_size_images(Path(tmp) / "ev", args.images, args.seed)
        ids = layout.ids("train")
        labels = layout.image_labels(ids)
        if not args.skip_stages:
            torch.set_num_threads(threads)
            with torch.no_grad():
                stage_times(model, head, layout, ids, labels, config, device, args.stage_images)
        seq = timed_run(model, head, layout, ids, labels, config, device, Path(tmp) / "w0", 0, threads)
        for workers in counts:
            if device.type == "cpu":  # the workers run the model on the cores shared out; this process reads
                layout_name = f"{workers} workers x {max(1, cores // workers)} threads, each labelling images"
                main_threads = 1
            else:
                main_threads = max(1, cores - workers)
                layout_name = f"model here on {main_threads} threads, {workers} post-processing workers"
            out = Path(tmp) / f"w{workers}"
            result = timed_run(model, head, layout, ids, labels, config, device, out, workers, main_threads)
            runs.append((workers, layout_name, result, digest(out) == digest(Path(tmp) / "w0")))
    rate, steady, wall, peak = seq
    print(f"\n2. whole runs, {len(ids)} images:")
    print(f"  sequential (--workers 0, {threads} torch threads): {rate:6.2f} images/s ({wall:.1f} s), "
          f"steady state {steady:.2f}; peak memory {peak:.2f} GiB")
    for workers, layout_name, (w_rate, w_steady, w_wall, w_peak), same in runs:
        print(f"  --workers {workers} ({layout_name}): {w_rate:6.2f} images/s ({w_wall:.1f} s, worker "
              f"start-up included), steady state {w_steady:.2f}; peak memory {w_peak:.2f} GiB")
        print(f"    ratio to sequential: {w_rate / rate:.2f} (steady state {w_steady / steady:.2f}); files "
              f"byte-identical: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
