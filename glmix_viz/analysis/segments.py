"""How semantically slots group pixels: segmentation metrics and same-size baselines.

Arrays in, numbers out; nothing is read or written. Inputs:

| input | shape | values |
| --- | --- | --- |
| dispatch maps | ``(K, h, w)`` | softmax over K of a block's slot logits, at its grid |
| segmentation | ``(H, W)`` | any integers, one per segment |
| class mask (VOC ``SegmentationClass``) | ``(H, W)`` | 0..20, 255 = ignore |
| instance mask (VOC ``SegmentationObject``) | ``(H, W)`` | 0 background, 1..254 instances, 255 border |

Definitions:

1. **Hard slot map** (:func:`slot_segments`): the dispatch maps upsampled
   bilinearly (``align_corners=False``) to the image size ``(H, W)``, argmax over
   K (first slot on exact ties), as the figures' hard grouping.
2. **Oracle labelling** (:func:`oracle_labels`): every segment takes the class
   holding most of its non-ignored pixels (ties: the lowest class index); a
   segment lying wholly under 255 is labelled 255 (those pixels never count).
   The label map goes into a confusion matrix (:func:`confusion_matrix`,
   :class:`ClassConfusion`) accumulated over a dataset: **oracle mIoU** is the
   mean IoU over the classes present in the ground truth or the prediction (as
   ``wsss/metrics.py`` and VOC scoring), **purity** the pixel accuracy over
   non-ignored pixels; both in percent. Purity is the share of pixels a
   segmentation keeps in segments of their own class; more segments never
   lower it (a segment per pixel gives 100), so compare at equal segment counts.
3. **ARI** (:func:`adjusted_rand`): scikit-learn's ``adjusted_rand_score``
   between the segmentation and the class mask over non-ignored pixels; the
   caller averages it over images. **FG-ARI** (:func:`foreground_ari`): the same
   against the instance mask over instance pixels (1..254) only. Degenerate
   cases follow scikit-learn: 1.0 when both sides have a single cluster (or
   each pixel its own), 0.0 when one side has one cluster and the other more;
   no pixel to score gives NaN (left out of means). ARI is an index (at most 1),
   not a percentage.
4. **Boundaries** (:func:`boundary_counts`): a pixel is a boundary pixel when its
   left or upper 4-neighbour has another label, so every label change is marked
   one pixel thick on its right/lower side (as the figures draw boundaries,
   :func:`boundary_map`). The ground-truth boundary (:func:`mask_boundary`)
   comes from the class mask with every 255 pixel first set to the label of the
   nearest valid pixel (``scipy.ndimage.distance_transform_edt``'s nearest
   index): the boundary then runs through the middle of VOC's 255 band. A
   predicted boundary pixel is matched when a ground-truth boundary pixel lies
   within ``tolerance`` (2 px, Euclidean, inclusive) and recall is the same the
   other way round: a distance criterion as in superpixel boundary recall, not
   BSDS's one-to-one matching. Predicted boundary pixels on 255 pixels that
   match nothing are left out of precision (the void is neither right nor
   wrong). Precision, recall and F are in percent; the counts are kept so a
   dataset sums matched and boundary pixels before dividing.
5. **Segment counts** (:func:`segment_count`, :func:`region_count`): distinct
   labels, and connected regions (each label's pixels split with
   8-connectivity, diagonal neighbours joined).
6. **Entropy** (:func:`dispatch_entropy`): the mean over the block's own
   ``h * w`` grid of each pixel's entropy of its distribution over K, in bits
   (``0 log 0 = 0``); optionally divided by ``log2 K`` (0 one-hot, 1 uniform).
7. **k representative groups** (:func:`group_segments`): each slot replaced by
   its k-medoids cluster (:func:`~glmix_viz.analysis.medoids.cluster_slots`,
   ``k = 4`` and seed 0 as the figures) on the hard slot map: at most ``k``
   labels, each a union of whole slots.
8. **Baselines** with ``n`` segments: :func:`slic_segments` (scikit-image SLIC,
   compactness 10 in CIELAB, connectivity enforced), :func:`grid_segments`
   (``rows x cols`` cells, :func:`grid_shape`), :func:`kmeans_segments`
   (k-means of a block's features at its grid, nearest upsampling). All are
   deterministic; every baseline's labels are ``0..m-1``.

:func:`segment_scores` gives one image's numbers (:class:`SegmentScores`);
:class:`SegmentScoreAccumulator` adds images into dataset numbers
(:class:`SegmentSummary`)::

    acc = SegmentScoreAccumulator()
    for maps, mask, inst in data:                         # (K, h, w), (H, W), (H, W)
        seg = slot_segments(maps, mask.shape)
        acc.update(seg, mask, inst, entropy=dispatch_entropy(maps))
    acc.summary().oracle_miou
"""
from __future__ import annotations

