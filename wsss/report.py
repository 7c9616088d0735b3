"""``glmix-wsss report``: pseudo-masks against a split's ground truth as one self-contained HTML page.

The page (``wsss/templates/report.html``) holds per-class IoU bars, precision
and recall, a row-normalised confusion matrix, and a gallery of the worst and
best images by per-image mIoU (image | ground truth | pseudo-mask); its images
are embedded as base64 PNGs, so it opens offline, anywhere. Its numbers are
also embedded as JSON (``<script type="application/json" id="report-data">``):
``summary`` is what ``glmix-wsss score --json`` writes for the same masks.

Per-image mIoU: the mean IoU, over the classes in the image's ground truth or
prediction, of that image alone. Precision of a class: its true positives
over its predicted pixels; recall: over its ground-truth pixels (a pixel left
unlabeled, 255, is a miss). Void ground truth is ignored throughout, as in
:mod:`wsss.metrics`.
"""
from __future__ import annotations

import html
import json
import logging
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from glmix_viz import __version__
from glmix_viz.figures.report import finite as _finite
from glmix_viz.figures.report import img_tag as _img
from glmix_viz.figures.report import swatch
from glmix_viz.fileio import atomic_write

from .metrics import confusion_matrix, iou_from_confusion
from .voc import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES, VOC_PALETTE, VOCLayout, read_mask

__all__ = ["ImageScore", "ScoredMasks", "score_masks", "image_miou", "precision_recall", "row_normalised",
           "pick_gallery", "summary_from_json", "render_report", "write_report", "GALLERY_SIDE"]

_logger = logging.getLogger("wsss")

PathLike = Union[str, Path]
GALLERY_SIDE = 300  # px: the longer side of a gallery panel
_SCORE_JSON = "the JSON of glmix-wsss score --json"


@dataclass(frozen=True)
class ImageScore:
    """One image's score against its ground truth."""

    image_id: str
    miou: float  # NaN: neither mask labels a pixel (all void)
    pixel_accuracy: float


@dataclass
class ScoredMasks:
    """A folder of predictions scored against a split: the summed confusion and each image's score."""

    confusion: np.ndarray  # (21, 22) int64, as wsss.metrics.confusion_matrix
    images: List[ImageScore]
    missing: List[str]  # listed ids without a prediction


