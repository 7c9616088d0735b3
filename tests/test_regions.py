"""Region relabelling: regions, masked-image probabilities, the margin rule, and the pipeline step."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glmix_viz.images import normalize
from wsss import pipeline
from wsss.evidence import ClassHead, EvidenceConfig
from wsss.refine import SlotRefineParams
from wsss.regions import (
    RegionParams,
    class_regions,
    model_input_side,
    region_probabilities,
    relabel,
    relabel_regions,
)


def test_class_regions_hand_worked():
    mask = np.zeros((6, 8), np.uint8)
    mask[0:2, 0:2] = 3  # 4 px
    mask[4:6, 5:8] = 3  # 6 px, not touching the first
    mask[2, 2] = 3  # 1 px, touches the first only diagonally: its own region (4-connectivity)
    mask[0:3, 5:7] = 5  # 6 px
    regions = class_regions(mask, (3, 5), min_pixels=2)
    assert [(c, int(r.sum())) for c, r in regions] == [(3, 4), (3, 6), (5, 6)]
    assert regions[0][1][0:2, 0:2].all() and regions[1][1][4:6, 5:8].all()
    assert len(class_regions(mask, (3,), min_pixels=1)) == 3
    assert class_regions(mask, (7,)) == []


def test_relabel_regions_margin_rule():
    mask = np.zeros((4, 4), np.uint8)
    mask[:2] = 2
    mask[2:] = 9
    regions = class_regions(mask, (2, 9))
    probs = torch.zeros(2, 20)
    probs[0, [1, 8, 14]] = torch.tensor([0.40, 0.71, 0.99])  # class 15 is not the image's: ignored
    probs[1, [1, 8]] = torch.tensor([0.69, 0.40])
    out = relabel_regions(mask, (2, 9), regions, probs, margin=0.3)
    assert (out[:2] == 9).all()  # 0.71 - 0.40 = 0.31 > 0.3
    assert (out[2:] == 9).all()  # 0.69 - 0.40 = 0.29: kept
    assert (mask[:2] == 2).all()  # a new array
    np.testing.assert_array_equal(relabel_regions(mask, (2, 9), regions, probs, margin=0.35), mask)


def test_head_probabilities_match_the_model_and_the_imagenet_grouping(tiny_model):
    model = tiny_model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    own = ClassHead(model.head.weight, tuple((i,) for i in range(model.num_classes)), model.head.bias)
    torch.testing.assert_close(own.probabilities(pooled), torch.sigmoid(logits))
    # softmax heads: a class's probability is the sum over its rows
    w3, b3 = torch.randn(30, pooled.shape[1]), torch.randn(30)
    groups = tuple((2 * i, 2 * i + 1) for i in range(15)) + ((0,),) * 5
    grouped = ClassHead(w3, groups, b3, multi_label=False).probabilities(pooled)
    soft = torch.softmax(pooled @ w3.T + b3, 1)
    torch.testing.assert_close(grouped[:, 3], soft[:, 6] + soft[:, 7])
    torch.testing.assert_close(grouped[:, 19], soft[:, 0])


def test_region_probabilities_equal_a_masked_forward_by_hand(tiny_model):
    model = tiny_model
    torch.manual_seed(0)
    w, b = torch.randn(20, model.num_features), torch.randn(20)
    head = ClassHead(w, tuple((i,) for i in range(20)), b)
    image = torch.randn(3, 50, 70)
    regions = [np.zeros((50, 70), bool) for _ in range(3)]
    regions[0][10:30, 5:40] = True
    regions[1][:, 50:] = True
    regions[2][40:, :] = True
    got = region_probabilities(model, image, regions, head, side=96, batch_size=2)
    assert got.shape == (3, 20)
    with torch.no_grad():
        for r, region in enumerate(regions):
            x = F.interpolate((image * torch.from_numpy(region))[None], size=(69, 96), mode="bilinear",
                              align_corners=False)
            p = [torch.sigmoid(model.forward_head(model.forward_features(v), pre_logits=True) @ w.T + b)[0]
                 for v in (x, x.flip(-1))]
            torch.testing.assert_close(got[r], (p[0] + p[1]) / 2, rtol=1e-4, atol=1e-5)


def test_model_input_side(tiny_model):
    assert model_input_side(torch.nn.Linear(2, 2)) == 224
    tiny_model.pretrained_cfg = {"input_size": (3, 160, 192)}
    assert model_input_side(tiny_model) == 192


def test_region_params_are_checked():
    with pytest.raises(ValueError, match="RegionParams.margin"):
        RegionParams(margin=1.5)
    with pytest.raises(ValueError, match="min_pixels"):
        RegionParams(min_pixels=0)


def test_pipeline_applies_relabel_after_the_mask(tiny_model):
    """pseudo_label_image with regions == the mask without them, then relabel; one class is left alone."""
    model = tiny_model
    head = ClassHead.from_model(model) if model.num_classes == 20 else ClassHead(
        torch.randn(20, model.num_features), tuple((i,) for i in range(20)), torch.randn(20))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    image[:, :40] //= 3  # two halves
    base = pipeline.PseudoLabelConfig(evidence=EvidenceConfig(scales=(1.0,)),
                                      slots=SlotRefineParams(blocks=(2, 4)),
                                      crf=None, regions=None)
    loose = RegionParams(margin=0.0, min_pixels=1, input_side=64)
    with torch.no_grad():
        plain = pipeline.pseudo_label_image(model, image, (3, 8), head, base)
        with_regions = pipeline.pseudo_label_image(model, image, (3, 8), head, replace(base, regions=loose))
        want = relabel(model, normalize(image), plain.mask, (3, 8), head, loose)
        assert (want != plain.mask).any()  # the step did something here
        np.testing.assert_array_equal(with_regions.mask, want)
        np.testing.assert_array_equal(with_regions.scores, plain.scores)
        one = pipeline.pseudo_label_image(model, image, (3,), head, replace(base, regions=loose))
        alone = pipeline.pseudo_label_image(model, image, (3,), head, base)
        np.testing.assert_array_equal(one.mask, alone.mask)
        with pytest.raises(ValueError, match="differ in size"):
            relabel(model, normalize(image), plain.mask[:-1], (3, 8), head, loose)
