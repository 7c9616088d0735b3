"""The slot refinement's blocks, measured: oracle mIoU of each GLMix block's slots on a labelled sample.

``glmix-wsss pseudo-labels --blocks auto``: before labelling, each GLMix block's
hard slot map (dispatch maps upsampled to the image, argmax over the K slots)
is taken from the pass the refinement uses (the evidence's first scale,
unflipped), every slot is given the majority ground-truth class of its pixels
(:func:`glmix_viz.analysis.segments.oracle_labels`), and the masks accumulate
into one confusion matrix per block: the block's **oracle mIoU**, the best any
labelling of its slots could score (docs/slot-metrics.md). The best block of
each of ``count`` runs of consecutive blocks (shallow, middle, deep: the
default ``spread`` rule) or the ``count`` best overall (``top``) refine the
CAM. Nothing here depends on the image
labels of the split being labelled: the sample is another split's masks
(``val`` by default) or the same split's.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from itertools import islice
from typing import Iterable, List, Sequence, Tuple

import numpy as np
import torch

from glmix_viz.analysis.segments import ClassConfusion, oracle_labels, slot_segments
from glmix_viz.capture import glmix_blocks
from glmix_viz.devices import torch_threads
from glmix_viz.fields import FieldError
from glmix_viz.images import normalize

from .evidence import ClassHead, EvidenceConfig, compute_evidence
from .pipeline import load_work_image
from .voc import VOCLayout, read_mask

__all__ = ["BlockChoiceParams", "BlockChoice", "RULES", "block_oracle_miou", "choose_blocks",
           "choose_blocks_on_split"]

RULES = ("spread", "top")

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BlockChoiceParams:
    """How ``--blocks auto`` chooses the slot refinement's blocks.

    Attributes:
        count: how many blocks refine the CAM.
        split: the split whose masks score the blocks (``ImageSets/Segmentation/SPLIT.txt``).
        images: the first this many ids of ``split``.
        rule: ``"spread"``: the blocks cut into ``count`` runs of consecutive blocks (shallow to deep, as
            ``numpy.array_split``), the best of each run; ``"top"``: the ``count`` best overall (deep
            blocks, which resemble each other, usually win).
    """

    count: int = 3
    split: str = "val"
    images: int = 32
    rule: str = "spread"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise FieldError("BlockChoiceParams.count", [self.count], "expected 1 or more blocks")
        if self.images < 1:
            raise FieldError("BlockChoiceParams.images", [self.images], "expected 1 or more images")
        if self.rule not in RULES:
            raise FieldError("BlockChoiceParams.rule", [self.rule], f"expected one of {', '.join(RULES)}")


@dataclass(frozen=True)
class BlockChoice:
    """The blocks chosen and the measurement behind them.

    Attributes:
        blocks: the chosen ordinals, ascending.
        scores: ``(ordinal, oracle mIoU in percent)`` of every GLMix block, in block order.
        split: the split measured on.
        images: how many of its images were scored.
    """

    blocks: Tuple[int, ...]
    scores: Tuple[Tuple[int, float], ...]
    split: str
    images: int
    rule: str = "spread"

    def record(self) -> dict:
        """JSON-ready, for a run's manifest."""
        return {"blocks": list(self.blocks), "rule": self.rule, "split": self.split, "images": self.images,
                "oracle_miou": {str(b): round(s, 4) for b, s in self.scores}}

    def describe(self) -> str:
        """One line: the choice and the scores it came from."""
        scores = ", ".join(f"{b}: {s:.1f}" for b, s in self.scores)
        return (f"blocks {','.join(map(str, self.blocks))} by oracle mIoU ({self.rule}) on {self.images} "
                f"images of {self.split!r} ({scores})")


def _slot_pass(evidence: EvidenceConfig) -> EvidenceConfig:
    """The evidence config whose only forward is the slot pass (first scale, unflipped, no CAM)."""
    return replace(evidence, scales=evidence.scales[:1], weights=(0.0,), stitch=None, flip=False,
                   fit=evidence.fit[:1] if evidence.fit else None)


