"""What ``glmix-viz evaluate`` does once its arguments are read: a VOC split through the model, its slots
scored against the masks (:class:`~glmix_viz.analysis.SlotEvaluation`), and the files written.

Kept apart from :mod:`glmix_viz.cli` so that ``--help`` imports neither torch nor matplotlib. Only this
module writes files (atomically, :func:`~glmix_viz.fileio.atomic_write`).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from . import __version__
from .analysis import SlotEvaluation, image_miou, oracle_labels, slot_segments
from .analysis.evaluation import METHODS, METRICS, ImageEvaluation, method_numbers
from .capture import FeatureCapture, SlotCapture
from .devices import torch_threads
from .fileio import RunInterrupted, atomic_write
from .images import MIN_SIDE, Preprocess, load_image, preprocess
from .progress import LOG_EVERY_S, ProgressLog
from .voc import VOCLayout, read_mask

__all__ = ["EvaluationRun", "evaluate_split", "metrics_record", "csv_text", "gallery_blocks", "write_outputs",
           "pick_gallery", "render_gallery", "run_command",
           "OUTPUTS"]

_logger = logging.getLogger("glmix_viz")

OUTPUTS = ("metrics.json", "metrics.csv", "depths.png", "report.html")
CSV_COLUMNS = ("block", "name", "method", "images", *METRICS, "fg_ari_images")


@dataclass
class EvaluationRun:
    """A split evaluated.

    Attributes:
        evaluation: the accumulated numbers.
        per_image: ``(id, oracle mIoU of the last block's hard slot map)`` per image evaluated, in split
            order.
        skipped: ``(id, why)`` per image left out (unreadable, no mask, sizes differ).
        instance_masks: images evaluated that have an instance mask (``SegmentationObject``).
        timing: seconds: ``load`` (files, resize), ``forward`` (model, capture, copies to the CPU),
            ``metrics`` (segmentations and scores; with workers, their seconds added up), ``wall`` (the
            whole loop).
    """

    evaluation: SlotEvaluation
    per_image: List[Tuple[str, float]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    instance_masks: int = 0
    timing: Dict[str, float] = field(default_factory=lambda: {"load": 0.0, "forward": 0.0, "metrics": 0.0})


@dataclass(frozen=True)
class _Sample:
    image: np.ndarray  # (H, W, 3) uint8, full size
    mask: np.ndarray  # (H, W) uint8
    instances: Optional[np.ndarray]  # (H, W) uint8 or None
    x: torch.Tensor  # (3, h, w) model input


def _load(layout: VOCLayout, image_id: str, config: Preprocess) -> _Sample:
    """One id's image, masks and model input.

    Raises:
        FileNotFoundError, ValueError: naming the file.
    """
    mask = read_mask(layout.mask(image_id))
    img = load_image(layout.image(image_id), min_side=MIN_SIDE, max_side=10**6)  # never shrunk: masks fit
    image = np.asarray(img, dtype=np.uint8)
    if image.shape[:2] != mask.shape:
        raise ValueError(f"{layout.image(image_id)}: {image.shape[1]}x{image.shape[0]} pixels, its mask "
                         f"{mask.shape[1]}x{mask.shape[0]}")
    instance_path = layout.instance_mask(image_id)
    instances = read_mask(instance_path) if instance_path is not None else None
    if instances is not None and instances.shape != mask.shape:
        raise ValueError(f"{instance_path}: {instances.shape[1]}x{instances.shape[0]} pixels, the class mask "
                         f"{mask.shape[1]}x{mask.shape[0]}")
    x, _ = preprocess(img, config)
    return _Sample(image, mask, instances, x)


def _forward(model: torch.nn.Module, ordinals: Sequence[int], x: torch.Tensor, device: torch.device
             ) -> Tuple[Dict[int, np.ndarray], Dict[int, np.ndarray]]:
    """One image through the model: per block ``(K, h, w)`` dispatch maps and ``(C, h, w)`` ``norm1``
    features, float32 on the CPU.

    On the CPU on one thread: a one-image forward's rounding depends on the thread count (the slot pooling's
    matrix product), so the numbers would depend on ``--workers``; the forward is 2 % of the work.
    """
    threads = 1 if device.type == "cpu" else torch.get_num_threads()
    with torch.inference_mode(), torch_threads(threads), SlotCapture(model, list(ordinals)) as cap, \
            FeatureCapture(model, list(ordinals), to_cpu=True) as feats:
        model(x[None].to(device))
        maps = {o: r.dispatch_maps()[0].cpu().contiguous().numpy() for o, r in cap.latest().items()}
        features = {o: f[0].contiguous().numpy() for o, f in feats.features.items()}
    return maps, features


def _scorer_init(blocks: Sequence[Tuple[int, str]], groups: int, seed: int) -> SlotEvaluation:
    """A worker's state: an empty :class:`SlotEvaluation` that only scores (this process adds)."""
    torch.set_num_threads(1)
    return SlotEvaluation(blocks, groups=groups, seed=seed)


