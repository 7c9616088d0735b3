"""The ``train``, ``pseudo-labels``, ``score`` and ``report`` subcommands: arguments in, library calls out."""
from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from glmix_viz._clihelp import check_model_flag, device_from_flag, weights_not_found
from glmix_viz.fileio import atomic_write, check_output_dir
from glmix_viz.untrusted import load_npz

from .evidence import ClassHead
from .manifest import RunFolderError, make_manifest, prepare_run_folder
from .metrics import ConfusionAccumulator, summarize
from .pipeline import run_pseudo_labels
from .refine import BackgroundParams, labels_from_scores, with_background
from .voc import VOC_FOREGROUND, VOCLayout, read_mask

_logger = logging.getLogger("wsss")


def _numbers(text: str, name: str, kind: type = float) -> tuple:
    """Comma-separated numbers of a flag (``kind`` float or int); an error naming the flag otherwise."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError as err:
        what = "integers" if kind is int else "numbers"
        raise ValueError(f"{name} {text!r}: expected comma-separated {what}") from err


def _scales(text: str) -> Tuple[Tuple[float, ...], Tuple[bool, ...]]:
    """``--scales 1,1m,0.75m`` -> ``((1.0, 1.0, 0.75), (False, True, True))`` (m: relative to the model)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    fit = tuple(v.lower().endswith("m") for v in items)
    return _numbers(",".join(v.rstrip("mM") for v in items), "--scales"), fit


def pipeline_overrides(args: argparse.Namespace) -> Tuple[Dict[str, object], Dict[str, str]]:
    """The pipeline settings the flags set (flat keys of :func:`wsss.presets.flatten`), and each one's flag.

    Unset flags set nothing: those settings come from the preset or the defaults.
    """
    from .pipeline import STANDARD_CAM

    out: Dict[str, object] = {}
    flags: Dict[str, str] = {}

    def put(key: str, value: object, flag: str) -> None:
        out[key], flags[key] = value, flag

    if args.method == "cam":
        for name in ("scales", "weights", "stitch", "fit", "flip"):
            put(f"evidence.{name}", getattr(STANDARD_CAM, name), "flag --method cam")
        put("slots", None, "flag --method cam")
        put("classifier", None, "flag --method cam")
    elif args.method == "slots":
        put("slots", "SlotRefineParams", "flag --method slots")
    if args.scales is not None:  # weights and stitching 1 per scale unless given
        scales, fit = _scales(args.scales)
        put("evidence.scales", scales, "flag --scales")
        put("evidence.fit", fit if any(fit) else None, "flag --scales")
        put("evidence.weights", None, "flag --scales")
        put("evidence.stitch", None, "flag --scales")
    if args.scale_weights:
        put("evidence.weights", _numbers(args.scale_weights, "--scale-weights"), "flag --scale-weights")
    if args.stitch:
        put("evidence.stitch", _numbers(args.stitch, "--stitch", int), "flag --stitch")
    if args.no_flip:
        put("evidence.flip", False, "flag --no-flip")
    if args.blocks is not None and not _auto_blocks(args):
        put("slots.blocks", _numbers(args.blocks, "--blocks", int), "flag --blocks")
    for flag, key in (("slot_mix", "slots.mix"), ("slot_sharpness", "slots.sharpness"),
                      ("slot_baseline", "slots.baseline"), ("seed_fg", "classifier.foreground"),
                      ("seed_bg", "classifier.background"), ("classifier_weight", "classifier.weight"),
                      ("bg_threshold", "background.threshold"), ("bg_power", "background.power"),
                      ("bg", "background.method"), ("crf_iterations", "crf.iterations"),
                      ("region_margin", "regions.margin")):
        value = getattr(args, flag)
        if value is not None:
            put(key, value, f"flag --{flag.replace('_', '-')}")
    for flag, key, kind in (("slot_classifier", "classifier", "SlotClassifierParams"),
                            ("crf", "crf", "CRFParams"), ("region_relabel", "regions", "RegionParams")):
        value = getattr(args, flag)
        if value is not None:
            put(key, kind if value else None, f"flag --{'' if value else 'no-'}{flag.replace('_', '-')}")
    if args.bg is not None or args.bg_threshold is not None or args.bg_power is not None:
        put("background", "BackgroundParams", "flag --bg")
    if args.confident:
        values = _numbers(args.confident, "--confident")
        if len(values) != 2:
            raise ValueError(f"--confident {args.confident!r}: expected two numbers FG,BG (IRN: 0.30,0.05)")
        if "background" in out:
            raise ValueError("--confident replaces the background score: give it or --bg/--bg-threshold/"
                             "--bg-power, not both")
        put("background", "ConfidentRegions", "flag --confident")
        put("background.foreground", values[0], "flag --confident")
        put("background.background", values[1], "flag --confident")
    return out, flags