@torch.no_grad()
def block_oracle_miou(
    model: torch.nn.Module, samples: Iterable[Tuple[np.ndarray, np.ndarray]], evidence: EvidenceConfig,
    *, device: torch.device = torch.device("cpu"), n_class: int = 21,
) -> Tuple[Tuple[Tuple[int, float], ...], int]:
    """Oracle mIoU of every GLMix block's hard slot map on labelled images.

    Args:
        model: a GLNet in eval mode on ``device``.
        samples: ``(image (h, w, 3) uint8 as the pipeline sees it, mask (H, W) 0..20 / 255)``; the slot
            maps are upsampled to the mask's size.
        evidence: the run's :class:`~wsss.evidence.EvidenceConfig` (its first scale is the slot pass).

    Returns:
        ``((ordinal, oracle mIoU in percent), ...)`` in block order, and the image count.
    """
    n = len(glmix_blocks(model))
    blocks = tuple(range(1, n + 1))
    confusions = [ClassConfusion(n_class) for _ in blocks]
    config = _slot_pass(evidence)
    no_classes = ClassHead(torch.zeros(0, model.num_features), ())  # the slot pass computes no CAM
    images = 0
    for image, mask in samples:
        # One thread: a batch-1 forward's rounding, the softmax's and the resize's depend on the thread
        # count; the choice must not.
        with torch_threads(1):
            ev = compute_evidence(model, normalize(image).to(device), (), no_classes, config,
                                  slot_blocks=blocks)
            size = tuple(np.asarray(mask).shape[:2])
            for record, confusion in zip(ev.slots, confusions):
                hard = slot_segments(record.dispatch_maps()[0].numpy(), size)
                confusion.update(oracle_labels(hard, mask, n_class), mask)
        images += 1
    return tuple((b, float(c.miou)) for b, c in zip(blocks, confusions)), images


def _best(scores: Sequence[Tuple[int, float]], count: int) -> List[int]:
    """The ``count`` ordinals of highest score; ties: the deeper block; NaN last."""
    ranked = sorted(scores, key=lambda bs: (-np.nan_to_num(bs[1], nan=-np.inf), -bs[0]))
    return [b for b, _ in ranked[:count]]


def choose_blocks(scores: Sequence[Tuple[int, float]], count: int, rule: str = "spread") -> Tuple[int, ...]:
    """``count`` ordinals by their scores under ``rule`` (see :class:`BlockChoiceParams`), ascending.

    Ties go to the deeper block; NaN scores (no image scored) rank last.
    """
    if count < 1:
        raise FieldError("BlockChoiceParams.count", [count], "expected 1 or more blocks")
    if count > len(scores):
        raise FieldError("BlockChoiceParams.count", [count], f"the model has {len(scores)} GLMix blocks")
    if rule == "top":
        return tuple(sorted(_best(scores, count)))
    if rule == "spread":
        runs = np.array_split(np.arange(len(scores)), count)
        return tuple(sorted(_best([scores[i] for i in run], 1)[0] for run in runs))
    raise FieldError("BlockChoiceParams.rule", [rule], f"expected one of {', '.join(RULES)}")


def _samples(layout: VOCLayout, ids: Sequence[str], max_side: int):
    for image_id in ids:
        image, _ = load_work_image(layout.image(image_id), max_side)
        yield np.asarray(image), read_mask(layout.mask(image_id))


def choose_blocks_on_split(
    model: torch.nn.Module, layout: VOCLayout, evidence: EvidenceConfig,
    params: BlockChoiceParams = BlockChoiceParams(), *, device: torch.device = torch.device("cpu"),
    max_side: int = 512,
) -> BlockChoice:
    """:func:`block_oracle_miou` on the first ``params.images`` ids of ``params.split`` that have masks,
    then :func:`choose_blocks`.

    Raises:
        FieldError: the split has no ids with masks (names ``BlockChoiceParams.split``).
    """
    ids = layout.ids(params.split)
    with_masks = list(islice((i for i in ids if layout.mask(i).is_file()), params.images))
    if not with_masks:
        raise FieldError("BlockChoiceParams.split", [params.split],
                         f"none of its {len(ids)} ids has a mask in {layout.mask('ID').parent}; name a split "
                         "with masks (e.g. val)")
    t0 = time.perf_counter()
    scores, images = block_oracle_miou(model, _samples(layout, with_masks, max_side), evidence, device=device)
    choice = BlockChoice(choose_blocks(scores, params.count, params.rule), scores, params.split, images,
                         params.rule)
    _logger.info("slot refinement: %s, %.0f s", choice.describe(), time.perf_counter() - t0)
    return choice
