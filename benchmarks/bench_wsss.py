"""WSSS quality gates and throughput, measured side by side in one run.

    python benchmarks/bench_wsss.py                      # bundled demo model on a fresh EmojiVOC train split
    python benchmarks/bench_wsss.py --checkpoint runs/demo/checkpoint-best.pth --images 200

1. Quality (the README's table): pseudo-mask mIoU of CAM only (the standard
   protocol: scales 1.0, 0.5, 1.5, 2.0 and flips; also the default's stitched
   CAM), the default slot refinement, slots + dense CRF without the slot
   classifier, the default pipeline (its per-class IoU too) and the default
   followed by region relabelling, on a freshly generated EmojiVOC train split
   (a seed the demo model never saw), with the background threshold fixed
   (the default) and swept (best); and the default with the slot blocks
   ``--blocks auto`` chooses on ``--auto-images`` val images. The grid of variants the defaults were
   chosen from is ``python -m experiments.wsss_ablations``.
2. Throughput on VOC-size images (500x375): pseudo-labels per second with the
   demo model and with glnet_stl (ImageNet head, random weights), and the CRF
   time per image against a bare pydensecrf call on the same input.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import timm
import torch

import glmix_viz  # noqa: F401
from glmix_viz.capture import glmix_blocks
from glmix_viz.images import load_image, normalize
from glmix_viz.models import load_checkpoint
from glmix_viz.models.demo import load_demo_model
from wsss.block_choice import RULES, BlockChoice, BlockChoiceParams, choose_blocks, choose_blocks_on_split
from wsss.emojivoc import make_emojivoc
from wsss.evidence import ClassHead, compute_evidence
from wsss.metrics import ConfusionAccumulator
from wsss.pipeline import STANDARD_CAM, EvidenceLabeller, PseudoLabelConfig, class_scores, pseudo_label_image
from wsss.presets import resolve_settings
from wsss.refine import (
    BackgroundParams,
    CRFParams,
    SlotRefineParams,
    dense_crf,
    labels_from_scores,
    with_background,
)
from wsss.regions import RegionParams, relabel
from wsss.voc import VOCLayout, read_mask

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
STITCHED_CAM = "cam of the default evidence (stitched)"


def _variant_name(slots: SlotRefineParams) -> str:
    return (f"slots {','.join(map(str, slots.blocks))} mix {slots.mix:g} sharp {slots.sharpness:g} "
            f"base {slots.baseline:g}")


def _auto_row(choice: BlockChoice) -> str:
    return f"default, --blocks auto ({choice.rule}: {','.join(map(str, choice.blocks))})"


def _config(default: PseudoLabelConfig, slots: Optional[SlotRefineParams],
            classifier: bool) -> PseudoLabelConfig:
    """The pipeline's config for a variant (``slots`` None: CAM only), with or without the slot classifier."""
    return replace(default, slots=slots, classifier=default.classifier if classifier and slots else None)


def settings(model, args) -> PseudoLabelConfig:
    """The settings measured: the model's preset (``--preset auto``) or the model-agnostic defaults."""
    return resolve_settings(model, use_preset=getattr(args, "preset", "auto") == "auto").config