def _auto_blocks(args: argparse.Namespace) -> bool:
    """``--blocks auto``: the refinement's blocks chosen by oracle mIoU when the run starts."""
    return getattr(args, "blocks", None) is not None and args.blocks.strip().lower() == "auto"


def _choose_blocks(args: argparse.Namespace, model, resolved, layout: VOCLayout, device: torch.device,
                   max_side: int):
    """``--blocks auto``: the settings with the slot blocks measured on ``--blocks-split``'s masks, and the
    measurement's record for the manifest."""
    from .block_choice import BlockChoiceParams, choose_blocks_on_split
    from .presets import Resolved

    config = resolved.config
    if config.slots is None:
        raise ValueError("--blocks auto: the slot refinement is off (--method cam); it chooses its blocks")
    if args.blocks_images < 1:
        raise ValueError(f"--blocks-images {args.blocks_images}: expected 1 or more images")
    params = BlockChoiceParams(count=len(config.slots.blocks), split=args.blocks_split,
                               images=args.blocks_images, rule=args.blocks_rule)
    try:
        choice = choose_blocks_on_split(model, layout, config.evidence, params, device=device,
                                        max_side=max_side)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"--blocks auto (--blocks-split {args.blocks_split}): {err}") from None
    config = replace(config, slots=replace(config.slots, blocks=choice.blocks))
    sources = {**resolved.sources, "slots.blocks": f"flag --blocks auto: {choice.describe()}"}
    return Resolved(config, sources, resolved.preset), choice.record()


def _pos_weight(text: str) -> Tuple[float, ...]:
    """``"bird=4,person=2"`` -> 20 weights in VOC class order (1 where not named); ``""`` -> ``()``."""
    if not text.strip():
        return ()
    weights = dict.fromkeys(VOC_FOREGROUND, 1.0)
    for item in text.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if name not in weights or weight <= 0:
            raise ValueError(f"--pos-weight {item!r}: expected CLASS=WEIGHT with a VOC class name "
                             f"({', '.join(VOC_FOREGROUND)}) and a positive weight")
        weights[name] = weight
    return tuple(weights.values())


def train_command(args: argparse.Namespace, progress: bool = True) -> int:
    """``glmix-wsss train``: a :class:`wsss.train.TrainConfig` from the arguments, then training."""
    from .train import TrainConfig, train

    config = TrainConfig(
        voc_root=str(args.voc_root), out=str(args.out), model=args.model,
        train_split=args.train_split, val_split=args.val_split,
        labels_file=str(args.labels) if args.labels else None, labels_from=args.labels_from,
        init_checkpoint=str(args.init_checkpoint) if args.init_checkpoint else None,
        input_size=args.input_size, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        clip_grad=args.clip_grad, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        drop_path=args.drop_path, min_scale=args.min_scale,
        workers=args.workers, threads=args.threads, seed=args.seed, device=args.device,
        amp=not args.no_amp, max_steps=args.max_steps, ema_decay=args.ema_decay, mosaic=args.mosaic,
        position_negatives=args.position_negatives, pos_weight=_pos_weight(args.pos_weight),
    )
    device_from_flag(args.device)  # checked before train() creates its folder
    metrics = train(config, resume=args.resume, progress=progress)
    _logger.info("done: %s", metrics)
    return 0


def load_model(checkpoint, model_name, head: str) -> Tuple[torch.nn.Module, str, Optional[Path]]:
    """The model for pseudo-labels: a checkpoint (architecture given or guessed), a named model's
    weights in the hub cache, or the bundled demo; a named model without weights is an error, never
    replaced (:func:`glmix_viz.models.weights.load_model`, the loader glmix-viz uses too).

    Returns:
        ``(model in eval mode, its registered name, its weights file or None for the bundled demo)``.
    """
    from glmix_viz.models.weights import WeightsNotFoundError, find_weights
    from glmix_viz.models.weights import load_model as load_weights

    check_model_flag(model_name)
    try:
        weights = find_weights(model_name, checkpoint)
    except WeightsNotFoundError as err:
        raise weights_not_found(err, "without --model (or with --model glnet_demo) the bundled demo model "
                                "is used") from None
    model, weights, what = load_weights(weights, num_classes=1000 if head == "imagenet" else 20)
    _logger.info("using %s", what)
    return model, weights.model, weights.path