def _scorer_task(scorer: SlotEvaluation, payload: tuple) -> Tuple[ImageEvaluation, float]:
    """One image's scores in a worker, without its segmentations, and the seconds they took."""
    t0 = time.perf_counter()
    result = scorer.score(*payload, keep_segmentations=False)
    return result, time.perf_counter() - t0


def evaluate_split(
    layout: VOCLayout,
    ids: Sequence[str],
    *,
    model: torch.nn.Module,
    blocks: Sequence[Tuple[int, str]],
    config: Preprocess,
    device: torch.device,
    groups: int = 4,
    seed: int = 0,
    progress: bool = False,
    workers: int = 0,
) -> EvaluationRun:
    """Every id through the model (one forward each) and scored at every block.

    With ``workers`` N > 0 the scoring (nine tenths of the time) runs in N worker processes
    (:mod:`glmix_viz._pool`, at most ``2 N`` images in flight) while this process loads images and runs the
    model; results are added in split order, so the numbers are those of ``workers=0``. An id whose files
    are missing or unreadable, or whose scoring fails, is skipped and logged by name. Ctrl-C raises
    :class:`~glmix_viz.fileio.RunInterrupted` (the workers are stopped).
    """
    from tqdm import tqdm

    from ._pool import WorkerPool

    if workers < 0:
        raise ValueError(f"workers={workers}: expected 0 (score in this process) or more")
    run = EvaluationRun(SlotEvaluation(blocks, groups=groups, seed=seed))
    ordinals = [o for o, _ in blocks]
    last = ordinals[-1]
    model = model.to(device).eval()
    bar = tqdm(total=len(ids), unit="img", disable=not progress, desc="evaluate")
    pool: Optional[WorkerPool] = None
    pending: Deque[Tuple[int, str, bool]] = deque()  # submitted, in split order: (key, id, instance mask?)
    finished: Dict[int, Optional[ImageEvaluation]] = {}  # by key, not yet added (None: failed)
    log = ProgressLog(len(ids), every_s=None if progress else LOG_EVERY_S, logger=_logger, rate_key="scored")

    def tick() -> None:
        bar.update(1)
        log.tick({"scored": len(run.per_image), "skipped": len(run.skipped)})

    def add(image_id: str, result: ImageEvaluation, instances: bool) -> None:
        run.evaluation.add(result)
        run.per_image.append((image_id, image_miou(result.scores[last]["slots"])))
        run.instance_masks += instances
        tick()

    def collect(timeout: Optional[float] = 0.0) -> None:
        """Take what the workers finished; add the results at the head of ``pending``, in order."""
        for key, error in pool.results(timeout):
            value = pool.pop_value(key)
            finished[key] = None if error is not None else value[0]
            if error is not None:
                image_id = next(i for k, i, _ in pending if k == key)
                _logger.error("skipped %s: %s", image_id, error)
                run.skipped.append((image_id, error))
            else:
                run.timing["metrics"] += value[1]
        while pending and pending[0][0] in finished:
            key, image_id, instances = pending.popleft()
            result = finished.pop(key)
            if result is None:
                tick()
            else:
                add(image_id, result, instances)

    started = time.perf_counter()
    try:
        for index, image_id in enumerate(ids):
            t0 = time.perf_counter()
            try:
                sample = _load(layout, image_id, config)
            except (ValueError, FileNotFoundError) as err:
                _logger.error("skipped %s: %s", image_id, err)
                run.skipped.append((image_id, str(err)))
                tick()
                continue
            t1 = time.perf_counter()
            maps, features = _forward(model, ordinals, sample.x, device)
            t2 = time.perf_counter()
            run.timing["load"] += t1 - t0
            run.timing["forward"] += t2 - t1
            if workers and pool is None and len(ids) - index > 1:
                pool = WorkerPool(min(workers, len(ids) - index), _scorer_init, (list(blocks), groups, seed),
                                  _scorer_task, name="evaluate-worker")
            if pool is None:
                try:
                    result = run.evaluation.score(sample.image, sample.mask, sample.instances, maps, features,
                                                  keep_segmentations=False)
                except ValueError as err:  # e.g. a mask with values that are no class (a worker's too)
                    _logger.error("skipped %s: ValueError: %s", image_id, err)
                    run.skipped.append((image_id, f"ValueError: {err}"))
                    tick()
                    continue
                finally:
                    run.timing["metrics"] += time.perf_counter() - t2
                add(image_id, result, sample.instances is not None)
                continue
            pending.append((index, image_id, sample.instances is not None))
            pool.submit(index, (sample.image, sample.mask, sample.instances, maps, features))
            collect()
        while pool is not None and pending:
            collect(timeout=None)
    except KeyboardInterrupt:
        raise RunInterrupted(len(run.per_image), len(ids)) from None
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # idempotent; at the end of a run the workers are idle
    run.timing["wall"] = time.perf_counter() - started
    log.tick({"scored": len(run.per_image), "skipped": len(run.skipped)}, final=True)
    return run


