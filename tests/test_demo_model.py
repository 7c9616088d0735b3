"""The bundled demo model: loads like an official checkpoint and recognises EmojiVOC images it never saw."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glmix_viz.capture import glmix_blocks
from glmix_viz.images import load_image, normalize
from glmix_viz.models import read_checkpoint
from glmix_viz.models.demo import DEMO_WEIGHTS, load_demo_model
from wsss.emojivoc import make_emojivoc
from wsss.evidence import ClassHead
from wsss.metrics import ConfusionAccumulator
from wsss.pipeline import PseudoLabelConfig, pseudo_label_image
from wsss.presets import resolve_settings
from wsss.refine import BackgroundParams
from wsss.regions import RegionParams, class_regions, relabel
from wsss.train import mean_average_precision
from wsss.voc import VOCLayout, read_mask

# chance (all scores equal) is about 0.13 on this set; the bundled model's own measurement is in
# docs/demo-model.md
MIN_MAP = 0.80  # the bundled model scores 0.94 here (0.92 on the EmojiVOC val split)


@pytest.fixture(scope="module")
def demo():
    model, what = load_demo_model()
    return model, what


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """EmojiVOC images the model never saw (another seed)."""
    return VOCLayout(make_emojivoc(tmp_path_factory.mktemp("fresh") / "ev", train=8, val=48, seed=4242,
                                   progress=False))


def test_bundled_weights_are_small_half_precision_and_load_as_float32(demo):
    model, what = demo
    assert DEMO_WEIGHTS.is_file() and DEMO_WEIGHTS.stat().st_size < 10e6
    assert "the bundled demo model glnet_demo" in what
    ckpt = torch.load(DEMO_WEIGHTS, weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    assert next(model.parameters()).dtype == torch.float32
    assert len(glmix_blocks(model)) == 10  # so `glmix-viz image.jpg --block 10` works on it


@pytest.mark.slow
def test_bundled_model_recognises_fresh_emojivoc(demo, fresh):
    model, _ = demo
    ids = fresh.ids("val")
    labels = fresh.image_labels(ids)
    size = read_checkpoint(DEMO_WEIGHTS).get("config", {}).get("input_size", 192)
    scores = []
    with torch.no_grad():
        for image_id in ids:
            img = load_image(fresh.image(image_id)).resize((size, size))
            x = normalize(np.asarray(img))
            scores.append(torch.sigmoid(model(x[None]))[0].numpy())
    m, _ = mean_average_precision(np.stack(scores), np.stack([labels[i] for i in ids]))
    assert m > MIN_MAP, m


@pytest.fixture(scope="module")
def seed2024(tmp_path_factory):
    """8 EmojiVOC train images of a seed no choice was made on."""
    root = make_emojivoc(tmp_path_factory.mktemp("s2024") / "ev", train=8, val=1, seed=2024, progress=False)
    return VOCLayout(root)


@pytest.mark.slow
def test_slot_and_crf_pseudo_masks_beat_cam_only(demo, seed2024):
    """The default pseudo-masks (slots + slot classifier + dense CRF) beat CAM-only ones by 10+ mIoU on
    unseen images.

    CAM-only at its own best background (0.4). Measured: CAM 45.9, default 76.0
    (defaults chosen on other seeds, 31337 and 4242).
    """
    model, _ = demo
    layout = seed2024
    head = ClassHead.from_model(model)
    cam_only, default = ConfusionAccumulator(), ConfusionAccumulator()
    preset = resolve_settings(model).config  # the settings the bundled checkpoint carries
    ids = layout.ids("train")
    labels = layout.image_labels(ids)
    for image_id in ids:
        image = np.asarray(load_image(layout.image(image_id)))
        classes = [c + 1 for c in np.flatnonzero(labels[image_id])]
        gt = read_mask(layout.mask(image_id))
        cam_cfg = PseudoLabelConfig.cam(crf=None, background=BackgroundParams(threshold=0.4))
        cam_only.add(pseudo_label_image(model, image, classes, head, cam_cfg).mask, gt)
        default.add(pseudo_label_image(model, image, classes, head, preset).mask, gt)
    assert default.summary()["miou"] > cam_only.summary()["miou"] + 0.10, (default.summary(),
                                                                          cam_only.summary())


@pytest.mark.slow
def test_region_relabelling_restores_swapped_regions(demo, seed2024):
    """Given the true masks with one region's class swapped for another of the image's, the step puts most
    back.

    Every region of 500+ px in the 8 images with two or more classes, in turn
    (measured: 16 of 20 restored), and the true masks themselves are left
    exactly as they are (measured: 0 pixels changed).
    """
    model, _ = demo
    head = ClassHead.from_model(model)
    params = RegionParams()
    ids = seed2024.ids("train")
    labels = seed2024.image_labels(ids)
    restored, swapped = 0, 0
    for image_id in ids:
        classes = [c + 1 for c in np.flatnonzero(labels[image_id])]
        if len(classes) < 2:
            continue
        x = normalize(np.asarray(load_image(seed2024.image(image_id))))
        gt = read_mask(seed2024.mask(image_id))
        gt = np.where(gt == 255, 0, gt).astype(np.uint8)
        np.testing.assert_array_equal(relabel(model, x, gt, classes, head, params), gt)
        for c, region in class_regions(gt, classes, 500):
            wrong = gt.copy()
            wrong[region] = next(k for k in classes if k != c)
            restored += int((relabel(model, x, wrong, classes, head, params)[region] == c).all())
            swapped += 1
    assert swapped >= 15 and restored >= 0.6 * swapped, (restored, swapped)
