"""Region relabelling: classify each labelled region of a pseudo-mask on its own.

A CAM says *where* the classifier found evidence, but through global
attention evidence of one object leaks to the positions of another, so a
region may take the wrong one of the image's classes. Shown a region alone
(every other pixel set to the mean colour, the image at the size the model
was trained on), the classifier names the region's class without that leak.
Each connected region of each class in the mask is classified that way
among the image's classes; it takes the best class when that class's
probability beats the region's current class by more than ``margin``::

    regions  = connected components of (mask == c), for each labelled class c
    p        = P(class | image with only the region visible)       (n,) per region
    relabel  where max_k p[k] - p[current] > margin

This is a post-processing step on the finished mask (after the CRF), so it
needs the model again: :func:`relabel` does the whole step, and
:func:`wsss.pipeline.pseudo_label_image` calls it when ``config.regions`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import resolve_model_data_config

from glmix_viz.devices import torch_threads
from glmix_viz.fields import FieldError

from .evidence import ClassHead

__all__ = [
    "RegionParams", "class_regions", "region_probabilities", "relabel_regions", "model_input_side", "relabel",
]


@dataclass(frozen=True)
class RegionParams:
    """Region relabelling settings.

    Attributes:
        margin: a region is relabelled when the best class's probability
            exceeds its current class's by more than this.
        min_pixels: smaller regions are left as they are.
        input_side: the longer side the whole (masked) image is resized to;
            0: the model's training size (``pretrained_cfg["input_size"]``).
        batch_size: regions classified per forward pass (each with its flip).
    """

    margin: float = 0.3
    min_pixels: int = 50
    input_side: int = 0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise FieldError("RegionParams.margin", [self.margin], "expected a number in [0, 1)")
        if self.min_pixels < 1 or self.input_side < 0 or self.batch_size < 1:
            raise ValueError(f"region params: need min_pixels >= 1, input_side >= 0, batch_size >= 1, got "
                             f"{self.min_pixels}, {self.input_side}, {self.batch_size}")


def model_input_side(model: nn.Module) -> int:
    """The longer side of the model's training input (timm's data config; 224 when the model has none)."""
    return int(max(resolve_model_data_config(model)["input_size"][-2:]))


def class_regions(mask: np.ndarray, classes: Sequence[int],
                  min_pixels: int = 1) -> List[Tuple[int, np.ndarray]]:
    """Connected regions (4-connectivity) of each class in ``mask``, at least ``min_pixels`` large.

    Args:
        mask: ``(H, W)`` VOC labels.
        classes: the classes whose regions are wanted.

    Returns:
        ``[(class, (H, W) bool), ...]`` in class order, then by label order of the components.
    """
    from scipy import ndimage

    regions = []
    for c in classes:
        labelled, n = ndimage.label(np.asarray(mask) == c)
        for r in range(1, n + 1):
            region = labelled == r
            if region.sum() >= min_pixels:
                regions.append((int(c), region))
    return regions


@torch.no_grad()
def region_probabilities(model: nn.Module, image: torch.Tensor, regions: Sequence[np.ndarray],
                         head: ClassHead, side: int, batch_size: int = 8) -> torch.Tensor:
    """Class probabilities of the image with only one region visible, for each region.

    Each masked image (outside the region: 0 in normalised space, the mean
    colour) is resized so its longer side is ``side`` and classified with
    its horizontal flip (probabilities averaged).

    Args:
        model: a GLNet in eval mode.
        image: normalised ``(3, H, W)`` on the model's device.
        regions: ``(H, W)`` bool masks.
        head: the classifier rows of the VOC classes (see :class:`wsss.evidence.ClassHead`).
        side: longer side of the classifier's input.

    Returns:
        ``(R, 20)`` probabilities, on the CPU.
    """
    H, W = image.shape[-2:]
    scale = side / max(H, W)
    size = (max(32, round(H * scale)), max(32, round(W * scale)))
    out = []
    for i in range(0, len(regions), batch_size):
        keep = torch.from_numpy(np.stack(regions[i:i + batch_size])).to(image)[:, None]  # (b, 1, H, W)
        # The resize and the head on one thread: their rounding would depend on the thread count (the
        # batched forward's does not), and the relabelling's decisions on it.
        with torch_threads(1):
            x = F.interpolate(image[None] * keep, size=size, mode="bilinear", align_corners=False)
        pooled = model.forward_head(model.forward_features(torch.cat([x, x.flip(-1)])), pre_logits=True)
        with torch_threads(1):
            out.append(head.probabilities(pooled.float()).view(2, -1, len(head.groups)).mean(0).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(head.groups))


def relabel_regions(mask: np.ndarray, classes: Sequence[int], regions: Sequence[Tuple[int, np.ndarray]],
                    probs: torch.Tensor, margin: float) -> np.ndarray:
    """Give each region the best of ``classes`` where it beats the region's class by more than ``margin``.

    Args:
        mask: ``(H, W)`` VOC labels.
        classes: the image's classes (VOC indices 1..20).
        regions: from :func:`class_regions`.
        probs: ``(R, 20)`` from :func:`region_probabilities`.

    Returns:
        ``(H, W)`` uint8, a new array.
    """
    out = np.array(mask, np.uint8, copy=True)
    cols = [c - 1 for c in classes]
    for (current, region), p in zip(regions, probs.numpy()):
        among = p[cols]
        best = classes[int(among.argmax())]
        if among.max() - p[current - 1] > margin:
            out[region] = best
    return out


def relabel(model: nn.Module, image: torch.Tensor, mask: np.ndarray, classes: Sequence[int],
            head: ClassHead, params: RegionParams = RegionParams()) -> np.ndarray:
    """Region relabelling of one finished mask (see :mod:`wsss.regions`).

    Args:
        model: GLNet in eval mode.
        image: normalised ``(3, H, W)`` on the model's device, the size of ``mask``.
        mask: ``(H, W)`` VOC labels.
        classes: the image's classes.
        head: see :class:`ClassHead`.

    Returns:
        ``(H, W)`` uint8; ``mask`` itself for fewer than two classes (nothing to choose between).
    """
    if tuple(image.shape[-2:]) != tuple(np.shape(mask)):
        raise ValueError(f"relabel: image {tuple(image.shape)} and mask {np.shape(mask)} differ in size; "
                         "pass the normalised (3, H, W) image the mask was made from")
    regions = class_regions(mask, classes, params.min_pixels) if len(classes) > 1 else []
    if not regions:
        return np.asarray(mask, np.uint8)
    side = params.input_side or model_input_side(model)
    probs = region_probabilities(model, image, [r for _, r in regions], head, side, params.batch_size)
    return relabel_regions(mask, list(classes), regions, probs, params.margin)
