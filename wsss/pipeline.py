"""Pseudo-labels for a VOC split: evidence -> (slots) -> background -> (CRF) -> palette PNGs.

Each image's PNG is written to a temporary file and renamed, so an
interrupted run leaves no broken file and a rerun skips finished images.
Under ``torchrun`` each rank takes the ids ``ids[rank::world_size]``; the
files are the same as a single process writes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from glmix_viz.capture import glmix_blocks
from glmix_viz.fields import FieldError
from glmix_viz.fileio import RunInterrupted, atomic_write
from glmix_viz.images import MIN_SIDE, load_image, normalize

from .evidence import ClassHead, Evidence, EvidenceConfig, compute_evidence
from .refine import (
    BackgroundParams,
    ConfidentRegions,
    CRFParams,
    confident_labels,
    dense_crf,
    labels_from_scores,
    slot_refine,
    subtract_baseline,
    to_probabilities,
    with_background,
)
from .regions import RegionParams, relabel
from .slot_classifier import SlotClassifierParams, mix_slot_classifier, slot_classifier
from .voc import VOCLayout, save_mask

__all__ = [
    "SLOT_EVIDENCE", "PseudoLabelConfig", "PseudoLabelResult", "EvidenceLabeller", "evidence_config",
    "class_scores", "pseudo_label_from_evidence", "pseudo_label_image", "run_pseudo_labels", "shard",
]

_logger = logging.getLogger(__name__)



#: The default pipeline's evidence: the CAMs at scales 0.5 (weight 2) and
#: 0.375 on grids 4x finer than the model's (shift-and-stitch) plus the plain
#: CAM at 1.0, flips, and the slots of blocks 2, 5, 10 captured at 1.0.
#: Measured against the standard protocol's four plain scales in docs/experiments.md
#: ("WSSS: the default's CAM (shift-and-stitch)").
SLOT_EVIDENCE = EvidenceConfig(scales=(1.0, 0.5, 0.375), weights=(1.0, 2.0, 1.0), stitch=(1, 4, 4),
                               slot_blocks=(2, 5, 10))


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How pseudo-masks are made.

    Attributes:
        method: ``"cam"`` or ``"slots"`` (slot-refined CAM).
        evidence: CAM scales, weights, stitching and flips, and the slot blocks
            (used when ``method="slots"``); ``None``: the method's default,
            :data:`SLOT_EVIDENCE` for ``"slots"``, the standard protocol
            (``EvidenceConfig()``) for ``"cam"`` (see ``resolved_evidence``).
        slot_mix: weight of the slot-refined maps against the CAM.
        slot_sharpness: factor on the slot logits before clustering and dispatch
            (see :func:`wsss.refine.slot_refine`).
        slot_baseline: quantile of each refined map subtracted before
            renormalising (see :func:`wsss.refine.subtract_baseline`; 0: off).
        slot_classifier: per-image classifier on slot memberships fitted on the
            confident pixels (see :mod:`wsss.slot_classifier`), or ``None``;
            used with ``method="slots"``.
        background: see :class:`BackgroundParams`; the default threshold 0.25 (not
            IRN's 0.15) and the slot settings were measured on EmojiVOC with
            the bundled model (docs/wsss.md, "Why each default").
        crf: dense CRF parameters, or ``None`` for no CRF.
        confident: IRN's confident/ignore regions (two constant backgrounds;
            pixels where they disagree become 255) instead of ``background``
            (which must then keep its default: setting both is an error, not
            a silent override), or ``None``.
        regions: region relabelling of the finished mask (see
            :mod:`wsss.regions`; needs the model, so only
            :func:`pseudo_label_image` applies it), or ``None`` (the
            default: it helped on four sets of images and hurt on one,
            docs/wsss.md, "Stages and options").
        max_side: images are shrunk to this longer side first (then labels upsampled back).
    """

    method: str = "slots"
    evidence: Optional[EvidenceConfig] = None
    slot_mix: float = 0.5
    slot_sharpness: float = 16.0
    slot_baseline: float = 0.5
    slot_classifier: Optional[SlotClassifierParams] = field(default_factory=SlotClassifierParams)
    background: BackgroundParams = field(default_factory=BackgroundParams)
    crf: Optional[CRFParams] = field(default_factory=CRFParams)
    confident: Optional[ConfidentRegions] = None
    regions: Optional[RegionParams] = None
    max_side: int = 512

    def __post_init__(self) -> None:
        if self.method not in ("cam", "slots"):
            raise ValueError(f"method={self.method!r}; expected 'cam' or 'slots'")
        if not 0 <= self.slot_baseline < 1:
            raise FieldError("PseudoLabelConfig.slot_baseline", [self.slot_baseline],
                             "expected a quantile in [0, 1)")
        if self.confident is not None and self.background != BackgroundParams():
            bg = self.background
            raise FieldError(
                ("PseudoLabelConfig.confident", "PseudoLabelConfig.background"),
                [f"{self.confident.foreground:g},{self.confident.background:g}",
                 f"{bg.method} (threshold {bg.threshold:g}, power {bg.power:g})"],
                "confident regions replace the background score, so a background setting would be ignored: "
                "give one of the two",
            )

    @property
    def resolved_evidence(self) -> EvidenceConfig:
        """``evidence``, or the method's default when it is ``None`` (so ``replace(config, method=...)``
        follows)."""
        if self.evidence is not None:
            return self.evidence
        return SLOT_EVIDENCE if self.method == "slots" else EvidenceConfig()


