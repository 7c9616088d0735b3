"""Pseudo-labels for a VOC split: evidence -> (slots) -> background -> (CRF) -> palette PNGs.

Each image's PNG is written to a temporary file and renamed, so an
interrupted run leaves no broken file and a rerun skips finished images.
Under ``torchrun`` each rank takes the ids ``ids[rank::world_size]``; the
files are the same as a single process writes. With ``workers`` N > 0, N
worker processes (:mod:`glmix_viz._pool`) label whole images when the model
is on the CPU, or post-process the evidence this process computes on a GPU;
the files are again the same (docs/wsss.md, "At dataset scale").
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from glmix_viz._pool import usable_cores
from glmix_viz.capture import glmix_blocks
from glmix_viz.devices import torch_threads
from glmix_viz.fields import FieldError
from glmix_viz.fileio import RunInterrupted, atomic_write
from glmix_viz.images import MIN_SIDE, load_image, normalize
from glmix_viz.progress import LOG_EVERY_S, ProgressLog

from .evidence import MAX_BATCH_PIXELS, PRECISIONS, ClassHead, Evidence, EvidenceConfig, compute_evidence
from .refine import (
    BackgroundParams,
    ConfidentRegions,
    CRFParams,
    SlotRefineParams,
    confident_labels,
    dense_crf,
    labels_from_scores,
    slot_refine,
    subtract_baseline,
    to_probabilities,
    with_background,
)
from .regions import RegionParams, model_input_side, relabel
from .slot_classifier import SlotClassifierParams, mix_slot_classifier, slot_classifier
from .voc import VOCLayout, save_mask

__all__ = [
    "STANDARD_CAM", "FITTED_EVIDENCE", "PseudoLabelConfig", "PseudoLabelResult", "EvidenceLabeller",
    "class_scores", "pseudo_label_from_evidence", "pseudo_label_image", "write_evidence", "read_evidence",
    "run_pseudo_labels", "load_work_image", "shard", "default_workers", "usable_cores",
]

_logger = logging.getLogger(__name__)



#: The standard WSSS protocol's CAM (IRN): scales 1.0, 0.5, 1.5, 2.0 and their flips.
STANDARD_CAM = EvidenceConfig()

#: The model-agnostic default evidence: the plain CAM at the image's scale 1.0
#: (the pass whose slots are captured), plus CAMs at the model's training scale
#: (weight 2) and 0.75 of it, on grids 4x finer than the model's (shift-and-stitch).
#: For ``glnet_demo`` (192 px) on EmojiVOC that is about 0.5 and 0.375, the
#: scales its preset was measured with (docs/wsss.md, "Presets").
FITTED_EVIDENCE = EvidenceConfig(scales=(1.0, 1.0, 0.75), weights=(1.0, 2.0, 1.0), stitch=(1, 4, 4),
                                 fit=(False, True, True))

Background = Union[BackgroundParams, ConfidentRegions]


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How pseudo-masks are made: one settings object per stage, in the order they run.

    ``PseudoLabelConfig()`` is the model-agnostic default; a checkpoint may
    carry the settings measured for it (its preset, :mod:`wsss.presets`).
    Settings derived from the model (``None`` below) are filled in by
    :meth:`for_model`.

    Attributes:
        evidence: 1. the CAM's scales, weights, stitching and flips.
        slots: 2. slot refinement of the CAM (blocks, mix, sharpness,
            baseline), or ``None``: the CAM alone (``method`` ``"cam"``).
        classifier: 3. the per-image slot classifier (see
            :mod:`wsss.slot_classifier`; its ``blocks`` ``None``: every GLMix
            block), or ``None``.
        background: 4. a background score (:class:`BackgroundParams`) or IRN's
            confident/ignore regions (:class:`ConfidentRegions`: two constant
            backgrounds, pixels where they disagree become 255).
        crf: 5. dense CRF parameters, or ``None``.
        regions: 6. region relabelling of the finished mask (see
            :mod:`wsss.regions`; needs the model, so only
            :func:`pseudo_label_image` applies it), or ``None`` (the default:
            it helped on four sets of images and hurt on one, docs/wsss.md).
    """

    evidence: EvidenceConfig = FITTED_EVIDENCE
    slots: Optional[SlotRefineParams] = field(default_factory=SlotRefineParams)
    classifier: Optional[SlotClassifierParams] = field(default_factory=SlotClassifierParams)
    background: Background = field(default_factory=BackgroundParams)
    crf: Optional[CRFParams] = field(default_factory=CRFParams)
    regions: Optional[RegionParams] = None

    def __post_init__(self) -> None:
        if not isinstance(self.background, (BackgroundParams, ConfidentRegions)):
            raise FieldError("PseudoLabelConfig.background", [self.background],
                             "expected BackgroundParams or ConfidentRegions")

    @classmethod
    def cam(cls, **stages) -> "PseudoLabelConfig":
        """The standard protocol's pseudo-masks: its multi-scale CAM, no slots (``method`` ``"cam"``)."""
        return cls(**{"evidence": STANDARD_CAM, "slots": None, "classifier": None, **stages})

    @property
    def method(self) -> str:
        """``"slots"`` (slot-refined CAM) or ``"cam"``."""
        return "cam" if self.slots is None else "slots"

    def for_model(self, model: torch.nn.Module) -> "PseudoLabelConfig":
        """This config with every setting derived from ``model`` filled in (the one place they are).

        ``slots.blocks`` ``None``: :meth:`SlotRefineParams.derived_blocks` of the
        model's GLMix blocks; ``classifier.blocks`` ``None``: all of them;
        ``evidence.view_side`` (when a scale is relative to it):
        :func:`training_view_side` of the model.
        """
        n = len(glmix_blocks(model))
        config = self
        if config.slots is not None and config.slots.blocks is None:
            config = replace(config, slots=replace(config.slots, blocks=SlotRefineParams.derived_blocks(n)))
        if config.classifier is not None and config.classifier.blocks is None:
            config = replace(config, classifier=replace(config.classifier, blocks=tuple(range(1, n + 1))))
        if config.evidence.fitted and config.evidence.view_side is None:
            config = replace(config, evidence=replace(config.evidence, view_side=training_view_side(model)))
        for blocks, name in ((config.slots and config.slots.blocks, "SlotRefineParams.blocks"),
                             (config.classifier and config.classifier.blocks, "SlotClassifierParams.blocks")):
            if blocks and max(blocks) > n:
                raise FieldError(name, [blocks], f"the model has {n} GLMix blocks (ordinals 1..{n})")
        return config

    def capture_blocks(self) -> Tuple[int, ...]:
        """The GLMix blocks whose slots the evidence must hold: the refinement's and the classifier's.

        Raises:
            ValueError: a stage's blocks are still to be derived (call :meth:`for_model` first).
        """
        wanted = [self.slots.blocks if self.slots else (), self.classifier.blocks if self.classifier else ()]
        if any(b is None for b in wanted):
            raise ValueError("the slot blocks are derived from the model: use config.for_model(model)")
        return tuple(sorted({b for blocks in wanted for b in blocks}))


