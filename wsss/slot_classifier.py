"""Per-image slot classifier: grow confident class seeds into whole regions.

Slot-refined CAMs are confident only on parts of most objects (a CAM peaks
on what tells the class apart). At each GLMix block every pixel has a
distribution over the block's K slots (the dispatch map): which of the
regions the block formed it belongs to. Over all blocks these distributions
describe each pixel with ``blocks * K`` numbers the model computed itself.

A multinomial logistic regression fitted on one image's confident pixels
(seeds: best class score >= ``foreground`` -> that class, best class score <
``background`` -> background) then labels every pixel by the slots it shares
with the seeds. It is AffinityNet/IRN's seed-and-propagate idea with the
model's own slots as the affinity, fitted per image in a fraction of a
second, with nothing trained across images. Its probabilities are averaged
with the scores' own (``weight``) before the dense CRF.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from glmix_viz.capture import SlotRecord
from glmix_viz.devices import torch_threads
from glmix_viz.fields import FieldError

__all__ = [
    "SlotClassifierParams", "slot_features", "seed_labels", "fit_softmax_regression", "slot_classifier",
    "mix_slot_classifier",
]


@dataclass(frozen=True)
class SlotClassifierParams:
    """Seeds, grid and fit of the per-image slot classifier.

    The defaults were measured on EmojiVOC with the bundled model
    (docs/experiments.md, "Slot classifier variants").

    Attributes:
        foreground: a pixel whose best class score is at least this is a seed of that class.
        background: a pixel whose best class score is below this is a background seed.
        weight: weight of the classifier's probabilities against those of the scores (1: classifier only).
        stride: pixels per grid cell of the fit (the image is pooled to ``(H // stride, W // stride)``).
        l2: ridge penalty on the weights.
        iterations: L-BFGS iterations.
        blocks: GLMix block ordinals whose dispatch maps are the features (``None``: every GLMix block).
    """

    foreground: float = 0.5
    background: float = 0.1
    weight: float = 0.5
    stride: int = 8
    l2: float = 1e-3
    iterations: int = 50
    blocks: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if not 0 <= self.background < self.foreground <= 1:
            raise FieldError(("SlotClassifierParams.background", "SlotClassifierParams.foreground"),
                             [self.background, self.foreground], "need 0 <= background < foreground <= 1")
        if not 0 <= self.weight <= 1:
            raise FieldError("SlotClassifierParams.weight", [self.weight], "expected a number in [0, 1]")
        if self.stride < 1 or self.iterations < 1 or self.l2 < 0:
            raise ValueError(f"slot classifier: need stride >= 1 ({self.stride}), iterations >= 1 "
                             f"({self.iterations}), l2 >= 0 ({self.l2})")


def slot_features(slots: Sequence[SlotRecord], grid: Tuple[int, int]) -> torch.Tensor:
    """Each grid cell's dispatch distributions over every block's slots, standardised.

    Args:
        slots: the blocks' slot maps (any grids).
        grid: ``(h, w)`` to resize every block's dispatch maps to.

    Returns:
        ``(h*w, sum K)``: columns of zero mean and unit variance (constant columns are 0).
    """
    maps = [F.interpolate(s.dispatch_maps()[:1], size=grid, mode="bilinear", align_corners=False)[0]
            for s in slots]
    x = torch.cat(maps).flatten(1).T
    x = x - x.mean(0)
    std = x.std(0)
    return x / torch.where(std > 1e-6, std, torch.ones_like(std)) * (std > 1e-6)


def seed_labels(scores: torch.Tensor, foreground: float,
                background: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seed labels from class scores: 0 background, ``1 + argmax`` for confident classes.

    Args:
        scores: ``(n, N)`` class scores in [0, 1] (n >= 1).

    Returns:
        ``labels (N,)`` int64 and ``confident (N,)`` bool.
    """
    best, arg = scores.max(0)
    labels = torch.where(best < background, torch.zeros_like(arg), arg + 1)
    return labels, (best >= foreground) | (best < background)


def fit_softmax_regression(x: torch.Tensor, y: torch.Tensor, n_labels: int, l2: float = 1e-3,
                           iterations: int = 50) -> Tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS from zero weights (deterministic).

    Minimises ``cross_entropy(x @ W + b, y) + l2 * ||W||^2``.

    Args:
        x: ``(M, D)`` features.
        y: ``(M,)`` labels in ``[0, n_labels)``.

    Returns:
        ``W (D, n_labels)`` and ``b (n_labels,)``.
    """
    # The fit runs on (D, M) features and (n_labels, D) weights: products with the small dimension first
    # run as fast GEMMs (about 3x the whole fit's speed against x @ W on the CPU).
    xt = x.T.contiguous()
    weight_t = torch.zeros(n_labels, x.shape[1], dtype=x.dtype, requires_grad=True)
    bias = torch.zeros(n_labels, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([weight_t, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = torch.addmm(bias[:, None], weight_t, xt)  # (n_labels, M)
        loss = F.cross_entropy(logits.T, y) + l2 * weight_t.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight_t.detach().T, bias.detach()


def slot_classifier(scores: np.ndarray, slots: Sequence[SlotRecord],
                    params: SlotClassifierParams = SlotClassifierParams()) -> Optional[np.ndarray]:
    """Probabilities over ``[background, classes...]`` from a classifier fitted on this image's seeds.

    Args:
        scores: ``(n, H, W)`` class scores in [0, 1] (e.g. slot-refined CAMs).
        slots: slot maps of the blocks used as features.
        params: see :class:`SlotClassifierParams`.

    Returns:
        ``(n + 1, H, W)`` float32 probabilities, or ``None`` when the seeds hold
        fewer than two labels (nothing to tell apart) or there are no slots.
    """
    n, H, W = scores.shape
    if n == 0 or not slots:
        return None
    with torch_threads(1):  # the same bytes at any thread count (glmix_viz.devices.torch_threads)
        grid = (max(1, H // params.stride), max(1, W // params.stride))
        pooled = F.adaptive_avg_pool2d(torch.as_tensor(scores, dtype=torch.float32)[None], grid)[0].flatten(1)
        labels, confident = seed_labels(pooled, params.foreground, params.background)
        if labels[confident].unique().numel() < 2:
            return None
        x = slot_features(slots, grid)
        weight, bias = fit_softmax_regression(x[confident], labels[confident], n + 1, l2=params.l2,
                                              iterations=params.iterations)
        probs = torch.softmax(torch.addmm(bias[:, None], weight.T, x.T), dim=0).reshape(n + 1, *grid)
        return F.interpolate(probs[None], size=(H, W), mode="bilinear", align_corners=False)[0].numpy()


def mix_slot_classifier(probs: np.ndarray, learned: Optional[np.ndarray], weight: float) -> np.ndarray:
    """``(1 - weight) * probs + weight * learned``; ``probs`` itself when the classifier had nothing to fit.

    Args:
        probs: ``(n + 1, H, W)`` probabilities over background and the classes (from the scores).
        learned: :func:`slot_classifier`'s output for the same image, or ``None``.
    """
    return probs if learned is None else (1 - weight) * probs + weight * learned