import hashlib
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch

from ..confusion import confusion_matrix as _confusion_matrix
from ..confusion import iou_from_confusion, mean_iou, pixel_accuracy
from ..voc import IGNORE_INDEX, VOC_CLASSES
from .maps import hard_assignment
from .medoids import SlotClusters, cluster_slots

__all__ = [
    "BoundaryCounts",
    "ClassConfusion",
    "SegmentScoreAccumulator",
    "SegmentScores",
    "SegmentSummary",
    "adjusted_rand",
    "boundary_counts",
    "boundary_map",
    "confusion_matrix",
    "dispatch_entropy",
    "foreground_ari",
    "grid_segments",
    "grid_shape",
    "group_segments",
    "kmeans_segments",
    "mask_boundary",
    "oracle_labels",
    "region_count",
    "segment_count",
    "segment_scores",
    "slic_segments",
    "slot_segments",
]

N_CLASS = len(VOC_CLASSES)
"""VOC: background and 20 object classes."""
IGNORE = IGNORE_INDEX
"""VOC's void label (object borders, difficult objects)."""
SLIC_COMPACTNESS = 10.0
"""SLIC's colour/space trade-off in CIELAB (scikit-image's default; the SLIC paper uses 1..40)."""

ArrayLike = Union[np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------- checks


def _as_numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(x: ArrayLike, name: str) -> np.ndarray:
    """An ``(H, W)`` integer label image."""
    a = _as_numpy(x)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) label image, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
    return a


def _same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b} shape {b.shape} differs from {name_a} shape {a.shape}")


def _class_mask(mask: ArrayLike, n_class: int, ignore_index: int, name: str = "mask") -> np.ndarray:
    m = _labels(mask, name)
    bad = (m != ignore_index) & ((m < 0) | (m >= n_class))
    if bad.any():
        raise ValueError(f"{name} has values outside 0..{n_class - 1} and {ignore_index}: "
                         f"{np.unique(m[bad])[:10]}")
    return m


def _maps(maps: ArrayLike, name: str = "maps", dims: str = "(K, h, w)") -> np.ndarray:
    m = _as_numpy(maps)
    if m.ndim != 3 or m.shape[0] < 1 or m[0].size == 0:
        hint = f" (one image of a batch: pass {name}[i])" if m.ndim == 4 else ""
        raise ValueError(f"{name} must be {dims} for one image and block, got shape {m.shape}{hint}")
    m = np.ascontiguousarray(m, dtype=np.float64)  # reductions sum in an order that follows the layout
    if not np.isfinite(m).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return m


def _dense_counts(labels: np.ndarray) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """``(labels as flat intp, np.bincount of them)`` when the labels are integers in ``0..4 size + 1023``.

    ``None`` otherwise (negative or large, sparse labels, no label): the callers then sort
    (``np.unique``). Counting takes one pass where sorting takes ``O(N log N)``; the answers are the same.
    """
    flat = labels.ravel()
    if flat.size == 0:
        return None
    if flat.dtype == bool:
        flat = flat.view(np.uint8)
    if flat.min() < 0 or flat.max() >= 4 * flat.size + 1024:
        return None
    flat = flat.astype(np.intp, copy=False)
    return flat, np.bincount(flat)


