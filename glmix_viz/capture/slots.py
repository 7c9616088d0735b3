"""Capture the soft-clustering (slot) weights of GLMix blocks with forward hooks.

Every :class:`~glmix_viz.models.GLMixBlock` passes its slot logits through an
identity tap, ``block.slot_tap``, shaped ``(B, K, H, W)``. :class:`SlotCapture`
hooks those taps for the duration of a ``with`` block::

    with SlotCapture(model, blocks=[10]) as cap:
        model(images)
    maps = cap[10].dispatch_maps()      # (B, K, H, W), each pixel's distribution over slots

Blocks are chosen by 1-based ordinal in forward order (the paper's "10th
block" is ordinal 10) or by qualified module name (``"stages.2.blocks.4"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn as nn

from ..models.glnet import GLMixBlock

__all__ = ["SlotRecord", "SlotCapture", "FeatureCapture", "glmix_blocks", "resolve_blocks"]

BlockSelector = Union[int, str]


def glmix_blocks(model: nn.Module) -> List[Tuple[str, GLMixBlock]]:
    """All GLMix blocks of ``model`` as ``(qualified name, block)``, in forward order.

    Module registration order is forward order in GLNet (stages, then blocks).
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, GLMixBlock)]


def resolve_blocks(
    model: nn.Module, blocks: Optional[Union[BlockSelector, Iterable[BlockSelector]]] = None
) -> List[Tuple[int, str, GLMixBlock]]:
    """Turn ordinals / names into ``(ordinal, name, block)``, in forward order, without duplicates.

    Args:
        model: a model containing GLMix blocks.
        blocks: ``None`` or ``"all"`` for every block, an int ordinal (1-based),
            a qualified name, or an iterable of those.

    Raises:
        ValueError: the model has no GLMix block, or a selector matches none;
            the message lists the valid ordinals and names.
    """
    found = glmix_blocks(model)
    if not found:
        raise ValueError(f"{type(model).__name__} has no GLMix block to capture")
    if blocks is None or (isinstance(blocks, str) and blocks == "all"):
        return [(i + 1, n, m) for i, (n, m) in enumerate(found)]
    if isinstance(blocks, (int, str)):
        blocks = [blocks]
    by_name = {n: i for i, (n, _) in enumerate(found)}
    chosen = set()
    for sel in blocks:
        if isinstance(sel, bool) or not isinstance(sel, (int, str)):
            raise ValueError(f"block selector {sel!r} is neither an ordinal (int) nor a module name (str)")
        if isinstance(sel, str) and sel.isdigit():
            sel = int(sel)
        if isinstance(sel, int):
            if not 1 <= sel <= len(found):
                raise ValueError(
                    f"GLMix block ordinal {sel} is out of range: this model has {len(found)} GLMix "
                    f"blocks, valid ordinals are 1..{len(found)} "
                    f"({', '.join(f'{i + 1}={n}' for i, (n, _) in enumerate(found))})"
                )
            chosen.add(sel - 1)
        elif sel in by_name:
            chosen.add(by_name[sel])
        else:
            raise ValueError(
                f"no GLMix block named {sel!r}; valid names are {list(by_name)} "
                f"(or ordinals 1..{len(found)})"
            )
    return [(i + 1, found[i][0], found[i][1]) for i in sorted(chosen)]


@dataclass(frozen=True)
class SlotRecord:
    """Slot logits of one GLMix block for one forward call.

    Attributes:
        name: qualified module name, e.g. ``"stages.2.blocks.5"``.
        ordinal: 1-based position among the model's GLMix blocks, in forward order.
        logits: ``(B, K, H*W)`` pre-softmax logits ``slot_scale * cos(slot_k, pixel_l)``.
        grid: ``(H, W)``, the block's feature-map size.
    """

    name: str
    ordinal: int
    logits: torch.Tensor
    grid: Tuple[int, int]

    @property
    def num_slots(self) -> int:
        return self.logits.shape[1]

    def clustering_weights(self, sharpness: float = 1.0) -> torch.Tensor:
        """How each slot pools the pixels: softmax over pixels of ``sharpness * logits``.

        ``sharpness`` 1 is what the block computes; larger values make the
        assignments harder (``wsss`` uses 16).

        Shape:
            ``(B, K, H*W)``, each row sums to 1.
        """
        return torch.softmax(self.logits.float() * sharpness, dim=-1)

    def dispatch_maps(self, sharpness: float = 1.0) -> torch.Tensor:
        """Each pixel's distribution over slots (the paper's figures): softmax over slots.

        Shape:
            ``(B, K, H, W)``, sums to 1 over K at every pixel.
        """
        return torch.softmax(self.logits.float() * sharpness, dim=1).unflatten(-1, self.grid)

    def to(self, device: Union[str, torch.device]) -> "SlotRecord":
        """A copy with the logits on ``device``."""
        return SlotRecord(self.name, self.ordinal, self.logits.to(device), self.grid)


