"""Class evidence and slot refinement against hand-worked cases."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from glmix_viz.capture import SlotRecord
from wsss.evidence import IMAGENET_TO_VOC, ClassHead, EvidenceConfig, compute_evidence, stitched_cam
from wsss.refine import (
    BackgroundParams,
    SlotRefineParams,
    labels_from_scores,
    slot_refine,
    subtract_baseline,
    to_probabilities,
    with_background,
)
from wsss.voc import VOC_FOREGROUND


def _record(ordinal, logits, grid):
    """A captured block's record of one image: ``logits`` ``(K, N)``."""
    return SlotRecord(f"block{ordinal}", ordinal, logits[None], grid)


def test_slot_refinement_hand_worked():
    # 2 slots on a 1x4 grid: slot 0 owns pixels 0-1, slot 1 pixels 2-3 (logits far apart: hard clustering and
    # dispatch, clustering [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]], dispatch [[1, 1, 0, 0], [0, 0, 1, 1]])
    slots = [_record(1, 60.0 * torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]]), (1, 4))]
    np.testing.assert_allclose(slots[0].clustering_weights()[0].numpy(), [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]],
                               atol=1e-6)
    cam = torch.tensor([[[1.0, 0.2, 0.0, 0.4]]])  # one class, already on the grid
    out = slot_refine(cam, slots, mix=1.0)
    # slot scores: 0.6 and 0.2 -> pixels [0.6, 0.6, 0.2, 0.2] -> / max -> [1, 1, 1/3, 1/3]
    np.testing.assert_allclose(out[0, 0].numpy(), [1, 1, 1 / 3, 1 / 3], atol=1e-6)
    half = slot_refine(cam, slots, mix=0.5)
    np.testing.assert_allclose(half[0, 0].numpy(),
                               0.5 * np.array([1, 0.2, 0, 0.4]) + 0.5 * np.array([1, 1, 1 / 3, 1 / 3]),
                               atol=1e-6)


def test_slot_sharpness_scales_the_logits():
    # soft logits: pixel p's clustering weight in slot k is exp(s * l_kp) / sum_q exp(s * l_kq)
    logits = torch.tensor([[1.0, 0.5, 0.0, -0.5], [-0.5, 0.0, 0.5, 1.0]])
    cam = torch.tensor([[[1.0, 0.2, 0.0, 0.4]]])
    sharp = slot_refine(cam, [_record(1, logits, (1, 4))], sharpness=3.0)
    np.testing.assert_allclose(sharp.numpy(), slot_refine(cam, [_record(1, 3.0 * logits, (1, 4))]).numpy(),
                               atol=1e-6)
    # by hand, sharpness 1
    e = np.exp(logits.numpy())
    clustering, dispatch = e / e.sum(1, keepdims=True), e / e.sum(0, keepdims=True)
    pix = dispatch.T @ (clustering @ cam[0, 0].numpy())
    np.testing.assert_allclose(slot_refine(cam, [_record(1, logits, (1, 4))])[0, 0].numpy(), pix / pix.max(),
                               atol=1e-6)


def test_subtract_baseline_hand_worked():
    maps = torch.tensor([[[0.0, 1.0, 2.0, 3.0, 4.0]],     # median 2 -> [0, 0, 0, 1, 2] / 2
                         [[0.6, 0.6, 0.6, 0.6, 0.9]]])    # flat but for one pixel: only that pixel stays
    out = subtract_baseline(maps, 0.5)
    np.testing.assert_allclose(out[0, 0].numpy(), [0, 0, 0, 0.5, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[1, 0].numpy(), [0, 0, 0, 0, 1.0], atol=1e-6)
    # quantile 0.25 of 5 values: k = 1 + round(0.25 * 4) = 2nd smallest
    np.testing.assert_allclose(subtract_baseline(maps[:1], 0.25)[0, 0].numpy(), [0, 0, 1 / 3, 2 / 3, 1],
                               atol=1e-6)
    assert subtract_baseline(maps, 0.0) is maps
    # no evidence: none
    np.testing.assert_array_equal(subtract_baseline(torch.zeros(1, 2, 2), 0.5).numpy(), 0.0)
    with pytest.raises(ValueError, match="quantile"):
        subtract_baseline(maps, 1.0)
    with pytest.raises(ValueError, match=r"SlotRefineParams.baseline -0.1: expected a quantile in \[0, 1\)"):
        SlotRefineParams(baseline=-0.1)


def test_background_and_labels():
    scores = np.array([[[0.9, 0.1]], [[0.2, 0.05]]], np.float32)  # classes 3 and 7, 1x2 image
    s = with_background(scores, BackgroundParams("constant", 0.15))
    np.testing.assert_array_equal(labels_from_scores(s, [3, 7]), [[3, 0]])
    p = with_background(scores, BackgroundParams("power", power=1.0))
    np.testing.assert_allclose(p[0], [[0.1, 0.9]], rtol=1e-6)
    probs = to_probabilities(s)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)