def training_view_side(model: torch.nn.Module) -> float:
    """The side in pixels of a whole image as ``model`` saw it in training.

    Its training input side (``pretrained_cfg["input_size"]``, which a
    checkpoint of ``glmix-wsss train`` sets to its ``--input-size``) over the
    square root of its training crops' mean area: ``(1 + min_scale) / 2`` of the
    image for ``glmix-wsss train``'s random resized crops (the checkpoint's
    ``config``, carried as ``pretrained_cfg["train_config"]``), 1 when not
    known. ``glnet_demo``: 192 / sqrt(0.9) = 202.4 px.
    """
    train = (getattr(model, "pretrained_cfg", None) or {}).get("train_config") or {}
    min_scale = train.get("min_scale")
    area = (1 + min_scale) / 2 if isinstance(min_scale, (int, float)) and 0 < min_scale <= 1 else 1.0
    return model_input_side(model) / area ** 0.5


@dataclass(frozen=True)
class PseudoLabelResult:
    """One image's pseudo-mask ``(H, W)`` uint8 and its foreground score maps ``(n, H, W)``."""

    mask: np.ndarray
    scores: np.ndarray
    classes: Tuple[int, ...]


def class_scores(evidence: Evidence, slots: Optional[SlotRefineParams]) -> np.ndarray:
    """Foreground scores ``(n, H, W)`` in [0, 1]: the CAMs, or their slot refinement (``slots``).

    Raises:
        ValueError: when ``evidence`` lacks a slot block the refinement needs.
    """
    if slots is None:
        return evidence.cams.numpy()
    by_ordinal = {s.ordinal: s for s in evidence.slots}
    missing = sorted(set(slots.blocks or ()) - set(by_ordinal))
    if missing or slots.blocks is None:
        raise ValueError(f"the evidence holds no slots of blocks {missing or slots.blocks} (it has "
                         f"{sorted(by_ordinal)}); compute it with config.capture_blocks() of "
                         "config.for_model(model)")
    with torch_threads(1):  # the same bytes at any thread count (glmix_viz.devices.torch_threads)
        scores = slot_refine(evidence.cams, [by_ordinal[b] for b in slots.blocks], slots.mix, slots.sharpness)
        return subtract_baseline(scores, slots.baseline).numpy()


