"""Mosaic training: tiles are the batch images shrunk into place, per-tile scores are brute-force means."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F

import glmix_viz  # noqa: F401
from wsss.mosaic import Tiling, make_mosaics, position_negatives, tile_logits, whole_image_tiling


def batch(B=6, S=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, 3, S, S, generator=g)
    y = torch.eye(20)[:B]  # image i has class i only: a tile's labels name its source image
    return x, y


def test_fraction_zero_is_the_plain_batch():
    x, y = batch()
    xm, tiling = make_mosaics(x, y, fraction=0.0, stride=32, rng=np.random.default_rng(0))
    assert torch.equal(xm, x)
    assert torch.equal(tiling.index, torch.arange(6).view(6, 1, 1).expand(6, 3, 3))
    assert torch.equal(tiling.labels, y)


def test_tiles_are_the_source_images_resized_on_the_output_grid():
    x, y = batch()
    xm, tiling = make_mosaics(x, y, fraction=1.0, stride=32, rng=np.random.default_rng(3))
    assert tiling.labels.shape[0] > 6  # every image became at least two tiles
    for i in range(6):
        tiles = tiling.index[i].unique()
        assert len(tiles) >= 2
        for t in tiles:
            rows, cols = torch.nonzero(tiling.index[i] == t, as_tuple=True)
            r0, r1, c0, c1 = (rows.min().item(), rows.max().item() + 1,
                              cols.min().item(), cols.max().item() + 1)
            assert (tiling.index[i, r0:r1, c0:c1] == t).all()  # a tile is a rectangle of output cells
            src = int(tiling.labels[t].argmax())
            expected = F.interpolate(x[src:src + 1], size=(32 * (r1 - r0), 32 * (c1 - c0)), mode="bilinear",
                                     align_corners=False, antialias=True)[0]
            torch.testing.assert_close(xm[i, :, 32 * r0:32 * r1, 32 * c0:32 * c1], expected)


def test_same_seed_same_mosaics():
    x, y = batch()
    a = make_mosaics(x, y, fraction=0.5, stride=32, rng=np.random.default_rng(7))
    b = make_mosaics(x, y, fraction=0.5, stride=32, rng=np.random.default_rng(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].index, b[1].index)


def test_tile_logits_are_means_of_per_position_logits():
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20).eval()
    x, y = batch(B=3)
    xm, tiling = make_mosaics(x, y, fraction=1.0, stride=32, rng=np.random.default_rng(1))
    with torch.no_grad():
        feats = model.forward_features(xm)
        got = tile_logits(model, feats, tiling)
        per_pos = torch.einsum("oc,bchw->bhwo", model.head.weight, feats) + model.head.bias
        for t in range(tiling.labels.shape[0]):
            torch.testing.assert_close(got[t], per_pos[tiling.index == t].mean(0), atol=1e-5, rtol=1e-5)
        # plain images: one tile each, the model's own logits (global average pooling)
        plain = whole_image_tiling(y, (3, 3))
        assert plain.index.tolist() == Tiling(torch.arange(3).view(3, 1, 1).expand(3, 3, 3), y).index.tolist()
        torch.testing.assert_close(tile_logits(model, model.forward_features(x), plain), model(x),
                                   atol=1e-5, rtol=1e-5)


def test_position_negatives_equal_a_brute_force_count():
    """Mean over (position, class absent from the position's tile) of softplus(score), counted one by one."""
    torch.manual_seed(0)
    model = timm.create_model("test_glnet", num_classes=20).eval()
    x, _ = batch(B=3)
    y = (torch.rand(3, 20, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    xm, tiling = make_mosaics(x, y, fraction=1.0, stride=32, rng=np.random.default_rng(0))
    with torch.no_grad():
        feats = model.forward_features(xm)
        got = position_negatives(model, feats, tiling).item()
        total, count = 0.0, 0
        for b, i, j in np.ndindex(*tiling.index.shape):
            labels = tiling.labels[tiling.index[b, i, j]]
            scores = model.head(feats[b, :, i, j])
            for c in np.flatnonzero(labels.numpy() == 0):
                total, count = total + F.softplus(scores[c]).item(), count + 1
    assert got == pytest.approx(total / count, rel=1e-5)


def test_bad_input_size_is_a_clear_error():
    x, y = batch(S=80)
    with pytest.raises(ValueError, match="multiple of the model's stride 32"):
        make_mosaics(x, y, fraction=1.0, stride=32, rng=np.random.default_rng(0))