def test_compute_evidence_shapes_normalisation_and_slots(tiny_model):
    torch.manual_seed(0)  # weights and image independent of the tests that ran before
    model = timm.create_model("test_glnet", num_classes=20).eval()
    head = ClassHead.from_model(model)
    image = torch.randn(3, 70, 90)
    ev = compute_evidence(model, image, [3, 15], head, EvidenceConfig(scales=(1.0, 0.5)),
                          slot_blocks=(2, 4))
    assert ev.classes == (3, 15) and ev.cams.shape == (2, 70, 90)
    np.testing.assert_allclose(ev.cams.flatten(1).amax(1).numpy(), [1, 1], atol=1e-5)
    assert ev.cams.min() >= 0
    assert [s.ordinal for s in ev.slots] == [2, 4]
    assert ev.slots[0].grid == (8, 11) and ev.slots[0].logits.shape == (1, 64, 88)  # 70x90 at stride 8
    np.testing.assert_allclose(ev.slots[1].dispatch_maps().sum(1).numpy(), 1, atol=1e-5)
    # the CAM of one scale, unflipped, is ReLU(W f) upsampled: check against a direct computation
    one = compute_evidence(model, image, [3], head, EvidenceConfig(scales=(1.0,), flip=False))
    with torch.no_grad():
        f = model.forward_features(image[None])[0]
        cam = torch.relu(torch.einsum("c,chw->hw", model.head.weight[2], f))
        cam = torch.nn.functional.interpolate(cam[None, None], size=(70, 90), mode="bilinear")[0, 0]
    np.testing.assert_allclose(one.cams[0].numpy(), (cam / cam.max()).numpy(), atol=1e-5)


def test_heads_are_checked():
    with pytest.raises(ValueError, match="expected 20"):
        ClassHead.from_model(timm.create_model("test_glnet"))  # 10 outputs
    inet = timm.create_model("test_glnet", num_classes=1000)
    head = ClassHead.imagenet(inet)
    table = json.loads(IMAGENET_TO_VOC.read_text())["voc_to_imagenet"]
    assert head.groups[VOC_FOREGROUND.index("cat")] == tuple(table["cat"])
    flat = [i for ids in table.values() for i in ids]
    assert len(flat) == len(set(flat)) and all(0 <= i < 1000 for i in flat)
    ev = compute_evidence(inet.eval(), torch.randn(3, 64, 64), [8, 12], head, EvidenceConfig(scales=(1.0,)))
    assert ev.cams.shape == (2, 64, 64)


