"""The bundled demo model: loads like an official checkpoint, learned EmojiVOC, its slots help WSSS."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from glmix_viz.capture import glmix_blocks
from glmix_viz.images import load_image
from glmix_viz.models.demo import DEMO_WEIGHTS, load_demo_model
from wsss.emojivoc import make_emojivoc
from wsss.evidence import ClassHead, EvidenceConfig
from wsss.metrics import ConfusionAccumulator
from wsss.pipeline import PseudoLabelConfig, pseudo_label_image
from wsss.train import mean_average_precision
from wsss.voc import VOCLayout, read_mask


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
    assert "bundled demo model" in what
    ckpt = torch.load(DEMO_WEIGHTS, weights_only=True)
    assert all(v.dtype == torch.float16 for v in ckpt["model"].values() if v.is_floating_point())
    assert next(model.parameters()).dtype == torch.float32
    assert len(glmix_blocks(model)) == 10  # so `glmix-viz image.jpg --block 10` works on it


@pytest.mark.slow
def test_bundled_model_recognises_fresh_emojivoc(demo, fresh):
    model, _ = demo
    ids = fresh.ids("val")
    labels = fresh.image_labels(ids)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    scores = []
    with torch.no_grad():
        for image_id in ids:
            img = load_image(fresh.image(image_id)).resize((192, 192))
            x = (torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1) - mean) / std
            scores.append(torch.sigmoid(model(x[None]))[0].numpy())
    m, _ = mean_average_precision(np.stack(scores), np.stack([labels[i] for i in ids]))
    assert m > 0.7, m


@pytest.mark.slow
def test_slots_and_crf_beat_cam_only(demo, fresh):
    model, _ = demo
    head = ClassHead.from_model(model)
    ids = fresh.ids("train")
    labels = fresh.image_labels(ids)
    cam_cfg = PseudoLabelConfig(method="cam", crf=None, evidence=EvidenceConfig(scales=(1.0, 0.5)))
    best_cfg = PseudoLabelConfig(evidence=EvidenceConfig(scales=(1.0, 0.5),
                                                         slot_blocks=PseudoLabelConfig().evidence.slot_blocks))
    cam, best = ConfusionAccumulator(), ConfusionAccumulator()
    for image_id in ids:
        image = np.asarray(load_image(fresh.image(image_id)))
        gt = read_mask(fresh.mask(image_id))
        classes = [c + 1 for c in np.flatnonzero(labels[image_id])]
        cam.add(pseudo_label_image(model, image, classes, head, cam_cfg).mask, gt)
        best.add(pseudo_label_image(model, image, classes, head, best_cfg).mask, gt)
    assert best.summary()["miou"] > cam.summary()["miou"] + 0.03, (cam.summary()["miou"], best.summary()["miou"])
