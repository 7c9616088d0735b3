"""How fast a small CNN from scratch learns each class: alone (class-vs-rest) and among all 20 (multi-label).

    python -m experiments.class_learnability --voc-root data/emojivoc12k --train-split train_bird \\
        --classes bird --epochs 10 [--size 96] [--threads 1]

A diagnosis of the data, not of GLNet: if a class the demo model never learns
(bird, docs/experiments.md "Birds") is learned quickly by a
0.3M-parameter CNN trained on that class alone, the images carry what it
takes, and the difficulty lies in training it among the other classes. Each
run trains the same network (six 3x3 conv-BN-ReLU stages, global max pooling,
AdamW 2e-3 one-cycle, batch 64, flips and shifts) from the same seed on
images resized to ``--size``; per epoch it prints the val AP of the chosen
classes, for one binary run per class and one 20-class run, and at the end
both side by side.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from experiments.inmemory import augment, load_split, logits
from wsss.train import average_precision
from wsss.voc import VOC_FOREGROUND, VOCLayout


def small_cnn(outputs: int) -> nn.Module:
    """Six conv-BN-ReLU stages (16 to 128 channels, four 2x poolings), global max pooling, linear."""
    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(inplace=True))
    return nn.Sequential(block(3, 16), nn.MaxPool2d(2), block(16, 32), nn.MaxPool2d(2), block(32, 64),
                         block(64, 64), nn.MaxPool2d(2), block(64, 128), block(128, 128), nn.MaxPool2d(2),
                         block(128, 128), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(128, outputs))


def train_run(train: tuple, val: tuple, columns: Sequence[int], report: Sequence[int], *, epochs: int,
              batch: int, seed: int, name: str) -> List[Dict[int, float]]:
    """Train on ``columns`` of the labels (VOC foreground indices 0..19); val AP of ``report`` per epoch."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    (x_tr, y_tr), (x_va, y_va) = train, val
    y_tr, y_va = y_tr[:, list(columns)], y_va[:, list(columns)]
    net = small_cnn(len(columns))
    steps = epochs * (len(x_tr) // batch)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.1)
    history, t0 = [], time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(x_tr))
        for b in range(len(x_tr) // batch):
            idx = perm[b * batch:(b + 1) * batch]
            loss = F.binary_cross_entropy_with_logits(net(augment(x_tr[idx], rng)), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        s = logits(net, x_va)
        aps = {c: average_precision(s[:, list(columns).index(c)], y_va[:, list(columns).index(c)].numpy())
               for c in report}
        mean_ap = float(np.nanmean([average_precision(s[:, j], y_va[:, j].numpy())
                                    for j in range(len(columns))]))
        history.append(aps)
        shown = ", ".join(f"{VOC_FOREGROUND[c]} {ap:.3f}" for c, ap in aps.items())
        print(f"  {name:12s} epoch {epoch + 1:2d} ({time.perf_counter() - t0:5.0f} s): val AP {shown}"
              f" (mean over its {len(columns)} outputs {mean_ap:.3f})", flush=True)
    return history


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voc-root", type=Path, required=True)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--classes", default="bird", help="comma-separated VOC class names, one binary run each")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-multi", action="store_true", help="only the class-vs-rest runs")
    args = p.parse_args()
    unknown = [c for c in args.classes.split(",") if c not in VOC_FOREGROUND]
    if unknown:
        p.error(f"--classes: unknown {unknown}; expected names from {list(VOC_FOREGROUND)}")
    classes = [VOC_FOREGROUND.index(c) for c in args.classes.split(",")]
    torch.set_num_threads(args.threads)
    layout = VOCLayout(args.voc_root)
    train, val = (load_split(layout, args.train_split, args.size),
                  load_split(layout, args.val_split, args.size))
    print(f"{len(train[0])} train / {len(val[0])} val images at {args.size} px; positives in train: "
          + ", ".join(f"{VOC_FOREGROUND[c]} {float(train[1][:, c].mean()):.1%}" for c in classes))
    common = dict(epochs=args.epochs, batch=args.batch_size, seed=args.seed)
    alone = {c: train_run(train, val, [c], [c], name=f"{VOC_FOREGROUND[c]} alone", **common) for c in classes}
    multi = None if args.skip_multi else train_run(train, val, range(len(VOC_FOREGROUND)), classes,
                                                   name="all 20", **common)
    print(f"\nval AP by epoch, {args.size} px, small CNN from scratch")
    for c in classes:
        print(f"  {VOC_FOREGROUND[c]:12s} alone:  " + " ".join(f"{h[c]:.2f}" for h in alone[c]))
        if multi is not None:
            print(f"  {VOC_FOREGROUND[c]:12s} all 20: " + " ".join(f"{h[c]:.2f}" for h in multi))


if __name__ == "__main__":
    main()
