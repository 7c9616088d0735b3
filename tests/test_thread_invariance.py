"""The pseudo-label pipeline gives the same bytes at any torch thread count (``--workers``, ``torchrun``).

Some CPU kernels split a reduction between threads (a resize, a matrix product
with a long inner dimension), so their float rounding depends on the thread
count, and the slot classifier's fit turns a 1e-7 difference into 1e-3 ones.
The pipeline runs such work on one thread (``glmix_viz.devices.torch_threads``)
and the model's batched forwards do not split their reductions: checked here
bit for bit on a real photo with the bundled model, at one and two threads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glmix_viz.devices import torch_threads
from glmix_viz.images import load_image, normalize
from glmix_viz.models.demo import load_demo_model
from wsss.evidence import ClassHead, compute_evidence
from wsss.pipeline import EvidenceLabeller
from wsss.presets import resolve_settings
from wsss.voc import VOCLayout

VOC_SAMPLE = Path(__file__).parent / "data" / "voc_sample"


@pytest.fixture(scope="module")
def demo():
    model, _ = load_demo_model()
    return model.eval(), resolve_settings(model).config.for_model(model)


def _label(model, config, image):
    """Evidence and labelling of a 2-class image, with the preset's default settings."""
    with torch.no_grad():
        ev = compute_evidence(model, normalize(image), [9, 15], ClassHead.from_model(model), config.evidence,
                              slot_blocks=config.capture_blocks())
    labeller = EvidenceLabeller(image, ev, config)
    return ev, labeller, labeller.result().mask


def test_the_pipeline_is_bit_identical_at_one_and_two_threads(demo):
    model, config = demo
    layout = VOCLayout(VOC_SAMPLE)
    image = np.asarray(load_image(layout.image(layout.ids("train")[0]), max_side=320))
    runs = {}
    for threads in (1, 2):
        with torch_threads(threads):
            runs[threads] = _label(model, config, image)
    (ev1, lab1, mask1), (ev2, lab2, mask2) = runs[1], runs[2]
    assert torch.equal(ev1.cams, ev2.cams)
    assert len(ev1.slots) == len(config.capture_blocks()) > 0
    assert all(torch.equal(a.logits, b.logits) for a, b in zip(ev1.slots, ev2.slots))
    assert np.array_equal(lab1.scores, lab2.scores)
    assert lab1.learned is not None and np.array_equal(lab1.learned, lab2.learned)
    assert np.array_equal(mask1, mask2)
    assert len(np.unique(mask1)) > 1  # something was labelled


def test_region_probabilities_are_bit_identical_at_one_and_two_threads(demo):
    """Region relabelling's classifier inputs (masked, resized images) and probabilities: the same bits."""
    from wsss.regions import region_probabilities

    model, _ = demo
    layout = VOCLayout(VOC_SAMPLE)
    image = np.asarray(load_image(layout.image(layout.ids("train")[1]), max_side=400))
    H, W = image.shape[:2]
    yy, xx = np.mgrid[:H, :W]
    regions = [(yy < H // 2), (xx < W // 3), ((yy - H / 2) ** 2 + (xx - W / 2) ** 2 < (H / 4) ** 2)]
    probs, head = {}, ClassHead.from_model(model)
    for threads in (1, 2):
        with torch.no_grad(), torch_threads(threads):
            probs[threads] = region_probabilities(model, normalize(image), regions, head, 224, batch_size=2)
    assert torch.equal(probs[1], probs[2])
    assert probs[1].shape == (3, 20) and probs[1].max() > 0.1


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        with torch_threads(2):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored on the way out too")
    assert torch.get_num_threads() == before
