"""Dense CRF: snaps to real image edges; on real VOC photos the photo itself must carry the result."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from glmix_viz.images import load_image
from wsss.metrics import ConfusionAccumulator
from wsss.refine import CRFParams, dense_crf
from wsss.voc import VOCLayout, read_mask

from .conftest import DATA


def coarse_probabilities(mask: np.ndarray, labels, factor=16, blur=2.0):
    """One-hot ground truth, downsampled ``factor`` times, blurred, upsampled: (L, H, W)."""
    H, W = mask.shape
    planes = []
    for c in labels:
        plane = Image.fromarray(((mask == c) * 255).astype(np.uint8))
        small = plane.resize((max(1, W // factor), max(1, H // factor)), Image.Resampling.BOX)
        small = small.filter(ImageFilter.GaussianBlur(blur / 2))
        planes.append(np.asarray(small.resize((W, H), Image.Resampling.BILINEAR), np.float32) / 255)
    p = np.stack(planes) + 0.05
    return p / p.sum(0, keepdims=True)


def test_crf_snaps_a_blurred_boundary_to_the_image_edge():
    H, W = 60, 100
    img = np.zeros((H, W, 3), np.uint8)
    img[:, :50] = (200, 30, 30)
    img[:, 50:] = (30, 30, 200)
    img = np.clip(img + np.random.default_rng(0).normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    p1 = 1 / (1 + np.exp(-(np.arange(W) - 62) / 6.0))  # evidence puts the boundary at 62, blurred
    probs = np.stack([1 - p1, p1])[:, None, :].repeat(H, 1).astype(np.float32)
    out = dense_crf(img, probs, CRFParams())
    assert (probs.argmax(0) == 1).argmax(1).min() == 63
    assert ((out == 1).argmax(1) == 50).all()  # every row snaps to the real edge
    out_t = dense_crf(np.ascontiguousarray(img.transpose(1, 0, 2)), probs.transpose(0, 2, 1).copy())
    assert ((out_t == 1).argmax(0) == 50).all()  # same for a transposed (tall) input


def test_real_photos_guide_the_crf():
    """Coarse maps from the ground truth (16x down, blurred) refined with the real photo score far
    higher than refined with a blank or a rotated photo: catches swapped axes, transposed arrays,
    misread or non-contiguous buffers (the photo is passed as a non-contiguous view)."""
    layout = VOCLayout(DATA / "voc_sample")
    real, blank, rotated = ConfusionAccumulator(), ConfusionAccumulator(), ConfusionAccumulator()
    for image_id in layout.ids("val")[::6]:
        image = np.asarray(load_image(layout.image(image_id)))
        gt = read_mask(layout.mask(image_id))
        labels = [0] + [c for c in np.unique(gt) if 0 < c < 255]
        probs = coarse_probabilities(np.where(gt == 255, 0, gt), labels)
        lut = np.array(labels, np.uint8)
        bgr_view = image[:, :, ::-1][:, :, ::-1]  # non-contiguous view of the same pixels
        real.add(lut[dense_crf(bgr_view, probs)], gt)
        blank.add(lut[dense_crf(np.full_like(image, 128), probs)], gt)
        rotated.add(lut[dense_crf(image[::-1, ::-1], probs)], gt)
    r, b, t = (acc.summary()["miou"] for acc in (real, blank, rotated))
    assert r > b + 0.15 and r > t + 0.1, (r, b, t)
