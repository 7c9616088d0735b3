"""Class evidence from a GLNet: multi-scale CAMs, and the slots of chosen GLMix blocks.

CAM (the standard WSSS protocol, as IRN): for each scale (default 1.0, 0.5,
1.5, 2.0) and its horizontal flip, the classifier weights of each labelled
class applied to the final feature map, ReLU, resized to the image and summed;
each class map is then divided by its maximum. Only the classes in the image's
labels are computed. Each scale can be weighted in the sum and computed by
shift-and-stitch (:func:`stitched_cam`): the model sees the image at that
scale several times, shifted by fractions of its output stride, and the passes
interleave into a finer map. A scale may also be relative to the model's
training input size (``EvidenceConfig.fit``): the default pipeline stitches
the CAM at that size and at 0.75 of it (``wsss.pipeline.FITTED_EVIDENCE``),
which for ``glnet_demo`` on EmojiVOC is about the 0.5 and 0.375 of its preset.

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

from glmix_viz.analysis.maps import normalize_by_max
from glmix_viz.capture import SlotCapture, SlotRecord
from glmix_viz.devices import torch_threads
from glmix_viz.fields import FieldError

from .voc import VOC_FOREGROUND

__all__ = [
    "ClassHead", "EvidenceConfig", "Evidence", "compute_evidence",
    "stitched_cam", "IMAGENET_TO_VOC", "MAX_BATCH_PIXELS",
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
                "checkpoint use ClassHead.imagenet(model)"
            )
        return cls(head.weight.detach(), tuple((i,) for i in range(len(VOC_FOREGROUND))), _bias(head))

    @classmethod
    def imagenet(cls, model: nn.Module, mapping: Path = IMAGENET_TO_VOC) -> "ClassHead":
        """An ImageNet-1k head grouped into VOC classes with the bundled mapping."""
        head = model.get_classifier()
        if not isinstance(head, nn.Linear) or head.out_features != 1000:
            raise ValueError(f"ClassHead.imagenet needs a 1000-class ImageNet head, this one has "
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
    """Scales, weights, stitching and flips of the CAM (the first stage of the pipeline).

    Attributes:
        scales: image scales of the CAM passes; the first is also where slots
            are captured. A scale marked in ``fit`` is relative to how the model
            saw images in training instead of to the image: the image is resized
            by ``scale * view_side / sqrt(H * W)`` (1.0: its area becomes
            ``view_side²``, the scale at which the model saw whole images).
        flip: add horizontally flipped passes.
        weights: weight of each scale's CAM in the sum (``None``: 1 each).
        stitch: shift-and-stitch factor of each scale (``None``: 1 each): the
            CAM at that scale is computed on a grid ``f`` times finer than the
            model's output stride, from ``f * f`` shifted passes (see
            :func:`stitched_cam`); 1 is the plain CAM, otherwise an even
            divisor of the stride.
        fit: per scale, whether it is relative to ``view_side`` (``None``: none is).
        view_side: the side in pixels of a whole image as the model saw it in
            training: its input size over the square root of its training
            crops' mean area; needed when a scale is in ``fit``
            (``PseudoLabelConfig.for_model`` derives it from the model).
    """

    scales: Tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    weights: Optional[Tuple[float, ...]] = None
    stitch: Optional[Tuple[int, ...]] = None
    fit: Optional[Tuple[bool, ...]] = None
    view_side: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.scales or any(not s > 0 for s in self.scales):
            raise FieldError("EvidenceConfig.scales", [self.scales], "expected one or more positive numbers")
        for name, values in (("weights", self.weights), ("stitch", self.stitch), ("fit", self.fit)):
            if values is not None and len(values) != len(self.scales):
                raise FieldError((f"EvidenceConfig.{name}", "EvidenceConfig.scales"), [values, self.scales],
                                 f"expected one {name} value per scale")
        if self.weights is not None and any(w < 0 for w in self.weights):
            raise FieldError("EvidenceConfig.weights", [self.weights], "expected numbers >= 0")
        if self.stitch is not None and any(f < 1 or (f > 1 and f % 2) for f in self.stitch):
            raise FieldError("EvidenceConfig.stitch", [self.stitch],
                             "expected 1 (plain) or an even factor per scale")
        if self.view_side is not None and not self.view_side >= 1:
            raise FieldError("EvidenceConfig.view_side", [self.view_side], "expected a side in pixels >= 1")

    @property
    def fitted(self) -> bool:
        """Whether any scale is relative to the model's input size."""
        return any(self.fit or ())

    def image_scales(self, height: int, width: int) -> Tuple[float, ...]:
        """The scales of an image of ``height x width`` pixels, the ``fit`` ones resolved.

        Raises:
            FieldError: a scale is in ``fit`` but ``view_side`` is not set.
        """
        if not self.fitted:
            return tuple(self.scales)
        if self.view_side is None:
            raise FieldError("EvidenceConfig.view_side", [None], "scales relative to the model's training "
                             "view need it (PseudoLabelConfig.for_model(model) sets it)")
        unit = self.view_side / (height * width) ** 0.5
        return tuple(s * unit if f else s for s, f in zip(self.scales, self.fit))


