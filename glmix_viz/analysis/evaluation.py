"""A block's slots, its k groups and same-size baselines, scored on a dataset: what ``glmix-viz evaluate``
computes. Arrays in, numbers out; nothing is read or written.

Per image and block (:meth:`SlotEvaluation.update`), every segmentation is at the image's full size
``(H, W)`` (the size of its masks):

| method | segmentation | segments |
| --- | --- | --- |
| ``slots`` | :func:`slot_segments` (the hard slot map) | ``n``, its distinct slots |
| ``slic``, ``grid`` | :func:`slic_segments` of the image, :func:`grid_segments` | ``n`` |
| ``kmeans`` | :func:`kmeans_segments` of the block's ``norm1`` features | ``min(K, h w)`` clusters |
| ``groups`` | as :func:`group_segments` (k-medoids of the slots) | ``g <= k`` |
| ``groups_slic``, ``groups_grid`` | SLIC, grid | ``g`` |

Each method's images go into a :class:`~glmix_viz.analysis.segments.SegmentScoreAccumulator`;
:meth:`SlotEvaluation.blocks` gives the dataset numbers as plain dicts (``glmix-viz evaluate``'s
``metrics.json``)::

    ev = SlotEvaluation([(10, "stages.2.blocks.5")], groups=4)
    for image, mask, instances, maps, features in data:     # (H, W, 3), (H, W), (H, W) or None, ...
        ev.update(image, mask, instances, {10: maps}, {10: features})   # (K, h, w), (C, h, w)
    ev.blocks()[0]["oracle_miou"], ev.blocks()[0]["baselines"]["slic"]["oracle_miou"]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..devices import torch_threads
from .medoids import cluster_slots
from .segments import (
    ClassConfusion,
    SegmentScoreAccumulator,
    SegmentScores,
    SegmentSummary,
    dispatch_entropy,
    grid_segments,
    kmeans_segments,
    segment_count,
    segment_scores,
    slic_segments,
    slot_segments,
)

__all__ = ["METHODS", "SLOT_BASELINES", "GROUP_BASELINES", "ImageEvaluation", "SlotEvaluation",
           "block_segmentations", "method_numbers", "summary_dict", "image_miou"]

SLOT_BASELINES = ("slic", "grid", "kmeans")
"""Baselines at the hard slot map's segment count (k-means: at the block's slot count)."""
GROUP_BASELINES = ("slic", "grid")
"""Baselines at the groups' segment count."""
METHODS = ("slots", *SLOT_BASELINES, "groups", *(f"groups_{b}" for b in GROUP_BASELINES))
"""Every method, in the order of ``metrics.csv``."""
METRICS = ("oracle_miou", "purity", "ari", "fg_ari", "boundary_precision", "boundary_recall", "boundary_f",
           "segments", "regions", "entropy")
"""The numbers of a method (percentages in percent, ARI an index, entropy in bits)."""