def _inverse_counts(labels: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``np.unique(labels, return_inverse=True, return_counts=True)[1:]``: flat int64 labels ``0..m-1`` in
    ascending order of the old ones, and each one's pixel count (int64)."""
    dense = _dense_counts(labels)
    if dense is None:
        _, inverse, counts = np.unique(labels.ravel(), return_inverse=True, return_counts=True)
        return inverse.astype(np.int64, copy=False), counts.astype(np.int64, copy=False)
    flat, counts = dense
    present = counts > 0
    lut = np.cumsum(present, dtype=np.int64) - 1
    return lut[flat], counts[present].astype(np.int64, copy=False)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered ``0..m-1`` in ascending order of the old labels."""
    return _inverse_counts(labels)[0].reshape(labels.shape)


def _size(size: Tuple[int, int], name: str = "size") -> Tuple[int, int]:
    try:
        H, W = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (H, W), two positive integers, got {size!r}") from None
    if H < 1 or W < 1:
        raise ValueError(f"{name} must be (H, W), two positive integers, got {size!r}")
    return H, W


# ----------------------------------------------------------------------------- slot segmentations


def slot_segments(maps: ArrayLike, size: Tuple[int, int]) -> np.ndarray:
    """Hard slot map: dispatch maps upsampled bilinearly to ``size``, argmax over K.

    Shape:
        ``(K, h, w)`` -> ``(H, W)`` int64 slot indices.
    """
    m = _as_numpy(maps)
    if m.ndim != 3:
        raise ValueError(f"maps must be (K, h, w) for one image and block, got shape {m.shape}")
    return np.asarray(hard_assignment(m, _size(size)), dtype=np.int64)


def group_segments(
    maps: ArrayLike,
    size: Tuple[int, int],
    k: int = 4,
    *,
    seed: int = 0,
    clusters: Optional[SlotClusters] = None,
    **cluster_kwargs,
) -> np.ndarray:
    """The hard slot map with each slot replaced by its k-medoids cluster (``k`` groups).

    Args:
        maps: ``(K, h, w)`` dispatch maps of one image and block.
        size: ``(H, W)`` image size.
        k: number of groups (4, as the figures).
        seed: seed of :func:`~glmix_viz.analysis.medoids.cluster_slots`.
        clusters: a clustering of these maps already computed (then ``k``,
            ``seed`` and ``cluster_kwargs`` are not used).
        cluster_kwargs: ``metric``, ``method``, ``init`` of ``cluster_slots``.

    Returns:
        ``(H, W)`` int64, each pixel's cluster position ``0..k-1`` (at most
        ``k`` labels; a group whose slots win no pixel is absent).
    """
    m = _maps(maps)
    if clusters is None:
        clusters = cluster_slots(m, k, seed=seed, **cluster_kwargs)
    if len(clusters.labels) != m.shape[0]:
        raise ValueError(f"clusters labels {len(clusters.labels)} slots, maps have K={m.shape[0]}")
    return clusters.labels[slot_segments(m, size)]


def dispatch_entropy(maps: ArrayLike, normalized: bool = False) -> float:
    """Mean per-pixel entropy (bits) of the distribution over K, at the block's own grid.

    Args:
        maps: ``(K, h, w)`` dispatch maps (sum to 1 over K at each pixel).
        normalized: divide by ``log2 K`` (0 for one-hot, 1 for uniform; NaN when K = 1).

    Raises:
        ValueError: not ``(K, h, w)``, negative, or not summing to 1 over K (logits?).
    """
    p = _maps(maps)
    if p.min() < -1e-6 or not np.allclose(p.sum(0), 1.0, atol=1e-3):
        raise ValueError("maps must be probabilities summing to 1 over K (dispatch maps, not logits)")
    p = np.clip(p, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
    h = float(-terms.sum(0).mean())
    if normalized:
        K = p.shape[0]
        return h / math.log2(K) if K > 1 else float("nan")
    return h


# ----------------------------------------------------------------------------- oracle labelling


def oracle_labels(
    segments: ArrayLike, mask: ArrayLike, n_class: int = N_CLASS, ignore_index: int = IGNORE
) -> np.ndarray:
    """Every segment labelled with the majority class of its non-ignored pixels.

    Ties go to the lowest class index; a segment with no non-ignored pixel gets
    ``ignore_index``.

    Shape:
        ``(H, W)``, ``(H, W)`` -> ``(H, W)`` int64 in ``0..n_class-1`` or ``ignore_index``.
    """
    seg = _labels(segments, "segments")
    gt = _class_mask(mask, n_class, ignore_index)
    _same_shape(seg, gt, "segments", "mask")
    idx = _consecutive(seg)
    n_seg = int(idx.max()) + 1
    valid = gt != ignore_index
    counts = np.bincount(idx[valid] * n_class + gt[valid].astype(np.int64),
                         minlength=n_seg * n_class).reshape(n_seg, n_class)
    lut = np.where(counts.any(1), counts.argmax(1), ignore_index).astype(np.int64)  # argmax: lowest on ties
    return lut[idx]


def confusion_matrix(
    pred: ArrayLike, gt: ArrayLike, n_class: int = N_CLASS, ignore_index: int = IGNORE
) -> np.ndarray:
    """Confusion counts ``M[g, p]`` of a label map against its mask, ignored pixels left out
    (:func:`glmix_viz.confusion.confusion_matrix`, which ``glmix-wsss score`` uses too).

    Shape:
        ``(H, W)``, ``(H, W)`` (any equal shapes) -> ``(n_class, n_class + 1)`` int64.

    Raises:
        ValueError: shapes differ, or values outside ``0..n_class-1`` and ``ignore_index``.
    """
    return _confusion_matrix(_as_numpy(pred), _as_numpy(gt), n_class, ignore_index)


def _iou_percent(confusion: np.ndarray) -> np.ndarray:
    return 100.0 * iou_from_confusion(confusion)


def _miou_percent(confusion: np.ndarray) -> float:
    return 100.0 * mean_iou(confusion)


def _accuracy_percent(confusion: np.ndarray) -> float:
    return 100.0 * pixel_accuracy(confusion)


class ClassConfusion:
    """A confusion matrix accumulated over images: ``update(pred, gt)``, then ``miou``, ``purity``.

    With oracle label maps (:func:`oracle_labels`) as ``pred``, ``miou`` is the
    oracle mIoU and ``purity`` the purity, both in percent.
    """

    def __init__(self, n_class: int = N_CLASS, ignore_index: int = IGNORE) -> None:
        self.n_class = int(n_class)
        self.ignore_index = int(ignore_index)
        self.confusion = np.zeros((self.n_class, self.n_class + 1), np.int64)
        self.images = 0

    def update(self, pred: ArrayLike, gt: ArrayLike) -> None:
        """Add one label map ``(H, W)`` against its mask ``(H, W)``."""
        self.add(confusion_matrix(pred, gt, self.n_class, self.ignore_index))

    def add(self, confusion: np.ndarray) -> None:
        """Add one image's ``(n_class, n_class + 1)`` confusion counts."""
        c = np.asarray(confusion)
        if c.shape != self.confusion.shape:
            raise ValueError(f"confusion must be {self.confusion.shape}, got shape {c.shape}")
        self.confusion += c.astype(np.int64)
        self.images += 1

    @property
    def iou(self) -> np.ndarray:
        """``(n_class,)`` IoU in percent; NaN for a class absent from ground truth and prediction."""
        return _iou_percent(self.confusion)

    @property
    def miou(self) -> float:
        """Mean IoU (percent) over the classes present in ground truth or prediction."""
        return _miou_percent(self.confusion)

    @property
    def purity(self) -> float:
        """Pixel accuracy (percent) over non-ignored pixels."""
        return _accuracy_percent(self.confusion)