@dataclass(frozen=True)
class Evidence:
    """CAMs of the labelled classes and the captured slots for one image.

    Attributes:
        classes: VOC class indices (1..20) of the image's labels, in order.
        cams: ``(len(classes), H, W)`` float32 in [0, 1] at image resolution.
        slots: the captured blocks' :class:`~glmix_viz.capture.SlotRecord` (batch of one,
            float32 on the CPU), from the unflipped pass at the first scale.
    """

    classes: Tuple[int, ...]
    cams: torch.Tensor
    slots: Tuple[SlotRecord, ...]


def _cams(model: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ReLU(W f) for the features f of a batch: ``(B, 3, h, w) -> (B, O', h/32, w/32)``."""
    return F.relu(torch.einsum("oc,bchw->bohw", weight, model.forward_features(x)))


def _cam_at(model: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """ReLU(W f) for features f of ``x``: ``(1, 3, h, w) -> (O', h/32, w/32)``."""
    return _cams(model, x, weight)[0]


def _stitch_shifts(factor: int, stride: int) -> List[Tuple[int, int]]:
    """The ``(dy, dx)`` top/left paddings of the ``factor * factor`` passes of :func:`stitched_cam`."""
    step = stride // factor
    offsets = [step // 2 + step * k for k in range(factor)]  # pad before: output cells land on fine centres
    return [(dy, dx) for dy in offsets for dx in offsets]


def _stitch_inputs(x: torch.Tensor, factor: int, stride: int) -> torch.Tensor:
    """The shifted copies of ``x`` ``(1, 3, h, w)``: ``(factor², 3, h + stride, w + stride)``."""
    shifts = _stitch_shifts(factor, stride)
    return torch.cat([F.pad(x, (dx, stride - dx, dy, stride - dy)) for dy, dx in shifts])


def _stitch(cams: torch.Tensor, factor: int, h: int, w: int, stride: int) -> torch.Tensor:
    """Interleave the CAMs ``(factor², O', h/stride + 1, w/stride + 1)`` of :func:`_stitch_inputs`'s copies
    into ``(O', factor * h / stride, factor * w / stride)``."""
    step, device = stride // factor, cams.device
    fine = cams.new_zeros(cams.shape[1], factor * h // stride, factor * w // stride)
    for cam, (dy, dx) in zip(cams, _stitch_shifts(factor, stride)):
        # an output cell i is centred at stride * i + stride / 2 - dy, the fine cell of that centre:
        rows = torch.arange(cam.shape[-2], device=device) * factor + (stride // 2 - dy - step // 2) // step
        cols = torch.arange(cam.shape[-1], device=device) * factor + (stride // 2 - dx - step // 2) // step
        r, c = (rows >= 0) & (rows < fine.shape[-2]), (cols >= 0) & (cols < fine.shape[-1])
        fine[:, rows[r][:, None], cols[c][None, :]] = cam[:, r][:, :, c]
    return fine


def _check_stitch(h: int, w: int, factor: int, stride: int) -> None:
    if h % stride or w % stride:
        raise ValueError(f"stitched_cam needs a size divisible by {stride}, got {(h, w)}")
    if factor != 1 and (factor % 2 or stride % factor):
        raise ValueError(f"stitch factor {factor}: expected 1 or an even divisor of {stride}")


def stitched_cam(model: nn.Module, x: torch.Tensor, weight: torch.Tensor, factor: int,
                 stride: int = 32) -> torch.Tensor:
    """CAM on a grid ``factor`` times finer than the output stride, by shift-and-stitch.

    The model sees the whole image ``factor * factor`` times, each time padded
    (with zeros, the mean colour) by a different offset on the top and left, so
    that its output cells are centred on a different phase of the finer grid;
    the passes are interleaved into one map (OverFeat's shift-and-stitch).
    Each fine cell holds exactly the CAM of one pass whose cell is centred
    there, so the map keeps the plain CAM's scale while the model still sees
    the image at the scale it was given.

    Args:
        model: a GLNet in eval mode.
        x: ``(1, 3, h, w)`` with ``h`` and ``w`` multiples of ``stride``.
        weight: ``(O', C)`` classifier rows.
        factor: even divisor of ``stride`` (1: the plain CAM).
        stride: the model's output stride.

    Returns:
        ``(O', factor * h / stride, factor * w / stride)``; fine cell ``m`` is
        centred at ``(m + 0.5) * stride / factor`` pixels.
    """
    h, w = x.shape[-2:]
    _check_stitch(h, w, factor, stride)
    if factor == 1:
        return _cam_at(model, x, weight)
    return _stitch(_cams(model, _stitch_inputs(x, factor, stride), weight), factor, h, w, stride)


def _output_stride(model: nn.Module) -> int:
    """The model's output stride (timm's ``feature_info``; 32 when it has none)."""
    info = getattr(model, "feature_info", None)
    return int(info[-1]["reduction"]) if info else 32


#: The most input pixels (images x height x width) one forward of :func:`compute_evidence` takes: its
#: passes that share an input size run as batches of up to this many pixels (4.2 M: 16 images of
#: 512x512; the default evidence of a 500x375 image has at most 1.6 M of one size, its 32 stitched
#: copies). How a run uses its memory, not a setting of the evidence: it changes the CAMs at float
#: rounding only, so it is not in ``EvidenceConfig`` (nor in a run's manifest).
MAX_BATCH_PIXELS = 1 << 22


#: ``compute_evidence(precision=...)``: the forwards' autocast dtype (``None``: none, float32 throughout).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def _forward_passes(model: nn.Module, inputs: Sequence[torch.Tensor], weight: torch.Tensor,
                    slot_blocks: Sequence[int], slot_pass: Optional[int], max_pixels: int,
                    precision: str = "float32") -> Tuple[List[torch.Tensor], List[SlotRecord]]:
    """The CAM ``(O', h', w')`` of each input ``(3, h, w)``, and the slots of ``slot_blocks`` in pass
    ``slot_pass``; inputs of one size run as batches of at most ``max_pixels`` pixels (at least one image),
    under autocast to ``precision`` (CAMs and slot logits returned in float32)."""
    dtype = PRECISIONS[precision]
    by_size: dict = {}
    for i, x in enumerate(inputs):
        by_size.setdefault(tuple(x.shape), []).append(i)
    cams: List[Optional[torch.Tensor]] = [None] * len(inputs)
    slots: List[SlotRecord] = []
    for (_, h, w), members in by_size.items():
        per_batch = max(1, max_pixels // (h * w))
        for first in range(0, len(members), per_batch):
            chunk = members[first:first + per_batch]
            batch = torch.stack([inputs[i] for i in chunk])
            with torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
                if slot_pass in chunk:
                    with SlotCapture(model, list(slot_blocks)) as cap:
                        out = _cams(model, batch, weight)
                    k = chunk.index(slot_pass)  # SlotCapture records the whole batch: keep that pass's
                    slots = [SlotRecord(r.name, r.ordinal, r.logits[k:k + 1].to(torch.float32, copy=True),
                                        r.grid) for r in cap.records]
                else:
                    out = _cams(model, batch, weight)
            for i, cam in zip(chunk, out.float()):
                cams[i] = cam
    return cams, slots


#: One summand of the evidence: ``(weight, flipped, stitch factor, (h, w) of its input, its passes)``.
_Term = Tuple[float, bool, int, Tuple[int, int], Sequence[int]]


def _plan_passes(image: torch.Tensor, config: EvidenceConfig, stride: int,
                 with_slots: bool) -> Tuple[List[torch.Tensor], List[_Term], Optional[int]]:
    """Every pass's input ``(3, h, w)`` of ``image`` ``(3, H, W)``, the terms summed from their CAMs, in
    order, and the index of the slot pass (the unflipped first scale; ``None`` without ``with_slots``)."""
    H, W = image.shape[-2:]
    weights = config.weights or (1.0,) * len(config.scales)
    stitch = config.stitch or (1,) * len(config.scales)
    inputs: List[torch.Tensor] = []
    terms: List[_Term] = []
    slot_pass = None
    for s_i, (scale, w_s, factor) in enumerate(zip(config.image_scales(H, W), weights, stitch)):
        multiple = 1 if factor == 1 else stride  # a stitched pass needs a size divisible by the stride
        size = tuple(max(32, multiple * int(round(n * scale / multiple))) for n in (H, W))
        x = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if config.flip else (False,):
            xp = x.flip(-1) if flipped else x
            if s_i == 0 and not flipped and with_slots:
                slot_pass = len(inputs)
                inputs.append(xp[0])
            if w_s == 0:
                continue  # a scale weighted 0 adds nothing: only its slot pass (above) runs
            if factor > 1:
                _check_stitch(*size, factor, stride)
                first = len(inputs)
                inputs.extend(_stitch_inputs(xp, factor, stride))
                terms.append((w_s, flipped, factor, size, range(first, len(inputs))))
            elif s_i == 0 and not flipped and with_slots:
                terms.append((w_s, flipped, factor, size, [slot_pass]))  # the slot pass is this CAM's
            else:
                terms.append((w_s, flipped, factor, size, [len(inputs)]))
                inputs.append(xp[0])
    return inputs, terms, slot_pass


def _sum_terms(total: torch.Tensor, cams: Sequence[torch.Tensor], terms: Sequence[_Term],
               stride: int) -> torch.Tensor:
    """Add the terms' weighted CAMs (stitched, unflipped, resized) into ``total (O', H, W)``; returns it."""
    size = tuple(total.shape[-2:])
    for w_s, flipped, factor, (h, w), passes in terms:
        if factor > 1:
            cam = _stitch(torch.stack([cams[i] for i in passes]), factor, h, w, stride)
        else:
            cam = cams[passes[0]]
        if flipped:
            cam = cam.flip(-1)
        total += w_s * F.interpolate(cam[None], size=size, mode="bilinear", align_corners=False)[0]
    return total


@torch.no_grad()
def compute_evidence(
    model: nn.Module, image: torch.Tensor, classes: Sequence[int], head: ClassHead,
    config: EvidenceConfig = EvidenceConfig(), slot_blocks: Sequence[int] = (),
    max_batch_pixels: int = MAX_BATCH_PIXELS, precision: str = "float32",
) -> Evidence:
    """Multi-scale, flipped CAMs of ``classes`` and the slots of ``slot_blocks``.

    The passes of one input size (a scale and its flip, a stitched scale's
    shifted copies and their flips, the slot pass with them) run as batches.

    Args:
        model: a GLNet in eval mode.
        image: normalised ``(3, H, W)`` tensor on the model's device.
        classes: VOC class indices 1..20 present in the image.
        head: see :class:`ClassHead`.
        config: see :class:`EvidenceConfig`.
        slot_blocks: GLMix block ordinals (1-based) whose clustering is kept, from
            the unflipped pass at the first scale (``PseudoLabelConfig.capture_blocks()``).
        max_batch_pixels: the most pixels of one forward (:data:`MAX_BATCH_PIXELS`; the image count
            times its size; 1: one pass per forward). The results differ at float rounding only.
        precision: ``"float32"``, or ``"bfloat16"``: the forwards under autocast (mixed precision:
            faster on GPUs, and on CPUs with bfloat16 units); the CAMs are combined in float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    classes = tuple(int(c) for c in classes)
    if any(not 1 <= c <= len(VOC_FOREGROUND) for c in classes):
        raise ValueError(f"classes must be VOC foreground indices 1..20, got {classes}")
    H, W = image.shape[-2:]
    rows = sorted({r for c in classes for r in head.groups[c - 1]})
    index = {r: i for i, r in enumerate(rows)}
    weight = head.weight[rows].to(image.device, image.dtype)
    stride = _output_stride(model)
    # Everything but the forwards runs on one thread: the resizes' rounding would depend on the thread
    # count (the forwards' batches do not), so the files are the same in any process layout.
    with torch_threads(1):
        inputs, terms, slot_pass = _plan_passes(image, config, stride, bool(slot_blocks))
    cams, slots = _forward_passes(model, inputs, weight, slot_blocks, slot_pass, max_batch_pixels,
                                  precision)
    with torch_threads(1):
        total = _sum_terms(image.new_zeros(len(rows), H, W), cams, terms, stride)
        per_class = torch.stack([total[[index[r] for r in head.groups[c - 1]]].amax(0) for c in classes]) \
            if classes else image.new_zeros(0, H, W)
    return Evidence(classes, normalize_by_max(per_class).float().cpu(), tuple(
        SlotRecord(s.name, s.ordinal, s.logits.float().cpu(), s.grid) for s in slots))
