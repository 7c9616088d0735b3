"""Confusion matrices of label maps against VOC-style masks, and the scores read from them (no torch).

Shared by the slot metrics (:mod:`glmix_viz.analysis.segments`, oracle labellings) and the pseudo-label
scores (:mod:`wsss.metrics`). For ``n`` classes the matrix ``M`` is ``(n, n + 1)``: ``M[g, p]`` counts pixels
of ground-truth class ``g`` predicted as ``p``; the last column counts pixels the prediction leaves at the
ignore index (unlabelled: misses). Ground-truth pixels at the ignore index (VOC's 255 void) are left out,
as in chainercv and IRN::

    IoU_c = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c])
    mIoU  = nanmean_c IoU_c       (a class absent from both is NaN, left out)
    pixel accuracy = trace(M) / M.sum()
"""
from __future__ import annotations

import numpy as np

from .voc import IGNORE_INDEX, VOC_CLASSES

__all__ = ["IGNORE_INDEX", "confusion_matrix", "iou_from_confusion", "mean_iou", "pixel_accuracy"]


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, n_class: int = len(VOC_CLASSES),
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion counts of one label map against its mask.

    Shape:
        ``(H, W)``, ``(H, W)`` (any equal shapes) -> ``(n_class, n_class + 1)`` int64.

    Raises:
        ValueError: shapes differ, or values outside ``0..n_class-1`` and ``ignore_index``.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    valid = gt != ignore_index
    g = gt[valid].astype(np.int64)
    p = pred[valid].astype(np.int64)
    p = np.where(p == ignore_index, n_class, p)
    for name, arr, hi in (("ground truth", g, n_class - 1), ("prediction", p, n_class)):
        if arr.size and (arr.min() < 0 or arr.max() > hi):
            raise ValueError(f"{name} has values outside 0..{n_class - 1} and {ignore_index}: "
                             f"{np.unique(arr)[:10]}")
    return np.bincount(g * (n_class + 1) + p, minlength=n_class * (n_class + 1)).reshape(n_class, n_class + 1)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU ``(n,)`` in 0..1 from an ``(n, n + 1)`` confusion matrix; NaN for absent classes."""
    n = confusion.shape[0]
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    union = confusion.sum(1) + confusion[:, :n].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU (0..1) over the classes present in ground truth or prediction; NaN if none is."""
    iou = iou_from_confusion(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Correct pixels over scored pixels (0..1); NaN when none was scored."""
    total = confusion.sum()
    n = confusion.shape[0]
    return float(np.trace(confusion[:, :n]) / total) if total else float("nan")