# ----------------------------------------------------------------------------- ARI


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    """``sklearn.metrics.adjusted_rand_score(a, b)`` (scikit-learn 1.9's arithmetic, the same float); NaN
    for no sample.

    The pair confusion matrix as ``pair_confusion_matrix``: int64 sums over the contingency table (here
    dense, by counting), ``sum_ij c_ij n_k[j] = sum_k n_k**2`` and ``sum_ij c_ij n_c[i] = sum_c n_c**2``
    being the same integers; then Python ints and the same formula and special case.
    """
    if a.size == 0:
        return float("nan")
    ia, n_c = _inverse_counts(a)
    ib, n_k = _inverse_counts(b)
    cell = ia * len(n_k) + ib
    if len(n_c) * len(n_k) <= 4 * a.size + 1024:
        cells = np.bincount(cell)  # empty cells count 0: no change to the sums
    else:
        cells = np.unique(cell, return_counts=True)[1].astype(np.int64, copy=False)
    n_samples = np.int64(a.size)
    sum_squares = (cells * cells).sum()
    C = np.empty((2, 2), dtype=np.int64)
    C[1, 1] = sum_squares - n_samples
    C[0, 1] = (n_k * n_k).sum() - sum_squares
    C[1, 0] = (n_c * n_c).sum() - sum_squares
    C[0, 0] = n_samples**2 - C[0, 1] - C[1, 0] - sum_squares
    (tn, fp), (fn, tp) = C
    tn, fp, fn, tp = int(tn), int(fp), int(fn), int(tp)
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def adjusted_rand(segments: ArrayLike, mask: ArrayLike, ignore_index: int = IGNORE) -> float:
    """ARI between a segmentation and a class mask over the mask's non-ignored pixels.

    Equal to scikit-learn's ``adjusted_rand_score(mask[valid], segments[valid])``, the same float (its
    arithmetic, on a contingency table built by counting instead of sorting).

    Shape:
        ``(H, W)``, ``(H, W)`` -> float (NaN when every pixel is ignored).
    """
    seg, gt = _labels(segments, "segments"), _labels(mask, "mask")
    _same_shape(seg, gt, "segments", "mask")
    valid = gt != ignore_index
    return _ari(gt[valid], seg[valid])