class _BlockHooks:
    """Forward hooks on one module of each selected GLMix block (:meth:`_module`), registered on entering
    the ``with`` block and always removed on leaving it, also when the forward raises."""

    _targets: list
    _handles: list

    def _module(self, block: nn.Module) -> nn.Module:
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _hook(self, name: str, ordinal: int):
        raise NotImplementedError

    def __enter__(self):
        if self._handles:
            raise RuntimeError(f"{type(self).__name__} is already active; it cannot be entered twice")
        self._reset()
        try:
            for ordinal, name, block in self._targets:
                self._handles.append(self._module(block).register_forward_hook(self._hook(name, ordinal)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this capture registered (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


class SlotCapture(_BlockHooks):
    """Context manager that records slot logits of chosen GLMix blocks.

    Hooks are registered on ``__enter__`` and always removed on ``__exit__``,
    also when the forward raises (the exception propagates). Capturing does not
    change the model's outputs and works in train and eval mode, for any input
    size and batch, on any device.

    Args:
        model: any model with GLMix blocks (e.g. a GLNet).
        blocks: ``None``/``"all"``, an ordinal (1-based, forward order), a
            qualified module name, or an iterable of those.
        detach: store tensors detached from the autograd graph (default).
        to_cpu: move logits to the CPU as they are captured (saves device memory
            over many batches; costs a copy).

    Attributes:
        records: every :class:`SlotRecord`, in the order the blocks ran; a
            model called twice inside the ``with`` gives two records per block.
        blocks: the selected ``(ordinal, name)`` pairs.

    Note:
        With gradient checkpointing, blocks run again during backward, and
        that recomputation is recorded too; capture under ``torch.no_grad()``
        or with checkpointing off to get one record per forward.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Optional[Union[BlockSelector, Iterable[BlockSelector]]] = None,
        *,
        detach: bool = True,
        to_cpu: bool = False,
    ) -> None:
        self._targets = resolve_blocks(model, blocks)
        self.blocks: List[Tuple[int, str]] = [(o, n) for o, n, _ in self._targets]
        self.detach = detach
        self.to_cpu = to_cpu
        self.records: List[SlotRecord] = []
        self._handles: list = []

    def _hook(self, name: str, ordinal: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            logits = output.detach() if self.detach else output
            if self.to_cpu:
                logits = logits.cpu()
            B, K, H, W = logits.shape
            self.records.append(SlotRecord(name, ordinal, logits.reshape(B, K, H * W), (H, W)))

        return hook

    def _module(self, block: nn.Module) -> nn.Module:
        return block.slot_tap

    def _reset(self) -> None:
        self.records = []

    def clear(self) -> None:
        """Forget the records (e.g. between batches), keeping the hooks."""
        self.records = []

    def latest(self) -> Dict[int, SlotRecord]:
        """The last record of each captured block, by ordinal."""
        return {r.ordinal: r for r in self.records}

    def __getitem__(self, block: BlockSelector) -> SlotRecord:
        """The last record of a block, by ordinal or qualified name."""
        for record in reversed(self.records):
            if block in (record.ordinal, record.name):
                return record
        captured = ", ".join(f"{o}={n}" for o, n in self.blocks)
        raise KeyError(f"no record for block {block!r}; captured blocks: {captured}; "
                       f"records: {len(self.records)}")

    def __len__(self) -> int:
        return len(self.records)


class FeatureCapture(_BlockHooks):
    """Context manager that records the features each chosen GLMix block's clustering compares with its
    slots: the output of the block's ``norm1``, ``(B, C, H, W)`` at the block's grid.

    Used beside :class:`SlotCapture` (e.g. for a k-means baseline on the same features)::

        with SlotCapture(model, [10]) as cap, FeatureCapture(model, [10]) as feats:
            model(images)
        feats[10]           # (B, C, H, W), the last forward's

    Args:
        model: any model with GLMix blocks.
        blocks: as :class:`SlotCapture`.
        to_cpu: move the features to the CPU as float32 as they are captured.

    Attributes:
        features: block ordinal -> the last forward's features (detached).
        blocks: the selected ``(ordinal, name)`` pairs.
    """

    def __init__(
        self,
        model: nn.Module,
        blocks: Optional[Union[BlockSelector, Iterable[BlockSelector]]] = None,
        *,
        to_cpu: bool = False,
    ) -> None:
        self._targets = resolve_blocks(model, blocks)
        self.blocks: List[Tuple[int, str]] = [(o, n) for o, n, _ in self._targets]
        self.to_cpu = to_cpu
        self.features: Dict[int, torch.Tensor] = {}
        self._handles: list = []

    def _hook(self, name: str, ordinal: int):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            out = output.detach()
            self.features[ordinal] = out.float().cpu() if self.to_cpu else out

        return hook

    def _module(self, block: nn.Module) -> nn.Module:
        return block.norm1

    def _reset(self) -> None:
        self.features = {}

    def __getitem__(self, ordinal: int) -> torch.Tensor:
        if ordinal not in self.features:
            raise KeyError(f"no features for block {ordinal!r}; captured: {sorted(self.features)}")
        return self.features[ordinal]