def _dist() -> Tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank, world


def _show(key: str, value: object) -> str:
    """A setting as the table shows it: a stage that is off as ``off``, an unset field as ``-``."""
    if isinstance(value, (list, tuple)):
        return ",".join(_show(key, v) for v in value)
    if value is None:
        return "-" if "." in key else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_table(resolved) -> str:
    """The resolved settings, one per line: ``key  value  source``."""
    rows = resolved.rows()
    width = max(len(k) for k, _, _ in rows)
    lines = [f"{key:{width}s}  {_show(key, value):24s}  {source}" for key, value, source in rows]
    ev = resolved.config.evidence
    if ev.fitted:
        example = ", ".join(f"{s:.3g}" for s in ev.image_scales(375, 500))
        lines.append(f"(evidence scales of a 500x375 image: {example})")
    return "\n".join(lines)


def _evidence_run(run: Path) -> Dict:
    """The manifest of a ``--save-evidence`` run folder (``--from-evidence RUN``), checked."""
    path = Path(run) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--from-evidence {run}: no readable manifest.json ({err}); expected the --out "
                         "folder of a pseudo-labels run with --save-evidence") from None
    if not manifest.get("run", {}).get("save_evidence") or not (Path(run) / "evidence").is_dir():
        raise ValueError(f"--from-evidence {run}: that run did not save its evidence; rerun it with "
                         "--save-evidence")
    return manifest


def _settings_from_evidence(manifest: Dict, overrides: Dict, flags: Dict, args: argparse.Namespace):
    """The evidence run's settings with the flags' overrides of the later stages (the CAM is fixed)."""
    from .presets import Resolved, unflatten

    fixed = [flags[k] for k in overrides if k.startswith("evidence")]
    if fixed:
        raise ValueError(f"{fixed[0].removeprefix('flag ')}: the evidence in {args.from_evidence} is already "
                         "computed; --from-evidence changes the later stages only")
    flat = {**manifest["config"], **{k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}}
    config = unflatten(flat, given={k: "" for k in overrides})
    try:
        blocks = config.capture_blocks()
    except ValueError:
        raise ValueError("--blocks: give the slot blocks (they are derived from the model, which "
                         "--from-evidence does not load)") from None
    saved = set(unflatten(manifest["config"]).capture_blocks())
    if not set(blocks) <= saved:
        raise ValueError(f"--from-evidence {args.from_evidence}: the settings need the slots of blocks "
                         f"{sorted(set(blocks) - saved)}, the evidence holds {sorted(saved)}")
    if config.regions is not None:
        raise ValueError("--region-relabel needs the model: not with --from-evidence")
    old = manifest.get("sources", {}).get("settings", {})
    sources = {k: flags.get(k, f"evidence run ({old.get(k, 'default')})") for k in flat}
    return Resolved(config, sources, manifest.get("sources", {}).get("preset"))


