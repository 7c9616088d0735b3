"""The in-memory split used by the short training experiments (experiments/inmemory.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from experiments.inmemory import augment, load_split, logits, to_input
from glmix_viz.images import IMAGENET_MEAN, IMAGENET_STD
from wsss.emojivoc import make_emojivoc
from wsss.voc import VOCLayout


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_emojivoc(tmp_path_factory.mktemp("voc") / "ev", train=3, val=1, seed=5, progress=False)


def test_load_split_matches_the_files_and_labels(voc):
    layout = VOCLayout(voc)
    images, labels = load_split(layout, "train", 32, progress=False)
    ids = layout.ids("train")
    assert images.dtype == torch.uint8 and images.shape == (len(ids), 32, 32, 3)
    for k, i in enumerate(ids):
        by_hand = np.asarray(Image.open(layout.image(i)).convert("RGB").resize((32, 32), Image.BILINEAR))
        np.testing.assert_array_equal(images[k].numpy(), by_hand)
        np.testing.assert_array_equal(labels[k].numpy(), layout.image_labels([i])[i])
    assert labels.dtype == torch.float32 and labels.sum() > 0


def test_to_input_normalises_each_channel_by_hand():
    images = torch.randint(0, 256, (2, 4, 4, 3), dtype=torch.uint8)
    x = to_input(images)
    assert x.shape == (2, 3, 4, 4)
    for c in range(3):
        want = (images[..., c].float() / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(x[:, c], want)


def test_augment_is_a_flip_and_a_circular_shift_of_the_input():
    images = torch.randint(0, 256, (6, 20, 20, 3), dtype=torch.uint8)
    torch.manual_seed(0)
    out = augment(images, np.random.default_rng(1))
    shift = np.random.default_rng(1).integers(-2, 3, 2)  # a tenth of 20 px, the same draw
    plain = to_input(images)
    for k in range(len(images)):
        back = torch.roll(out[k], (-int(shift[0]), -int(shift[1])), (1, 2))
        same, flipped = torch.equal(back, plain[k]), torch.equal(back, plain[k].flip(2))
        assert same or flipped, k
    # the same seeds give the same batch
    torch.manual_seed(0)
    torch.testing.assert_close(augment(images, np.random.default_rng(1)), out)


def test_logits_batches_like_one_call_and_restores_the_mode():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = torch.randint(0, 256, (5, 8, 8, 3), dtype=torch.uint8)
    net.train()
    out = logits(net, images, batch=2)
    assert net.training
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(out, net(to_input(images)).numpy(), rtol=1e-5, atol=1e-6)
    logits(net, images)
    assert not net.training