@dataclass(frozen=True)
class PseudoLabelResult:
    """One image's pseudo-mask ``(H, W)`` uint8 and its foreground score maps ``(n, H, W)``."""

    mask: np.ndarray
    scores: np.ndarray
    classes: Tuple[int, ...]


def evidence_config(model: torch.nn.Module,
                    config: PseudoLabelConfig = PseudoLabelConfig()) -> EvidenceConfig:
    """The evidence ``config`` needs from ``model``: its CAM settings, with every slot block it uses captured.

    Those are the refinement's blocks (``method="slots"``) and the slot
    classifier's (all of the model's GLMix blocks unless it names some).
    """
    if config.method != "slots":
        return replace(config.resolved_evidence, slot_blocks=())
    evidence = config.resolved_evidence
    blocks = set(evidence.slot_blocks)
    if config.slot_classifier is not None:
        blocks |= set(config.slot_classifier.blocks or range(1, len(glmix_blocks(model)) + 1))
    return replace(evidence, slot_blocks=tuple(sorted(blocks)))


def class_scores(evidence: Evidence, config: PseudoLabelConfig = PseudoLabelConfig()) -> np.ndarray:
    """Foreground scores ``(n, H, W)`` in [0, 1]: the CAMs, or (``method="slots"``) their slot refinement.

    Raises:
        ValueError: when ``evidence`` lacks a slot block the refinement needs.
    """
    if config.method == "cam":
        return evidence.cams.numpy()
    by_ordinal = {s.ordinal: s for s in evidence.slots}
    blocks = config.resolved_evidence.slot_blocks
    missing = sorted(set(blocks) - set(by_ordinal))
    if missing:
        raise ValueError(f"the evidence holds no slots of blocks {missing} (it has {sorted(by_ordinal)}); "
                         "compute it with evidence_config(model, config)")
    scores = slot_refine(evidence.cams, [by_ordinal[b] for b in blocks], config.slot_mix,
                         config.slot_sharpness)
    return subtract_baseline(scores, config.slot_baseline).numpy()