def _workers(args: argparse.Namespace, device: torch.device, world: int, config,
             with_model: bool) -> Tuple[int, Optional[int]]:
    """``--workers`` (unset: :func:`wsss.pipeline.default_workers` of this process's share of the cores) and
    each worker's torch threads, with this process's threads set so that the run never has more busy threads
    than cores. With the model on the CPU the workers run it: ``--threads`` (else the cores shared out) is
    each worker's count, and this process, which only reads images, keeps one. Otherwise this process runs
    the model with ``--threads`` (else the cores the single-threaded workers leave, at least 1; without
    workers torch's default: every core)."""
    from .pipeline import available_memory, default_workers, usable_cores

    cores = max(1, usable_cores() // world)  # torchrun: the ranks share the machine
    memory = available_memory()
    memory = None if memory is None else memory // world
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers {args.workers}: expected 0 (one image after the other) or more")
    in_workers = with_model and device.type == "cpu"
    workers = args.workers
    if workers is None:  # region relabelling needs the model: on a GPU it stays in this process
        workers = 0 if config.regions is not None and not in_workers else default_workers(
            device, cores, model=with_model, memory=memory)
    worker_threads = None
    if workers and in_workers:
        worker_threads = args.threads if args.threads > 0 else max(1, cores // workers)
        torch.set_num_threads(1)
        _logger.info("%d worker processes label the images, %d torch threads each", workers, worker_threads)
    elif workers:
        torch.set_num_threads(args.threads if args.threads > 0 else max(1, cores - workers))
        _logger.info("%d worker processes post-process the images; the model stage has %d torch threads",
                     workers, torch.get_num_threads())
    elif args.threads > 0:
        torch.set_num_threads(args.threads)
    return workers, worker_threads


def pseudo_labels_command(args: argparse.Namespace, progress: bool) -> int:
    from .presets import flatten, resolve_settings

    rank, world = _dist()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = device_from_flag(args.device)
    overrides, flags = pipeline_overrides(args)
    model = head = None
    max_side = args.max_side or 512
    precision = args.precision or "float32"
    choice = None
    if args.from_evidence is not None:
        if _auto_blocks(args):
            raise ValueError("--blocks auto measures the blocks with the model: not with --from-evidence "
                             "(give the blocks, e.g. those in the evidence run's manifest)")
        source = _evidence_run(args.from_evidence)
        resolved = _settings_from_evidence(source, overrides, flags, args)
        model_name, head_name = source["model"], source["head"]
        weights = source["checkpoint"]
        saved_side = source.get("runner", {}).get("max_side", 512)
        if args.max_side is not None and args.max_side != saved_side:
            raise ValueError(f"--max-side {args.max_side}: the evidence was computed at --max-side "
                             f"{saved_side}")
        max_side = saved_side
        saved_precision = source.get("runner", {}).get("precision", "float32")
        if args.precision is not None and args.precision != saved_precision:
            raise ValueError(f"--precision {args.precision}: the evidence was computed at --precision "
                             f"{saved_precision}")
        precision = saved_precision
    else:
        model, model_name, weights_file = load_model(args.checkpoint, args.model, args.head)
        resolved = resolve_settings(model, overrides, use_preset=args.preset == "auto",
                                    override_sources=flags)
        head_name, weights = args.head, weights_file
        if _auto_blocks(args):
            resolved, choice = _choose_blocks(args, model.to(device), resolved, VOCLayout(args.voc_root),
                                              device, max_side)
    if args.show_config:
        print(f"model: {model_name} ({weights or 'bundled demo weights'}); "
              f"preset: {resolved.preset or 'none'}")
        print(config_table(resolved))
        return 0
    config = resolved.config
    workers, worker_threads = _workers(args, device, world, config, model is not None)
    what = f"preset {resolved.preset}" if resolved.preset else "model-agnostic defaults"
    _logger.info("settings: %s%s", what, " with the flags' changes" if overrides else "")
    layout = VOCLayout(args.voc_root)
    ids = layout.ids(args.split)
    if args.limit:
        ids = ids[: args.limit]
    labels = layout.image_labels(ids, args.labels, args.labels_from)
    run_record = dict(
        config=flatten(config), runner={"max_side": max_side, "precision": precision},
        labels={"source": args.labels_from, "file": str(args.labels) if args.labels else None},
        sources={"preset": resolved.preset, "settings": resolved.sources},
        run={"voc_root": str(args.voc_root), "split": args.split, "limit": args.limit, "device": str(device),
             "save_scores": args.save_scores, "save_evidence": args.save_evidence, "world_size": world,
             "from_evidence": str(args.from_evidence) if args.from_evidence else None, "workers": workers},
    )
    if choice is not None:
        run_record["run"]["block_choice"] = choice
    if model is not None:
        try:
            head = ClassHead.imagenet(model) if args.head == "imagenet" else ClassHead.from_model(model)
        except ValueError as err:
            hint = "; pass --head imagenet for an ImageNet checkpoint" if args.head == "own" else ""
            raise ValueError(f"--head {args.head}: {err}{hint}") from None
        manifest = make_manifest(model=model_name, checkpoint=weights, head=head_name, **run_record)
    else:  # the model's identity as the evidence run recorded it
        manifest = {**{key: source.get(key)
                       for key in ("tool", "version", "model", "checkpoint", "checkpoint_sha256", "head")},
                    **run_record}
    try:
        prepare_run_folder(args.out, manifest, overwrite=args.overwrite, write=rank == 0,
                           outputs=("*.png", "scores/*.npz", "evidence/*.npz"))
    except RunFolderError as err:  # the library names the setting, the CLI its flag
        raise err.with_flag("--overwrite") from None
    if world > 1:
        torch.distributed.barrier()  # no rank writes a mask before rank 0 has checked and cleared the folder
    counts = run_pseudo_labels(
        model, layout, ids, labels, args.out, head=head, config=config, device=device, max_side=max_side,
        save_scores=args.save_scores, save_evidence=args.save_evidence,
        evidence_dir=Path(args.from_evidence) / "evidence" if args.from_evidence else None, rank=rank,
        world_size=world, progress=progress and rank == 0, workers=workers,
        worker_threads=worker_threads, precision=precision)
    if world > 1:
        t = torch.tensor([counts["written"], counts["skipped"], counts["failed"]])
        torch.distributed.all_reduce(t)
        counts = dict(zip(("written", "skipped", "failed"), t.tolist()))
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if rank == 0:
        _logger.info("%d written, %d skipped (already there), %d failed -> %s", counts["written"],
                     counts["skipped"], counts["failed"], args.out)
    return 1 if counts["failed"] else 0


def _table(summary: Dict) -> str:
    rows = [f"{'class':14s} {'IoU':>7s}"]
    rows += [f"{name:14s} {'' if v is None else f'{100 * v:7.2f}':>7s}" for name, v in summary["iou"].items()]
    rows.append(f"{'mIoU':14s} {100 * summary['miou']:7.2f}")
    rows.append(f"{'pixel acc.':14s} {100 * summary['pixel_accuracy']:7.2f}")
    return "\n".join(rows)


def score_summary(confusion: np.ndarray, images: int, split: str, missing: List[str]) -> Dict:
    """What ``score --json`` writes: :func:`wsss.metrics.summarize`, the split, the counts, the confusion
    matrix (``report`` draws it)."""
    summary = summarize(confusion)
    summary.update(split=split, images=images, missing=len(missing), missing_ids=missing[:20],
                   confusion=np.asarray(confusion).tolist())
    return summary


def _write_json(path: Path, summary: Dict) -> None:
    """``summary`` as indented JSON, written atomically; the confusion matrix one row a line."""
    text = json.dumps({k: v for k, v in summary.items() if k != "confusion"}, indent=1)
    if "confusion" in summary:
        rows = ",\n  ".join(json.dumps(row) for row in summary["confusion"])
        text = f'{text[:-2]},\n "confusion": [\n  {rows}\n ]\n}}'
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def score_command(args: argparse.Namespace) -> int:
    layout = VOCLayout(args.voc_root)
    ids = layout.ids(args.split)
    if args.limit:
        ids = ids[: args.limit]
    if not args.pred.is_dir():
        raise FileNotFoundError(f"--pred {args.pred}: no such folder")
    if args.sweep_bg:
        return _sweep(args, layout, ids)
    acc = ConfusionAccumulator()
    missing: List[str] = []
    for image_id in ids:
        path = args.pred / f"{image_id}.png"
        if not path.is_file():
            missing.append(image_id)
            continue
        acc.add(read_mask(path), read_mask(layout.mask(image_id)))
    summary = score_summary(acc.confusion, acc.count, args.split, missing)
    print(_table(summary))
    print(f"{acc.count} images scored, {len(missing)} listed ids without a prediction"
          + (f" (e.g. {', '.join(missing[:3])})" if missing else ""))
    if args.json:
        _write_json(args.json, summary)
    return 1 if missing else 0


def report_command(args: argparse.Namespace, progress: bool = True) -> int:
    """``glmix-wsss report``: the masks (or a ``score --json`` file) scored, as one HTML page."""
    from .report import render_report, score_masks, summary_from_json, write_report

    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: a folder; expected the path of the .html file to write")
    try:
        check_output_dir(out.parent)
    except ValueError as err:
        raise ValueError(f"--out {err}") from None
    if args.gallery < 0:
        raise ValueError(f"--gallery {args.gallery}: expected 0 (no gallery) or more images")
    missing: List[str] = []
    if args.from_json is not None:
        given = [flag for flag, value in (("--pred", args.pred), ("--voc-root", args.voc_root),
                                          ("--split", args.split), ("--limit", args.limit or None))
                 if value is not None]
        if given:
            raise ValueError("--from-json: the score file holds finished numbers; give it or "
                             f"{', '.join(given)}, not both")
        try:
            summary = summary_from_json(args.from_json)
        except (ValueError, FileNotFoundError) as err:
            raise type(err)(f"--from-json {err}") from None
        page = render_report(summary, source=f"scores from {args.from_json}")
    else:
        if args.pred is None or args.voc_root is None:
            raise ValueError("report: give --pred and --voc-root (the masks), or --from-json (a score --json "
                             "file)")
        try:
            layout = VOCLayout(args.voc_root)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--voc-root: {err}") from None
        split = args.split or "train"
        try:
            ids = layout.ids(split)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--split: {err}") from None
        if args.limit:
            ids = ids[: args.limit]
        if not args.pred.is_dir():
            raise FileNotFoundError(f"--pred {args.pred}: no such folder (expected a folder of <id>.png "
                                    "label maps)")
        try:
            scored = score_masks(args.pred, layout, ids, progress=progress)
        except ValueError as err:
            raise ValueError(f"--pred {err}") from None
        missing = scored.missing
        if not scored.images:
            raise ValueError(f"--pred {args.pred}: none of the {len(ids)} ids of split {split} has a "
                             f"prediction (<id>.png), e.g. {', '.join(ids[:3])}")
        summary = score_summary(scored.confusion, len(scored.images), split, missing)
        source = f"predictions {args.pred} against {layout.voc}, split {split} ({len(ids)} listed ids)"
        page = render_report(summary, source=source, scored=scored, layout=layout, pred_dir=args.pred,
                             gallery=args.gallery, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_report(out, page)
    print(f"{out}: mIoU {100 * summary['miou']:.2f}, {summary.get('images', '?')} images"
          + (f", {len(missing)} listed ids without a prediction" if missing else ""))
    return 1 if missing else 0


def _threshold_range(text: str) -> np.ndarray:
    """``--thresholds start:stop:step`` -> the thresholds, stop included; an error naming the flag
    otherwise."""
    try:
        values = tuple(float(v) for v in text.split(":")) if text.strip() else ()
    except ValueError:
        values = ()
    if len(values) != 3 or not values[2] > 0 or not 0 <= values[0] <= values[1] <= 1:
        raise ValueError(f"--thresholds {text!r}: expected start:stop:step with 0 <= start <= stop <= 1 and "
                         "step > 0, e.g. 0.05:0.60:0.05")
    start, stop, step = values
    return np.round(np.arange(start, stop + 1e-9, step), 6)


def _sweep(args: argparse.Namespace, layout: VOCLayout, ids: List[str]) -> int:
    thresholds = _threshold_range(args.thresholds)
    accs = [ConfusionAccumulator() for _ in thresholds]
    missing = []
    for image_id in ids:
        path = args.pred / "scores" / f"{image_id}.npz"
        if not path.is_file():
            missing.append(image_id)
            continue
        data = load_npz(path)  # never allow_pickle
        if "scores" not in data or "classes" not in data:
            raise ValueError(f"{path}: expected arrays 'scores' and 'classes' (from pseudo-labels "
                             f"--save-scores), found {sorted(data)}")
        scores, classes = data["scores"].astype(np.float32), [int(c) for c in data["classes"]]
        gt = read_mask(layout.mask(image_id))
        if scores.shape[1:] != gt.shape:
            from PIL import Image

            scores = np.stack([np.asarray(Image.fromarray(s).resize(gt.shape[::-1],
                                                                    Image.Resampling.BILINEAR))
                               for s in scores]) if len(scores) else np.zeros((0, *gt.shape), np.float32)
        for t, acc in zip(thresholds, accs):
            acc.add(labels_from_scores(with_background(scores, BackgroundParams("constant", float(t))),
                                       classes), gt)
    results = [(float(t), acc.summary()["miou"]) for t, acc in zip(thresholds, accs)]
    print(f"constant background threshold over {args.pred / 'scores'}: the saved scores, before the slot "
          "classifier and the CRF, so the best value here is not the full pipeline's")
    for t, miou in results:
        print(f"bg threshold {t:.3f}: mIoU {100 * miou:6.2f}")
    best = max(results, key=lambda r: r[1])
    print(f"best: threshold {best[0]:.3f}, mIoU {100 * best[1]:.2f} ({len(ids) - len(missing)} images, "
          f"{len(missing)} without scores)")
    if len(results) > 1 and best[0] in (results[0][0], results[-1][0]):
        print(f"note: the best threshold is at the edge of the range ({args.thresholds}); widen --thresholds "
              "to see whether a value beyond it scores higher")
    if args.json:
        args.json.write_text(json.dumps({"sweep": results, "best": best, "missing": len(missing)},
                                        indent=1) + "\n")
    return 1 if missing else 0