def foreground_ari(segments: ArrayLike, instances: ArrayLike) -> float:
    """ARI against an instance mask over instance pixels (1..254) only.

    Shape:
        ``(H, W)``, ``(H, W)`` -> float (NaN when the image has no instance pixel).
    """
    seg, inst = _labels(segments, "segments"), _labels(instances, "instances")
    _same_shape(seg, inst, "segments", "instances")
    fg = (inst >= 1) & (inst <= 254)
    return _ari(inst[fg], seg[fg])


# ----------------------------------------------------------------------------- boundaries


@dataclass(frozen=True)
class BoundaryCounts:
    """Boundary pixel counts of one image (or, added up, of a dataset).

    Attributes:
        pred_matched: predicted boundary pixels within the tolerance of a ground-truth one.
        pred_total: predicted boundary pixels scored (unmatched ones on 255 pixels left out).
        gt_matched: ground-truth boundary pixels within the tolerance of a predicted one.
        gt_total: ground-truth boundary pixels.
    """

    pred_matched: int = 0
    pred_total: int = 0
    gt_matched: int = 0
    gt_total: int = 0

    def __add__(self, other: "BoundaryCounts") -> "BoundaryCounts":
        return BoundaryCounts(self.pred_matched + other.pred_matched, self.pred_total + other.pred_total,
                              self.gt_matched + other.gt_matched, self.gt_total + other.gt_total)

    @property
    def precision(self) -> float:
        """Percent; NaN with no predicted boundary pixel."""
        return 100.0 * self.pred_matched / self.pred_total if self.pred_total else float("nan")

    @property
    def recall(self) -> float:
        """Percent; NaN with no ground-truth boundary pixel."""
        return 100.0 * self.gt_matched / self.gt_total if self.gt_total else float("nan")

    @property
    def f(self) -> float:
        """Harmonic mean of precision and recall (percent); 0 when both are 0, NaN when one is NaN."""
        p, r = self.precision, self.recall
        if math.isnan(p) or math.isnan(r):
            return float("nan")
        return 2 * p * r / (p + r) if p + r > 0 else 0.0


def boundary_map(labels: ArrayLike) -> np.ndarray:
    """Pixels whose left or upper 4-neighbour has another label (right/lower side of each change).

    Shape:
        ``(H, W)`` -> ``(H, W)`` bool.
    """
    a = _labels(labels, "labels")
    edge = np.zeros(a.shape, bool)
    edge[:, 1:] |= a[:, 1:] != a[:, :-1]
    edge[1:, :] |= a[1:, :] != a[:-1, :]
    return edge


def mask_boundary(mask: ArrayLike, ignore_index: int = IGNORE) -> np.ndarray:
    """Ground-truth boundary: 255 pixels filled with the nearest valid label, then :func:`boundary_map`.

    The boundary runs through the middle of a 255 band. A mask with no valid
    pixel has no boundary.

    Shape:
        ``(H, W)`` -> ``(H, W)`` bool.
    """
    from scipy.ndimage import distance_transform_edt

    m = _labels(mask, "mask")
    void = m == ignore_index
    if void.all():
        return np.zeros(m.shape, bool)
    if void.any():
        _, (iy, ix) = distance_transform_edt(void, return_indices=True)
        m = m[iy, ix]
    return boundary_map(m)


