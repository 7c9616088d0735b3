"""The figures of ``glmix-wsss report`` as PNG bytes (matplotlib, Agg canvas, no pyplot state).

Every function takes numbers or arrays and returns a PNG; :mod:`wsss.report`
lays them out. Classes are drawn in the VOC palette, so a class has the same
colour in the bars, the legends and the masks.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glmix_viz.figures.report import class_overlay as overlay  # shared with glmix-viz evaluate
from glmix_viz.figures.report import png_bytes

from .voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE

__all__ = ["png_bytes", "iou_bars", "precision_recall_bars", "confusion_heatmap", "gallery_row",
           "overlay", "UNLABELED"]

UNLABELED = "unlabeled / void"  # label 255: a prediction's unlabeled pixels, the ground truth's void
DPI = 100


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI)


def _colour(label: int) -> Tuple[float, float, float]:
    r, g, b = VOC_PALETTE[label]
    return r / 255, g / 255, b / 255


def _class_axis(ax, names: Sequence[str]) -> None:
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 112)  # room for the values after the bars
    ax.set_xticks(range(0, 101, 20))
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def iou_bars(iou: Dict[str, Optional[float]], miou: float) -> bytes:
    """Per-class IoU (%) as horizontal bars in the classes' colours; ``None`` (absent) is written as such."""
    names = list(iou)
    values = [0.0 if v is None else 100 * v for v in iou.values()]
    fig = _figure(5.0, 0.24 * len(names) + 0.8)
    ax = fig.add_subplot()
    ax.barh(range(len(names)), values, color=[_colour(i) for i in range(len(names))], edgecolor="black",
            linewidth=0.5)
    for row, v in enumerate(iou.values()):
        ax.text(1 if v is None else 100 * v + 1, row, "absent" if v is None else f"{100 * v:.1f}",
                va="center", fontsize=7, color="grey" if v is None else "black")
    if np.isfinite(miou):
        ax.axvline(100 * miou, color="black", linestyle="--", linewidth=1)
        ax.set_title(f"mIoU {100 * miou:.2f}", fontsize=9)
    _class_axis(ax, names)
    ax.set_xlabel("IoU (%)")
    return png_bytes(fig)


def precision_recall_bars(names: Sequence[str], precision: Sequence[Optional[float]],
                          recall: Sequence[Optional[float]]) -> bytes:
    """Per-class precision and recall (%) side by side; a class without pixels has no bar."""
    fig = _figure(5.0, 0.24 * len(names) + 0.8)
    ax = fig.add_subplot()
    rows = np.arange(len(names))
    for offset, values, label, colour in ((-0.2, precision, "precision", "#1f77b4"),
                                          (0.2, recall, "recall", "#ff7f0e")):
        ax.barh(rows + offset, [0.0 if v is None else 100 * v for v in values], height=0.4, label=label,
                color=colour)
    _class_axis(ax, names)
    ax.set_xlabel("%")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("precision and recall", fontsize=9)
    return png_bytes(fig)


def confusion_heatmap(normalised: np.ndarray, row_names: Sequence[str], column_names: Sequence[str]) -> bytes:
    """A row-normalised confusion matrix (rows: ground truth, columns: prediction) as a heat map, cells of
    at least 1% written in percent."""
    rows, cols = normalised.shape
    fig = _figure(0.3 * cols + 2.4, 0.3 * rows + 1.2)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(normalised) * 100, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for (r, c), v in np.ndenumerate(normalised):
        if np.isfinite(v) and v >= 0.01:
            ax.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                    color="white" if v > 0.6 else "black")
    ax.set_xticks(range(cols), column_names, rotation=90, fontsize=8)
    ax.set_yticks(range(rows), row_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="% of the row's pixels")
    return png_bytes(fig)


def _label_points(mask: np.ndarray) -> List[Tuple[int, float, float]]:
    """``(class, x, y)`` for each foreground class of ``mask``: its pixel farthest from any other label."""
    from scipy import ndimage

    out = []
    for label in np.unique(mask):
        if label == 0 or label == IGNORE_INDEX or label >= len(VOC_CLASSES):
            continue
        depth = ndimage.distance_transform_edt(np.pad(mask == label, 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
        out.append((int(label), float(x), float(y)))
    return out


def gallery_row(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, titles: Sequence[str]) -> bytes:
    """Image | ground truth | prediction, the masks as palette overlays with class names and a legend of the
    classes either holds.

    Args:
        image: ``(H, W, 3)`` uint8.
        gt, pred: ``(H, W)`` uint8 labels, 255 void (ground truth) or unlabeled (prediction).
        titles: one per panel.
    """
    from matplotlib.patches import Patch

    h, w = gt.shape
    panel = 3.0  # inches of the longer side
    pw, ph = (panel, panel * h / w) if w >= h else (panel * w / h, panel)
    width, height = 3 * pw + 0.2, ph + 0.7  # inches: 0.1 between panels, the legend below, titles above
    fig = _figure(width, height)
    for column, (array, mask, title) in enumerate(((image, None, titles[0]),
                                                   (overlay(image, gt), gt, titles[1]),
                                                   (overlay(image, pred), pred, titles[2]))):
        ax = fig.add_axes((column * (pw + 0.1) / width, 0.4 / height, pw / width, ph / height))
        ax.imshow(array, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        for label, x, y in _label_points(mask) if mask is not None else ():
            ax.text(x, y, VOC_CLASSES[label], ha="center", va="center", fontsize=7,
                    bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor=_colour(label),
                              alpha=0.85))
    present = sorted(set(np.unique(gt).tolist()) | set(np.unique(pred).tolist()))
    handles = [Patch(facecolor=_colour(v), edgecolor="black", linewidth=0.5,
                     label=UNLABELED if v == IGNORE_INDEX else VOC_CLASSES[v])
               for v in present if v < len(VOC_CLASSES) or v == IGNORE_INDEX]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    return png_bytes(fig)
