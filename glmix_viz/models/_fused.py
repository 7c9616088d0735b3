"""Fused oneDNN kernels for CPU inference (same numbers, fewer passes over memory).

On the CPU, without autograd, the blocks run their convolutional MLPs and
linear layers through oneDNN's fused primitives (the ones ``torch.compile``
uses for CPU): convolution + GELU in one pass, convolution + residual add in
one pass, oneDNN matmuls for linear layers. Anywhere else (CUDA, training,
autograd, other dtypes, a PyTorch without these ops) the plain PyTorch path
runs. Results agree with it to float32 rounding (about 1e-6).

``set_fused_inference(False)`` (or ``GLMIX_FUSED=0`` in the environment)
turns the fast path off, e.g. to compare.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "set_fused_inference", "fused_inference_enabled", "can_fuse", "conv_add", "conv_mlp_residual", "linear",
    "images_per_chunk", "CHUNK_BYTES",
]

_logger = logging.getLogger(__name__)

_ops = getattr(torch.ops, "mkldnn", None)
_HAS_OPS = (
    torch.backends.mkldnn.is_available()
    and _ops is not None
    and hasattr(_ops, "_convolution_pointwise")
    and hasattr(_ops, "_convolution_pointwise_")
    and hasattr(_ops, "_linear_pointwise")
)
_enabled = _HAS_OPS and os.environ.get("GLMIX_FUSED", "1") != "0"

_P0, _S1 = [0, 0], [1, 1]


def set_fused_inference(enabled: bool) -> None:
    """Turn the fused CPU inference path on or off (it is on where supported)."""
    global _enabled
    _enabled = bool(enabled) and _HAS_OPS


def fused_inference_enabled() -> bool:
    return _enabled


def can_fuse(x: torch.Tensor) -> bool:
    """Whether the fused path applies: CPU float32, no autograd, fusion enabled."""
    return (
        _enabled
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.jit.is_scripting()
    )


def _disable(err: Exception) -> None:
    global _enabled
    _enabled = False
    _logger.warning("fused oneDNN inference disabled, falling back to plain PyTorch: %s", err)


def _conv(x, w, b, padding, groups, unary="none"):
    return _ops._convolution_pointwise(x, w, b, padding, _S1, _S1, groups, unary, [None], "none")


def _conv_add(x, other, w, b, padding, groups):
    """``conv(x) + other`` in one pass (``other`` must have the output's shape and layout)."""
    return _ops._convolution_pointwise(x, other, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def _conv_add_(other, x, w, b, padding, groups):
    """``other += conv(x)`` in one pass, in place (``other`` has the output's shape and layout)."""
    return _ops._convolution_pointwise_(other, x, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def conv_add(
    x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d, gamma: Optional[torch.Tensor] = None
) -> Optional[torch.Tensor]:
    """``other + gamma * conv(x)`` in one pass; ``None`` when the fused kernel cannot run.

    Shape:
        ``x: (B, C_in, H, W)``, ``other: (B, C_out, H, W)`` -> ``(B, C_out, H, W)``.
    """
    try:
        w, b = conv.weight, conv.bias
        if gamma is not None:
            g = gamma.reshape(-1)
            w, b = w * g.view(-1, 1, 1, 1), b * g
        return _conv_add(
            x.contiguous(memory_format=torch.channels_last), other.contiguous(memory_format=torch.channels_last),
            w, b, list(conv.padding), conv.groups,
        )
    except RuntimeError as err:
        _disable(err)
        return None


def conv_mlp_residual(
    x: torch.Tensor, y: torch.Tensor, mlp: nn.Sequential, gamma: Optional[torch.Tensor], inplace: bool = False
) -> Optional[torch.Tensor]:
    """``x + gamma * mlp(y)`` for the blocks' convolutional MLP, fused.

    ``mlp`` is ``Sequential(conv1x1, ResDWConv or Identity, GELU, conv1x1)``.
    The batch runs in groups of images whose hidden map stays below
    :data:`CHUNK_BYTES` (see :func:`images_per_chunk`), the second
    convolution adding into the output in place. With ``inplace`` the result
    is written into ``x`` when it is channels_last (the caller must own it).
    Returns ``None`` when the fused kernels cannot run before anything was
    written (the caller then uses the plain path).

    Shape:
        ``x, y: (B, C, H, W) -> (B, C, H, W)`` (channels_last).
    """
    fc1, dw, _, fc2 = mlp
    cl = torch.channels_last
    out = x if inplace and x.is_contiguous(memory_format=cl) else x.clone(memory_format=cl)
    written = False
    try:
        y = y.contiguous(memory_format=cl)
        w2, b2 = fc2.weight, fc2.bias
        if gamma is not None:
            g = gamma.reshape(-1)
            w2, b2 = w2 * g.view(-1, 1, 1, 1), b2 * g
        step = images_per_chunk(y, fc1.out_channels)
        for s in range(0, y.shape[0], step):
            ys = y[s:s + step]
            if isinstance(dw, nn.Conv2d):
                h = _conv(ys, fc1.weight, fc1.bias, _P0, 1)
                h = F.gelu(_conv_add(h, h, dw.weight, dw.bias, list(dw.padding), dw.groups))
            else:
                h = _conv(ys, fc1.weight, fc1.bias, _P0, 1, unary="gelu")
            _conv_add_(out[s:s + step], h, w2, b2, _P0, 1)
            written = True
        return out
    except RuntimeError as err:  # an op missing or refusing this input: never fail the forward
        if written and out is x:  # x is partly overwritten: no clean fallback
            raise
        _disable(err)
        return None


CHUNK_BYTES = 16 << 20
"""Largest hidden map (bytes) the fused MLP computes at once.

Well below glibc's largest mmap threshold (32 MiB): bigger buffers are fresh
pages on every call (glnet_stl at batch 8, 224 px: ~35k page faults and ~8%
of the time per forward), smaller ones are reused from the heap.
"""


def images_per_chunk(y: torch.Tensor, hidden: int) -> int:
    """Images per group so that a ``(n, hidden, H, W)`` map of ``y``'s dtype fits :data:`CHUNK_BYTES`."""
    per_image = hidden * y.shape[2] * y.shape[3] * y.element_size()
    return max(1, min(y.shape[0], CHUNK_BYTES // per_image))


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], gelu: bool = False
) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, optionally followed by GELU, on oneDNN when :func:`can_fuse`.

    Shape:
        ``(..., C_in) -> (..., C_out)``.
    """
    if can_fuse(x):
        try:
            out = _ops._linear_pointwise(
                x.reshape(-1, x.shape[-1]), weight, bias, "gelu" if gelu else "none", [], "none" if gelu else ""
            )
            return out.view(*x.shape[:-1], out.shape[-1])
        except RuntimeError as err:
            _disable(err)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out
