"""Fused oneDNN kernels for CPU inference (same numbers, fewer passes over memory).

On the CPU, without autograd, the blocks run their convolutional MLPs and
linear layers through oneDNN's fused primitives (the ones ``torch.compile``
uses for CPU): convolution + GELU in one pass, convolution + residual add in
one pass, linear layers as 1x1 convolutions (the widest layers as oneDNN's
matrix product instead: :data:`MATMUL_MIN_CHANNELS`). Weights are handed to
oneDNN pre-packed in its blocked layout (as ``torch.compile``'s freezing does), so
no call reorders a weight: the packed copies are cached per weight tensor and
rebuilt when the weight changes (its version counter or storage), e.g. after
an optimizer step or ``load_state_dict``. They cost about the weights' size
in memory again; :func:`clear_packed_weights` frees them. Anywhere else
(CUDA, training, autograd, other dtypes, FX or TorchScript, ``torch.compile``
and ``torch.export``, a PyTorch without these ops) the plain PyTorch path runs;
compilers see it without graph breaks or guards on the switch (see
:func:`compiling`). Results agree with it to float32 rounding (about 1e-6).

Fusion is a property of each model, decided outside ``forward``: every module
with a fused path holds a :class:`FusedInference` switch, one shared by the
whole model, that its forward reads as ``self.fused_inference.enabled``.
Models are built with it on where oneDNN has the ops (off when
``GLMIX_FUSED=0`` is in the environment); :func:`fuse_for_inference` turns it
on or off for one model. See docs/speed.md.
"""
import logging
import os
import re
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "FusedInference", "fuse_for_inference", "AVAILABLE", "applies", "compiling", "conv", "conv_add",
    "conv_mlp_residual", "linear", "sequential", "hookless", "plain_conv", "images_per_chunk",
    "clear_packed_weights", "CHUNK_BYTES", "PACKS_PER_WEIGHT", "MATMUL_MIN_CHANNELS",
    "MATMUL_MIN_ROWS",
]

_logger = logging.getLogger(__name__)

_ops = getattr(torch.ops, "mkldnn", None)
AVAILABLE = (
    torch.backends.mkldnn.is_available()
    and _ops is not None
    and hasattr(_ops, "_convolution_pointwise")
    and hasattr(_ops, "_convolution_pointwise_")
    and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight")
)
"""Whether this PyTorch has the oneDNN fused ops (else no model runs fused)."""

_P0, _S1 = [0, 0], [1, 1]

_OOM = getattr(torch, "OutOfMemoryError", ())
# What oneDNN or the dispatcher says when an op is missing or refuses an input (layout, dtype, build).
_UNSUPPORTED = re.compile(
    r"not supported|unsupported|could not create a primitive|could not run|not implemented|no such operator|"
    r"does not support|unknown builtin op",
    re.IGNORECASE,
)


class FusedInference:
    """A model's switch for the fused CPU inference path, shared by all its modules that have one.

    The forwards read ``enabled``; set it with :func:`fuse_for_inference`.
    A fused kernel that refuses its input ("unsupported") turns the switch
    off, for this model only, with one warning: the call that met it, and
    every later one, runs the plain path.
    """

    __slots__ = ("enabled",)

    def __init__(self, enabled: Optional[bool] = None) -> None:
        if enabled is None:  # the default for new models
            enabled = os.environ.get("GLMIX_FUSED", "1") != "0"
        self.enabled = bool(enabled) and AVAILABLE

    def refused(self, err: RuntimeError) -> None:
        """Turn fusion off after an "unsupported" error from a fused kernel; re-raise anything else.

        Out of memory or any other failure is not the fused path's to hide: it
        propagates, and fusion stays on. Call only from an ``except`` block.
        """
        if isinstance(err, _OOM) or not _UNSUPPORTED.search(str(err)):
            raise err
        if self.enabled:
            _logger.warning("fused oneDNN inference turned off for this model (plain PyTorch from now): %s",
                            err)
        self.enabled = False

    def __repr__(self) -> str:
        return f"FusedInference(enabled={self.enabled})"