def quality(model, layout: VOCLayout, ids, args, grid: Sequence[SlotRefineParams] = (),
            auto: Sequence[BlockChoice] = ()) -> None:
    """The quality table on ``ids``; ``grid``: more slot variants scored side by side
    (``experiments/wsss_ablations.py``), with CRF rows for the best of them and for the default without its
    baseline; ``auto``: blocks ``--blocks auto`` chose (one per rule), as variants and through the whole
    pipeline."""
    head = ClassHead.from_model(model)
    default = settings(model, args)
    all_blocks = tuple(range(1, len(glmix_blocks(model)) + 1))
    variants = {"cam": None, STITCHED_CAM: None, **{_variant_name(v): v for v in grid}}
    default_key = _variant_name(default.slots)
    variants.setdefault(default_key, default.slots)
    auto_keys = {}
    for choice in auto:
        auto_keys[choice.rule] = _variant_name(replace(default.slots, blocks=choice.blocks))
        variants.setdefault(auto_keys[choice.rule], replace(default.slots, blocks=choice.blocks))
    no_base = replace(default.slots, baseline=0.0)
    if grid:
        variants.setdefault(_variant_name(no_base), no_base)
    accs = {name: [ConfusionAccumulator() for _ in THRESHOLDS] for name in variants}
    kept = []  # (image, gt, classes, evidence): the CRF rows need the best variant, known only at the end
    labels = layout.image_labels(ids)
    t0 = time.perf_counter()
    for image_id in ids:
        image = np.asarray(load_image(layout.image(image_id)))
        gt = read_mask(layout.mask(image_id))
        classes = [c + 1 for c in np.flatnonzero(labels[image_id])]
        x = normalize(image)
        ev = compute_evidence(model, x, classes, head, default.evidence, slot_blocks=all_blocks)
        cam_ev = compute_evidence(model, x, classes, head, STANDARD_CAM)  # the standard protocol's CAM
        for name, slots in variants.items():
            scores = class_scores(cam_ev if name == "cam" else ev, slots)
            for t, acc in zip(THRESHOLDS, accs[name]):
                acc.add(labels_from_scores(with_background(scores, BackgroundParams(threshold=float(t))),
                                           classes), gt)
        kept.append((image, gt, classes, ev, cam_ev))
    bg0 = default.background.threshold
    i_def = int(np.argmin(np.abs(THRESHOLDS - bg0)))
    # CRF rows: (variant, with the slot classifier); the last is the full default pipeline
    crf_rows = {"cam + crf": ("cam", False), "slots + crf (no classifier)": (default_key, False)}
    if grid:
        best_key = max((n for n in variants if n not in ("cam", STITCHED_CAM)),
                       key=lambda n: accs[n][i_def].summary()["miou"])
        crf_rows["slots + crf (base 0, no classifier)"] = (_variant_name(no_base), False)
        crf_rows[f"{best_key} + crf"] = (best_key, False)
    default_row = "slots + classifier + crf (default)"
    crf_rows[default_row] = (default_key, True)
    for choice in auto:
        crf_rows[_auto_row(choice)] = (auto_keys[choice.rule], True)
    best_bg = {name: float(THRESHOLDS[int(np.nanargmax([a.summary()["miou"] for a in accs[name]]))])
               for name, _ in crf_rows.values()}
    crf_accs = {row: {bg: ConfusionAccumulator() for bg in sorted({bg0, best_bg[name]})}
                for row, (name, _) in crf_rows.items()}
    regions = "default + region relabelling (--region-relabel)"
    crf_accs[regions] = {bg0: ConfusionAccumulator()}
    for image, gt, classes, ev, cam_ev in kept:  # the pipeline itself, on the evidence computed above
        for row, (name, classifier) in crf_rows.items():
            source = cam_ev if name == "cam" else ev
            labeller = EvidenceLabeller(image, source, _config(default, variants[name], classifier))  # 1 fit
            for bg, acc in crf_accs[row].items():
                mask = labeller.mask(BackgroundParams(threshold=bg))
                acc.add(mask, gt)
                if row == default_row and bg == bg0:  # the default, then region relabelling
                    relabelled = relabel(model, normalize(image), mask, classes, head, RegionParams())
                    crf_accs[regions][bg].add(relabelled, gt)
    dt = time.perf_counter() - t0
    which = "preset" if getattr(args, "preset", "auto") == "auto" else "model-agnostic defaults"
    print(f"\n1. pseudo-mask quality on {len(ids)} EmojiVOC train images (seed {args.seed}), {dt:.0f} s; "
          f"settings: {which}")
    print(f"  {'method':40s} {f'mIoU @{bg0:g}':>10s} {'best mIoU':>10s} {'at bg':>6s}")
    rows = {}
    for name in variants:
        mious = [a.summary()["miou"] for a in accs[name]]
        best = int(np.nanargmax(mious))
        rows[name] = mious[i_def]
        mark = "  <- default" if name == default_key else ""
        print(f"  {name:40s} {100 * mious[i_def]:10.2f} {100 * mious[best]:10.2f} "
              f"{THRESHOLDS[best]:6.2f}{mark}")
    for row, by_bg in crf_accs.items():
        for bg, acc in by_bg.items():
            print(f"  {row:40s} {'':>10s} {100 * acc.summary()['miou']:10.2f} {bg:6.2f}")
    cam, slot = rows["cam"], rows[default_key]
    cam_best = np.nanmax([a.summary()["miou"] for a in accs["cam"]])
    default_summary = crf_accs["slots + classifier + crf (default)"][bg0].summary()
    crf = default_summary["miou"]
    print(f"\n  side by side @{bg0:g}: CAM {100 * cam:.2f} (at its best bg {100 * cam_best:.2f})"
          f" | slots {100 * slot:.2f} | default (slots + classifier + CRF) {100 * crf:.2f}"
          f"  (default - best CAM = {100 * (crf - cam_best):+.2f} points; targets: >= +10 and >= 75 mIoU)")
    per_class = [f"{name} {100 * iou:.1f}" for name, iou in default_summary["iou"].items() if iou is not None]
    print(f"  default, IoU per class: {', '.join(per_class)}")
    for choice in auto:
        auto_miou = crf_accs[_auto_row(choice)][bg0].summary()["miou"]
        blocks = ",".join(map(str, default.slots.blocks))
        print(f"  --blocks auto: {choice.describe()}\n    default blocks {blocks} {100 * crf:.2f} | these "
              f"{100 * auto_miou:.2f} ({100 * (auto_miou - crf):+.2f} points)")


