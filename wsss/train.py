"""Multi-label image-level classification of a GLNet on a VOC-format dataset (the WSSS setting).

One output per foreground class, binary cross-entropy, AdamW with linear
warm-up and cosine decay, mixed precision on CUDA; optionally mosaics whose
tiles are classified one by one (``mosaic``, see :mod:`wsss.mosaic`), which
keeps class evidence where the object is and so sharpens CAMs, optionally with a
per-position loss on the classes a tile lacks (``position_negatives``). Checkpoints are written in
the release's format (``{"model": state_dict, "optimizer": ..., "epoch": ...}``)
to a temporary file and renamed, so an interrupted run never leaves a broken
one; ``resume=True`` continues from ``checkpoint-last.pth``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from glmix_viz.devices import resolve_device
from glmix_viz.fields import FieldError
from glmix_viz.fileio import atomic_write
from glmix_viz.images import load_image, normalize
from glmix_viz.models import checkpoint_num_classes, load_checkpoint, read_checkpoint

from .mosaic import make_mosaics, position_negatives, tile_logits, whole_image_tiling
from .voc import NUM_CLASSES, VOCLayout

__all__ = ["TrainConfig", "VOCClassification", "average_precision", "mean_average_precision", "train",
           "evaluate"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (saved in each checkpoint)."""

    voc_root: str
    out: str
    model: str = "glnet_demo"
    train_split: str = "train"
    val_split: str = "val"
    labels_file: Optional[str] = None
    labels_from: str = "auto"  # image-level labels: auto, npy, masks or xml (wsss.voc.VOCLayout.image_labels)
    init_checkpoint: Optional[str] = None
    input_size: int = 192
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    clip_grad: float = 1.0
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    drop_path: float = 0.1
    min_scale: float = 0.8
    workers: int = 1
    threads: int = 0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    max_steps: int = 0  # stop after this many optimiser steps in total (0: no limit), for smoke tests
    ema_decay: float = 0.0  # exponential moving average of the weights (0: off), evaluated and saved as best
    mosaic: float = 0.0  # fraction of training images replaced by mosaics with per-tile labels (wsss.mosaic)
    position_negatives: float = 0.0  # weight of the per-position loss on classes absent from the tile
    # (wsss.mosaic)
    pos_weight: Tuple[float, ...] = ()  # BCE weight of each class's positives (20 values; empty: all 1)

    def __post_init__(self) -> None:
        if self.pos_weight and len(self.pos_weight) != NUM_CLASSES - 1:
            raise ValueError(f"pos_weight has {len(self.pos_weight)} values, expected {NUM_CLASSES - 1} "
                             "(one per class)")