class EvidenceLabeller:
    """One image's scores and fitted slot classifier, ready to be labelled against any background.

    The slot classifier does not depend on the background, so it is fitted
    once here; :meth:`mask` then runs background -> (classifier mix) -> CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        evidence: from :func:`wsss.evidence.compute_evidence` with (at least) the
            slots of ``config.capture_blocks()``.
        config: see :class:`PseudoLabelConfig`, with its blocks derived
            (:meth:`~PseudoLabelConfig.for_model`);
            ``evidence`` and ``regions`` are not used here.
    """

    def __init__(self, image: np.ndarray, evidence: Evidence, config: PseudoLabelConfig) -> None:
        self.image, self.classes, self.config = image, evidence.classes, config
        self.scores = class_scores(evidence, config.slots)  # (n, H, W)
        self.classifier = config.classifier
        self.learned = None  # (n + 1, H, W) or None
        if self.classifier is not None:
            if self.classifier.blocks is None:
                raise ValueError("the slot classifier's blocks are derived from the model: use "
                                 "config.for_model(model)")
            wanted = set(self.classifier.blocks)
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
        """The mask against ``config.background``: one score, or IRN's confident/ignore labels."""
        bg = self.config.background
        if isinstance(bg, ConfidentRegions):
            mask = confident_labels(self.mask(BackgroundParams("constant", bg.foreground)),
                                    self.mask(BackgroundParams("constant", bg.background)))
        else:
            mask = self.mask(bg)
        return PseudoLabelResult(mask, self.scores.astype(np.float32), self.classes)


def pseudo_label_from_evidence(image: np.ndarray, evidence: Evidence,
                               config: PseudoLabelConfig) -> PseudoLabelResult:
    """Pseudo-mask of one image from its evidence: scores -> slot classifier -> background -> CRF.

    ``EvidenceLabeller(image, evidence, config).result()``; see :class:`EvidenceLabeller`.
    """
    return EvidenceLabeller(image, evidence, config).result()


def pseudo_label_image(
    model: torch.nn.Module, image: np.ndarray, classes: Sequence[int], head: ClassHead,
    config: PseudoLabelConfig = PseudoLabelConfig(), device: torch.device = torch.device("cpu"),
    evidence: Optional[Evidence] = None,
) -> PseudoLabelResult:
    """Pseudo-mask of one image from its image-level classes.

    :func:`wsss.evidence.compute_evidence` of ``config.capture_blocks()``, then
    :func:`pseudo_label_from_evidence`, then (``config.regions``) :func:`wsss.regions.relabel`.

    Args:
        model: GLNet in eval mode on ``device`` (``None`` will do with ``evidence``
            and no region relabelling).
        image: ``(H, W, 3)`` uint8 RGB.
        classes: VOC class indices 1..20 in the image.
        head: see :class:`ClassHead`.
        config: see :class:`PseudoLabelConfig`; its model-derived settings are
            filled in here (:meth:`~PseudoLabelConfig.for_model`).
        evidence: the image's evidence when already computed (e.g. read by
            :func:`read_evidence`); ``config.evidence`` is then not used.
    """
    classes = tuple(sorted(int(c) for c in classes))
    H, W = image.shape[:2]
    if not classes:
        return PseudoLabelResult(np.zeros((H, W), np.uint8), np.zeros((0, H, W), np.float32), ())
    if model is not None:
        config = config.for_model(model)
    if evidence is None:
        evidence = compute_evidence(model, normalize(image).to(device), classes, head, config.evidence,
                                    slot_blocks=config.capture_blocks())
    elif evidence.classes != classes or tuple(evidence.cams.shape[1:]) != (H, W):
        raise ValueError(f"the evidence is of classes {evidence.classes} on {tuple(evidence.cams.shape[1:])} "
                         f"pixels, the image has classes {classes} on {(H, W)}")
    result = pseudo_label_from_evidence(image, evidence, config)
    if config.regions is None:
        return result
    if model is None:
        raise FieldError("PseudoLabelConfig.regions", [config.regions], "region relabelling needs the model")
    x = normalize(image).to(device)
    return replace(result, mask=relabel(model, x, result.mask, classes, head, config.regions))