def _near(target: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels within ``tolerance`` (Euclidean, inclusive) of a ``target`` pixel.

    ``distance_transform_edt(~target) <= tolerance``. Up to 8 px, the same set by dilating ``target`` with
    the disk of the offsets ``(dy, dx)`` whose distance ``sqrt(dy**2 + dx**2)`` (float64, as the EDT
    computes it) is within ``tolerance``: for each ``dy`` the ``dx`` form an interval ``-w..w``, so each
    row is dilated by ``w`` (growing one pixel at a time) and shifted by ``dy``. Only target pixels inside
    the image count, as in the EDT.
    """
    if not target.any():
        return np.zeros(target.shape, bool)
    if not tolerance <= 8:
        from scipy.ndimage import distance_transform_edt

        return distance_transform_edt(~target) <= tolerance
    r = int(math.floor(tolerance))
    d = np.arange(r + 1, dtype=np.float64)
    within = np.sqrt(d[:, None] ** 2 + d[None, :] ** 2) <= tolerance  # [|dy|, |dx|]
    widths = [int(np.flatnonzero(row).max()) for row in within]  # dy = 0: r itself, never empty
    H = target.shape[0]
    out = np.zeros(target.shape, bool)
    rows = target.copy()  # target dilated along rows by w
    w = 0
    for dy in range(r, -1, -1):  # widths grow as |dy| shrinks
        while w < widths[dy]:
            w += 1
            grown = rows.copy()
            grown[:, 1:] |= rows[:, :-1]
            grown[:, :-1] |= rows[:, 1:]
            rows = grown
        if dy == 0:
            out |= rows
        elif dy < H:
            out[dy:] |= rows[:-dy]
            out[:-dy] |= rows[dy:]
    return out


#: The ground-truth side of :func:`boundary_counts` for the last few masks, keyed by their content: one
#: image's mask is scored against many segmentations (every block, the groups, the baselines).
_MASK_SIDES: "OrderedDict[tuple, Tuple[np.ndarray, np.ndarray]]" = OrderedDict()


def _mask_side(gt: np.ndarray, tolerance: float, ignore_index: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(mask_boundary(gt), pixels within tolerance of it)``, cached by the mask's bytes."""
    key = (hashlib.sha1(np.ascontiguousarray(gt).view(np.uint8)).hexdigest(), gt.shape, str(gt.dtype),
           float(tolerance), int(ignore_index))
    if key in _MASK_SIDES:
        _MASK_SIDES.move_to_end(key)
        return _MASK_SIDES[key]
    gt_b = mask_boundary(gt, ignore_index)
    side = (gt_b, _near(gt_b, tolerance))
    for array in side:
        array.flags.writeable = False  # shared by the calls that hit the cache
    _MASK_SIDES[key] = side
    while len(_MASK_SIDES) > 4:
        _MASK_SIDES.popitem(last=False)
    return side


def boundary_counts(
    segments: ArrayLike, mask: ArrayLike, tolerance: float = 2.0, ignore_index: int = IGNORE
) -> BoundaryCounts:
    """Boundary matches of a segmentation against a class mask at ``tolerance`` pixels.

    Predicted boundary pixels (:func:`boundary_map`) are matched when a
    ground-truth boundary pixel (:func:`mask_boundary`) lies within
    ``tolerance`` (Euclidean, inclusive), and the other way round for recall.
    Unmatched predicted boundary pixels on ignored pixels are left out.

    Shape:
        ``(H, W)``, ``(H, W)`` -> :class:`BoundaryCounts`.
    """
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be a distance >= 0 in pixels, got {tolerance!r}")
    seg, gt = _labels(segments, "segments"), _labels(mask, "mask")
    _same_shape(seg, gt, "segments", "mask")
    pred_b = boundary_map(seg)
    gt_b, near_gt = _mask_side(gt, tolerance, ignore_index)
    pred_hit = pred_b & near_gt
    scored = pred_b & (pred_hit | (gt != ignore_index))
    gt_hit = gt_b & _near(pred_b, tolerance)
    return BoundaryCounts(int(pred_hit.sum()), int(scored.sum()), int(gt_hit.sum()), int(gt_b.sum()))


# ----------------------------------------------------------------------------- counts


def segment_count(segments: ArrayLike) -> int:
    """Number of distinct labels in ``(H, W)``."""
    seg = _labels(segments, "segments")
    dense = _dense_counts(seg)
    return int(np.unique(seg).size if dense is None else np.count_nonzero(dense[1]))


def region_count(segments: ArrayLike) -> int:
    """Number of connected regions: each label's pixels split with 8-connectivity, summed over labels.

    One pass of scikit-image's ``label`` (neighbours with equal values joined, diagonals too) over the
    labels renumbered ``0..m-1``, no value taken as background.
    """
    from skimage.measure import label

    idx = _consecutive(_labels(segments, "segments"))
    return int(label(idx, background=-1, connectivity=2, return_num=True)[1])


# ----------------------------------------------------------------------------- baselines


def grid_shape(height: int, width: int, n: int) -> Tuple[int, int]:
    """``(rows, cols)`` of a grid of about ``n`` cells with the image's aspect ratio.

    ``rows = round(sqrt(n * H / W))`` clipped to ``1..H``, then
    ``cols = round(n / rows)`` clipped to ``1..W`` (Python's round: halves to
    even); the grid has exactly ``rows * cols`` cells.
    """
    H, W = _size((height, width), "height, width")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of segments), got {n!r}")
    rows = min(H, max(1, round(math.sqrt(n * H / W))))
    cols = min(W, max(1, round(n / rows)))
    return rows, cols


