"""Fine-tune a 20-class glnet_demo on some of its classes alone (class-vs-rest BCE on their outputs only).

    python -m experiments.finetune_one_class --voc-root data/emojivoc12k --train-split train_bird \\
        --init runs/stage12/checkpoint-best.pth --class bird --out runs/bird_only.pth

Stage 17 of the demo model (docs/experiments.md, "Birds"): trained
among the 20 classes, glnet_demo never learned birds (val AP 0.34), while a
small CNN from scratch learns them alone in minutes
(``experiments/class_learnability.py``). Trained on birds alone the same
network learns them too; a multi-label fine-tune afterwards
(``glmix-wsss train --init-checkpoint OUT``) brings the other classes back,
or ``--distill W`` holds the other outputs to the initial model's
probabilities meanwhile (learning without forgetting), ``--distill-maps W``
their per-position logits (the maps the pseudo-masks are made from);
``--hide P`` hides grid cells of the training images (hide-and-seek) so the
class's whole extent is learned rather than its most telling part.
Images are resized whole to ``--size`` once and kept in memory; flips and
shifts of up to a tenth of the side; AdamW one-cycle; every random choice
follows ``--seed``. Writes ``{"model": state_dict}`` after every epoch
(temporary file, then rename).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import List

import numpy as np
import timm
import torch
import torch.nn.functional as F

from experiments.inmemory import augment, load_split, logits
from glmix_viz.fileio import atomic_write
from glmix_viz.models import load_checkpoint
from wsss.train import average_precision
from wsss.voc import VOC_FOREGROUND, VOCLayout

_logger = logging.getLogger("finetune_one_class")


def class_ap(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
             columns: List[int]) -> float:
    """Mean AP of outputs ``columns`` over ``images (N, S, S, 3)`` uint8, ``targets (N, 20)`` (eval mode)."""
    out = logits(model, images, batch=100)
    return float(np.mean([average_precision(out[:, c], targets[:, c].numpy()) for c in columns]))


def position_logits(model: torch.nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The classifier at every output position (the CAM before ReLU): ``(B, C, h, w) -> (B, 20, h, w)``."""
    head = model.get_classifier()
    return F.conv2d(feats, head.weight[:, :, None, None], head.bias)


def hide_patches(x: torch.Tensor, p: float, grid: int) -> torch.Tensor:
    """Hide-and-seek (Singh & Lee, ICCV 2017): each cell of a ``grid x grid`` partition of each image is set
    to the mean colour (0 after normalisation) with probability ``p``, so the most telling part (a bird's
    beak) is sometimes gone and the rest has to be learned too.

    Shape:
        ``(B, 3, S, S)`` normalised -> same; random draws from torch's global generator.
    """
    keep = (torch.rand(len(x), 1, grid, grid) >= p).to(x.dtype)
    return x * F.interpolate(keep, size=x.shape[-2:], mode="nearest")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voc-root", type=Path, required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--init", type=Path, required=True, help="glnet_demo checkpoint with a 20-class head")
    p.add_argument("--class", dest="cls", default="bird",
                   help="VOC class name, several joined by commas, or 'all' (then no --distill, "
                        "--distill-maps)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of a BCE holding the other outputs to the initial model's probabilities "
                        "(0: off)")
    p.add_argument("--distill-maps", type=float, default=0.0,
                   help="weight of a mean squared error holding the other classes' per-position logits "
                        "(their class maps) to the initial model's (0: off)")
    p.add_argument("--hide", type=float, default=0.0,
                   help="hide-and-seek: probability of hiding each grid cell of a training image (0: off)")
    p.add_argument("--hide-grid", type=int, default=4, help="--hide: cells per side")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if not 0 <= args.hide < 1 or args.hide_grid < 1:
        p.error(f"--hide {args.hide} / --hide-grid {args.hide_grid}: expected a probability in [0, 1) "
                "and at least 1 cell")
    names = list(VOC_FOREGROUND) if args.cls == "all" else args.cls.split(",")
    if not set(names) <= set(VOC_FOREGROUND):
        p.error(f"--class {args.cls!r}: expected 'all' or names from {list(VOC_FOREGROUND)}")
    columns = sorted(VOC_FOREGROUND.index(n) for n in set(names))
    others = [c for c in range(len(VOC_FOREGROUND)) if c not in columns]
    if not others and (args.distill or args.distill_maps):
        p.error(f"--class {args.cls}: trains every output, so --distill and --distill-maps have "
                "nothing to hold")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    layout = VOCLayout(args.voc_root)
    (x_tr, y_tr), (x_va, y_va) = (load_split(layout, split, args.size)
                                  for split in (args.train_split, args.val_split))
    model = load_checkpoint(timm.create_model("glnet_demo"), args.init).float().train()
    teacher = (load_checkpoint(timm.create_model("glnet_demo"), args.init).float().eval()
               if args.distill or args.distill_maps else None)
    _logger.info("%s: val AP %.3f at %d px before", args.cls, class_ap(model, x_va, y_va, columns),
                 args.size)
    steps_per_epoch = len(x_tr) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.1)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x_tr))
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            x = augment(x_tr[idx], rng)
            if args.hide:
                x = hide_patches(x, args.hide, args.hide_grid)
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            loss = F.binary_cross_entropy_with_logits(logits[:, columns], y_tr[idx][:, columns])
            if teacher is not None:
                with torch.no_grad():
                    t_feats = teacher.forward_features(x)
                if args.distill:
                    with torch.no_grad():
                        target = torch.sigmoid(teacher.forward_head(t_feats)[:, others])
                    loss = loss + args.distill * F.binary_cross_entropy_with_logits(logits[:, others], target)
                if args.distill_maps:
                    loss = loss + args.distill_maps * F.mse_loss(position_logits(model, feats)[:, others],
                                                                 position_logits(teacher, t_feats)[:, others])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        atomic_write(args.out, lambda tmp: torch.save({"model": model.state_dict()}, tmp))
        _logger.info("epoch %d (%.0f s): %s val AP %.3f; wrote %s", epoch + 1, time.perf_counter() - t0,
                     args.cls, class_ap(model, x_va, y_va, columns), args.out)


if __name__ == "__main__":
    main()