def fuse_for_inference(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn the fused CPU inference path of ``model`` on or off (it is on for new models where supported).

    One switch is shared by every module of ``model`` that has a fused path
    (attribute ``fused_inference``); other models are not affected. With
    ``enabled=True`` fusion still needs oneDNN's ops (:data:`AVAILABLE`), and
    runs only where it applies (see :func:`applies`).

    Returns:
        ``model``, for chaining: ``model = fuse_for_inference(timm.create_model(...).eval(), False)``.
    """
    switch = FusedInference(enabled)
    for module in model.modules():
        if isinstance(getattr(module, "fused_inference", None), FusedInference):
            module.fused_inference = switch
    return model


try:
    from torch.compiler import is_compiling as _is_compiling  # torch >= 2.3
except ImportError:  # pragma: no cover
    try:
        from torch._dynamo.external_utils import is_compiling as _is_compiling
    except ImportError:
        def _is_compiling() -> bool:
            return False


def compiling() -> bool:
    """Whether ``torch.compile`` or ``torch.export`` (strict or not) is tracing the call.

    Dynamo folds this to ``True`` while it traces, so a forward that tests it
    before reading any Python state (the model's switch, the packed-weight
    cache) leaves no guard on that state and no graph break: the compiled or
    exported graph is the plain path, whatever the switch says, and turning
    fusion on or off later recompiles nothing.
    """
    return _is_compiling()


def applies(x: torch.Tensor) -> bool:
    """Whether a call on ``x`` may take the fused path: a plain CPU float32 tensor, no autograd, no CPU
    autocast (its dtypes are the plain layers'), and no tracer (FX, ``torch.jit.trace``) or compiler
    (``torch.compile``, ``torch.export``) watching.

    Callers test ``torch.jit.is_scripting()`` and :func:`compiling` before their module's switch and eval
    mode, and this last.
    """
    return (
        type(x) is torch.Tensor  # an FX proxy or a tensor subclass (export's FakeTensor): plain path
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not compiling()
    )


PACKS_PER_WEIGHT = 4
"""Input shapes per weight whose packed copies are kept (most recent first).

oneDNN chooses the blocked weight layout for the input's shape; a copy packed
for another shape would be converted on every call by a slow generic reorder.
Four cover the three input sizes of a pseudo-label's evidence (the image and
its flip, the two stitched scales) with one to spare, and a fixed input size
with the fused MLP's last, smaller group of images; other shapes are packed
again when they come (one fast reorder, as the plain path does on every
call). With two, the evidence's three sizes evicted each other on every
forward: four make ``compute_evidence`` on a 500x375 image 8% faster on one
thread (2.24 s against 2.42 s, same bytes). The cost: up to four packed copies
of the convolution weights (4.9 MiB each for ``glnet_demo``, 44 MiB for
``glnet_stl``).
"""

MATMUL_MIN_CHANNELS = 2560
"""Input channels from which a 1x1 convolution (or a linear layer) runs as oneDNN's matrix product.

For 3072 input channels (the last MLP layer of ``glnet_stl``'s and
``glnet_16g``'s last stage) oneDNN's 1x1 convolution picks a weight layout
8 outputs wide and runs at about 20 GFLOP/s per thread on this project's
AVX2 CPU, against 70-80 for its matrix product on the same rows, at most
input sizes (1x1 convolutions up to 2304 channels run at 65-85, as fast as
or faster than the product), from :data:`MATMUL_MIN_ROWS` pixels on. Decided by the
shapes alone, so every process makes the same choice; both kernels give the
same bytes at any thread count. See docs/speed.md, "Wide 1x1 convolutions as
matrix products".
"""

MATMUL_MIN_ROWS = 128
"""Input pixels (images x height x width) from which :data:`MATMUL_MIN_CHANNELS` applies: below, as for
the 49 tokens of one 224 px image's last stage, the convolution is as fast."""

_MATMUL = hasattr(_ops, "_linear_pointwise") if _ops is not None else False

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
    scale_dim: int = 0, matmul: bool = False,
) -> torch.Tensor:
    """``weight`` (times ``scale`` along ``scale_dim``) as a 4-d convolution weight in oneDNN's layout for
    ``x``; with ``matmul``, as a plain ``(C_out, C_in)`` matrix for any input (see :func:`_matmul`).

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
        return _matrix(_scaled(w, scale, scale_dim)) if matmul else _scaled(w, scale, scale_dim)
    key, shape = id(weight), ("matmul",) if matmul else tuple(x.shape)
    entries = _packed_cache.get(key)
    if entries is None:
        entries = _packed_cache[key] = []
        weakref.finalize(weight, _packed_cache.pop, key, None)
    for i, (st, sh, packed) in enumerate(entries):
        if st == stamp and sh == shape:
            if i:
                entries.insert(0, entries.pop(i))
            return packed
    if matmul:
        packed = _matrix(_scaled(w, scale, scale_dim).detach())
    else:
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            _scaled(w, scale, scale_dim).detach().to_mkldnn(), list(padding), list(stride), _S1, groups,
            list(shape)
        )
    entries[:] = [(stamp, shape, packed)] + [e for e in entries if e[0] == stamp][:PACKS_PER_WEIGHT - 1]
    return packed


def _matrix(w: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution's weight ``(C_out, C_in, 1, 1)`` as the matrix ``(C_out, C_in)``."""
    return w.reshape(w.shape[0], w.shape[1]).contiguous()


def _matmul(w: torch.Tensor, x: torch.Tensor, padding: Sequence[int], groups: int,
            stride: Sequence[int] = _S1) -> bool:
    """Whether a convolution with weight ``w`` runs on ``x`` as a matrix product (:data:`MATMUL_MIN_CHANNELS`,
    :data:`MATMUL_MIN_ROWS`)."""
    return (_MATMUL and groups == 1 and w.shape[1] >= MATMUL_MIN_CHANNELS
            and w.numel() == w.shape[0] * w.shape[1]  # 1x1 (or a linear layer's matrix)
            and x.shape[0] * x.shape[2] * x.shape[3] >= MATMUL_MIN_ROWS
            and all(p == 0 for p in padding) and all(s == 1 for s in stride))


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A channels_last ``(B, C, H, W)`` map as its pixels' rows ``(B*H*W, C)`` (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _map(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Rows ``(B*H*W, C')`` back as a channels_last ``(B, C', H, W)`` map of ``like``'s size (a view)."""
    B, _, H, W = like.shape
    return rows.view(B, H, W, rows.shape[1]).permute(0, 3, 1, 2)


def _conv(x, w, b, padding, groups, unary="none", stride=_S1, scale=None, depends=None, scale_dim=0):
    if _matmul(w, x, padding, groups, stride):
        w = _packed(w, x, padding, groups, stride, scale, depends, scale_dim, matmul=True)
        rows = _ops._linear_pointwise(_rows(x), w, b, unary, [], "none" if unary == "gelu" else "")
        return _map(rows, x)
    w = _packed(w, x, padding, groups, stride, scale, depends, scale_dim)
    return _ops._convolution_pointwise(x, w, b, padding, stride, _S1, groups, unary, [None], "none")


def conv(x: torch.Tensor, conv: nn.Conv2d, switch: FusedInference) -> Optional[torch.Tensor]:
    """``conv(x)`` (a :func:`plain_conv`) on oneDNN with the packed weight; ``None`` when it cannot run
    (``switch`` is then off, see :meth:`FusedInference.refused`).

    Shape:
        ``(B, C_in, H, W) -> (B, C_out, H', W')`` (channels_last).
    """
    try:
        return _conv(x.contiguous(memory_format=torch.channels_last), conv.weight, conv.bias,
                     list(conv.padding), conv.groups, stride=list(conv.stride))
    except RuntimeError as err:
        switch.refused(err)
        return None


def plain_conv(conv: nn.Module) -> bool:
    """Whether ``conv`` is exactly an ``nn.Conv2d`` (not a subclass or a wrapper) that oneDNN can run:
    no dilation, zero padding given as numbers."""
    return (type(conv) is nn.Conv2d and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
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


def sequential(seq: nn.Sequential, x: torch.Tensor, switch: FusedInference) -> torch.Tensor:
    """``seq(x)`` with BatchNorms folded into the convolutions next to them, run as packed oneDNN
    convolutions.

    ``Conv2d, BatchNorm2d[, GELU]`` becomes one convolution (the GELU its
    post-op when exact); ``BatchNorm2d, Conv2d`` too when the convolution has
    no padding and no groups (the release's "norm.proj" downsampling). The
    running statistics and affine parameters go into the convolution's weight
    and bias, so inference only: call where :func:`applies`, with ``seq`` in
    eval mode. Other modules are called as they are; so are all of ``seq``'s
    if any of them carries a hook. A kernel that refuses its input turns
    ``switch`` off and the rest runs plain.

    Shape:
        as ``seq``.
    """
    mods = list(seq)
    if not hookless(*mods):
        for m in mods:
            x = m(x)
        return x
    i = 0
    while i < len(mods):
        a, b = mods[i], mods[i + 1] if i + 1 < len(mods) else None
        fused = None
        try:
            if switch.enabled and b is not None and plain_conv(a) and _frozen_bn(b):  # conv -> BN [-> GELU]
                s, t = _bn_affine(b)
                gelu = (i + 2 < len(mods) and type(mods[i + 2]) is nn.GELU
                        and mods[i + 2].approximate == "none")
                bias = t if a.bias is None else a.bias * s + t
                fused = _conv(x.contiguous(memory_format=torch.channels_last), a.weight, bias,
                              list(a.padding), a.groups, "gelu" if gelu else "none", list(a.stride), s,
                              (b.weight, b.running_var))
                step = 3 if gelu else 2
            elif (switch.enabled and b is not None and _frozen_bn(a) and plain_conv(b) and b.groups == 1
                  and tuple(b.padding) == (0, 0)):  # BN -> conv without padding
                s, t = _bn_affine(a)
                bias = torch.einsum("oikl,i->o", b.weight, t) + (0 if b.bias is None else b.bias)
                fused = _conv(x.contiguous(memory_format=torch.channels_last), b.weight, bias, _P0, 1, "none",
                              list(b.stride), s, (a.weight, a.running_var), scale_dim=1)
                step = 2
        except RuntimeError as err:
            switch.refused(err)
        if fused is None:
            x, step = a(x), 1
        else:
            x = fused
        i += step
    return x


def _conv_add(x, other, w, b, padding, groups, scale=None):
    """``other + conv(x)`` in one pass, the weight times ``scale`` (``other`` has the output's shape and
    layout)."""
    if _matmul(w, x, padding, groups):
        w = _packed(w, x, padding, groups, _S1, scale, matmul=True)
        return _map(_ops._linear_pointwise.binary(_rows(x), _rows(other), w, b, "add"), x)
    w = _packed(w, x, padding, groups, _S1, scale)
    return _ops._convolution_pointwise(x, other, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def _conv_add_(other, x, w, b, padding, groups, scale=None):
    """``other += conv(x)`` in one pass (the matrix product: into a new buffer, then copied), in place, the
    weight times ``scale``."""
    if _matmul(w, x, padding, groups):
        w = _packed(w, x, padding, groups, _S1, scale, matmul=True)
        target = other.permute(0, 2, 3, 1).view(-1, other.shape[1])  # other is channels_last: a view
        target.copy_(_ops._linear_pointwise.binary(_rows(x), target, w, b, "add"))
        return other
    w = _packed(w, x, padding, groups, _S1, scale)
    return _ops._convolution_pointwise_(other, x, w, b, padding, _S1, _S1, groups, "add", 1.0, None, [], None)


def conv_add(
    x: torch.Tensor, other: torch.Tensor, conv: nn.Conv2d, switch: FusedInference,
    gamma: Optional[torch.Tensor] = None,
) -> Optional[torch.Tensor]:
    """``other + gamma * conv(x)`` in one pass; ``None`` when the fused kernel cannot run (``switch`` is
    then off).

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
        switch.refused(err)
        return None


def conv_mlp_residual(
    x: torch.Tensor, y: torch.Tensor, mlp: nn.Sequential, gamma: Optional[torch.Tensor],
    switch: FusedInference, inplace: bool = False,
) -> Optional[torch.Tensor]:
    """``x + gamma * mlp(y)`` for the blocks' convolutional MLP, fused.

    ``mlp`` is ``Sequential(conv1x1, ResDWConv or Identity, GELU, conv1x1)``
    (the caller checks the types and that none carries a hook).
    The batch runs in groups of images whose hidden map stays below
    :data:`CHUNK_BYTES` (see :func:`images_per_chunk`), the second
    convolution adding into the output in place. With ``inplace`` the result
    is written into ``x`` when it is channels_last (the caller must own it).
    Returns ``None`` when the fused kernels cannot run before anything was
    written (``switch`` is then off; the caller uses the plain path).

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
        switch.refused(err)
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
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], switch: FusedInference,
    gelu: bool = False,
) -> Optional[torch.Tensor]:
    """``F.linear(x, weight, bias)``, optionally followed by GELU, on oneDNN; ``None`` when it cannot run
    (``switch`` is then off).

    The rows run as the pixels of a ``(1, C_in, M, 1)`` channels-last image
    through a 1x1 convolution with the packed weight (oneDNN's inner product
    takes no pre-packed float32 weight; this is 5-10% faster at these sizes).
    Call where :func:`applies`.

    Shape:
        ``(..., C_in) -> (..., C_out)``.
    """
    try:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        image = rows.view(1, rows.shape[0], 1, rows.shape[1]).permute(0, 3, 1, 2)  # channels_last view
        out = _conv(image, weight, bias, _P0, 1, "gelu" if gelu else "none")
        return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])
    except RuntimeError as err:
        switch.refused(err)
        return None
