"""Semantic segmentation scores: confusion matrix, IoU, mIoU, pixel accuracy.

For ``n`` classes the confusion matrix ``M`` is ``(n, n + 1)``: ``M[g, p]``
counts pixels of ground-truth class ``g`` predicted as ``p``; the extra last
column counts pixels the prediction leaves unlabeled (255), which are misses.
Ground-truth 255 (void) pixels are ignored, as in chainercv and IRN. Then::

    IoU_c = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c])
    mIoU  = nanmean_c IoU_c       (a class absent from both is NaN, left out)
    pixel accuracy = trace(M) / M.sum()

| input | shape | values |
| --- | --- | --- |
| prediction | (H, W) | 0..n-1, 255 = unlabeled |
| ground truth | (H, W) | 0..n-1, 255 = void |
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from .voc import IGNORE_INDEX, VOC_CLASSES

__all__ = ["confusion_matrix", "iou_from_confusion", "summarize", "ConfusionAccumulator"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n_class: int = len(VOC_CLASSES)) -> np.ndarray:
    """Confusion counts of one prediction against its ground truth.

    Returns:
        ``(n_class, n_class + 1)`` int64.

    Raises:
        ValueError: shapes differ, or values outside ``0..n_class-1`` and 255.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    valid = gt != IGNORE_INDEX
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    p = np.where(p == IGNORE_INDEX, n_class, p)
    for name, arr, hi in (("ground truth", g, n_class - 1), ("prediction", p, n_class)):
        if arr.size and (arr.min() < 0 or arr.max() > hi):
            raise ValueError(f"{name} has values outside 0..{n_class - 1} and {IGNORE_INDEX}: "
                             f"{np.unique(arr)[:10]}")
    return np.bincount(g * (n_class + 1) + p, minlength=n_class * (n_class + 1)).reshape(n_class, n_class + 1)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU ``(n,)`` from an ``(n, n + 1)`` confusion matrix; NaN for absent classes."""
    n = confusion.shape[0]
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    union = confusion.sum(1) + confusion[:, :n].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def summarize(confusion: np.ndarray, class_names: Sequence[str] = VOC_CLASSES) -> Dict[str, object]:
    """``{"miou", "pixel_accuracy", "iou": {class: IoU or None}, "pixels"}`` from a confusion matrix."""
    iou = iou_from_confusion(confusion)
    n = confusion.shape[0]
    total = confusion.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(np.trace(confusion[:, :n]) / total) if total else float("nan"),
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "pixels": int(total),
    }


class ConfusionAccumulator:
    """Streaming confusion matrix: ``add`` image by image (or batch by batch), then ``summary()``."""

    def __init__(self, n_class: int = len(VOC_CLASSES)) -> None:
        self.n_class = n_class
        self.confusion = np.zeros((n_class, n_class + 1), np.int64)
        self.count = 0

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        self.confusion += confusion_matrix(pred, gt, self.n_class)
        self.count += 1

    def add_many(self, pairs: Iterable[Tuple[np.ndarray, np.ndarray]]) -> None:
        for pred, gt in pairs:
            self.add(pred, gt)

    def summary(self, class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
        return summarize(self.confusion, class_names or VOC_CLASSES[: self.n_class])
