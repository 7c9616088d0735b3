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
from wsss.refine import BackgroundParams
from wsss.train import mean_average_precision
from wsss.voc import VOCLayout, read_mask


# chance (all scores equal) is about 0.13 on this set; the bundled model's own measurement is in the README
MIN_MAP = 0.80  # the bundled model scores 0.94 here (0.92 on the EmojiVOC val split)


@pytest.fixture(scope="module")
def demo():
    model, what = load_demo_model()
    return model, what


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """EmojiVOC images the model never saw (another seed)."""
    return VOCLayout(make_emojivoc(tmp_path_factory.mktemp("fresh") / "ev", train=8, val=48, seed=4242, progress=False))


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


@pytest.mark.slow
def test_slot_and_crf_pseudo_masks_beat_cam_only(demo, tmp_path):
    """The default pseudo-masks (slots + slot classifier + dense CRF) beat CAM-only ones by 10+ mIoU on unseen images.

    CAM-only at its own best background (0.4). Measured: CAM 45.9, default 76.0
    (defaults chosen on other seeds, 31337 and 4242).
    """
    model, _ = demo
    layout = VOCLayout(make_emojivoc(tmp_path / "ev", train=8, val=1, seed=2024, progress=False))
    head = ClassHead.from_model(model)
    cam_only, default = ConfusionAccumulator(), ConfusionAccumulator()
    ids = layout.ids("train")
    labels = layout.image_labels(ids)
    for image_id in ids:
        image = np.asarray(load_image(layout.image(image_id)))
        classes = [c + 1 for c in np.flatnonzero(labels[image_id])]
        gt = read_mask(layout.mask(image_id))
        cam_cfg = PseudoLabelConfig(method="cam", crf=None, background=BackgroundParams(threshold=0.4))
        cam_only.add(pseudo_label_image(model, image, classes, head, cam_cfg).mask, gt)
        default.add(pseudo_label_image(model, image, classes, head).mask, gt)
    assert default.summary()["miou"] > cam_only.summary()["miou"] + 0.10, (default.summary(), cam_only.summary())
