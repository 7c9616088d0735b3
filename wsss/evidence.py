"""Class evidence from a GLNet: multi-scale CAMs, and the slots of chosen GLMix blocks.

CAM (the standard WSSS protocol, as IRN): for each scale (default 1.0, 0.5,
1.5, 2.0) and its horizontal flip, the classifier weights of each labelled
class applied to the final feature map, ReLU, resized to the image and summed;
each class map is then divided by its maximum. Only the classes in the image's
labels are computed.

The classifier is a :class:`ClassHead`: the model's own head for a model
trained with ``glmix-wsss train`` (20 outputs, one per VOC class), or the
ImageNet head grouped into VOC classes (training-free mode for the released
checkpoints; see ``wsss/data/imagenet_to_voc.json``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from glmix_viz.capture import SlotCapture

from .voc import VOC_FOREGROUND

__all__ = [
    "ClassHead", "EvidenceConfig", "SlotMaps", "Evidence", "compute_evidence", "normalise_by_max", "IMAGENET_TO_VOC",
]

IMAGENET_TO_VOC = Path(__file__).parent / "data" / "imagenet_to_voc.json"


@dataclass(frozen=True)
class ClassHead:
    """Classifier rows that make each VOC foreground class's CAM.

    Attributes:
        weight: ``(O, C)`` classifier weights (O outputs, C feature channels).
        groups: for each of the 20 VOC classes, the output rows that count as
            it; its CAM is the maximum over them (after ReLU).
        bias: ``(O,)`` classifier bias, or ``None`` (zero).
        multi_label: outputs are independent sigmoids (a model trained with
            ``glmix-wsss train``); ``False``: one softmax over all O outputs
            (ImageNet), a class's probability the sum over its rows.
    """

    weight: torch.Tensor
    groups: Tuple[Tuple[int, ...], ...]
    bias: Optional[torch.Tensor] = None
    multi_label: bool = True

    @classmethod
    def from_model(cls, model: nn.Module) -> "ClassHead":
        """The model's own head; it must have 20 outputs (VOC foreground classes in order)."""
        head = model.get_classifier()
        if not isinstance(head, nn.Linear) or head.out_features != len(VOC_FOREGROUND):
            raise ValueError(
                f"the model's classifier has {getattr(head, 'out_features', 0)} outputs, expected "
                f"{len(VOC_FOREGROUND)} (one per VOC class, as `glmix-wsss train` makes); for an ImageNet "
                "checkpoint use ClassHead.imagenet(model) (CLI: --head imagenet)"
            )
        return cls(head.weight.detach(), tuple((i,) for i in range(len(VOC_FOREGROUND))), _bias(head))

    @classmethod
    def imagenet(cls, model: nn.Module, mapping: Path = IMAGENET_TO_VOC) -> "ClassHead":
        """An ImageNet-1k head grouped into VOC classes with the bundled mapping."""
        head = model.get_classifier()
        if not isinstance(head, nn.Linear) or head.out_features != 1000:
            raise ValueError(f"--head imagenet needs a 1000-class ImageNet head, this one has "
                             f"{getattr(head, 'out_features', 0)} outputs")
        table = json.loads(Path(mapping).read_text())["voc_to_imagenet"]
        groups = tuple(tuple(int(i) for i in table[name]) for name in VOC_FOREGROUND)
        return cls(head.weight.detach(), groups, _bias(head), multi_label=False)

    def probabilities(self, pooled: torch.Tensor) -> torch.Tensor:
        """Class probabilities of pooled features.

        Shape:
            ``(B, C) -> (B, 20)``: one column per VOC foreground class.
        """
        logits = pooled @ self.weight.to(pooled).T
        if self.bias is not None:
            logits = logits + self.bias.to(pooled)
        if self.multi_label:
            return torch.stack([torch.sigmoid(logits[:, list(g)]).amax(1) for g in self.groups], 1)
        probs = torch.softmax(logits, 1)
        return torch.stack([probs[:, list(g)].sum(1) for g in self.groups], 1)


def _bias(head: nn.Linear) -> Optional[torch.Tensor]:
    return None if head.bias is None else head.bias.detach()


@dataclass(frozen=True)
class EvidenceConfig:
    """Scales and flips of the CAM, and the GLMix blocks whose slots are kept.

    Attributes:
        scales: image scales of the CAM (the first is where slots are captured).
        flip: add horizontally flipped passes.
        slot_blocks: GLMix block ordinals (1-based) whose clustering is kept.
    """

    scales: Tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    slot_blocks: Tuple[int, ...] = ()