class EvidenceLabeller:
    """One image's scores and fitted slot classifier, ready to be labelled against any background.

    The slot classifier does not depend on the background, so it is fitted
    once here; :meth:`mask` then runs background -> (classifier mix) -> CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        evidence: from :func:`wsss.evidence.compute_evidence` with (at least) the
            slot blocks of :func:`evidence_config`; the slot classifier uses
            ``config.slot_classifier.blocks``, or every block the evidence holds.
        config: see :class:`PseudoLabelConfig` (``evidence`` and ``max_side`` are not used here).
    """

    def __init__(self, image: np.ndarray, evidence: Evidence,
                 config: PseudoLabelConfig = PseudoLabelConfig()) -> None:
        self.image, self.classes, self.config = image, evidence.classes, config
        self.scores = class_scores(evidence, config)  # (n, H, W)
        self.classifier = config.slot_classifier if config.method == "slots" else None
        self.learned = None  # (n + 1, H, W) or None
        if self.classifier is not None:
            wanted = set(self.classifier.blocks or ()) or {s.ordinal for s in evidence.slots}
            self.learned = slot_classifier(self.scores, [s for s in evidence.slots if s.ordinal in wanted],
                                           self.classifier)

    def mask(self, background: BackgroundParams) -> np.ndarray:
        """``(H, W)`` uint8 VOC labels against ``background``."""
        probs = to_probabilities(with_background(self.scores, background))
        if self.classifier is not None:
            probs = mix_slot_classifier(probs, self.learned, self.classifier.weight)
        if self.config.crf is None:
            return labels_from_scores(probs, self.classes)
        return np.array([0, *self.classes], np.uint8)[dense_crf(self.image, probs, self.config.crf)]

    def result(self) -> PseudoLabelResult:
        """The mask of ``config.background``, or IRN's confident/ignore labels with ``config.confident``."""
        confident = self.config.confident
        if confident is None:
            mask = self.mask(self.config.background)
        else:
            mask = confident_labels(self.mask(BackgroundParams("constant", confident.foreground)),
                                    self.mask(BackgroundParams("constant", confident.background)))
        return PseudoLabelResult(mask, self.scores.astype(np.float32), self.classes)


def pseudo_label_from_evidence(
    image: np.ndarray, evidence: Evidence, config: PseudoLabelConfig = PseudoLabelConfig()
) -> PseudoLabelResult:
    """Pseudo-mask of one image from its evidence: scores -> slot classifier -> background -> CRF.

    ``EvidenceLabeller(image, evidence, config).result()``; see :class:`EvidenceLabeller`.
    """
    return EvidenceLabeller(image, evidence, config).result()


def pseudo_label_image(
    model: torch.nn.Module, image: np.ndarray, classes: Sequence[int], head: ClassHead,
    config: PseudoLabelConfig = PseudoLabelConfig(), device: torch.device = torch.device("cpu"),
    evidence_cfg: Optional[EvidenceConfig] = None,
) -> PseudoLabelResult:
    """Pseudo-mask of one image from its image-level classes.

    :func:`wsss.evidence.compute_evidence` with :func:`evidence_config`, then
    :func:`pseudo_label_from_evidence`, then (``config.regions``) :func:`wsss.regions.relabel`.

    Args:
        model: GLNet in eval mode on ``device``.
        image: ``(H, W, 3)`` uint8 RGB.
        classes: VOC class indices 1..20 in the image.
        head: see :class:`ClassHead`.
        config: see :class:`PseudoLabelConfig`.
        evidence_cfg: ``evidence_config(model, config)`` when the caller has it (made
            once per run instead of once per image).
    """
    classes = tuple(sorted(int(c) for c in classes))
    H, W = image.shape[:2]
    if not classes:
        return PseudoLabelResult(np.zeros((H, W), np.uint8), np.zeros((0, H, W), np.float32), ())
    if evidence_cfg is None:
        evidence_cfg = evidence_config(model, config)
    x = normalize(image).to(device)
    evidence = compute_evidence(model, x, classes, head, evidence_cfg)
    result = pseudo_label_from_evidence(image, evidence, config)
    if config.regions is None:
        return result
    return replace(result, mask=relabel(model, x, result.mask, classes, head, config.regions))


def shard(ids: Sequence[str], rank: int, world_size: int) -> List[str]:
    """The ids rank ``rank`` of ``world_size`` processes handles (deterministic, interleaved)."""
    return list(ids[rank::world_size])


