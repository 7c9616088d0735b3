"""Scores against brute-force counts on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from wsss.metrics import ConfusionAccumulator, confusion_matrix, iou_from_confusion, summarize


def brute_iou(preds, gts, n):
    ious = []
    for c in range(n):
        inter = union = 0
        for p, g in zip(preds, gts):
            valid = g != 255
            inter += np.logical_and(p == c, g == c)[valid].sum()
            union += np.logical_or(p == c, g == c)[valid].sum()
        ious.append(inter / union if union else np.nan)
    return np.array(ious)


def test_hand_worked_case():
    gt = np.array([[0, 0, 1], [1, 255, 2]])
    pred = np.array([[0, 1, 1], [255, 2, 2]])  # 255 in the prediction: unlabeled, a miss
    m = confusion_matrix(pred, gt, n_class=4)
    # class 0: tp 1, gt 2, pred 1 -> 1/2; class 1: tp 1, gt 2, pred 2 -> 1/3; class 2: 1/1; class 3: absent
    np.testing.assert_allclose(iou_from_confusion(m), [1 / 2, 1 / 3, 1.0, np.nan])
    s = summarize(m, ["a", "b", "c", "d"])
    assert s["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert s["iou"]["d"] is None
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    assert s["pixels"] == 5


def test_streaming_equals_all_at_once_equals_brute_force():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 6, (17, 23)) for _ in range(5)]
    for g in gts:
        g[rng.random(g.shape) < 0.1] = 255
    preds = [np.where(rng.random(g.shape) < 0.6, g, rng.integers(0, 6, g.shape)) for g in gts]
    for p in preds:
        p[p == 255] = 0
    acc = ConfusionAccumulator(6)
    acc.add_many(zip(preds, gts))
    whole = confusion_matrix(np.concatenate([p.ravel() for p in preds]),
                             np.concatenate([g.ravel() for g in gts]), 6)
    np.testing.assert_array_equal(acc.confusion, whole)
    np.testing.assert_allclose(iou_from_confusion(acc.confusion), brute_iou(preds, gts, 6))


def test_ground_truth_against_itself_is_100():
    gt = np.array([[0, 3, 255], [3, 3, 20]])
    s = summarize(confusion_matrix(gt, gt))
    assert s["miou"] == 1.0 and s["pixel_accuracy"] == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="prediction has values"):
        confusion_matrix(np.full((2, 2), 30), np.zeros((2, 2)))

