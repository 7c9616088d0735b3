"""Grad-CAM (pytorch-grad-cam) next to the slots of the bundled demo model: the figure in docs/gradcam.md.

    pip install -e ".[test]"   # grad-cam is a test extra
    python scripts/gradcam_figure.py [--out docs/gradcam_demo.png]

Two images, the class "cat", whole images at 224 px on the shorter side: the
bundled photo, which the demo model (trained on EmojiVOC's emoji) does not
recognise, and an EmojiVOC scene with a cat, which it does. Columns: the input,
Grad-CAM at GLMix blocks 2 and 10 and at the last stage, block 10's slots as
hard groups, and block 10's Grad-CAM pooled into the slots of blocks 2, 5 and
10 and dispatched back (``wsss.refine.slot_refine``, as the WSSS pipeline does
with CAMs). For the scene it also logs how much of each map lies on the cat's
mask.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import glmix_viz
from glmix_viz.analysis import upsample_maps
from glmix_viz.capture import SlotCapture, glmix_blocks
from glmix_viz.figures import blend_heatmap, render_captioned, render_hard_grouping, resize_to_height
from glmix_viz.images import Preprocess, load_image, preprocess
from wsss.emojivoc import render_scene
from wsss.refine import slot_refine
from wsss.voc import VOC_CLASSES, VOC_FOREGROUND

OUT = Path(__file__).resolve().parents[1] / "docs" / "gradcam_demo.png"
SCENE = (38, 0)  # EmojiVOC scene (index, seed): a cat, a motorbike and a sofa
BLOCKS = (2, 5, 10)  # slot blocks of the demo model's WSSS preset
SHARPNESS = 16.0  # its slots.sharpness
HEIGHT = 150  # pixels per panel in the figure
CAT = VOC_FOREGROUND.index("cat")


def grad_cam(model, layer, x: torch.Tensor, category: int) -> np.ndarray:
    """Grad-CAM of ``category`` at ``layer``: ``(H, W)`` in [0, 1], at the input's size."""
    with GradCAM(model, target_layers=[layer]) as cam:
        return cam(x, [ClassifierOutputTarget(category)])[0]


def row(model, image: Image.Image, title: str, mask: Optional[np.ndarray] = None) -> np.ndarray:
    x, view = preprocess(image, Preprocess(224, "whole"))
    x = x[None]
    with torch.no_grad():
        logits = model(x)[0]
    blocks = glmix_blocks(model)
    maps = {
        "Grad-CAM, block 2": grad_cam(model, blocks[1][1], x, CAT),
        "block 10": grad_cam(model, blocks[9][1], x, CAT),
        "last stage (MHSA)": grad_cam(model, model.stages[-1], x, CAT),
    }
    with torch.no_grad(), SlotCapture(model, blocks=BLOCKS) as slots:
        model(x)
    dispatch = upsample_maps(slots[10].dispatch_maps()[0], view.shape[:2])
    maps["block 10 via slots"] = slot_refine(torch.from_numpy(maps["block 10"])[None],
                                             [slots[b] for b in BLOCKS], sharpness=SHARPNESS)[0].numpy()
    logging.info("%s: cat logit %+.2f, top-1 %s", title, logits[CAT], VOC_FOREGROUND[int(logits.argmax())])
    if mask is not None:
        cat = np.asarray(Image.fromarray(mask).resize(view.shape[1::-1], Image.Resampling.NEAREST)) == CAT + 1
        logging.info("  the cat covers %.1f%% of the image", 100 * cat.mean())
        for name, m in maps.items():
            hot = m > 0.5
            logging.info("  %-20s on the cat: %4.1f%% of its mass, %5.1f%% of its pixels above 0.5", name,
                         100 * (m * cat).sum() / m.sum(), 100 * (hot & cat).sum() / max(hot.sum(), 1))
    panels = [view] + [blend_heatmap(view, m, cmap="inferno") for m in maps.values()]
    panels.insert(4, render_hard_grouping(view, dispatch))
    captions = ["input", *list(maps)[:3], "block 10 slots", "block 10 via slots"]
    panels = [resize_to_height(p, HEIGHT, nearest=i == 4) for i, p in enumerate(panels)]
    return render_captioned(panels, captions, title=f"{title}: cat logit {logits[CAT]:+.2f}", font_size=12)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, description = glmix_viz.load_demo_model()
    logging.info("%s", description)
    scene, mask = render_scene(*SCENE)
    logging.info("scene %s: %s", SCENE, [VOC_CLASSES[c] for c in np.unique(mask) if c < len(VOC_CLASSES)])
    rows = [row(model, load_image(glmix_viz.DEMO_IMAGE), "bundled photo"),
            row(model, scene, f"EmojiVOC scene {SCENE[0]} (seed {SCENE[1]})", mask)]
    width = max(r.shape[1] for r in rows)
    figure = np.concatenate([np.pad(r, ((0, 12), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                             for r in rows])[:-12]
    # 256 colours keep the PNG small (the heat maps and slot colours survive it)
    Image.fromarray(figure).quantize(256, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    logging.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)


if __name__ == "__main__":
    main()