def grid_segments(height: int, width: int, n: int) -> np.ndarray:
    """A regular grid of :func:`grid_shape` cells, numbered row by row.

    Pixel ``(y, x)`` is in cell ``(y * rows // H, x * cols // W)``.

    Shape:
        ``-> (H, W)`` int64 in ``0..rows*cols-1``, every label present.
    """
    rows, cols = grid_shape(height, width, n)
    r = np.arange(int(height)) * rows // int(height)
    c = np.arange(int(width)) * cols // int(width)
    return (r[:, None] * cols + c[None, :]).astype(np.int64)


def slic_segments(image: ArrayLike, n: int, compactness: float = SLIC_COMPACTNESS) -> np.ndarray:
    """SLIC superpixels (scikit-image) asking for ``n`` segments.

    CIELAB colour, ``compactness`` 10 (scikit-image's default), 10 iterations,
    connectivity enforced; SLIC has no randomness. The count it returns is
    near, usually below, ``n``.

    Shape:
        ``(H, W, 3)`` uint8 -> ``(H, W)`` int64 in ``0..m-1``.
    """
    from skimage.segmentation import slic

    img = _as_numpy(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {img.shape} dtype {img.dtype}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (number of segments), got {n!r}")
    seg = slic(img, n_segments=int(n), compactness=float(compactness), start_label=0, channel_axis=-1)
    return _consecutive(seg)


def _nearest(labels: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest upsampling as torch's ``mode='nearest'``: output ``y`` reads ``floor(y * h / H)``."""
    h, w = labels.shape
    H, W = size
    r = np.minimum(np.floor(np.arange(H) * (h / H)).astype(np.int64), h - 1)
    c = np.minimum(np.floor(np.arange(W) * (w / W)).astype(np.int64), w - 1)
    return labels[r[:, None], c[None, :]]


def kmeans_segments(
    features: ArrayLike,
    k: int = 64,
    size: Optional[Tuple[int, int]] = None,
    seed: int = 0,
    n_init: int = 4,
) -> np.ndarray:
    """k-means (scikit-learn, Lloyd, k-means++) of a block's pixel features at its grid.

    The features are clustered as given (no normalisation) in float64, on one
    OpenMP thread so that the labels are the same whatever the thread count;
    ``n_init`` runs from ``seed``. The labels are upsampled nearest to ``size``.

    Shape:
        ``(C, h, w)`` -> ``(H, W)`` (``(h, w)`` without ``size``) int64 in ``0..m-1``, ``m <= k``.

    Raises:
        ValueError: not ``(C, h, w)``, or ``k`` not in ``1..h*w``.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    f = _maps(features, "features", "(C, h, w)")
    C, h, w = f.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= h * w:
        raise ValueError(f"k must be an integer in 1..h*w={h * w}, got {k!r}")
    x = f.reshape(C, h * w).T
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when fewer distinct pixels than k
        km = KMeans(n_clusters=int(k), n_init=int(n_init), random_state=int(seed)).fit(x)
    labels = _consecutive(km.labels_.reshape(h, w))
    return labels if size is None else _nearest(labels, _size(size))


# ----------------------------------------------------------------------------- per image, per dataset


@dataclass(frozen=True, eq=False)
class SegmentScores:
    """One image's numbers for one segmentation.

    Attributes:
        confusion: ``(n_class, n_class + 1)`` int64 counts of its oracle labelling.
        purity: percent of non-ignored pixels whose segment's oracle class is theirs (NaN if none).
        ari: ARI over non-ignored pixels (NaN if none).
        fg_ari: FG-ARI over instance pixels (NaN without instance mask or instance pixel).
        boundary: boundary counts at the tolerance.
        segments: distinct labels.
        regions: 8-connected regions.
        entropy: the dispatch entropy given by the caller, or ``None``.
    """

    confusion: np.ndarray
    purity: float
    ari: float
    fg_ari: float
    boundary: BoundaryCounts
    segments: int
    regions: int
    entropy: Optional[float] = None


def segment_scores(
    segments: ArrayLike,
    mask: ArrayLike,
    instances: Optional[ArrayLike] = None,
    *,
    entropy: Optional[float] = None,
    tolerance: float = 2.0,
    n_class: int = N_CLASS,
    ignore_index: int = IGNORE,
) -> SegmentScores:
    """Every per-image number of a segmentation against its class (and instance) mask.

    Args:
        segments: ``(H, W)`` integer labels (a hard slot map, groups, a baseline).
        mask: ``(H, W)`` class mask, ``0..n_class-1`` and ``ignore_index``.
        instances: ``(H, W)`` instance mask (0 background, 1..254, 255 border), optional.
        entropy: the block's :func:`dispatch_entropy`, carried along.
        tolerance: boundary tolerance in pixels.
    """
    seg = _labels(segments, "segments")
    gt = _class_mask(mask, n_class, ignore_index)
    _same_shape(seg, gt, "segments", "mask")
    conf = confusion_matrix(oracle_labels(seg, gt, n_class, ignore_index), gt, n_class, ignore_index)
    return SegmentScores(
        confusion=conf,
        purity=_accuracy_percent(conf),
        ari=adjusted_rand(seg, gt, ignore_index),
        fg_ari=float("nan") if instances is None else foreground_ari(seg, instances),
        boundary=boundary_counts(seg, gt, tolerance, ignore_index),
        segments=segment_count(seg),
        regions=region_count(seg),
        entropy=None if entropy is None else float(entropy),
    )


@dataclass(frozen=True, eq=False)
class SegmentSummary:
    """Dataset numbers of one segmentation method (e.g. one block).

    Attributes:
        images: images added.
        oracle_miou: percent, from the summed confusion matrix.
        purity: percent, from the summed confusion matrix.
        ari: mean ARI over images with a non-ignored pixel.
        fg_ari: mean FG-ARI over images with instance pixels (NaN if none).
        fg_ari_images: how many images ``fg_ari`` averages.
        boundary_precision, boundary_recall, boundary_f: percent, from summed counts.
        segments, regions: means over images.
        entropy: mean over the images that gave one (NaN if none did).
        confusion: ``(n_class, n_class + 1)`` summed confusion counts.
        boundary: summed :class:`BoundaryCounts`.
    """

    images: int
    oracle_miou: float
    purity: float
    ari: float
    fg_ari: float
    fg_ari_images: int
    boundary_precision: float
    boundary_recall: float
    boundary_f: float
    segments: float
    regions: float
    entropy: float
    confusion: np.ndarray
    boundary: BoundaryCounts

    def as_dict(self) -> Dict[str, float]:
        """The numbers (not the confusion matrix or the counts) as plain ``{name: float}``."""
        keys = ("images", "oracle_miou", "purity", "ari", "fg_ari", "fg_ari_images", "boundary_precision",
                "boundary_recall", "boundary_f", "segments", "regions", "entropy")
        return {key: float(getattr(self, key)) for key in keys}


def _mean(values) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


class SegmentScoreAccumulator:
    """Per-image :class:`SegmentScores` added into dataset numbers (:meth:`summary`)."""

    def __init__(self, n_class: int = N_CLASS, ignore_index: int = IGNORE, tolerance: float = 2.0) -> None:
        self.n_class, self.ignore_index, self.tolerance = int(n_class), int(ignore_index), float(tolerance)
        self.confusion = ClassConfusion(self.n_class, self.ignore_index)
        self.scores: list = []

    def update(
        self,
        segments: ArrayLike,
        mask: ArrayLike,
        instances: Optional[ArrayLike] = None,
        *,
        entropy: Optional[float] = None,
    ) -> SegmentScores:
        """Score one image (:func:`segment_scores` with this accumulator's settings), add it, return it."""
        s = segment_scores(segments, mask, instances, entropy=entropy, tolerance=self.tolerance,
                           n_class=self.n_class, ignore_index=self.ignore_index)
        self.add(s)
        return s

    def add(self, scores: SegmentScores) -> None:
        """Add one image's scores."""
        if not isinstance(scores, SegmentScores):
            raise ValueError(f"scores must be a SegmentScores, got {type(scores).__name__}")
        self.confusion.add(scores.confusion)
        self.scores.append(scores)

    def summary(self) -> SegmentSummary:
        """Dataset numbers of the images added so far."""
        s = self.scores
        boundary = sum((x.boundary for x in s), BoundaryCounts())
        fg = [x.fg_ari for x in s if not math.isnan(x.fg_ari)]
        return SegmentSummary(
            images=len(s),
            oracle_miou=self.confusion.miou,
            purity=self.confusion.purity,
            ari=_mean(x.ari for x in s),
            fg_ari=_mean(fg),
            fg_ari_images=len(fg),
            boundary_precision=boundary.precision,
            boundary_recall=boundary.recall,
            boundary_f=boundary.f,
            segments=_mean(x.segments for x in s),
            regions=_mean(x.regions for x in s),
            entropy=_mean(x.entropy for x in s),
            confusion=self.confusion.confusion.copy(),
            boundary=boundary,
        )
