"""A VOC split held in memory as one uint8 tensor, for short classification runs.

Used by the tools that train small heads or fine-tune for a few epochs on
images resized whole (``experiments/class_learnability.py``,
``experiments/finetune_one_class.py``): the split is decoded once, and each
batch is augmented and normalised on the fly.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from tqdm import tqdm

from glmix_viz.images import IMAGENET_MEAN, IMAGENET_STD
from wsss.voc import VOCLayout

__all__ = ["load_split", "to_input", "augment", "logits"]


def load_split(layout: VOCLayout, split: str, size: int, *,
               progress: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """A split's images resized whole to ``size`` and their image-level labels.

    Returns:
        ``images (N, size, size, 3)`` uint8 and ``labels (N, 20)`` float32, in
        the order of the split's list.
    """
    ids = layout.ids(split)
    labels = layout.image_labels(ids)
    images = np.stack([np.asarray(Image.open(layout.image(i)).convert("RGB").resize((size, size),
                                                                                    Image.BILINEAR))
                       for i in tqdm(ids, desc=f"loading {split}", unit="img", disable=not progress)])
    return torch.from_numpy(images), torch.tensor(np.stack([labels[i] for i in ids]), dtype=torch.float32)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """``(B, S, S, 3)`` uint8 -> ImageNet-normalised ``(B, 3, S, S)`` float32."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255 - mean) / std


def augment(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random horizontal flips and one shift of up to a tenth of the side.

    Flips are drawn per image from torch's generator, the circular shift
    (``torch.roll``) once per batch from ``rng``. Shape: ``(B, S, S, 3)`` uint8 ->
    normalised ``(B, 3, S, S)`` float32.
    """
    x = to_input(torch.where(torch.rand(len(images), 1, 1, 1) < 0.5, images.flip(2), images))
    shift = images.shape[1] // 10
    dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
    return torch.roll(x, (dy, dx), (2, 3))


@torch.no_grad()
def logits(net: nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """``(N, outputs)`` outputs of ``net`` on ``images (N, S, S, 3)`` uint8, in eval mode (its mode is
    restored)."""
    was_training = net.training
    net.eval()
    out = torch.cat([net(to_input(images[i:i + batch])) for i in range(0, len(images), batch)]).numpy()
    net.train(was_training)
    return out