def _image(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[:2] != tuple(size):
        raise ValueError(f"image must be ({size[0]}, {size[1]}, 3) uint8 (the mask's size), got {a.dtype} "
                         f"{a.shape}")
    return a


class _Baselines:
    """One image's SLIC and grid segmentations by segment count, each computed once (blocks share them)."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self._cache: Dict[Tuple[str, int], np.ndarray] = {}

    def get(self, kind: str, n: int) -> np.ndarray:
        key = (kind, int(n))
        if key not in self._cache:
            H, W = self.image.shape[:2]
            self._cache[key] = slic_segments(self.image, n) if kind == "slic" else grid_segments(H, W, n)
        return self._cache[key]


def block_segmentations(
    image: np.ndarray,
    maps: np.ndarray,
    features: np.ndarray,
    *,
    groups: int = 4,
    seed: int = 0,
    _baselines: Optional[_Baselines] = None,
) -> Dict[str, np.ndarray]:
    """Every segmentation of :data:`METHODS` for one image and block.

    Args:
        image: ``(H, W, 3)`` uint8, the image at its full size (SLIC runs on it).
        maps: ``(K, h, w)`` dispatch maps of the block.
        features: ``(C, h', w')`` the block's features its clustering sees (k-means runs on them, with
            ``min(K, h' w')`` clusters).
        groups: ``k`` of :func:`group_segments`.
        seed: seed of the groups' k-medoids and of k-means.

    Returns:
        method -> ``(H, W)`` int64 labels.
    """
    image = np.asarray(image)
    H, W = image.shape[:2]
    base = _baselines or _Baselines(image)
    slots = slot_segments(maps, (H, W))
    n = segment_count(slots)
    # group_segments(maps, (H, W), k=groups, seed=seed), without upsampling the maps a second time
    grouped = cluster_slots(np.asarray(maps, np.float64), groups, seed=seed).labels[slots]
    g = segment_count(grouped)
    f = np.asarray(features)
    if f.ndim != 3:
        raise ValueError(f"features must be (C, h, w) for one image and block, got shape {f.shape}")
    k = min(int(np.asarray(maps).shape[0]), f.shape[1] * f.shape[2])
    return {
        "slots": slots,
        "slic": base.get("slic", n),
        "grid": base.get("grid", n),
        "kmeans": kmeans_segments(f, k, (H, W), seed=seed),
        "groups": grouped,
        "groups_slic": base.get("slic", g),
        "groups_grid": base.get("grid", g),
    }


def image_miou(scores: SegmentScores) -> float:
    """One image's oracle mIoU (percent) from its :class:`SegmentScores` (classes in its mask or
    labelling)."""
    confusion = ClassConfusion(scores.confusion.shape[0])
    confusion.add(scores.confusion)
    return confusion.miou


def summary_dict(summary: SegmentSummary, class_names: Optional[Sequence[str]] = None) -> Dict:
    """A :class:`SegmentSummary` as plain numbers: :data:`METRICS`, ``images``, ``fg_ari_images`` (ints),
    and ``iou``, the per-class oracle IoU in percent (``{name: value}``, NaN for a class absent from masks
    and labelling)."""
    out: Dict = {key: float(getattr(summary, key)) for key in METRICS}
    out["images"] = int(summary.images)
    out["fg_ari_images"] = int(summary.fg_ari_images)
    confusion = ClassConfusion(summary.confusion.shape[0])
    confusion.add(summary.confusion)
    iou = confusion.iou
    names = list(class_names) if class_names is not None else [str(c) for c in range(len(iou))]
    if len(names) != len(iou):
        raise ValueError(f"class_names has {len(names)} names for {len(iou)} classes")
    out["iou"] = {name: float(v) for name, v in zip(names, iou)}
    return out


@dataclass(frozen=True)
class ImageEvaluation:
    """One image's segmentations and scores.

    Attributes:
        segmentations: block ordinal -> method -> ``(H, W)`` int64 labels.
        scores: block ordinal -> method -> :class:`SegmentScores`.
        entropy: block ordinal -> mean dispatch entropy (bits) at the block's grid.
    """

    segmentations: Dict[int, Dict[str, np.ndarray]]
    scores: Dict[int, Dict[str, SegmentScores]]
    entropy: Dict[int, float]


class SlotEvaluation:
    """Slots, groups and baselines of chosen blocks, scored image by image and added up.

    Args:
        blocks: ``(ordinal, module name)`` of the blocks, in forward order.
        groups: ``k`` of the representative groups.
        seed: seed of the groups' k-medoids and of k-means.
        tolerance: boundary tolerance in pixels.
        class_names: names of the mask's classes (default: VOC's 21).
    """

    def __init__(self, blocks: Sequence[Tuple[int, str]], *, groups: int = 4, seed: int = 0,
                 tolerance: float = 2.0, class_names: Optional[Sequence[str]] = None) -> None:
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups={groups!r}: expected an integer, 1 or more")
        if not blocks:
            raise ValueError("blocks is empty: give at least one (ordinal, name)")
        if class_names is None:
            from ..voc import VOC_CLASSES

            class_names = VOC_CLASSES
        self.targets: List[Tuple[int, str]] = [(int(o), str(n)) for o, n in blocks]
        self.groups, self.seed, self.tolerance = int(groups), int(seed), float(tolerance)
        self.class_names = tuple(class_names)
        self.accumulators: Dict[int, Dict[str, SegmentScoreAccumulator]] = {
            o: {m: SegmentScoreAccumulator(n_class=len(self.class_names), tolerance=self.tolerance)
                for m in METHODS} for o, _ in self.targets}
        self.images = 0

    def update(self, image: np.ndarray, mask: np.ndarray, instances: Optional[np.ndarray],
               maps: Mapping[int, np.ndarray], features: Mapping[int, np.ndarray]) -> ImageEvaluation:
        """Score one image at every block (:meth:`score`) and add it (:meth:`add`)."""
        result = self.score(image, mask, instances, maps, features)
        self.add(result)
        return result

    def score(self, image: np.ndarray, mask: np.ndarray, instances: Optional[np.ndarray],
              maps: Mapping[int, np.ndarray], features: Mapping[int, np.ndarray], *,
              keep_segmentations: bool = True) -> ImageEvaluation:
        """Score one image at every block, without adding it (worker processes score, one process adds).

        On one torch thread (the upsampling's rounding would depend on the thread count): the same
        numbers in any process layout.

        Args:
            image: ``(H, W, 3)`` uint8 at the mask's size.
            mask: ``(H, W)`` class mask (255 void).
            instances: ``(H, W)`` instance mask, or ``None``.
            maps: block ordinal -> ``(K, h, w)`` dispatch maps.
            features: block ordinal -> ``(C, h, w)`` features the block's clustering sees.
            keep_segmentations: ``False``: the result's ``segmentations`` is empty (they are 8 bytes a
                pixel per block and method: too much to send between processes).
        """
        mask = np.asarray(mask)
        image = _image(image, mask.shape)
        missing = [o for o, _ in self.targets if o not in maps or o not in features]
        if missing:
            raise ValueError(f"maps and features must hold every block; missing blocks {missing}")
        base = _Baselines(image)
        segs: Dict[int, Dict[str, np.ndarray]] = {}
        scores: Dict[int, Dict[str, SegmentScores]] = {}
        entropy: Dict[int, float] = {}
        n_class = len(self.class_names)
        with torch_threads(1):
            for ordinal, _ in self.targets:
                entropy[ordinal] = dispatch_entropy(maps[ordinal])
                block = block_segmentations(image, maps[ordinal], features[ordinal], groups=self.groups,
                                            seed=self.seed, _baselines=base)
                scores[ordinal] = {
                    method: segment_scores(
                        seg, mask, instances, tolerance=self.tolerance, n_class=n_class,
                        entropy=entropy[ordinal] if method in ("slots", "groups") else None)
                    for method, seg in block.items()}
                if keep_segmentations:
                    segs[ordinal] = block
        return ImageEvaluation(segs, scores, entropy)

    def add(self, result: ImageEvaluation) -> None:
        """Add one image's :meth:`score`."""
        missing = [o for o, _ in self.targets if o not in result.scores]
        if missing:
            raise ValueError(f"the result has no scores of blocks {missing}")
        for ordinal, _ in self.targets:
            for method in METHODS:
                self.accumulators[ordinal][method].add(result.scores[ordinal][method])
        self.images += 1

    def blocks(self) -> List[Dict]:
        """The dataset numbers, one dict per block in forward order::

            {"ordinal", "name", <METRICS>, "images", "fg_ari_images", "iou",      # the hard slot map
             "baselines": {"slic": {...}, "grid": {...}, "kmeans": {...}},
             "groups": {"k", <METRICS>, ..., "baselines": {"slic": {...}, "grid": {...}}}}
        """
        out = []
        for ordinal, name in self.targets:
            acc = self.accumulators[ordinal]

            def numbers(method: str) -> Dict:
                return summary_dict(acc[method].summary(), self.class_names)

            groups = {"k": self.groups, **numbers("groups"),
                      "baselines": {b: numbers(f"groups_{b}") for b in GROUP_BASELINES}}
            out.append({"ordinal": ordinal, "name": name, **numbers("slots"),
                        "baselines": {b: numbers(b) for b in SLOT_BASELINES}, "groups": groups})
        return out


def method_numbers(block: Mapping, method: str) -> Mapping:
    """The numbers of ``method`` (one of :data:`METHODS`) in one of :meth:`SlotEvaluation.blocks`' dicts."""
    if method == "slots":
        return block
    if method == "groups":
        return block["groups"]
    if method.startswith("groups_"):
        return block["groups"]["baselines"][method[len("groups_"):]]
    if method in SLOT_BASELINES:
        return block["baselines"][method]
    raise ValueError(f"method {method!r}: expected one of {METHODS}")
