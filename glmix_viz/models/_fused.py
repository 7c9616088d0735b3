"""Fused oneDNN kernels for CPU inference (same numbers, fewer passes over memory).

On the CPU, without autograd, the blocks run their convolutional MLPs and
linear layers through oneDNN's fused primitives (the ones ``torch.compile``
uses for CPU): convolution + GELU in one pass, convolution + residual add in
one pass, linear layers as 1x1 convolutions. Weights are handed to oneDNN
pre-packed in its blocked layout (as ``torch.compile``'s freezing does), so
no call reorders a weight: the packed copies are cached per weight tensor and
rebuilt when the weight changes (its version counter or storage), e.g. after
an optimizer step or ``load_state_dict``. They cost about the weights' size
in memory again; :func:`clear_packed_weights` frees them. Anywhere else
(CUDA, training, autograd, other dtypes, a PyTorch without these ops) the
plain PyTorch path runs. Results agree with it to float32 rounding (about 1e-6).

``set_fused_inference(False)`` (or ``GLMIX_FUSED=0`` in the environment)
turns the fast path off, e.g. to compare.
"""
from __future__ import annotations

import logging
import os
import re
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "set_fused_inference", "fused_inference_enabled", "can_fuse", "conv", "conv_add", "conv_mlp_residual",
    "linear", "sequential", "hookless", "images_per_chunk", "clear_packed_weights", "CHUNK_BYTES",
    "PACKS_PER_WEIGHT",
]

_logger = logging.getLogger(__name__)

_ops = getattr(torch.ops, "mkldnn", None)
_HAS_OPS = (
    torch.backends.mkldnn.is_available()
    and _ops is not None
    and hasattr(_ops, "_convolution_pointwise")
    and hasattr(_ops, "_convolution_pointwise_")
    and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
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


_OOM = getattr(torch, "OutOfMemoryError", ())
# What oneDNN or the dispatcher says when an op is missing or refuses an input (layout, dtype, build).
_UNSUPPORTED = re.compile(
    r"not supported|unsupported|could not create a primitive|could not run|not implemented|no such operator|"
    r"does not support|unknown builtin op",
    re.IGNORECASE,
)


def _fall_back(err: RuntimeError) -> None:
    """Turn fusion off after an "unsupported" error, so the plain path runs; re-raise anything else.

    Out of memory or any other failure is not the fused path's to hide: it
    propagates, and fusion stays on. Call only from an ``except`` block.
    """
    if isinstance(err, _OOM) or not _UNSUPPORTED.search(str(err)):
        raise err
    _logger.warning("fused oneDNN inference disabled, falling back to plain PyTorch: %s", err)
    set_fused_inference(False)
    clear_packed_weights()



PACKS_PER_WEIGHT = 2
"""Input shapes per weight whose packed copies are kept (most recent first).

oneDNN chooses the blocked weight layout for the input's shape; a copy packed
for another shape would be converted on every call by a slow generic reorder.
Two cover a fixed input size with the fused MLP's last, smaller group of
images; other shapes are packed again when they come (one fast reorder, as
the plain path does on every call).
"""

# id(weight) -> [(stamp of the weight and what it was scaled by, input shape, packed weight), ...],
# newest first
_packed_cache: Dict[int, List[Tuple[tuple, tuple, torch.Tensor]]] = {}


def clear_packed_weights() -> None:
    """Drop every cached pre-packed weight (they are rebuilt on the next fused call)."""
    _packed_cache.clear()


def _stamp(t: Optional[torch.Tensor]) -> Optional[tuple]:
    return None if t is None else (t._version, t.data_ptr(), t.dtype, tuple(t.shape))


def _scaled(w: torch.Tensor, scale: Optional[torch.Tensor], dim: int) -> torch.Tensor:
    if scale is None:
        return w
    return w * (scale.reshape(-1, 1, 1, 1) if dim == 0 else scale.reshape(1, -1, 1, 1))


def _packed(
    weight: torch.Tensor, x: torch.Tensor, padding: Sequence[int], groups: int, stride: Sequence[int] = _S1,
    scale: Optional[torch.Tensor] = None, depends: Optional[Sequence[torch.Tensor]] = None,
    scale_dim: int = 0,
) -> torch.Tensor:
    """``weight`` (times ``scale`` along ``scale_dim``) as a 4-d convolution weight in oneDNN's layout for
    ``x``.

    Cached per weight and input shape (see :data:`PACKS_PER_WEIGHT`) until the
    weight or one of ``depends`` (the tensors ``scale`` is made of; ``scale``
    itself by default) changes;
    the entries go when ``weight`` is freed. A weight without a version
    counter (made under ``torch.inference_mode``) is returned unpacked rather
    than cached blindly.

    Shape:
        ``weight: (C_out, C_in / groups, kh, kw)`` or ``(C_out, C_in)``; ``scale: (C_out,)`` or
        ``(C_in,)``; ``x``: the ``(B, C_in, H, W)`` input it will meet.
    """
    w = weight if weight.dim() == 4 else weight.view(*weight.shape, 1, 1)
    if depends is None:
        depends = () if scale is None else (scale,)
    try:
        stamp = (_stamp(weight), tuple(_stamp(d) for d in depends), tuple(padding), tuple(stride), groups,
                 scale_dim)
    except RuntimeError:  # inference tensors track no version
        return _scaled(w, scale, scale_dim)
    key, shape = id(weight), tuple(x.shape)
    entries = _packed_cache.get(key)
    if entries is None:
        entries = _packed_cache[key] = []
        weakref.finalize(weight, _packed_cache.pop, key, None)
    for i, (st, sh, packed) in enumerate(entries):
        if st == stamp and sh == shape:
            if i:
                entries.insert(0, entries.pop(i))
            return packed
    packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
        _scaled(w, scale, scale_dim).detach().to_mkldnn(), list(padding), list(stride), _S1, groups,
        list(shape)
    )
    entries[:] = [(stamp, shape, packed)] + [e for e in entries if e[0] == stamp][:PACKS_PER_WEIGHT - 1]
    return packed