class VOCClassification(torch.utils.data.Dataset):
    """Images of a VOC split with their image-level labels.

    Returns ``(image (3, S, S) float32, labels (20,) float32)``; training
    augmentation: random resized crop, horizontal flip, colour jitter.
    """

    def __init__(self, layout: VOCLayout, split: str, *, size: int, train: bool,
                 labels_file: Optional[str] = None, labels_from: str = "auto",
                 min_scale: float = 0.8) -> None:
        self.layout = layout
        self.ids = layout.ids(split)
        if not self.ids:
            raise ValueError(f"split {split!r} of {layout.voc} lists no images")
        self.labels = layout.image_labels(self.ids, labels_file, labels_from)
        self.size = size
        self.train = train
        self.min_scale = min_scale

    def __len__(self) -> int:
        return len(self.ids)

    def _transform(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        S = self.size
        if self.train:
            w, h = img.size
            for _ in range(10):  # random resized crop, aspect 3/4..4/3
                area = w * h * rng.uniform(self.min_scale, 1.0)
                aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
                cw, ch = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
                if 0 < cw <= w and 0 < ch <= h:
                    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                    break
            else:
                cw, ch, x0, y0 = w, h, 0, 0
            img = img.resize((S, S), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = np.asarray(img, np.float32) / 255.0
            x = x * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)  # brightness, offset
            gray = x.mean(axis=2, keepdims=True)
            x = gray + (x - gray) * rng.uniform(0.6, 1.4)  # saturation
            x = np.clip(x, 0, 1)
        else:
            x = np.asarray(img.resize((S, S), Image.Resampling.BILINEAR))
        return normalize(x)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image_id = self.ids[index]
        rng = np.random.default_rng(torch.randint(0, 2**31, ()).item())  # follows torch's seeded stream
        img = load_image(self.layout.image(image_id))
        return self._transform(img, rng), torch.from_numpy(self.labels[image_id])


def average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Average precision of one class (area under the step precision-recall curve, as scikit-learn).

    Shape:
        ``scores, targets: (N,)``; targets in {0, 1}. NaN when no positive.
    """
    positives = targets.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], targets[order]
    tp = np.cumsum(t)
    fp = np.cumsum(1 - t)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # one point per distinct threshold
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> Tuple[float, np.ndarray]:
    """Mean over classes with positives of the per-class AP; also the per-class APs.

    Shape:
        ``scores, targets: (N, C)``.
    """
    aps = np.array([average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    return float(np.nanmean(aps)), aps


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device) -> Tuple[float, np.ndarray]:
    """Validation mAP (sigmoid scores) and per-class AP."""
    model.eval()
    scores, targets = [], []
    for x, y in loader:
        scores.append(torch.sigmoid(model(x.to(device)).float()).cpu().numpy())
        targets.append(y.numpy())
    return mean_average_precision(np.concatenate(scores), np.concatenate(targets))


def _atomic_save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Dict[str, float]:
    """Train (or resume) a multi-label classifier; returns the last epoch's metrics.

    Writes ``checkpoint-last.pth`` (``model``, with ``model_ema`` when
    ``config.ema_decay > 0``, optimizer, epoch), ``checkpoint-best.pth`` (best
    val mAP), ``checkpoint-<epoch>.pth`` (weights only, float16) and
    ``log.jsonl`` under ``config.out``. With EMA, the averaged weights are the
    ones evaluated and written to the best and per-epoch files.
    """
    import timm
    from tqdm import tqdm

    import glmix_viz  # noqa: F401  (registers the models)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)

    layout = VOCLayout(config.voc_root)
    train_set = VOCClassification(layout, config.train_split, size=config.input_size, train=True,
                                  labels_file=config.labels_file, labels_from=config.labels_from,
                                  min_scale=config.min_scale)
    val_set = VOCClassification(layout, config.val_split, size=config.input_size, train=False,
                                labels_file=config.labels_file, labels_from=config.labels_from)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=generator,
        num_workers=config.workers, persistent_workers=config.workers > 0, pin_memory=device.type == "cuda",
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=config.batch_size,
                                             num_workers=config.workers)
    if len(train_loader) == 0:
        raise ValueError(f"batch size {config.batch_size} is larger than the {len(train_set)} "
                         "training images")

    model = timm.create_model(config.model, num_classes=NUM_CLASSES - 1, drop_path_rate=config.drop_path)
    fresh_head = True
    if config.init_checkpoint:
        init = read_checkpoint(config.init_checkpoint)
        fresh_head = checkpoint_num_classes(init, model, config.model) != NUM_CLASSES - 1
        load_checkpoint(model, config.init_checkpoint, name=config.model, num_classes=NUM_CLASSES - 1,
                        checkpoint=init)
    if not resume and fresh_head:  # start a new classifier at the label prior: no epochs spent on frequencies
        prior = np.stack(list(train_set.labels.values())).mean(0).clip(1e-3, 1 - 1e-3)
        with torch.no_grad():
            model.get_classifier().bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))))
    model.to(device)
    pos_weight = torch.tensor(config.pos_weight, device=device) if config.pos_weight else None
    stride = model.feature_info[-1]["reduction"] if config.mosaic > 0 else 0
    if not 0 <= config.mosaic <= 1 or (stride and config.input_size % stride):
        raise FieldError(("TrainConfig.mosaic", "TrainConfig.input_size"), [config.mosaic, config.input_size],
                         "mosaics need a fraction in [0, 1] and an input size that is a multiple of the "
                         f"model's stride {stride}")
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "init_slots" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "init_slots" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    ema = None
    if config.ema_decay > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=config.ema_decay)
    start_epoch, best = 0, -1.0
    last = out / "checkpoint-last.pth"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"no {last} to resume from (resume=True)")
        ckpt = read_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        if ema is not None:
            ema.module.load_state_dict(ckpt.get("model_ema", ckpt["model"]))
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best = int(ckpt["epoch"]) + 1, float(ckpt.get("best_map", -1.0))
        generator.manual_seed(config.seed + start_epoch)
        torch.manual_seed(config.seed + start_epoch)
        _logger.info("resumed from %s at epoch %d (best mAP %.4f)", last, start_epoch, best)

    steps_per_epoch = len(train_loader)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)
    step = start_epoch * steps_per_epoch
    metrics: Dict[str, float] = {}
    for epoch in range(start_epoch, config.epochs):
        model.train()
        generator.manual_seed(config.seed + epoch)  # the epoch's order depends on the epoch only
        torch.manual_seed(config.seed + epoch)
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                   disable=not progress)
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        for x, y in bar:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, total, warmup, config.lr)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            tiling = None
            if config.mosaic > 0:  # the step's mosaics depend on (seed, step) only, also after a resume
                x, tiling = make_mosaics(x, y, fraction=config.mosaic, stride=stride,
                                         rng=np.random.default_rng([config.seed, step]))
                y = tiling.labels  # one target row per tile
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                if tiling is None and not config.position_negatives:
                    logits = model(x)
                else:
                    features = model.forward_features(x)
                    if tiling is None:  # plain images: each its own tile
                        tiling = whole_image_tiling(y, features.shape[-2:])
                    logits = tile_logits(model, features, tiling)
                loss = F.binary_cross_entropy_with_logits(logits.float(), y, pos_weight=pos_weight)
                if config.position_negatives:
                    loss = loss + config.position_negatives * position_negatives(model, features, tiling)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.clip_grad > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            if ema is not None:
                ema.update(model)  # constant decay, starting from the initial weights
            seen += x.shape[0]
            loss_sum += loss.item() * x.shape[0]
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
            if not progress and step % 25 == 0:  # a heartbeat for logs when there is no progress bar
                _logger.info("epoch %d step %d/%d: loss %.4f, %.1f img/s", epoch + 1,
                             step % steps_per_epoch or steps_per_epoch, steps_per_epoch, loss.item(),
                             seen / (time.perf_counter() - t0))
            if config.max_steps and step >= config.max_steps:
                break
        scored = model if ema is None else ema.module  # the weights that are evaluated and kept as best
        val_map, aps = evaluate(scored, val_loader, device)
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(1, seen), "val_map": val_map,
                   "images_per_s": seen / (time.perf_counter() - t0), "lr": optimizer.param_groups[0]["lr"]}
        if ema is not None:
            metrics["val_map_raw"] = evaluate(model, val_loader, device)[0]
        best = max(best, val_map)
        state = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best_map": best, "val_map": val_map, "config": asdict(config),
        }
        if ema is not None:
            state["model_ema"] = ema.module.state_dict()
        _atomic_save(state, last)
        weights = scored.state_dict()
        if val_map >= best:
            _atomic_save({"model": weights, "epoch": epoch, "val_map": val_map, "config": asdict(config)},
                         out / "checkpoint-best.pth")
        _atomic_save({"model": {k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
                      "epoch": epoch, "val_map": val_map}, out / f"checkpoint-{epoch + 1:03d}.pth")
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(metrics) + "\n")
        _logger.info("epoch %d: loss %.4f, val mAP %.4f, %.1f img/s", epoch + 1, metrics["train_loss"],
                     val_map, metrics["images_per_s"])
        if config.max_steps and step >= config.max_steps:
            break
    return metrics