def write_evidence(path: Path, evidence: Evidence) -> None:
    """Write one image's evidence as ``.npz`` (no pickle): ``classes``, ``cams`` ``(n, H, W)`` and, per
    captured block, ``slots_<ordinal>`` ``(K, h*w)`` logits and ``grid_<ordinal>`` ``(h, w)``, float32."""
    arrays = {"classes": np.array(evidence.classes, np.uint8),
              "cams": evidence.cams.numpy().astype(np.float32)}
    for rec in evidence.slots:
        arrays[f"slots_{rec.ordinal}"] = rec.logits[0].float().numpy()
        arrays[f"grid_{rec.ordinal}"] = np.array(rec.grid, np.int64)
    np.savez_compressed(path, **arrays)


def read_evidence(path: Path) -> Evidence:
    """Read what :func:`write_evidence` wrote (``allow_pickle=False``).

    Raises:
        ValueError: the file is not such an evidence file (names it and what is missing or wrong).
    """
    from glmix_viz.capture import SlotRecord
    from glmix_viz.untrusted import load_npz

    data = load_npz(path)
    if "classes" not in data or "cams" not in data:
        raise ValueError(f"{path}: expected arrays 'classes' and 'cams' (an evidence file, as "
                         f"write_evidence makes), found {sorted(data)}")
    classes = tuple(int(c) for c in data["classes"])
    cams = torch.from_numpy(np.ascontiguousarray(data["cams"], np.float32))
    slots = []
    for key in sorted((k for k in data if k.startswith("slots_")), key=lambda k: int(k[6:])):
        ordinal, logits = int(key[6:]), data[key]
        grid = tuple(int(v) for v in data.get(f"grid_{ordinal}", ()))
        if len(grid) != 2 or logits.ndim != 2 or grid[0] * grid[1] != logits.shape[1]:
            raise ValueError(f"{path}: {key} {logits.shape} does not fit grid_{ordinal} {grid}")
        slots.append(SlotRecord(f"block{ordinal}", ordinal, torch.from_numpy(logits.astype(np.float32))[None],
                                grid))
    if cams.ndim != 3 or cams.shape[0] != len(classes):
        raise ValueError(f"{path}: cams {tuple(cams.shape)} for {len(classes)} classes")
    return Evidence(classes, cams, tuple(slots))


def load_work_image(path: Path, max_side: int) -> Tuple[Image.Image, Tuple[int, int]]:
    """An image as the pipeline labels it: RGB, shrunk so that its longer side is at most ``max_side``
    (masks are upsampled back to the original size), and the original ``(H, W)``.

    Raises:
        FileNotFoundError, ValueError: naming the file (:func:`glmix_viz.images.load_image`).
    """
    pil = load_image(path, max_side=10**6, min_side=MIN_SIDE)
    size = (pil.height, pil.width)
    if max(size) > max_side:
        pil.thumbnail((max_side, max_side))
    return pil, size


def shard(ids: Sequence[str], rank: int, world_size: int) -> List[str]:
    """The ids rank ``rank`` of ``world_size`` processes handles (deterministic, interleaved)."""
    return list(ids[rank::world_size])


#: The most worker processes a run starts by default (each holds the model, or an image's evidence).
MAX_DEFAULT_WORKERS = 8