class _WindowMean(torch.nn.Module):
    """A stand-in backbone with stride 32: each output cell is the mean of its 32x32 block of channel 0."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x[:, :1], 32)


@pytest.mark.parametrize("factor", [2, 4])
def test_stitched_cam_equals_window_means_by_brute_force(factor):
    # fine cell (i, j) is centred at ((i + 0.5) * s, (j + 0.5) * s), s = 32 / factor; the pass whose output
    # cell is centred there averages the 32x32 window around that centre, zeros (padding) outside the image
    rng = np.random.default_rng(0)
    image = rng.uniform(0.1, 1.0, size=(64, 96)).astype(np.float32)
    x = torch.from_numpy(image)[None, None].repeat(1, 3, 1, 1)
    fine = stitched_cam(_WindowMean(), x, torch.ones(1, 1), factor)[0].numpy()
    s = 32 // factor
    assert fine.shape == (64 // s, 96 // s)
    padded = np.pad(image, 16)
    for i in range(fine.shape[0]):
        for j in range(fine.shape[1]):
            cy, cx = int((i + 0.5) * s) + 16, int((j + 0.5) * s) + 16  # centre in padded coordinates
            assert fine[i, j] == pytest.approx(padded[cy - 16:cy + 16, cx - 16:cx + 16].mean(), rel=1e-5)
    with pytest.raises(ValueError, match="divisible by 32"):
        stitched_cam(_WindowMean(), x[..., :80], torch.ones(1, 1), factor)
    with pytest.raises(ValueError, match="even divisor"):
        stitched_cam(_WindowMean(), x, torch.ones(1, 1), 3)


def test_scale_weights_and_stitch_in_compute_evidence():
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20).eval()
    head = ClassHead.from_model(model)
    image = torch.randn(3, 70, 90)
    one = compute_evidence(model, image, [3, 15], head, EvidenceConfig(scales=(1.0,)))
    # weight 0 drops a scale; 1 each is the default; factor 1 is the plain CAM
    dropped = compute_evidence(model, image, [3, 15], head,
                               EvidenceConfig(scales=(1.0, 0.5), weights=(1.0, 0.0)))
    np.testing.assert_allclose(dropped.cams.numpy(), one.cams.numpy(), atol=1e-6)
    plain = compute_evidence(model, image, [3, 15], head, EvidenceConfig(scales=(1.0, 0.5), stitch=(1, 1)))
    both = compute_evidence(model, image, [3, 15], head, EvidenceConfig(scales=(1.0, 0.5)))
    np.testing.assert_allclose(plain.cams.numpy(), both.cams.numpy(), atol=1e-6)
    # a stitched scale: the image resized to a multiple of 32 (70x90 at 1.0 -> 64x96), its stitched CAM
    # upsampled,
    # and slots still captured on a plain pass of that input
    ev = compute_evidence(model, image, [3], head, EvidenceConfig(scales=(1.0,), flip=False, stitch=(4,)),
                          slot_blocks=(2,))
    with torch.no_grad():
        x = torch.nn.functional.interpolate(image[None], size=(64, 96), mode="bilinear")
        fine = stitched_cam(model, x, model.head.weight[[2]], 4)
        cam = torch.nn.functional.interpolate(fine[None], size=(70, 90), mode="bilinear")[0, 0]
    assert fine.shape == (1, 8, 12)
    np.testing.assert_allclose(ev.cams[0].numpy(), (cam / cam.max()).numpy(), atol=1e-5)
    assert ev.slots[0].grid == (8, 12)  # 64x96 at stride 8
    assert not np.allclose(ev.cams[0].numpy(), one.cams[0].numpy(), atol=1e-2)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=(1.0,)), r"EvidenceConfig.weights 1, EvidenceConfig.scales 1,0.5: expected one weights"),
    (dict(stitch=(1, 2, 4)), r"EvidenceConfig.stitch 1,2,4, EvidenceConfig.scales 1,0.5: expected one"),
    (dict(weights=(1.0, -1.0)), r"EvidenceConfig.weights 1,-1: expected numbers >= 0"),
    (dict(stitch=(1, 3)), r"EvidenceConfig.stitch 1,3: expected 1 \(plain\) or an even factor"),
    (dict(scales=()), r"EvidenceConfig.scales : expected one or more positive"),
    (dict(fit=(True,)), r"EvidenceConfig.fit True, EvidenceConfig.scales 1,0.5: expected one fit value"),
])
def test_evidence_config_names_the_bad_field(kwargs, message):
    """The library names the setting (the CLI maps it to its flag: tests/test_pipeline.py)."""
    with pytest.raises(ValueError, match=message):
        EvidenceConfig(**{"scales": (1.0, 0.5), **kwargs})