def gallery_blocks(ordinals: Sequence[int]) -> List[int]:
    """The blocks a gallery row shows: a shallow, a middle and the last of ``ordinals`` (their positions
    as :func:`~glmix_viz.figures.default_depth_blocks`)."""
    from .figures import default_depth_blocks

    return [ordinals[i - 1] for i in default_depth_blocks(len(ordinals))]


def pick_gallery(per_image: Sequence[Tuple[str, float]], k: int) -> Tuple[List[int], List[int]]:
    """Positions in ``per_image`` of the ``k`` worst (lowest first) and ``k`` best (highest first), never one
    image in both (fewer than ``2 k`` images are shared out); ties keep the split's order; NaN is left out."""
    scored = sorted((i for i, (_, v) in enumerate(per_image) if math.isfinite(v)),
                    key=lambda i: (per_image[i][1], i))
    n_best = min(k, len(scored) // 2)
    n_worst = min(k, len(scored) - n_best)
    worst = scored[:n_worst]
    best = sorted(scored[n_worst:], key=lambda i: (-per_image[i][1], i))[:n_best]
    return worst, best


def render_gallery(layout: VOCLayout, run: EvaluationRun, *, model: torch.nn.Module,
                   blocks: Sequence[Tuple[int, str]], config: Preprocess, device: torch.device, k: int,
                   seed: int = 0, progress: bool = False) -> list:
    """The gallery's rows (:class:`~glmix_viz.figures.report.GalleryEntry`): the worst and best images by
    the last block's oracle mIoU, each run through the model again (the same forward with the same hooks,
    so the same maps)."""
    from tqdm import tqdm

    from .figures.report import GalleryEntry, gallery_row

    worst, best = pick_gallery(run.per_image, k)
    shown = gallery_blocks([o for o, _ in blocks])
    last = blocks[-1][0]
    entries = []
    bar = tqdm(total=len(worst) + len(best), unit="img", disable=not progress, desc="gallery")
    try:
        for kind, positions in (("worst", worst), ("best", best)):
            for rank, position in enumerate(positions, 1):
                image_id, miou = run.per_image[position]
                sample = _load(layout, image_id, config)
                maps, _ = _forward(model, [o for o, _ in blocks], sample.x, device)  # the same hooks
                size = sample.mask.shape
                slot_maps = [(f"block {o}: hard slots", slot_segments(maps[o], size), maps[o].shape[0])
                             for o in shown]
                oracle = oracle_labels(slot_maps[-1][1], sample.mask).astype(np.uint8)
                row = gallery_row(sample.image, sample.mask, slot_maps, oracle,
                                  oracle_caption=f"block {last}: oracle labels", seed=seed)
                classes = tuple(int(c) for c in np.unique(sample.mask) if c < 255)
                entries.append(GalleryEntry(image_id, kind, rank, miou, row, classes))
                bar.update(1)
    finally:
        bar.close()
    return entries


def metrics_record(run: EvaluationRun, *, provenance: Mapping) -> Dict:
    """What ``metrics.json`` holds: ``provenance`` (model, checkpoint, split, ...), the tool, the image
    counts, ``blocks`` (:meth:`SlotEvaluation.blocks`), ``per_image`` and ``timing``."""
    ev = run.evaluation
    images = len(run.per_image)
    busy = {k: v for k, v in run.timing.items() if k != "wall"}
    wall = run.timing.get("wall", sum(busy.values()))
    return {
        "tool": f"glmix-viz {__version__}",
        **provenance,
        "images": images,
        "skipped": [{"id": i, "why": why} for i, why in run.skipped],
        "groups_k": ev.groups,
        "seed": ev.seed,
        "boundary_tolerance_px": ev.tolerance,
        "instance_masks": run.instance_masks,
        "blocks": ev.blocks(),
        "per_image": [{"id": i, "oracle_miou": v} for i, v in run.per_image],
        "timing": {**{f"{k}_s": v for k, v in busy.items()}, "wall_s": wall,
                   "per_image_s": wall / images if images else float("nan")},
    }


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def csv_text(blocks: Sequence[Mapping]) -> str:
    """``metrics.csv``: one row per block and method (:data:`~glmix_viz.analysis.evaluation.METHODS`);
    NaN as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for block in blocks:
        for method in METHODS:
            n = method_numbers(block, method)
            writer.writerow([block["ordinal"], block["name"], method, n["images"],
                             *(_cell(n[m]) for m in METRICS), n["fg_ari_images"]])
    return buf.getvalue()


def write_outputs(out: Path, metrics: Mapping, *, depths_png: bytes, page: str) -> List[Path]:
    """``out/metrics.json``, ``metrics.csv``, ``depths.png``, ``report.html``, each written atomically."""
    from .figures.report import finite

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(finite(metrics), indent=1, allow_nan=False) + "\n"
    writes = {
        "metrics.json": lambda tmp: Path(tmp).write_text(text, encoding="utf-8"),
        "metrics.csv": lambda tmp: Path(tmp).write_text(csv_text(metrics["blocks"]), encoding="utf-8"),
        "depths.png": lambda tmp: Path(tmp).write_bytes(depths_png),
        "report.html": lambda tmp: Path(tmp).write_text(page, encoding="utf-8"),
    }
    return [atomic_write(out / name, writes[name]) for name in OUTPUTS]


def run_command(args, layout: VOCLayout, ids: Sequence[str], *, model: torch.nn.Module, source,
                blocks: Sequence[Tuple[int, str]], config: Preprocess, device: torch.device) -> int:
    """``glmix-viz evaluate`` once its arguments are checked (``args``: its namespace; ``source``: a
    :class:`~glmix_viz._cli_run.ModelSource`): evaluate, draw, write the files, log one summary line.

    Returns:
        the exit status: 0, 1 (ids skipped, or none evaluated: then nothing is written), 130 (interrupted:
        nothing written).
    """
    from .figures.report import metrics_across_depth, png_bytes, render_evaluation_page

    progress = not args.quiet and sys.stderr.isatty()
    started = time.perf_counter()
    try:
        run = evaluate_split(layout, ids, model=model, blocks=blocks, config=config, device=device,
                             groups=args.groups, seed=args.seed, progress=progress, workers=args.workers)
        if not run.per_image:
            _logger.error("no id of split %s could be evaluated (%d skipped); nothing written", args.split,
                          len(run.skipped))
            return 1
        provenance = {"model": source.weights.model, "checkpoint": source.weights.label,
                      "voc_root": str(args.voc_root), "split": args.split,
                      "listed": len(layout.ids(args.split)),
                      "limit": args.limit, "input_size": args.input_size, "resize": "whole",
                      "device": str(device), "workers": args.workers}
        metrics = metrics_record(run, provenance=provenance)
        gallery = render_gallery(layout, run, model=model, blocks=blocks, config=config, device=device,
                                 k=args.gallery, seed=args.seed, progress=progress)
    except KeyboardInterrupt as stop:
        done = f" after {stop.done} of {stop.total} images" if isinstance(stop, RunInterrupted) else ""
        print(f"glmix-viz: interrupted{done}; nothing written", file=sys.stderr)
        return 130
    metrics["gallery"] = {"block": blocks[-1][0], "worst": [e.image_id for e in gallery if e.kind == "worst"],
                          "best": [e.image_id for e in gallery if e.kind == "best"]}
    title = f"{source.weights.model} on VOC {args.split} ({metrics['images']} images)"
    depths_png = png_bytes(metrics_across_depth(metrics["blocks"], title=title))
    page = render_evaluation_page(metrics, depths_png=depths_png, gallery=gallery)
    write_outputs(args.out, metrics, depths_png=depths_png, page=page)
    t = run.timing
    busy = t["forward"] + t["metrics"] + t["load"]
    shares = ", ".join(f"{k} {100 * t[k] / max(busy, 1e-9):.0f}%" for k in ("forward", "metrics", "load"))
    _logger.info("%.2f s per image (of the work: %s%s); %.1f s more for the gallery and the files",
                 t["wall"] / len(run.per_image), shares, f"; {args.workers} scoring workers" if args.workers
                 else "", time.perf_counter() - started - t["wall"])
    last = metrics["blocks"][-1]
    base = last["baselines"]
    (_logger.warning if run.skipped else _logger.info)(
        "%d image%s evaluated (%d skipped) -> %s; block %d: oracle mIoU %.2f (slots), SLIC %.2f, grid %.2f, "
        "k-means %.2f", len(run.per_image), "s" * (len(run.per_image) != 1), len(run.skipped), args.out,
        last["ordinal"], last["oracle_miou"], base["slic"]["oracle_miou"], base["grid"]["oracle_miou"],
        base["kmeans"]["oracle_miou"])
    return 1 if run.skipped else 0
