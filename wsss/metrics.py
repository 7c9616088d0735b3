"""Semantic segmentation scores: confusion matrix, IoU, mIoU, pixel accuracy.

The confusion matrix and IoU are :mod:`glmix_viz.confusion`'s (the slot metrics use the same):
for ``n`` classes ``M`` is ``(n, n + 1)``, ``M[g, p]`` counts pixels of ground-truth class ``g``
predicted as ``p``, the extra last column pixels the prediction leaves unlabeled (255), which are
misses; ground-truth 255 (void) pixels are ignored, as in chainercv and IRN. Then::

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

from glmix_viz.confusion import confusion_matrix, iou_from_confusion, mean_iou, pixel_accuracy

from .voc import VOC_CLASSES

__all__ = ["confusion_matrix", "iou_from_confusion", "summarize", "ConfusionAccumulator"]


def summarize(confusion: np.ndarray, class_names: Sequence[str] = VOC_CLASSES) -> Dict[str, object]:
    """``{"miou", "pixel_accuracy", "iou": {class: IoU or None}, "pixels"}`` from a confusion matrix."""
    iou = iou_from_confusion(confusion)
    return {
        "miou": mean_iou(confusion),
        "pixel_accuracy": pixel_accuracy(confusion),
        "iou": {name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, iou)},
        "pixels": int(confusion.sum()),
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