def _conv(x, w, b, padding, groups, unary="none", stride=_S1, scale=None, depends=None, scale_dim=0):
    w = _packed(w, x, padding, groups, stride, scale, depends, scale_dim)
    return _ops._convolution_pointwise(x, w, b, padding, stride, _S1, groups, unary, [None], "none")


def conv(x: torch.Tensor, conv: nn.Conv2d) -> Optional[torch.Tensor]:
    """``conv(x)`` (no dilation) on oneDNN with the packed weight; ``None`` when it cannot run.

    Shape:
        ``(B, C_in, H, W) -> (B, C_out, H', W')`` (channels_last).
    """
    try:
        return _conv(x.contiguous(memory_format=torch.channels_last), conv.weight, conv.bias,
                     list(conv.padding), conv.groups, stride=list(conv.stride))
    except RuntimeError as err:
        _fall_back(err)
        return None


def _plain_conv(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _frozen_bn(norm: nn.Module) -> bool:
    return (type(norm) is nn.BatchNorm2d and norm.track_running_stats and norm.running_var is not None
            and norm.affine and not norm.training)


def _bn_affine(bn: nn.BatchNorm2d) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as ``x * s + t``, per channel."""
    s = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return s, bn.bias - bn.running_mean * s


def hookless(*modules: nn.Module) -> bool:
    """Whether no forward (pre-)hook is registered on ``modules`` or globally (fusing would skip them)."""
    registry = nn.modules.module
    if (getattr(registry, "_global_forward_hooks", None)
            or getattr(registry, "_global_forward_pre_hooks", None)):
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def sequential(seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``seq(x)`` with BatchNorms folded into the convolutions next to them, run as packed oneDNN
    convolutions.

    ``Conv2d, BatchNorm2d[, GELU]`` becomes one convolution (the GELU its
    post-op when exact); ``BatchNorm2d, Conv2d`` too when the convolution has
    no padding and no groups (the release's "norm.proj" downsampling). The
    running statistics and affine parameters go into the convolution's weight
    and bias, so inference only: call under :func:`can_fuse` with ``seq`` in
    eval mode. Other modules run as they are; so does all of ``seq`` if any
    of its modules carries a hook.

    Shape:
        as ``seq``.
    """
    mods = list(seq)
    if not hookless(seq, *mods):
        return seq(x)
    i = 0
    while i < len(mods):
        a, b = mods[i], mods[i + 1] if i + 1 < len(mods) else None
        fused = None
        try:
            if _enabled and b is not None and _plain_conv(a) and _frozen_bn(b):  # conv -> BN [-> GELU]
                s, t = _bn_affine(b)
                gelu = (i + 2 < len(mods) and type(mods[i + 2]) is nn.GELU
                        and mods[i + 2].approximate == "none")
                bias = t if a.bias is None else a.bias * s + t
                fused = _conv(x.contiguous(memory_format=torch.channels_last), a.weight, bias,
                              list(a.padding), a.groups, "gelu" if gelu else "none", list(a.stride), s,
                              (b.weight, b.running_var))
                step = 3 if gelu else 2
            elif (_enabled and b is not None and _frozen_bn(a) and _plain_conv(b) and b.groups == 1
                  and tuple(b.padding) == (0, 0)):  # BN -> conv without padding
                s, t = _bn_affine(a)
                bias = torch.einsum("oikl,i->o", b.weight, t) + (0 if b.bias is None else b.bias)
                fused = _conv(x.contiguous(memory_format=torch.channels_last), b.weight, bias, _P0, 1, "none",
                              list(b.stride), s, (a.weight, a.running_var), scale_dim=1)
                step = 2
        except RuntimeError as err:
            _fall_back(err)
        if fused is None:
            x, step = a(x), 1
        else:
            x = fused
        i += step
    return x


def _conv_add(x, other, w, b, padding, groups, scale=None):
    """``other + conv(x)`` in one pass, the weight times ``scale`` (``other`` has the output's shape and
    layout)."""
    w = _packed(w, x, padding, groups, _S1, scale)
    return _ops._convolution_pointwise(x, other, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def _conv_add_(other, x, w, b, padding, groups, scale=None):
    """``other += conv(x)`` in one pass, in place, the weight times ``scale``."""
    w = _packed(w, x, padding, groups, _S1, scale)
    return _ops._convolution_pointwise_(other, x, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def conv_add(
    x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d, gamma: Optional[torch.Tensor] = None
) -> Optional[torch.Tensor]:
    """``other + gamma * conv(x)`` in one pass; ``None`` when the fused kernel cannot run.

    Shape:
        ``x: (B, C_in, H, W)``, ``other: (B, C_out, H, W)`` -> ``(B, C_out, H, W)``.
    """
    try:
        b = conv.bias if gamma is None else conv.bias * gamma.reshape(-1)
        return _conv_add(
            x.contiguous(memory_format=torch.channels_last),
            other.contiguous(memory_format=torch.channels_last),
            conv.weight, b, list(conv.padding), conv.groups, gamma,
        )
    except RuntimeError as err:
        _fall_back(err)
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
        b2 = fc2.bias if gamma is None else fc2.bias * gamma.reshape(-1)
        step = images_per_chunk(y, fc1.out_channels)
        for s in range(0, y.shape[0], step):
            ys = y[s:s + step]
            if isinstance(dw, nn.Conv2d):
                h = _conv(ys, fc1.weight, fc1.bias, _P0, 1)
                h = F.gelu(_conv_add(h, h, dw.weight, dw.bias, list(dw.padding), dw.groups))
            else:
                h = _conv(ys, fc1.weight, fc1.bias, _P0, 1, unary="gelu")
            _conv_add_(out[s:s + step], h, fc2.weight, b2, _P0, 1, gamma)
            written = True
        return out
    except RuntimeError as err:  # an op missing or refusing this input: the plain path runs instead
        if written and out is x:  # x is partly overwritten: no clean fallback
            raise
        _fall_back(err)
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

    The rows run as the pixels of a ``(1, C_in, M, 1)`` channels-last image
    through a 1x1 convolution with the packed weight (oneDNN's inner product
    takes no pre-packed float32 weight; this is 5-10% faster at these sizes).

    Shape:
        ``(..., C_in) -> (..., C_out)``.
    """
    if can_fuse(x):
        try:
            rows = x.reshape(-1, x.shape[-1]).contiguous()
            image = rows.view(1, rows.shape[0], 1, rows.shape[1]).permute(0, 3, 1, 2)  # channels_last view
            out = _conv(image, weight, bias, _P0, 1, "gelu" if gelu else "none")
            return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])
        except RuntimeError as err:
            _fall_back(err)
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out