@dataclass(frozen=True)
class SlotMaps:
    """One GLMix block's clustering on one image (at the first scale, unflipped).

    Attributes:
        ordinal: GLMix block ordinal.
        logits: ``(K, N)`` slot logits (``slot_scale * cos(slot, pixel)``).
        grid: ``(h, w)`` with ``h * w = N``.
    """

    ordinal: int
    logits: torch.Tensor
    grid: Tuple[int, int]

    def clustering(self, sharpness: float = 1.0) -> torch.Tensor:
        """``(K, N)`` softmax over pixels of ``sharpness * logits``: how the slots pool the pixels."""
        return torch.softmax(self.logits * sharpness, dim=-1)

    def dispatch(self, sharpness: float = 1.0) -> torch.Tensor:
        """``(K, N)`` softmax over slots of ``sharpness * logits``: each pixel's distribution over slots."""
        return torch.softmax(self.logits * sharpness, dim=0)


@dataclass(frozen=True)
class Evidence:
    """CAMs of the labelled classes and the captured slots for one image.

    Attributes:
        classes: VOC class indices (1..20) of the image's labels, in order.
        cams: ``(len(classes), H, W)`` float32 in [0, 1] at image resolution.
        slots: one :class:`SlotMaps` per requested block.
    """

    classes: Tuple[int, ...]
    cams: torch.Tensor
    slots: Tuple[SlotMaps, ...]


def normalise_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each map by its maximum (all-zero maps stay zero).

    Shape:
        ``(n, H, W) -> (n, H, W)``.
    """
    return maps / maps.flatten(1).amax(1).clamp_min(1e-5).view(-1, 1, 1)


def _cam_at(model: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ReLU(W f) for features f of ``x``: ``(1, 3, h, w) -> (O', h/32, w/32)``."""
    feats = model.forward_features(x)[0]  # (C, h', w')
    return F.relu(torch.einsum("oc,chw->ohw", weight, feats))


@torch.no_grad()
def compute_evidence(
    model: nn.Module, image: torch.Tensor, classes: Sequence[int], head: ClassHead,
    config: EvidenceConfig = EvidenceConfig(),
) -> Evidence:
    """Multi-scale, flipped CAMs of ``classes`` and the slots of ``config.slot_blocks``.

    Args:
        model: a GLNet in eval mode.
        image: normalised ``(3, H, W)`` tensor on the model's device.
        classes: VOC class indices 1..20 present in the image.
        head: see :class:`ClassHead`.
        config: see :class:`EvidenceConfig`.
    """
    classes = tuple(int(c) for c in classes)
    if any(not 1 <= c <= len(VOC_FOREGROUND) for c in classes):
        raise ValueError(f"classes must be VOC foreground indices 1..20, got {classes}")
    H, W = image.shape[-2:]
    rows = sorted({r for c in classes for r in head.groups[c - 1]})
    index = {r: i for i, r in enumerate(rows)}
    weight = head.weight[rows].to(image.device, image.dtype)
    total = image.new_zeros(len(rows), H, W)
    slots: List[SlotMaps] = []
    for s_i, scale in enumerate(config.scales):
        size = (max(32, int(round(H * scale))), max(32, int(round(W * scale))))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        passes = [x, x.flip(-1)] if config.flip else [x]
        for p_i, xp in enumerate(passes):
            capture = s_i == 0 and p_i == 0 and config.slot_blocks
            if capture:
                with SlotCapture(model, list(config.slot_blocks)) as cap:
                    cam = _cam_at(model, xp, weight)
                for rec in cap.records:
                    slots.append(SlotMaps(rec.ordinal, rec.logits[0].float(), rec.grid))
            else:
                cam = _cam_at(model, xp, weight)
            if p_i == 1:
                cam = cam.flip(-1)
            total += F.interpolate(cam[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    per_class = torch.stack([total[[index[r] for r in head.groups[c - 1]]].amax(0) for c in classes]) if classes \
        else image.new_zeros(0, H, W)
    return Evidence(classes, normalise_by_max(per_class).float().cpu(), tuple(
        SlotMaps(s.ordinal, s.logits.cpu(), s.grid) for s in slots))
