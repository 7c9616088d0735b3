"""Fine-tune a 20-class glnet_demo on one class alone (class-vs-rest BCE on that class's output only).

    python scripts/finetune_one_class.py --voc-root data/emojivoc12k --train-split train_bird \\
        --init runs/stage12/checkpoint-best.pth --class bird --out runs/bird_only.pth

Stage 17 of the demo model (README, "EmojiVOC and the demo model"): trained
among the 20 classes, glnet_demo never learned birds (val AP 0.34), while a
small CNN from scratch learns them alone in minutes
(``benchmarks/class_learnability.py``). Trained on birds alone the same
network learns them too; a multi-label fine-tune afterwards
(``glmix-wsss train --init-checkpoint OUT``) brings the other classes back,
or ``--distill W`` holds the other 19 outputs to the initial model's
probabilities meanwhile (learning without forgetting), ``--distill-maps W``
their per-position logits (the maps the pseudo-masks are made from).
Images are resized whole to ``--size`` once and kept in memory; flips and
shifts of up to a tenth of the side; AdamW one-cycle; every random choice
follows ``--seed``. Writes ``{"model": state_dict}`` after every epoch
(temporary file, then rename).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402

from glmix_viz.fileio import atomic_write  # noqa: E402
from glmix_viz.models import load_checkpoint  # noqa: E402
from wsss.train import average_precision  # noqa: E402
from wsss.voc import VOC_FOREGROUND, VOCLayout  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from class_learnability import augment, load_split, scores  # noqa: E402

_logger = logging.getLogger("finetune_one_class")


def class_ap(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, column: int) -> float:
    """AP of output ``column`` over ``images (N, S, S, 3)`` uint8 (eval mode, batches of 100)."""
    return average_precision(scores(model, images, batch=100)[:, column], targets.numpy())


def position_logits(model: torch.nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The classifier at every output position (the CAM before ReLU): ``(B, C, h, w) -> (B, 20, h, w)``."""
    head = model.get_classifier()
    return F.conv2d(feats, head.weight[:, :, None, None], head.bias)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voc-root", type=Path, required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--init", type=Path, required=True, help="glnet_demo checkpoint with a 20-class head")
    p.add_argument("--class", dest="cls", default="bird", help="VOC class name")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of a BCE holding the other 19 outputs to the initial model's probabilities (0: off)")
    p.add_argument("--distill-maps", type=float, default=0.0,
                   help="weight of a mean squared error holding the other 19 classes' per-position logits (their "
                        "class maps) to the initial model's (0: off)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if args.cls not in VOC_FOREGROUND:
        p.error(f"--class {args.cls!r}: expected one of {list(VOC_FOREGROUND)}")
    column = VOC_FOREGROUND.index(args.cls)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    layout = VOCLayout(args.voc_root)
    (x_tr, y_tr), (x_va, y_va) = (load_split(layout, s, args.size) for s in (args.train_split, args.val_split))
    y_tr, y_va = y_tr[:, column], y_va[:, column]
    model = load_checkpoint(timm.create_model("glnet_demo"), args.init).float().train()
    teacher = (load_checkpoint(timm.create_model("glnet_demo"), args.init).float().eval()
               if args.distill or args.distill_maps else None)
    others = [c for c in range(len(VOC_FOREGROUND)) if c != column]
    _logger.info("%s: val AP %.3f at %d px before", args.cls, class_ap(model, x_va, y_va, column), args.size)
    steps_per_epoch = len(x_tr) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.1)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x_tr))
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            x = augment(x_tr[idx], rng)
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            loss = F.binary_cross_entropy_with_logits(logits[:, column], y_tr[idx])
            if teacher is not None:
                with torch.no_grad():
                    t_feats = teacher.forward_features(x)
                    target = torch.sigmoid(teacher.forward_head(t_feats)[:, others])
                if args.distill:
                    loss = loss + args.distill * F.binary_cross_entropy_with_logits(logits[:, others], target)
                if args.distill_maps:
                    loss = loss + args.distill_maps * F.mse_loss(position_logits(model, feats)[:, others],
                                                                 position_logits(teacher, t_feats)[:, others])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        atomic_write(args.out, lambda tmp: torch.save({"model": model.state_dict()}, tmp))
        _logger.info("epoch %d (%.0f s): %s val AP %.3f; wrote %s", epoch + 1, time.perf_counter() - t0, args.cls,
                     class_ap(model, x_va, y_va, column), args.out)


if __name__ == "__main__":
    main()
