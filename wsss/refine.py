"""From class evidence to pseudo-masks: slot refinement, background, dense CRF.

Slot refinement: each class map is pooled into the K slots of a GLMix block
with its clustering weights (softmax over pixels) and dispatched back to the
pixels with its dispatch maps (softmax over slots), so every pixel takes the
class evidence of the regions (slots) it belongs to::

    slot_scores = C @ cam_g^T      (K, n)   C: (K, N) clustering, cam_g: (n, N) CAM on the block's grid
    refined     = D^T @ slot_scores (N, n)  D: (K, N) dispatch

then upsampled to the image, renormalised per class by its maximum, averaged
over the chosen blocks and mixed with the CAM: ``(1 - mix) * cam + mix * refined``.

Baseline: a class the classifier recognises from the whole scene (global
attention lets every position carry it) has a map that is high everywhere,
and normalising by the maximum then paints the whole image with it.
:func:`subtract_baseline` removes each map's typical level (a quantile over
the image, by default its median) so that only what stands out remains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from glmix_viz.analysis.maps import normalize_by_max
from glmix_viz.capture import SlotRecord
from glmix_viz.fields import FieldError

from .voc import IGNORE_INDEX

__all__ = [
    "SlotRefineParams", "CRFParams", "BackgroundParams", "ConfidentRegions", "slot_refine",
    "subtract_baseline", "with_background", "dense_crf", "labels_from_scores", "confident_labels",
]


@dataclass(frozen=True)
class SlotRefineParams:
    """Slot refinement of the CAM (:func:`slot_refine`, then :func:`subtract_baseline`).

    Attributes:
        blocks: GLMix block ordinals (1-based) whose slots refine the CAM;
            ``None``: derived from the model by ``PseudoLabelConfig.for_model``,
            the blocks at ``BLOCK_FRACTIONS`` of its depth (2, 5, 10 of 10).
        mix: weight of the slot-refined maps against the CAM (1: refined only).
        sharpness: factor on the slot logits before clustering and dispatch.
        baseline: quantile of each refined map subtracted before renormalising (0: off).
    """

    blocks: Optional[Tuple[int, ...]] = None
    mix: float = 0.5
    sharpness: float = 16.0
    baseline: float = 0.5

    #: Where the derived blocks sit, as fractions of the model's GLMix blocks.
    BLOCK_FRACTIONS = (0.2, 0.5, 1.0)

    def __post_init__(self) -> None:
        if self.blocks is not None and (not self.blocks or any(b < 1 for b in self.blocks)):
            raise FieldError("SlotRefineParams.blocks", [self.blocks], "expected GLMix block ordinals >= 1")
        if not 0 <= self.mix <= 1:
            raise FieldError("SlotRefineParams.mix", [self.mix], "expected a number in [0, 1]")
        if not self.sharpness > 0:
            raise FieldError("SlotRefineParams.sharpness", [self.sharpness], "expected a number > 0")
        if not 0 <= self.baseline < 1:
            raise FieldError("SlotRefineParams.baseline", [self.baseline], "expected a quantile in [0, 1)")

    @classmethod
    def derived_blocks(cls, num_blocks: int) -> Tuple[int, ...]:
        """The blocks at ``BLOCK_FRACTIONS`` of ``num_blocks`` GLMix blocks (rounded half up, distinct)."""
        return tuple(sorted({max(1, min(num_blocks, int(f * num_blocks + 0.5)))
                             for f in cls.BLOCK_FRACTIONS}))


@dataclass(frozen=True)
class BackgroundParams:
    """Background score: ``"constant"`` (``threshold``) or ``"power"`` (PSA: ``(1 - max fg) ** power``).

    The default threshold 0.25 was measured on EmojiVOC with the bundled model for
    the default pipeline (slot refinement, median baseline, dense CRF); plain
    GLNet CAMs are broader than the CNN CAMs for which IRN uses 0.15 and do
    best near 0.4 (docs/experiments.md, "Slot sharpness, blocks, background and CAM scales").
    """

    method: str = "constant"
    threshold: float = 0.25
    power: float = 8.0

    def __post_init__(self) -> None:
        if self.method not in ("constant", "power"):
            raise FieldError("BackgroundParams.method", [self.method], "expected 'constant' or 'power'")


@dataclass(frozen=True)
class ConfidentRegions:
    """IRN's confident and ignore regions: label twice, with a high and a low constant background.

    A pixel keeps its class where it is foreground even against the high
    background ``foreground``; it is background where it is background even
    against the low one ``background``; the pixels in between (background
    against the high, foreground against the low threshold) become 255
    (ignore). IRN uses 0.30 and 0.05 for its CNN CAMs.
    """

    foreground: float = 0.30
    background: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.background < self.foreground:
            raise FieldError(("ConfidentRegions.foreground", "ConfidentRegions.background"),
                             [self.foreground, self.background], "need 0 <= background < foreground")


@dataclass(frozen=True)
class CRFParams:
    """Dense CRF parameters (IRN's defaults)."""

    iterations: int = 10
    gauss_sxy: float = 3.0
    gauss_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 10.0


def slot_refine(cams: torch.Tensor, slots: Sequence[SlotRecord], mix: float = 1.0,
                sharpness: float = 1.0) -> torch.Tensor:
    """Propagate class maps through the slots of one or more GLMix blocks.

    Each class map is pooled into the slots with the clustering weights and
    sent back to the pixels with the dispatch weights (as the block does with
    features), then normalised by its maximum; blocks are averaged.

    Args:
        cams: ``(n, H, W)`` class maps in [0, 1].
        slots: the blocks' slot logits.
        mix: weight of the refined maps against the CAM (1: refined only).
        sharpness: factor on the slot logits before both softmaxes (1: as the
            model computes them; larger: harder assignments of pixels to slots).

    Returns:
        ``(n, H, W)`` in [0, 1].
    """
    if not slots or cams.shape[0] == 0:
        return cams
    n, H, W = cams.shape
    refined = torch.zeros_like(cams)
    for s in slots:
        cam_g = F.adaptive_avg_pool2d(cams[None], s.grid)[0].flatten(1)  # (n, N)
        slot_scores = s.clustering_weights(sharpness)[0] @ cam_g.T  # (K, n)
        pix = (s.dispatch_maps(sharpness)[0].flatten(1).T @ slot_scores).T.reshape(n, *s.grid)  # (n, h, w)
        up = F.interpolate(pix[None], size=(H, W), mode="bilinear", align_corners=False)[0]
        refined += normalize_by_max(up)
    refined /= len(slots)
    return (1 - mix) * cams + mix * refined


def subtract_baseline(maps: torch.Tensor, quantile: float) -> torch.Tensor:
    """Subtract each map's ``quantile`` over its pixels, clip at 0 and renormalise by the maximum.

    The quantile is the k-th smallest value, ``k = 1 + round(quantile * (H*W - 1))``
    (nearest rank); ``quantile=0`` returns the maps unchanged.

    Shape:
        ``(n, H, W) -> (n, H, W)``, in [0, 1].
    """
    if not 0 <= quantile < 1:
        raise ValueError(f"baseline quantile {quantile}: expected a number in [0, 1)")
    if quantile == 0 or maps.shape[0] == 0:
        return maps
    flat = maps.flatten(1)
    k = 1 + int(round(quantile * (flat.shape[1] - 1)))
    base = flat.kthvalue(k, dim=1).values.view(-1, 1, 1)
    return normalize_by_max((maps - base).clamp_min(0))


def with_background(scores: np.ndarray, params: BackgroundParams = BackgroundParams()) -> np.ndarray:
    """Stack a background score in front of the class scores.

    Shape:
        ``(n, H, W) -> (n + 1, H, W)``; index 0 is background.
    """
    scores = np.asarray(scores, np.float32)
    H, W = scores.shape[1:]
    if params.method == "constant":
        bg = np.full((1, H, W), params.threshold, np.float32)
    else:
        fg_max = scores.max(0, keepdims=True) if len(scores) else np.zeros((1, H, W), np.float32)
        bg = np.power(1 - fg_max, params.power).astype(np.float32)
    return np.concatenate([bg, scores], 0)


def labels_from_scores(scores_bg: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Argmax over ``[background, classes...]`` as VOC class indices ``(H, W)`` uint8."""
    lut = np.array([0, *classes], np.uint8)
    return lut[np.argmax(scores_bg, 0)]


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Fully connected CRF (Krähenbühl & Koltun) with pydensecrf.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        probs: ``(L, H, W)`` per-pixel probabilities over the L labels
            (background and the image's classes), summing to 1 over L.
        params: see :class:`CRFParams`.

    Returns:
        ``(H, W)`` int64 indices into the L labels.
    """
    import pydensecrf.densecrf as dcrf

    image = np.array(image, dtype=np.uint8, order="C", copy=True)  # pydensecrf needs a writable C buffer
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != probs.shape[1:]:
        raise ValueError(f"image {image.shape} and probabilities {probs.shape} do not fit: need (H, W, 3) "
                         "and (L, H, W)")
    L, H, W = probs.shape
    d = dcrf.DenseCRF2D(W, H, L)
    unary = -np.log(np.clip(probs, 1e-5, 1.0)).reshape(L, -1)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=params.gauss_sxy, compat=params.gauss_compat)
    d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=image,
                           compat=params.bilateral_compat)
    q = np.array(d.inference(params.iterations)).reshape(L, H, W)
    return q.argmax(0)


def to_probabilities(scores_bg: np.ndarray) -> np.ndarray:
    """Scores ``(L, H, W)`` (>= 0) to probabilities over L (normalised by their sum)."""
    s = np.clip(scores_bg, 1e-5, None)
    return s / s.sum(0, keepdims=True)


def confident_labels(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Combine labellings against a high and a low background threshold (IRN's confident regions).

    Args:
        high: ``(H, W)`` labels made with the high background (foreground there is confident).
        low: ``(H, W)`` labels made with the low background (background there is confident).

    Returns:
        ``(H, W)`` uint8: ``high``'s classes, 0 where both say background, 255 where they disagree.
    """
    out = np.asarray(high, np.uint8).copy()
    out[out == 0] = IGNORE_INDEX
    out[(np.asarray(high) == 0) & (np.asarray(low) == 0)] = 0
    return out
