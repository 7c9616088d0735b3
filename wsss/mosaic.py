"""Mosaic training: tiles of several images in one input, each tile classified on its own.

A plain multi-label classifier with global average pooling learns nothing
about *where* a class is: with global attention every position may carry the
whole image's classes, and class activation maps (CAMs) then light up the
background as much as the object. Mosaics make location part of the task.
Some images of a batch are replaced by a grid of up to 3 x 3 tiles cut on the
model's output grid, each tile another training image shrunk into it; the
classifier is applied at every output position (as a CAM is), the
position scores are averaged over each tile, and each tile must predict its
own image's labels only. Class evidence that leaks from one tile into another
is penalised, which is exactly the leak that blurs CAMs.

A plain image is the one-tile case, so its loss is the usual one: the mean of
per-position scores of a linear head equals the head applied to the mean
(global average pooling).

Position negatives (:func:`position_negatives`, ``--position-negatives W``)
go one step further: every output position is told that the classes its tile
(or its plain image) lacks are absent, so evidence may not leak into any
position outside the tiles that hold the class, not only on average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Tiling", "make_mosaics", "position_negatives", "tile_logits", "whole_image_tiling"]


@dataclass(frozen=True)
class Tiling:
    """Which output position belongs to which tile, and each tile's labels.

    Attributes:
        index: ``(B, h, w)`` int64 tile of every output position, numbered
            0..T-1 over the whole batch.
        labels: ``(T, n)`` labels of each tile (those of the image shrunk into it).
    """

    index: torch.Tensor
    labels: torch.Tensor


def _cuts(cells: int, parts: int, rng: np.random.Generator) -> List[int]:
    """Boundaries ``[0, ..., cells]`` of ``parts`` pieces, none shorter than ``ceil(cells / (2 parts))``."""
    shortest = max(1, math.ceil(cells / (2 * parts)))
    for _ in range(50):
        inner = (sorted(rng.choice(np.arange(1, cells), parts - 1, replace=False).tolist()) if parts > 1
                 else [])
        bounds = [0, *inner, cells]
        if min(np.diff(bounds)) >= shortest:
            return bounds
    return [round(k * cells / parts) for k in range(parts + 1)]


def make_mosaics(x: torch.Tensor, y: torch.Tensor, *, fraction: float, stride: int, max_grid: int = 3,
                 rng: np.random.Generator) -> Tuple[torch.Tensor, Tiling]:
    """Replace a ``fraction`` of the batch by mosaics of batch images.

    Each chosen image becomes a grid of ``r x c`` tiles (``r, c`` drawn from
    ``1..max_grid``, not both 1) whose borders lie on the model's output grid
    (multiples of ``stride`` pixels); each tile is a batch image (drawn with
    replacement) resized into it, so all its labelled objects stay in view.

    Args:
        x: ``(B, 3, S, S')`` images; ``S`` and ``S'`` multiples of ``stride``.
        y: ``(B, n)`` multi-hot labels.
        fraction: probability that an image is replaced by a mosaic.
        stride: the model's output stride (32 for GLNets).
        max_grid: most tiles per side.
        rng: the random source (seed it for reproducible batches).

    Returns:
        ``(images (B, 3, S, S'), tiling)``; a plain image is one tile.
    """
    B, _, H, W = x.shape
    if H % stride or W % stride:
        raise ValueError(f"mosaics need an input size that is a multiple of the model's stride {stride}, "
                         f"got {H}x{W}")
    gh, gw = H // stride, W // stride
    out = x.clone()
    index = torch.empty(B, gh, gw, dtype=torch.long)
    labels: List[torch.Tensor] = []
    for i in range(B):
        rows = cols = 1
        if rng.random() < fraction:
            while True:  # a grid other than 1 x 1, uniformly (unless the output grid is a single cell)
                rows, cols = (int(rng.integers(1, min(max_grid, gh) + 1)),
                              int(rng.integers(1, min(max_grid, gw) + 1)))
                if rows * cols > 1 or gh * gw == 1:
                    break
        if rows * cols == 1:  # a plain image: one tile
            index[i] = len(labels)
            labels.append(y[i])
            continue
        rb, cb = _cuts(gh, rows, rng), _cuts(gw, cols, rng)
        for r in range(rows):
            for c in range(cols):
                src = int(rng.integers(0, B))
                (r0, r1), (c0, c1) = (rb[r], rb[r + 1]), (cb[c], cb[c + 1])
                out[i, :, r0 * stride:r1 * stride, c0 * stride:c1 * stride] = F.interpolate(
                    x[src:src + 1], size=((r1 - r0) * stride, (c1 - c0) * stride), mode="bilinear",
                    align_corners=False, antialias=True)[0]
                index[i, r0:r1, c0:c1] = len(labels)
                labels.append(y[src])
    return out, Tiling(index.to(x.device), torch.stack(labels).to(y.device))


def tile_logits(model: nn.Module, features: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """Per-tile class scores: the head at every position, averaged over each tile.

    Args:
        model: a GLNet with average pooling and a linear head.
        features: ``(B, C, h, w)`` from ``model.forward_features``.
        tiling: from :func:`make_mosaics`, on the same ``(h, w)`` grid.

    Returns:
        ``(T, n)`` logits, one row per tile.
    """
    head = model.get_classifier()
    if getattr(model, "global_pool", "avg") != "avg" or not isinstance(head, nn.Linear):
        raise ValueError("mosaic training needs a model with average pooling and a linear head "
                         f"(got global_pool={getattr(model, 'global_pool', None)!r}, "
                         f"head {type(head).__name__})")
    B, C, h, w = features.shape
    if tiling.index.shape != (B, h, w):
        raise ValueError(f"tiling grid {tuple(tiling.index.shape)} does not match the features' {(B, h, w)}")
    T = tiling.labels.shape[0]
    idx = tiling.index.reshape(-1)
    sums = features.new_zeros(T, C).index_add_(0, idx, features.permute(0, 2, 3, 1).reshape(-1, C))
    counts = torch.bincount(idx, minlength=T).clamp_min(1).to(features.dtype)
    # the model's own head on each tile's mean feature (linear: == the mean of per-position logits)
    return model.forward_head((sums / counts[:, None]).view(T, C, 1, 1))


def whole_image_tiling(y: torch.Tensor, grid: Tuple[int, int]) -> Tiling:
    """The tiling of a batch of plain images: each image is one tile with its own labels ``y (B, n)``."""
    B = y.shape[0]
    index = torch.arange(B, device=y.device).view(B, 1, 1).expand(B, *grid).contiguous()
    return Tiling(index, y)


def position_negatives(model: nn.Module, features: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """Mean binary cross-entropy towards 0 of every position's score for each class absent from its tile.

    The tile loss of :func:`tile_logits` bounds the *mean* evidence a tile may
    hold for a class it lacks; this term bounds it at every position, so no
    part of a tile may claim such a class (class evidence spread by global
    attention beyond the object's tile is penalised wherever it spreads).

    Args:
        model: a GLNet with a linear head.
        features: ``(B, C, h, w)`` from ``model.forward_features``.
        tiling: ``index (B, h, w)``, ``labels (T, n)`` in {0, 1}.

    Returns:
        A scalar: ``sum(softplus(score) * absent) / sum(absent)`` over positions and classes.
    """
    scores = model.get_classifier()(features.permute(0, 2, 3, 1))  # the head at every position: (B, h, w, n)
    absent = 1.0 - tiling.labels[tiling.index].to(scores.dtype)  # (B, h, w, n)
    return (F.softplus(scores.float()) * absent).sum() / absent.sum().clamp_min(1.0)