def run_pseudo_labels(
    model: torch.nn.Module, layout: VOCLayout, ids: Sequence[str], labels: Dict[str, np.ndarray], out: Path,
    *, head: ClassHead, config: PseudoLabelConfig = PseudoLabelConfig(),
    device: torch.device = torch.device("cpu"), save_scores: bool = False, rank: int = 0, world_size: int = 1,
    progress: bool = True,
) -> Dict[str, int]:
    """Write ``out/<id>.png`` for this rank's share of ``ids``; returns counts.

    Returns:
        ``{"written", "skipped" (already there), "failed"}`` for this rank.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if save_scores:
        (out / "scores").mkdir(exist_ok=True)
    mine = shard(ids, rank, world_size)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    model = model.to(device).eval()
    evidence_cfg = evidence_config(model, config)
    bar = tqdm(mine, desc=f"pseudo-labels[{rank}]" if world_size > 1 else "pseudo-labels", unit="img",
               disable=not progress, position=rank)
    log = _ProgressLog(len(mine), every_s=None if progress else LOG_EVERY_S)
    try:
        for image_id in bar:
            log.tick(counts)
            target = out / f"{image_id}.png"
            if target.is_file() and (not save_scores or (out / "scores" / f"{image_id}.npz").is_file()):
                counts["skipped"] += 1
                continue
            try:
                pil = load_image(layout.image(image_id), max_side=10**6, min_side=MIN_SIDE)
            except (ValueError, FileNotFoundError) as err:
                _logger.error("skipped %s", err)
                counts["failed"] += 1
                continue
            image = np.asarray(pil)
            H, W = image.shape[:2]
            work = image
            if max(H, W) > config.max_side:
                pil.thumbnail((config.max_side, config.max_side))
                work = np.asarray(pil)
            classes = [c + 1 for c in np.flatnonzero(labels[image_id] > 0.5)]
            result = pseudo_label_image(model, work, classes, head, config, device, evidence_cfg)
            mask = result.mask
            if work.shape[:2] != (H, W):
                from PIL import Image

                mask = np.asarray(Image.fromarray(mask).resize((W, H), Image.Resampling.NEAREST))
            if save_scores:
                atomic_write(out / "scores" / f"{image_id}.npz", lambda p: np.savez_compressed(
                    p, scores=result.scores.astype(np.float16), classes=np.array(result.classes, np.uint8)))
            atomic_write(target, lambda p: save_mask(p, mask))
            counts["written"] += 1
            bar.set_postfix(img_s=f"{log.rate(counts):.2f}")
    except KeyboardInterrupt:
        raise RunInterrupted(counts["written"] + counts["skipped"], len(mine)) from None
    finally:
        bar.close()
    log.tick(counts, final=True)
    return counts


LOG_EVERY_S = 30.0  # progress lines when the output is not a terminal (a log file, a batch job)


class _ProgressLog:
    """The run's speed; a log line every ``every_s`` seconds with images done, images/s and ETA
    (``None``: never; the progress bar shows it)."""

    def __init__(self, total: int, every_s: Optional[float]) -> None:
        self.total, self.every_s = total, every_s
        self.start = self.last = time.perf_counter()

    def rate(self, counts: Dict[str, int]) -> float:
        """Images written per second since the start (skipped ones cost nothing, so they do not count)."""
        return counts["written"] / max(time.perf_counter() - self.start, 1e-9)

    def tick(self, counts: Dict[str, int], final: bool = False) -> None:
        now = time.perf_counter()
        if self.every_s is None or not (final or now - self.last >= self.every_s):
            return
        self.last = now
        done = counts["written"] + counts["skipped"] + counts["failed"]
        rate = self.rate(counts)
        left = self.total - done
        eta = _clock(left / rate) if rate > 0 else "?"
        _logger.info("%d/%d images (%d written, %d skipped, %d failed), %.2f images/s, %s %s", done,
                     self.total, counts["written"], counts["skipped"], counts["failed"], rate,
                     "took" if final else "ETA", _clock(now - self.start) if final else eta)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