#: Memory planned for each worker that runs the model on the CPU: the peak of one process labelling a
#: 500x375 image on one thread was 1.05 GiB with ``glnet_demo`` and 1.71 GiB with ``glnet_stl``.
WORKER_MEMORY = 2 << 30


def available_memory() -> Optional[int]:
    """Bytes of memory available to new processes (``MemAvailable`` of ``/proc/meminfo``); ``None`` where
    that is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_workers(device: torch.device, cores: Optional[int] = None, model: bool = True,
                    memory: Optional[int] = -1) -> int:
    """The number of worker processes a run uses by default (``--workers``); 0 with one usable core.

    With the model on the CPU the workers label whole images, model included:
    one per core (at most :data:`MAX_DEFAULT_WORKERS`, and at most one per
    :data:`WORKER_MEMORY` of available memory; 0 where that leaves fewer than
    two), the cores shared out as their torch threads. Torch's CPU kernels gain less than 2x from a second
    thread (1.6x on this project's evidence), while independent images scale
    with the cores, and the single-threaded CRF no longer leaves cores idle
    (docs/wsss.md, "Throughput"). With the model on a GPU, or without a model
    (``--from-evidence``), this process feeds the device and the workers
    post-process: ``cores - 1``, at most :data:`MAX_DEFAULT_WORKERS`.

    Args:
        device: the model's device.
        cores: usable cores (default: :func:`usable_cores`).
        model: whether the run computes evidence with a model (``False``: ``--from-evidence``).
        memory: available bytes (default: :func:`available_memory`; ``None``: no limit).
    """
    cores = usable_cores() if cores is None else cores
    if cores < 2:
        return 0
    if device.type == "cpu" and model:
        memory = available_memory() if memory == -1 else memory
        workers = min(cores, MAX_DEFAULT_WORKERS, cores if memory is None else memory // WORKER_MEMORY)
        return workers if workers >= 2 else 0
    return min(cores - 1, MAX_DEFAULT_WORKERS)


@dataclass(frozen=True)
class _Outputs:
    """Where one run writes, and what (the workers' state)."""

    out: Path
    config: PseudoLabelConfig
    save_scores: bool
    save_evidence: bool
    evidence_dir: Optional[Path]


def _finish_image(outputs: _Outputs, image_id: str, work: np.ndarray, size: Tuple[int, int],
                  classes: Sequence[int], evidence: Optional[Evidence],
                  model: Optional[torch.nn.Module] = None, head: Optional[ClassHead] = None,
                  device: torch.device = torch.device("cpu")) -> None:
    """One image after its evidence: the pseudo-mask (at ``size``, the image's own) and its files.

    Shared by the sequential loop and the workers, so both write the same bytes.
    """
    out = outputs.out
    result = pseudo_label_image(model, work, classes, head, outputs.config, device, evidence=evidence)
    mask = result.mask
    H, W = size
    if work.shape[:2] != (H, W):
        mask = np.asarray(Image.fromarray(mask).resize((W, H), Image.Resampling.NEAREST))
    if outputs.save_scores:
        atomic_write(out / "scores" / f"{image_id}.npz", lambda p: np.savez_compressed(
            p, scores=result.scores.astype(np.float16), classes=np.array(result.classes, np.uint8)))
    if outputs.save_evidence:
        ev = evidence or Evidence((), torch.zeros(0, *work.shape[:2]), ())  # no classes: no evidence
        atomic_write(out / "evidence" / f"{image_id}.npz", lambda p: write_evidence(p, ev))
    atomic_write(out / f"{image_id}.png", lambda p: save_mask(p, mask))


def _pack(evidence: Optional[Evidence]) -> Optional[tuple]:
    """Evidence as numpy arrays for a worker: pickled by value (torch tensors would travel as shared
    memory, one file descriptor each)."""
    if evidence is None:
        return None
    return (evidence.classes, evidence.cams.numpy(),
            [(s.name, s.ordinal, s.logits.numpy(), s.grid) for s in evidence.slots])


def _unpack(packed: Optional[tuple]) -> Optional[Evidence]:
    if packed is None:
        return None
    from glmix_viz.capture import SlotRecord

    classes, cams, slots = packed
    return Evidence(tuple(classes), torch.from_numpy(cams),
                    tuple(SlotRecord(n, o, torch.from_numpy(logits), tuple(g)) for n, o, logits, g in slots))


@dataclass(frozen=True)
class _ModelStage:
    """The model side of a run, sent to workers that label whole images (the CPU layout)."""

    model: torch.nn.Module
    head: ClassHead
    max_batch_pixels: int
    precision: str


def _worker_init(outputs: _Outputs, stage: Optional[_ModelStage], threads: int) -> tuple:
    """A worker's start: ``threads`` for torch and the BLAS (the run shares the cores out)."""
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(threads)
    logging.basicConfig(level=logging.WARNING, format="glmix-wsss worker: %(message)s")
    return outputs, stage


def _worker_task(state: tuple, payload: tuple) -> None:
    outputs, stage = state
    image_id, work, size, classes, packed = payload
    evidence = _unpack(packed)
    if classes and stage is not None:
        ev_config, blocks = outputs.config.evidence, outputs.config.capture_blocks()
        evidence = compute_evidence(stage.model, normalize(work), classes, stage.head, ev_config,
                                    slot_blocks=blocks, max_batch_pixels=stage.max_batch_pixels,
                                    precision=stage.precision)
    elif classes and evidence is None and outputs.evidence_dir is not None:
        evidence = read_evidence(Path(outputs.evidence_dir) / f"{image_id}.npz")
    model, head = (stage.model, stage.head) if stage is not None else (None, None)
    _finish_image(outputs, image_id, work, size, classes, evidence, model, head)


def run_pseudo_labels(
    model: Optional[torch.nn.Module], layout: VOCLayout, ids: Sequence[str], labels: Dict[str, np.ndarray],
    out: Path, *, head: Optional[ClassHead], config: PseudoLabelConfig = PseudoLabelConfig(),
    device: torch.device = torch.device("cpu"), max_side: int = 512, save_scores: bool = False,
    save_evidence: bool = False, evidence_dir: Optional[Path] = None, rank: int = 0, world_size: int = 1,
    progress: bool = True, workers: int = 0, worker_threads: Optional[int] = None,
    max_batch_pixels: int = MAX_BATCH_PIXELS, precision: str = "float32",
    model_in_workers: Optional[bool] = None,
) -> Dict[str, int]:
    """Write ``out/<id>.png`` for this rank's share of ``ids``; returns counts.

    Args:
        max_side: images with a longer side are shrunk to it first, and their masks upsampled back.
        save_scores: also write ``out/scores/<id>.npz`` (the foreground scores, float16).
        save_evidence: also write ``out/evidence/<id>.npz`` (:func:`write_evidence`), from
            which other settings label the split again without the model.
        evidence_dir: read each image's evidence from here instead of computing it
            (``model`` and ``head`` may then be ``None``; ``config`` must have its
            blocks derived and hold no region relabelling).
        workers: 0: one image after the other, in this process. N > 0: N worker processes
            (:func:`default_workers`), at most ``2 N`` images in flight. With the model on the
            CPU each worker labels whole images, model included, on its share of the cores;
            with the model on a GPU (or without one: ``evidence_dir``) the evidence is computed
            here and the workers post-process (slot classifier, CRF, writes). The files are the
            same, byte for byte, in every layout (the CPU work is thread-count invariant,
            :func:`glmix_viz.devices.torch_threads`). The workers are ``spawn``ed processes: a
            script calling this needs the ``if __name__ == "__main__":`` guard.
        worker_threads: torch threads of each worker (default: the usable cores shared out
            among the workers when they run the model, else 1).
        max_batch_pixels: see :func:`wsss.evidence.compute_evidence` (a memory bound, not a setting).
        precision: the forwards' precision (:func:`wsss.evidence.compute_evidence`; ``"bfloat16"``
            changes the masks a little: docs/wsss.md, "At dataset scale").
        model_in_workers: with ``workers``, whether each worker runs the model (the default with the
            model on the CPU) or this process does and the workers post-process (the default on a GPU;
            on the CPU too when ``False``); the files are the same either way.

    Returns:
        ``{"written", "skipped" (already there), "failed"}`` for this rank.
    """
    from tqdm import tqdm

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if model_in_workers is None:
        model_in_workers = device.type == "cpu"
    elif model_in_workers and device.type != "cpu":
        raise ValueError(f"model_in_workers=True needs the model on the CPU, not {device} (the workers are "
                         "CPU processes)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extras = [name for name, on in (("scores", save_scores), ("evidence", save_evidence)) if on]
    for name in extras:
        (out / name).mkdir(exist_ok=True)
    mine = shard(ids, rank, world_size)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    if model is not None:
        model = model.to(device).eval()
        config = config.for_model(model)
    config.capture_blocks()  # the blocks are known before the first image
    stage = None  # the model, for workers that run it
    if workers and model is not None and model_in_workers:
        stage = _ModelStage(model, head, max_batch_pixels, precision)
    elif workers and config.regions is not None:
        _logger.warning("region relabelling needs the model, which runs in this process: post-processing "
                        "here too (--workers 0)")
        workers = 0
    if worker_threads is None:
        worker_threads = max(1, usable_cores() // workers) if stage is not None else 1
    outputs = _Outputs(out, config, save_scores, save_evidence,
                       None if evidence_dir is None else Path(evidence_dir))
    bar = tqdm(total=len(mine), desc=f"pseudo-labels[{rank}]" if world_size > 1 else "pseudo-labels",
               unit="img", disable=not progress, position=rank)
    log = ProgressLog(len(mine), every_s=None if progress else LOG_EVERY_S, logger=_logger)
    pool = None

    def finished(results) -> None:
        for image_id, error in results:
            if error is None:
                counts["written"] += 1
            else:
                _logger.error("failed %s: %s", image_id, error)
                counts["failed"] += 1
            bar.update(1)
        if results:
            bar.set_postfix(img_s=f"{log.rate(counts):.2f}")
            log.tick(counts)

    try:
        for image_id in mine:
            log.tick(counts)
            if pool is not None:
                finished(pool.results())
            target = out / f"{image_id}.png"
            if target.is_file() and all((out / name / f"{image_id}.npz").is_file() for name in extras):
                counts["skipped"] += 1
                bar.update(1)
                continue
            try:
                pil, size = load_work_image(layout.image(image_id), max_side)
            except (ValueError, FileNotFoundError) as err:
                _logger.error("skipped %s", err)
                counts["failed"] += 1
                bar.update(1)
                continue
            work = np.asarray(pil)
            classes = sorted(int(c) + 1 for c in np.flatnonzero(labels[image_id] > 0.5))
            evidence = None
            if classes and evidence_dir is not None:
                if not workers:  # the workers read it themselves
                    evidence = read_evidence(Path(evidence_dir) / f"{image_id}.npz")
            elif classes and stage is None:
                evidence = compute_evidence(model, normalize(work).to(device), classes, head, config.evidence,
                                            slot_blocks=config.capture_blocks(),
                                            max_batch_pixels=max_batch_pixels, precision=precision)
            if not workers:
                _finish_image(outputs, image_id, work, size, classes, evidence, model, head, device)
                counts["written"] += 1
                bar.update(1)
                bar.set_postfix(img_s=f"{log.rate(counts):.2f}")
                continue
            if pool is None:
                from ._workers import WorkerPool

                pool = WorkerPool(workers, _worker_init, (outputs, stage, worker_threads), _worker_task,
                                  name="pseudo-labels-worker")
            pool.submit(image_id, (image_id, work, size, classes, _pack(evidence)))
        if pool is not None:
            finished(pool.wait_all())
            pool.close()
    except KeyboardInterrupt:
        if pool is not None:
            _stop(pool, out, finished)
        raise RunInterrupted(counts["written"] + counts["skipped"], len(mine)) from None
    except BaseException:
        if pool is not None:
            _stop(pool, out, finished)
        raise
    finally:
        bar.close()
    log.tick(counts, final=True)
    return counts


def _stop(pool, out: Path, finished) -> None:
    """Count what the workers finished, stop them, and remove the temporary files of the images they held
    (a worker killed without unwinding leaves its atomic write's ``.<name>.*`` file)."""
    try:
        finished(pool.results())
    finally:
        held = pool.in_flight_keys()
        pool.terminate()
        for image_id in held:
            for folder in (out, out / "scores", out / "evidence"):
                for tmp in folder.glob(f".{image_id}.*"):
                    tmp.unlink(missing_ok=True)