def throughput(demo, args) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((375, 500, 3)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:375, 0:500]
    image[(yy - 180) ** 2 + (xx - 250) ** 2 < 90 ** 2] = (220, 40, 40)
    torch.manual_seed(0)
    stl = timm.create_model("glnet_stl").eval()
    print(f"\n2. throughput, 500x375 images, CPU ({torch.get_num_threads()} threads), two classes per image")
    for name, model, head in (("glnet_demo", demo, ClassHead.from_model(demo)),
                              ("glnet_stl (ImageNet head)", stl, ClassHead.imagenet(stl))):
        default = settings(model, args)
        for what, evidence in (("default evidence (stitched)", default.evidence),
                               ("standard CAM: 4 scales", STANDARD_CAM)):
            cfg = replace(default, evidence=evidence)
            pseudo_label_image(model, image, [8, 15], head, cfg)  # warm-up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                pseudo_label_image(model, image, [8, 15], head, cfg)
                times.append(time.perf_counter() - t)
            print(f"  {name:28s} {1 / statistics.median(times):6.2f} pseudo-labels/s "
                  f"({statistics.median(times) * 1000:.0f} ms/image: {what}, x flip + slots + classifier "
                  "+ CRF)")

    import pydensecrf.densecrf as dcrf

    probs = rng.random((3, 375, 500)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)

    def bare():
        d = dcrf.DenseCRF2D(500, 375, 3)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(3, -1)))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(image), compat=10)
        return np.array(d.inference(10)).reshape(3, 375, 500).argmax(0)

    ours_t, bare_t = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        a = dense_crf(image, probs, CRFParams())
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        b = bare()
        bare_t.append(time.perf_counter() - t)
    assert np.array_equal(a, b)
    o, r = statistics.median(ours_t), statistics.median(bare_t)
    print(f"  dense CRF: ours {o * 1000:.0f} ms, bare pydensecrf {r * 1000:.0f} ms, "
          f"ratio {o / r:.2f} (target <= 1.2)")


def quality_args(p: argparse.ArgumentParser) -> None:
    """The options of the quality table (shared with ``experiments/wsss_ablations.py``)."""
    p.add_argument("--checkpoint", type=Path, help="glnet_demo weights (default: the bundled demo model)")
    p.add_argument("--images", type=int, default=100, help="EmojiVOC train images to score")
    p.add_argument("--seed", type=int, default=2024,
                   help="EmojiVOC seed (the demo model was trained on seed 0)")
    p.add_argument("--preset", choices=("auto", "none"), default="auto",
                   help="auto: the checkpoint's preset (the bundled model's measured settings); none: the "
                        "model-agnostic defaults, some derived from the model")


def demo_model(checkpoint: Optional[Path]):
    """``(glnet_demo with these weights or the bundled ones, where they came from)``, in eval mode."""
    if checkpoint:
        return load_checkpoint(timm.create_model("glnet_demo"), checkpoint).eval(), str(checkpoint)
    return load_demo_model()


def quality_on_fresh_split(model, args, grid: Sequence[SlotRefineParams] = ()) -> None:
    """:func:`quality` on ``args.images`` freshly generated EmojiVOC train images (seed ``args.seed``); with
    ``args.auto_images``, ``--blocks auto`` chooses on that many val images of the same seed (after the train
    images: the train images do not change)."""
    auto_images = getattr(args, "auto_images", 0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_emojivoc(Path(tmp) / "ev", train=args.images, val=max(1, auto_images), seed=args.seed,
                             progress=False)
        layout = VOCLayout(root)
        auto = []
        if auto_images:  # one measurement, each rule's choice from it
            default = settings(model, args)
            count = len(default.slots.blocks)
            first = choose_blocks_on_split(model, layout, default.evidence, BlockChoiceParams(
                count=count, split="val", images=auto_images, rule=RULES[0]))
            auto = [first] + [replace(first, blocks=choose_blocks(first.scores, count, rule), rule=rule)
                              for rule in RULES[1:]]
        quality(model, layout, layout.ids("train"), args, grid=grid, auto=auto)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    quality_args(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--auto-images", type=int, default=32,
                   help="val images --blocks auto chooses the slot blocks on (0: no auto row)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    args = p.parse_args()
    demo, origin = demo_model(args.checkpoint)
    print(f"model: {origin}")
    with torch.no_grad():
        if not args.skip_quality:
            quality_on_fresh_split(demo, args)
        if not args.skip_throughput:
            throughput(demo, args)


if __name__ == "__main__":
    main()