def image_miou(confusion: np.ndarray) -> float:
    """mIoU of one image's confusion matrix: the classes in its ground truth or prediction."""
    iou = iou_from_confusion(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def score_masks(pred_dir: PathLike, layout: VOCLayout, ids: Sequence[str], *,
                progress: bool = False) -> ScoredMasks:
    """Score ``pred_dir/<id>.png`` against each id's ground-truth mask.

    Raises:
        ValueError: a prediction that does not fit its ground truth (shape, values), naming its file.
    """
    from tqdm import tqdm

    pred_dir = Path(pred_dir)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    images: List[ImageScore] = []
    missing: List[str] = []
    for image_id in tqdm(ids, desc="report", unit="img", disable=not progress):
        path = pred_dir / f"{image_id}.png"
        if not path.is_file():
            missing.append(image_id)
            continue
        try:
            confusion = confusion_matrix(read_mask(path), read_mask(layout.mask(image_id)))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
        total += confusion
        pixels = confusion.sum()
        accuracy = float(np.trace(confusion[:, :NUM_CLASSES]) / pixels) if pixels else float("nan")
        images.append(ImageScore(image_id, image_miou(confusion), accuracy))
    return ScoredMasks(total, images, missing)


def precision_recall(confusion: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-class precision and recall ``(n,)`` from an ``(n, n + 1)`` confusion matrix; NaN where a class
    has no predicted (precision) or ground-truth (recall) pixels."""
    n = confusion.shape[0]
    tp = np.diag(confusion[:, :n]).astype(np.float64)
    predicted, actual = confusion[:, :n].sum(0), confusion.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(predicted > 0, tp / np.maximum(predicted, 1), np.nan),
                np.where(actual > 0, tp / np.maximum(actual, 1), np.nan))


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each ground-truth row divided by its pixels (NaN rows for classes without any)."""
    rows = confusion.sum(1, keepdims=True).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, confusion / np.maximum(rows, 1), np.nan)


def pick_gallery(images: Sequence[ImageScore], k: int) -> Tuple[List[ImageScore], List[ImageScore]]:
    """The ``k`` worst images (lowest mIoU first) and the ``k`` best (highest first), never one image in
    both: with fewer than ``2 k`` images they share them out. Ties keep the split's order; images without
    a score (NaN) are left out."""
    scored = sorted((i for i in images if math.isfinite(i.miou)), key=lambda i: i.miou)
    n_best = min(k, len(scored) // 2)
    n_worst = min(k, len(scored) - n_best)
    worst = scored[:n_worst]
    best = sorted(scored[n_worst:], key=lambda i: -i.miou)[:n_best]
    return worst, best


def summary_from_json(path: PathLike) -> Dict:
    """The summary ``glmix-wsss score --json`` wrote, checked.

    Raises:
        FileNotFoundError, ValueError: one line naming the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected {_SCORE_JSON})")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err}); expected {_SCORE_JSON}") from None
    if isinstance(data, dict) and "sweep" in data:
        raise ValueError(f"{path}: a score --sweep-bg result; expected {_SCORE_JSON} without --sweep-bg")
    iou = data.get("iou") if isinstance(data, dict) else None
    if (not isinstance(iou, dict) or list(iou) != list(VOC_CLASSES)
            or not all(v is None or isinstance(v, (int, float)) for v in iou.values())
            or not isinstance(data.get("miou"), (int, float))):
        raise ValueError(f"{path}: no 'miou' and per-class 'iou' of the 21 VOC classes; expected "
                         f"{_SCORE_JSON}")
    if "confusion" in data:
        confusion = np.asarray(data["confusion"], dtype=object)
        if (confusion.shape != (NUM_CLASSES, NUM_CLASSES + 1)
                or not all(isinstance(v, int) and v >= 0 for v in confusion.reshape(-1))):
            raise ValueError(f"{path}: 'confusion' is not a 21x22 matrix of pixel counts; expected "
                             f"{_SCORE_JSON}")
    return data


def _pct(value: Optional[float], absent: str = "&ndash;") -> str:
    return absent if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _swatch(label: int) -> str:
    return swatch(VOC_PALETTE[label])


def _class_table(iou: Dict, precision: Optional[np.ndarray], recall: Optional[np.ndarray],
                 confusion: Optional[np.ndarray]) -> str:
    head = "<tr><th>class</th><th>IoU %</th>"
    if confusion is not None:
        head += "<th>precision %</th><th>recall %</th><th>ground-truth px</th><th>predicted px</th>"
    rows = [f"<table class=\"classes\">\n{head}</tr>"]
    for c, (name, value) in enumerate(iou.items()):
        cells = f"<td>{_swatch(c)}{html.escape(name)}</td><td>{_pct(value, 'absent')}</td>"
        if confusion is not None:
            cells += (f"<td>{_pct(precision[c])}</td><td>{_pct(recall[c])}</td>"
                      f"<td>{int(confusion[c].sum())}</td><td>{int(confusion[:, c].sum())}</td>")
        rows.append(f"<tr>{cells}</tr>")
    return "\n".join(rows) + "\n</table>"


def _legend() -> str:
    from .report_figures import UNLABELED

    items = [f'<span class="item">{_swatch(c)}{html.escape(name)}</span>'
             for c, name in enumerate(VOC_CLASSES)]
    items.append(f'<span class="item">{_swatch(IGNORE_INDEX)}{html.escape(UNLABELED)} (255)</span>')
    return "\n".join(items)


def _gallery_png(layout: VOCLayout, pred_dir: Path, score: ImageScore) -> bytes:
    """One gallery row: the image, its ground truth and prediction at most ``GALLERY_SIDE`` px."""
    from PIL import Image

    from glmix_viz.images import load_image

    from .report_figures import gallery_row

    gt = read_mask(layout.mask(score.image_id))
    pred = read_mask(pred_dir / f"{score.image_id}.png")
    h, w = gt.shape
    f = min(1.0, GALLERY_SIDE / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    image = load_image(layout.image(score.image_id), max_side=10**6).resize(size, Image.Resampling.LANCZOS)

    def small(mask: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))

    return gallery_row(np.asarray(image), small(gt), small(pred),
                       (score.image_id, "ground truth", f"pseudo-mask: mIoU {_pct(score.miou)}"))


def _gallery(layout: VOCLayout, pred_dir: Path, worst: List[ImageScore], best: List[ImageScore],
             progress: bool) -> str:
    from tqdm import tqdm

    bar = tqdm(total=len(worst) + len(best), desc="gallery", unit="img", disable=not progress)
    parts = []
    for what, scores in (("worst", worst), ("best", best)):
        parts.append(f'<h3 id="{what}">{what.capitalize()} {len(scores)} by per-image mIoU</h3>')
        for rank, score in enumerate(scores, 1):
            png = _gallery_png(layout, pred_dir, score)
            parts.append(f'<figure class="{what}" data-id="{html.escape(score.image_id)}">'
                         f"{_img(png, f'{score.image_id}: image, ground truth, pseudo-mask')}"
                         f"<figcaption>{what} {rank}: {html.escape(score.image_id)}, mIoU "
                         f"{_pct(score.miou)}, pixel accuracy {_pct(score.pixel_accuracy)}</figcaption>"
                         "</figure>")
            bar.update(1)
    bar.close()
    return "\n".join(parts)


def render_report(summary: Dict, *, source: str, scored: Optional[ScoredMasks] = None,
                  layout: Optional[VOCLayout] = None, pred_dir: Optional[PathLike] = None, gallery: int = 6,
                  progress: bool = False) -> str:
    """The report page as HTML text.

    Args:
        summary: what ``glmix-wsss score --json`` writes (with ``confusion`` for the confusion matrix,
            precision and recall; without it those parts say so).
        source: one line on where the numbers come from (shown under the title).
        scored, layout, pred_dir: the scored masks, for the per-image scores and the gallery (``None``:
            the page has neither).
        gallery: images in each of the gallery's worst and best lists.
    """
    from . import report_figures as figures

    names = list(VOC_CLASSES)
    confusion = np.asarray(summary["confusion"], np.int64) if "confusion" in summary else None
    precision = recall = None
    data: Dict = {"summary": summary, "source": source}
    pr_figure = ""
    if confusion is not None:
        precision, recall = precision_recall(confusion)
        data["precision"] = dict(zip(names, precision.tolist()))
        data["recall"] = dict(zip(names, recall.tolist()))
        bars = figures.precision_recall_bars(names, _finite(precision.tolist()), _finite(recall.tolist()))
        pr_figure = (f"<figure>{_img(bars, 'precision and recall per class')}"
                     "<figcaption>Precision and recall per class.</figcaption></figure>")
        heatmap = figures.confusion_heatmap(row_normalised(confusion), names, [*names, "unlabeled"])
        confusion_section = (
            f"<figure>{_img(heatmap, 'confusion matrix')}<figcaption>Rows: ground-truth class; columns: "
            "predicted class (the last: left unlabeled, 255); each row in % of its pixels.</figcaption>"
            "</figure>")
    else:
        confusion_section = ('<p class="missing">Not in the score file (written by an older glmix-wsss '
                             "score): rerun <code>glmix-wsss score --json</code>, or report from the masks "
                             "(<code>--pred</code>, <code>--voc-root</code>).</p>")
    if scored is not None and layout is not None and pred_dir is not None:
        worst, best = pick_gallery(scored.images, gallery)
        data["images"] = [{"id": i.image_id, "miou": i.miou, "pixel_accuracy": i.pixel_accuracy}
                          for i in scored.images]
        data["gallery"] = {"worst": [i.image_id for i in worst], "best": [i.image_id for i in best]}
        gallery_section = (_gallery(layout, Path(pred_dir), worst, best, progress) if worst or best
                           else '<p class="note">No image to show (--gallery 0, or no image scored).</p>')
    else:
        gallery_section = ('<p class="missing">Needs the masks: report from <code>--pred</code> and '
                           "<code>--voc-root</code>, not a score file.</p>")
    split = summary.get("split")
    headline = [("mIoU", f"{_pct(summary['miou'])} %")]
    if summary.get("pixel_accuracy") is not None:
        headline.append(("pixel accuracy", f"{_pct(summary['pixel_accuracy'])} %"))
    for key, label in (("images", "images scored"), ("missing", "listed ids without a prediction"),
                       ("pixels", "pixels scored (void ignored)")):
        if key in summary:
            headline.append((label, str(summary[key])))
    if summary.get("missing_ids"):
        headline.append(("e.g.", html.escape(", ".join(summary["missing_ids"][:5]))))
    blob = json.dumps(_finite(data), separators=(",", ":"), allow_nan=False)
    page = Template(resources.files("wsss").joinpath("templates/report.html").read_text(encoding="utf-8"))
    return page.substitute(
        generator=f"glmix-wsss {__version__}",
        title=html.escape(f"Pseudo-masks of {split}" if split else "Pseudo-masks"),
        subtitle=html.escape(source),
        headline="\n".join(f"<tr><td>{label}</td><td>{value}</td></tr>" for label, value in headline),
        iou_figure=_img(figures.iou_bars(summary["iou"], float(summary["miou"])), "IoU per class"),
        precision_recall_figure=pr_figure,
        class_table=_class_table(summary["iou"], precision, recall, confusion),
        confusion_section=confusion_section,
        legend=_legend(),
        gallery_section=gallery_section,
        data=blob.replace("<", "\\u003c"),  # still JSON; nothing in it can end the script element
    )


def write_report(path: PathLike, page: str) -> Path:
    """Write the page atomically (a temporary file beside ``path``, then renamed)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
