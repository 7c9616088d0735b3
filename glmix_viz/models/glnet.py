"""GLNet: convolution on the pixel grid mixed with attention on semantic slots.

Paper: "Revisiting the Integration of Convolution and Attention for Vision
Backbone", Lei Zhu et al., NeurIPS 2024. Official code (MIT licence):
https://github.com/rayleizhu/GLMix.

This is an independent implementation with the release's module names, so
official checkpoints load with ``strict=True``, unchanged, and give the same
numbers (tests compare against fixtures made with the official code). It
differs from the release where the release is slow or broken:

* attention uses ``F.scaled_dot_product_attention`` (fused kernels) under
  ``nn.MultiheadAttention``'s parameter names;
* soft grouping works on ``(B, C, H*W)`` views, so no permuted copies of the
  feature map are made, and the slot logits are scaled on the small side;
* every GLMix block calls ``slot_tap`` on its slot logits in train and eval
  mode (the capture contract, see :class:`GLMixBlock`);
* ``reset_classifier`` works, unknown keyword arguments are errors, gradient
  checkpointing uses ``torch.utils.checkpoint``;
* on CPU inference, oneDNN's fused kernels run the MLPs, linear layers and
  local convolutions (same numbers; per model, see :func:`fuse_for_inference`).
  Every module that holds weights is called as a module whenever it is not
  exactly the plain PyTorch layer the fused kernel stands for or carries a
  hook; FX, TorchScript, ``torch.jit.trace`` and ``torch.compile`` see the
  plain path.
"""
import math
from functools import partial
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from . import _fused
from ._fused import FusedInference, fuse_for_inference

__all__ = [
    "GLNet",
    "GLNetTokenLabel",
    "GLMixBlock",
    "MHSABlock",
    "MHSANCHWBlock",
    "MultiheadSelfAttention",
    "MIXING_MODES",
    "fuse_for_inference",
]

MIXING_MODES = ("glmix", "mha", "mha_nchw", "glmix.mha_nchw")

NormLayer = Union[str, Callable[..., nn.Module]]


def _dd(device: Any = None, dtype: Optional[torch.dtype] = None) -> Dict[str, Any]:
    """``device``/``dtype`` keywords for the layers' constructors, only those given (timm's ``dd``)."""
    return {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}


def _resolve_norm(norm_layer: NormLayer) -> Callable[..., nn.Module]:
    """Accept a norm class/callable or the names used in the release's configs."""
    if callable(norm_layer):
        return norm_layer
    names = {
        "BatchNorm2d": nn.BatchNorm2d,
        "LayerNorm2d": LayerNorm2d,
        "batchnorm": nn.BatchNorm2d,
        "layernorm2d": LayerNorm2d,
    }
    if norm_layer not in names:
        raise ValueError(
            f"norm_layer={norm_layer!r} is not known; expected one of {sorted(names)} "
            "or a callable taking the channel count"
        )
    return names[norm_layer]


def _fuses(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``module`` takes its fused path for ``x``: its model's switch is on, it is in eval mode and
    the call allows it (:func:`_fused.applies`). Callers test ``torch.jit.is_scripting()`` first.

    The compiler test comes first: under ``torch.compile`` and ``torch.export`` nothing else is read, so
    the graph holds no guard on the switch (see :func:`_fused.compiling`)."""
    return (not _fused.compiling() and module.fused_inference.enabled and not module.training
            and _fused.applies(x))


# ----------------------------------------------------------------------------- layers


class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameter names, on SDPA.

    Keeps the state-dict keys ``in_proj_weight``, ``in_proj_bias``,
    ``out_proj.{weight,bias}`` of the release, but runs
    ``F.scaled_dot_product_attention`` directly (no per-call checks, fused
    kernels on CPU and CUDA). ``out_proj`` is called as a module unless it is
    a plain, hook-free ``nn.Linear`` on the fused CPU path.

    Shape:
        ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **dd))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **dd))
        self.out_proj = nn.Linear(embed_dim, embed_dim, **dd)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)
        self.fused_inference = FusedInference()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        if not torch.jit.is_scripting():  # (nested: TorchScript compiles neither the test nor the branch)
            if _fuses(self, x):
                qkv = _fused.linear(x, self.in_proj_weight, self.in_proj_bias, self.fused_inference)
                if qkv is not None:
                    return self._out_proj_fused(self._attend(qkv, B, N, C))
        return self.out_proj(self._attend(F.linear(x, self.in_proj_weight, self.in_proj_bias), B, N, C))

    def _attend(self, qkv: torch.Tensor, B: int, N: int, C: int) -> torch.Tensor:
        """``(B, N, 3C)`` projections -> ``(B, N, C)`` attention output (before ``out_proj``)."""
        q, k, v = qkv.view(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return x.transpose(1, 2).reshape(B, N, C)

    def _out_proj_fused(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.out_proj
        if self.fused_inference.enabled and type(proj) is nn.Linear and _fused.hookless(proj):
            out = _fused.linear(x, proj.weight, proj.bias, self.fused_inference)
            if out is not None:
                return out
        return proj(x)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


class ResDWConvNCHW(nn.Conv2d):
    """Depthwise convolution with a residual connection: ``x + dwconv(x)``."""

    def __init__(
        self, dim: int, ks: int = 3, device: Any = None, dtype: Optional[torch.dtype] = None
    ) -> None:
        super().__init__(dim, dim, ks, 1, padding=ks // 2, bias=True, groups=dim, **_dd(device, dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._conv_forward(x, self.weight, self.bias)


class LayerScale(nn.Module):
    """Per-channel scale ``gamma * x``; ``gamma`` is ``(C,)`` for NLC or ``(1, C, 1, 1)`` for NCHW."""

    def __init__(
        self, chans: int, init_value: float = 1e-4, in_format: str = "nlc", device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        shape = (chans,) if in_format == "nlc" else (1, chans, 1, 1)
        self.gamma = nn.Parameter(torch.full(shape, float(init_value), **_dd(device, dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * x


def _layer_scale(chans: int, value: float, in_format: str, **dd) -> nn.Module:
    return LayerScale(chans, value, in_format, **dd) if value > 0 else nn.Identity()


def _conv_mlp(dim: int, mlp_ratio: float, mlp_dw: bool, **dd) -> nn.Sequential:
    hidden = int(mlp_ratio * dim)
    return nn.Sequential(
        nn.Conv2d(dim, hidden, kernel_size=1, **dd),
        ResDWConvNCHW(hidden, ks=3, **dd) if mlp_dw else nn.Identity(),
        nn.GELU(),
        nn.Conv2d(hidden, dim, kernel_size=1, **dd),
    )


def _pos_conv(dim: int, cpe_ks: int, **dd) -> Optional[nn.Conv2d]:
    if cpe_ks <= 0:
        return None
    return nn.Conv2d(dim, dim, kernel_size=cpe_ks, padding=cpe_ks // 2, groups=dim, **dd)


def _pointwise(conv: nn.Module) -> bool:
    return (_fused.plain_conv(conv) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.groups == 1 and tuple(conv.padding) == (0, 0))


def _plain_scale(ls: nn.Module) -> bool:
    return type(ls) is LayerScale or type(ls) is nn.Identity


def _fusable_conv_mlp(mlp: nn.Module, ls: nn.Module) -> bool:
    """Whether ``ls(mlp(.))`` is exactly what ``_fused.conv_mlp_residual`` computes: the plain layers of
    :func:`_conv_mlp`, none of them with a hook."""
    if type(mlp) is not nn.Sequential or len(mlp) != 4:
        return False
    fc1, dw, act, fc2 = mlp
    dw_ok = type(dw) is nn.Identity or (
        type(dw) is ResDWConvNCHW and dw.dilation == (1, 1) and dw.padding_mode == "zeros"
        and dw.stride == (1, 1) and not isinstance(dw.padding, str))
    return (_pointwise(fc1) and dw_ok and type(act) is nn.GELU and act.approximate == "none"
            and _pointwise(fc2) and _plain_scale(ls) and _fused.hookless(mlp, fc1, dw, act, fc2, ls))


def _fusable_linear_mlp(mlp: nn.Module) -> bool:
    """Whether ``mlp`` is exactly ``Sequential(Linear, GELU, Linear)`` with no hook."""
    return (type(mlp) is nn.Sequential and len(mlp) == 3 and type(mlp[0]) is nn.Linear
            and type(mlp[1]) is nn.GELU and mlp[1].approximate == "none" and type(mlp[2]) is nn.Linear
            and _fused.hookless(mlp, *mlp))


class _ConvMlpResidual(nn.Module):
    """Base of the blocks that end with ``x + drop_path(ls2(mlp(norm2(x))))`` (a convolutional MLP)."""

    def mlp_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x + drop_path(ls2(mlp(norm2(x))))``, fused on CPU inference (see ``_fused``).

        Shape:
            ``(B, C, H, W) -> (B, C, H, W)``.
        """
        y = self.norm2(x)
        if not torch.jit.is_scripting():
            if _fuses(self, x) and _fusable_conv_mlp(self.mlp, self.ls2):
                gamma = self.ls2.gamma if isinstance(self.ls2, LayerScale) else None
                out = _fused.conv_mlp_residual(x, y, self.mlp, gamma, self.fused_inference, inplace=True)
                if out is not None:
                    return out
        return x + self.drop_path(self.ls2(self.mlp(y)))


# ----------------------------------------------------------------------------- blocks


class GLMixBlock(_ConvMlpResidual):
    """GLMix block: local depthwise convolution + attention among soft-clustered slots.

    Each of the K slots starts from an initial embedding (adaptive average
    pooling of the input to a sqrt(K) x sqrt(K) grid, or a learned parameter),
    and the slot logits are ``slot_scale * cos(slot_k, pixel_l)``. Softmax over
    pixels pools the pixels into slots (clustering); the slots attend to each
    other; softmax over slots dispatches them back to the pixels.

    Capture contract: ``self.slot_tap`` (an ``nn.Identity``) is called once per
    forward, in train and eval mode, with the slot logits shaped
    ``(B, K, H, W)``; its output is what the block uses. Forward hooks on it
    (see :class:`glmix_viz.capture.SlotCapture`) see every block's logits. It
    holds no parameters, so state-dict keys are those of the release.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        num_slots: int = 64,
        slot_init: str = "ada_avgpool",
        slot_scale: Optional[float] = None,
        scale_mode: str = "learnable",
        local_dw_ks: int = 5,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = LayerNorm2d,
        cpe_ks: int = 0,
        mlp_dw: bool = False,
        layerscale: float = -1.0,
        use_slot_attention: bool = True,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        norm_layer = _resolve_norm(norm_layer)
        if scale_mode not in ("learnable", "const"):
            raise ValueError(f"scale_mode={scale_mode!r}; expected 'learnable' or 'const'")
        if slot_init not in ("param", "ada_avgpool"):
            raise ValueError(f"slot_init={slot_init!r}; expected 'param' or 'ada_avgpool'")
        self.embed_dim = embed_dim
        self.num_slots = num_slots
        self.scale_mode = scale_mode
        self.slot_init = slot_init
        self.use_slot_attention = use_slot_attention
        scale = torch.tensor(slot_scale or embed_dim**-0.5, **dd)
        if scale_mode == "learnable":
            self.slot_scale = nn.Parameter(scale)
        else:
            self.register_buffer("slot_scale", scale)

        pos_conv = _pos_conv(embed_dim, cpe_ks, **dd)
        if pos_conv is not None:
            self.pos_conv = pos_conv
        self.with_conv_pos_emb = pos_conv is not None

        if slot_init == "param":
            self.init_slots = nn.Parameter(torch.empty(1, num_slots, embed_dim, **dd))
            nn.init.normal_(self.init_slots, std=0.02)
        else:
            self.pool_size = math.isqrt(num_slots)
            if self.pool_size**2 != num_slots:
                raise ValueError(f"slot_init='ada_avgpool' needs a square num_slots, got {num_slots}")

        self.norm1 = norm_layer(embed_dim, **dd)
        self.relation_mha = (
            MultiheadSelfAttention(embed_dim, num_heads, **dd) if use_slot_attention else nn.Identity()
        )
        self.feature_conv = (
            nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim, 1, **dd),
                nn.Conv2d(embed_dim, embed_dim, local_dw_ks, padding=local_dw_ks // 2, groups=embed_dim,
                          **dd),
                nn.Conv2d(embed_dim, embed_dim, 1, **dd),
            )
            if local_dw_ks > 0
            else nn.Identity()
        )
        self.norm2 = norm_layer(embed_dim, **dd)
        self.mlp = _conv_mlp(embed_dim, mlp_ratio, mlp_dw, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.ls1 = _layer_scale(embed_dim, layerscale, "nchw", **dd)
        self.ls2 = _layer_scale(embed_dim, layerscale, "nchw", **dd)
        self.slot_tap = nn.Identity()
        self.fused_inference = FusedInference()

    def initial_slots(self, x: torch.Tensor) -> torch.Tensor:
        """Initial slot embeddings ``(B or 1, K, C)`` for an input ``(B, C, H, W)``."""
        if hasattr(self, "init_slots"):  # slot_init == "param" (hasattr: TorchScript compiles one branch)
            return self.init_slots
        else:
            return F.adaptive_avg_pool2d(x, self.pool_size).flatten(2).transpose(1, 2)

    def group(self, x: torch.Tensor, init_slots: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Soft clustering of pixels into slots, and attention among the slots.

        Args:
            x: normalised features ``(B, C, H, W)``.
            init_slots: initial slots ``(B or 1, K, C)``.

        Returns:
            ``(logits, slots)``: slot logits ``(B, K, H*W)`` (after ``slot_tap``)
            and updated slots ``(B, K, C)``.
        """
        B, C, H, W = x.shape
        x_nlc = x.permute(0, 2, 3, 1).flatten(1, 2)  # (B, N, C): a view for channels_last input
        slots_n = F.normalize(init_slots, dim=-1) * self.slot_scale
        # cos(slot, pixel): normalising the (B, K, N) product is cheaper than the (B, N, C) pixels
        pixel_norm = torch.linalg.vector_norm(x_nlc, dim=-1).clamp_min(1e-12)  # as F.normalize
        logits = (slots_n @ x_nlc.transpose(1, 2)) / pixel_norm.unsqueeze(1)  # (B, K, N)
        logits = self.slot_tap(logits.view(B, -1, H, W)).flatten(2)
        slots = self.relation_mha(torch.softmax(logits, dim=-1) @ x_nlc)  # (B, K, C)
        return logits, slots

    def mix(self, x: torch.Tensor, init_slots: torch.Tensor) -> torch.Tensor:
        """Global mixing through the slots plus the local depthwise branch.

        Args:
            x: normalised features ``(B, C, H, W)``.
            init_slots: initial slots ``(B or 1, K, C)``.

        Returns:
            Mixed features ``(B, C, H, W)``.
        """
        B, C, H, W = x.shape
        logits, slots = self.group(x, init_slots)
        out = torch.softmax(logits, dim=1).transpose(1, 2) @ slots  # dispatch: (B, N, C)
        return out.view(B, H, W, C).permute(0, 3, 1, 2) + self.feature_conv(x)

    def _fusable_mix(self) -> bool:
        fc = self.feature_conv
        return (type(fc) is nn.Sequential and len(fc) == 3 and all(_fused.plain_conv(c) for c in fc)
                and _plain_scale(self.ls1) and _fused.hookless(fc, *fc, self.ls1))

    def _mix_residual_fused(
        self, shortcut: torch.Tensor, x: torch.Tensor, init_slots: torch.Tensor
    ) -> Optional[torch.Tensor]:
        """``shortcut + ls1(mix(x))`` with the adds folded into a matmul and a convolution (CPU inference);
        ``None`` if a fused kernel refused, before the slots were grouped (and tapped)."""
        B, C, H, W = x.shape
        gamma = self.ls1.gamma.reshape(-1) if isinstance(self.ls1, LayerScale) else None
        pw1, dw, pw2 = self.feature_conv
        switch = self.fused_inference
        hidden = _fused.conv(x, pw1, switch)
        hidden = _fused.conv(hidden, dw, switch) if hidden is not None else None
        # new, channels_last
        out = _fused.conv_add(hidden, shortcut, pw2, switch, gamma) if hidden is not None else None
        if out is None:  # the plain path runs instead: the slots are grouped (and tapped) there, once
            return None
        logits, slots = self.group(x, init_slots)  # after the convolutions, which may fall back
        if gamma is not None:
            slots = slots * gamma
        # + dispatch, accumulated in place into the (B, N, C) view of the block's own output
        out.permute(0, 2, 3, 1).view(B, H * W, C).baddbmm_(torch.softmax(logits, dim=1).transpose(1, 2),
                                                           slots)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        init_slots = self.initial_slots(x)  # the release pools before the position embedding
        if hasattr(self, "pos_conv"):  # with_conv_pos_emb
            x = x + self.pos_conv(x)
        y = self.norm1(x)
        if not torch.jit.is_scripting():
            if _fuses(self, x) and self._fusable_mix():
                out = self._mix_residual_fused(x, y, init_slots)
                if out is not None:
                    return self.mlp_residual(out)
        x = x + self.drop_path(self.ls1(self.mix(y, init_slots)))
        return self.mlp_residual(x)

    def extra_repr(self) -> str:
        return (
            f"num_slots={self.num_slots}, slot_init={self.slot_init}, "
            f"scale_mode={self.scale_mode}, use_slot_attention={self.use_slot_attention}"
        )


class MHSABlock(nn.Module):
    """Transformer block on tokens (``mixing_mode='mha'``).

    Shape:
        ``(B, N, C) -> (B, N, C)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layerscale: float = -1.0,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        hidden = int(mlp_ratio * embed_dim)
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6, **dd)
        self.mha_op = MultiheadSelfAttention(embed_dim, num_heads, dropout=dropout, **dd)
        self.norm2 = nn.LayerNorm(embed_dim, eps=1e-6, **dd)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden, **dd), nn.GELU(), nn.Linear(hidden, embed_dim, **dd)
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.ls1 = _layer_scale(embed_dim, layerscale, "nlc", **dd)
        self.ls2 = _layer_scale(embed_dim, layerscale, "nlc", **dd)
        self.fused_inference = FusedInference()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.mha_op(self.norm1(x))))
        return x + self.drop_path(self.ls2(self._mlp(self.norm2(x))))

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """``mlp(x)``, its two linear layers fused on CPU inference when they are plain and hook-free."""
        if not torch.jit.is_scripting():
            if _fuses(self, x) and _fusable_linear_mlp(self.mlp):
                fc1, _, fc2 = self.mlp
                switch = self.fused_inference
                hidden = _fused.linear(x, fc1.weight, fc1.bias, switch, gelu=True)
                out = _fused.linear(hidden, fc2.weight, fc2.bias, switch) if hidden is not None else None
                if out is not None:
                    return out
        return self.mlp(x)


class MHSANCHWBlock(_ConvMlpResidual):
    """Transformer block on a feature map, convolutional MLP (``mixing_mode='mha_nchw'``).

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        norm_layer: NormLayer = LayerNorm2d,
        mlp_dw: bool = False,
        cpe_ks: int = 0,
        layerscale: float = -1.0,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        norm_layer = _resolve_norm(norm_layer)
        pos_conv = _pos_conv(embed_dim, cpe_ks, **dd)
        if pos_conv is not None:
            self.pos_conv = pos_conv
        self.with_conv_pos_emb = pos_conv is not None
        self.norm1 = nn.LayerNorm(embed_dim, eps=1e-6, **dd)
        self.mha_op = MultiheadSelfAttention(embed_dim, num_heads, dropout=dropout, **dd)
        self.norm2 = norm_layer(embed_dim, **dd)
        self.mlp = _conv_mlp(embed_dim, mlp_ratio, mlp_dw, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.ls1 = _layer_scale(embed_dim, layerscale, "nlc", **dd)
        self.ls2 = _layer_scale(embed_dim, layerscale, "nchw", **dd)
        self.fused_inference = FusedInference()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pos_conv"):  # with_conv_pos_emb
            x = x + self.pos_conv(x)
        B, C, H, W = x.shape
        tokens = x.permute(0, 2, 3, 1).flatten(1, 2)  # (B, N, C)
        tokens = tokens + self.drop_path(self.ls1(self.mha_op(self.norm1(tokens))))
        x = tokens.view(B, H, W, C).permute(0, 3, 1, 2)
        return self.mlp_residual(x)


class GLNetStage(nn.Module):
    """One resolution stage: a list of blocks of one mixing mode (or alternating GLMix/MHSA).

    As in the release, the blocks always normalise with ``LayerNorm2d`` (the
    model's ``norm_layer`` only applies to downsampling and the final norm).

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        depth: int,
        mlp_ratio: float = 4.0,
        drop_path: Sequence[float] = (),
        mixing_mode: str = "glmix",
        local_dw_ks: int = 5,
        slot_init: str = "ada_avgpool",
        num_slots: int = 64,
        use_slot_attention: bool = True,
        cpe_ks: int = 0,
        mlp_dw: bool = False,
        layerscale: float = -1.0,
        slot_scale: Optional[float] = None,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        if mixing_mode not in MIXING_MODES:
            raise ValueError(f"mixing_mode={mixing_mode!r}; expected one of {MIXING_MODES}")
        self.dim = dim
        self.depth = depth
        self.mixing_mode = mixing_mode
        self.grad_checkpointing = False
        drop_path = list(drop_path) or [0.0] * depth

        glmix = partial(
            GLMixBlock, embed_dim=dim, num_heads=num_heads, num_slots=num_slots, slot_init=slot_init,
            local_dw_ks=local_dw_ks, use_slot_attention=use_slot_attention, mlp_ratio=mlp_ratio,
            cpe_ks=cpe_ks, mlp_dw=mlp_dw, layerscale=layerscale, slot_scale=slot_scale, **dd,
        )
        mha_nchw = partial(
            MHSANCHWBlock, embed_dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, cpe_ks=cpe_ks,
            mlp_dw=mlp_dw, layerscale=layerscale, **dd,
        )
        mha = partial(
            MHSABlock, embed_dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, layerscale=layerscale, **dd,
        )
        blocks = []
        for i in range(depth):
            if mixing_mode == "glmix" or (mixing_mode == "glmix.mha_nchw" and i % 2 == 0):
                blocks.append(glmix(drop_path=drop_path[i]))
            elif mixing_mode == "mha":
                blocks.append(mha(drop_path=drop_path[i]))
            else:
                blocks.append(mha_nchw(drop_path=drop_path[i]))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixing_mode == "mha":  # the blocks work on tokens
            B, C, H, W = x.shape
            x = self._run_blocks(x.permute(0, 2, 3, 1).flatten(1, 2))
            return x.reshape(B, H, W, C).permute(0, 3, 1, 2)
        return self._run_blocks(x)

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, depth={self.depth}, mixing_mode={self.mixing_mode}"


# ----------------------------------------------------------------------------- downsampling


class Transition(nn.Sequential):
    """The stem or a downsampling layer (the release's ``downsample_layers.i``: convolutions and norms).

    On CPU inference its BatchNorms are folded into the convolutions next to
    them (see ``_fused.sequential``); every layer is called as a module when
    any carries a hook, or when it is not the plain PyTorch layer.

    Shape:
        ``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``.
    """

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.fused_inference = FusedInference()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            if _fuses(self, x):
                return _fused.sequential(self, x, self.fused_inference)
        for layer in self:
            x = layer(x)
        return x


def _non_overlapped_downsampling(
    embed_dims: Sequence[int], in_chans: int, midd_order: str, norm_layer: Callable[..., nn.Module], **dd
) -> nn.ModuleList:
    stem = Transition(nn.Conv2d(in_chans, embed_dims[0], 4, stride=4, **dd), norm_layer(embed_dims[0], **dd))
    layers = [stem]
    for i in range(3):
        conv = nn.Conv2d(embed_dims[i], embed_dims[i + 1], 2, stride=2, **dd)
        if midd_order == "norm.proj":
            layers.append(Transition(norm_layer(embed_dims[i], **dd), conv))
        else:
            layers.append(Transition(conv, norm_layer(embed_dims[i + 1], **dd)))
    return nn.ModuleList(layers)


def _overlapped_downsampling(
    embed_dims: Sequence[int],
    in_chans: int,
    midd_order: str,
    norm_layer: Callable[..., nn.Module],
    dual_patch_norm: bool,
    deep_stem: bool = True,
    **dd,
) -> nn.ModuleList:
    pre = LayerNorm2d(in_chans, **dd) if dual_patch_norm else nn.Identity()
    half = embed_dims[0] // 2
    if deep_stem:
        stem = Transition(
            pre,
            nn.Conv2d(in_chans, half, 3, stride=2, padding=1, **dd),
            norm_layer(half, **dd),
            nn.GELU(),
            nn.Conv2d(half, embed_dims[0], 3, stride=2, padding=1, **dd),
            norm_layer(embed_dims[0], **dd),
        )
    else:
        stem = Transition(
            pre, nn.Conv2d(in_chans, half, 7, stride=4, padding=3, **dd), norm_layer(half, **dd)
        )
    layers = [stem]
    for i in range(3):
        conv = nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, stride=2, padding=1, **dd)
        if midd_order == "norm.proj":
            layers.append(Transition(norm_layer(embed_dims[i], **dd), conv))
        else:
            layers.append(Transition(conv, norm_layer(embed_dims[i + 1], **dd)))
    return nn.ModuleList(layers)


# ----------------------------------------------------------------------------- model


class GLNet(nn.Module):
    """GLNet backbone and classifier, with the release's constructor arguments.

    Args:
        in_chans: input channels.
        num_classes: classifier outputs; 0 for no head.
        depth: blocks per stage.
        embed_dim: channels per stage.
        head_dim: channels per attention head (heads = channels // head_dim).
        qk_scale: accepted for compatibility with the release; unused there too.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        drop_rate: dropout before the classifier.
        use_checkpoint_stages: stage indices run with gradient checkpointing.
        mlp_ratios: MLP expansion per stage.
        norm_layer: ``"BatchNorm2d"``, ``"LayerNorm2d"`` or a callable, for the
            downsampling layers and the final norm (blocks use ``LayerNorm2d``).
        pre_head_norm_layer: norm before the head (default: ``norm_layer``).
        mixing_modes: per stage, one of ``MIXING_MODES``.
        local_dw_ks: depthwise kernel size of the local branch (int or per stage).
        slot_init: ``"ada_avgpool"`` (pooled) or ``"param"`` (learned) initial slots.
        num_slots: K, the number of semantic slots.
        cpe_ks: kernel of the convolutional position embedding (0: none).
        downsample_style: ``"non_ovlp"`` (Swin-like) or ``"ovlp"`` (deep stem).
        transition_layout: ``"norm.proj"`` or ``"proj.norm"`` between stages.
        dual_patch_norm: LayerNorm on the input of the overlapped stem.
        mlp_dw: residual depthwise conv inside the MLP.
        layerscale: layer-scale init value (<= 0: none).
        global_pool: ``"avg"``, or ``""``: no pooling, ``forward_head`` gives
            ``(B, num_classes, h, w)`` logits per position (features when
            ``num_classes=0``).
        slot_scale: initial (learnable) scale of the GLMix slot logits; default
            ``embed_dim ** -0.5`` per block, as the release (which has no such
            argument at the model level).
        device: where to create the parameters (``"meta"`` for none), as timm models.
        dtype: their dtype.

    The fused CPU inference path is on where oneDNN has the ops, unless
    ``GLMIX_FUSED=0`` was in the environment when the model was built; see
    :func:`fuse_for_inference` and ``self.fused_inference``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depth: Sequence[int] = (2, 2, 6, 2),
        embed_dim: Sequence[int] = (96, 192, 384, 768),
        head_dim: int = 32,
        qk_scale: Optional[float] = None,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        use_checkpoint_stages: Sequence[int] = (),
        mlp_ratios: Sequence[float] = (4, 4, 4, 4),
        norm_layer: NormLayer = LayerNorm2d,
        pre_head_norm_layer: Optional[NormLayer] = None,
        mixing_modes: Sequence[str] = ("glmix", "glmix", "glmix", "mha"),
        local_dw_ks: Union[int, Sequence[int]] = 5,
        slot_init: str = "param",
        num_slots: int = 64,
        cpe_ks: int = 0,
        downsample_style: str = "non_ovlp",
        transition_layout: str = "proj.norm",
        dual_patch_norm: bool = False,
        mlp_dw: bool = False,
        layerscale: float = -1.0,
        global_pool: str = "avg",
        slot_scale: Optional[float] = None,
        device: Any = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = _dd(device, dtype)
        if len(depth) != 4 or len(embed_dim) != 4 or len(mixing_modes) != 4 or len(mlp_ratios) != 4:
            raise ValueError("depth, embed_dim, mixing_modes and mlp_ratios need 4 entries (one per stage)")
        if downsample_style not in ("non_ovlp", "ovlp"):
            raise ValueError(f"downsample_style={downsample_style!r}; expected 'non_ovlp' or 'ovlp'")
        if transition_layout not in ("norm.proj", "proj.norm"):
            raise ValueError(f"transition_layout={transition_layout!r}; expected 'norm.proj' or 'proj.norm'")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool={global_pool!r}; expected 'avg' or ''")
        norm = _resolve_norm(norm_layer)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.embed_dim = tuple(embed_dim)
        self.num_features = self.head_hidden_size = embed_dim[-1]
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        if downsample_style == "ovlp":
            self.downsample_layers = _overlapped_downsampling(
                embed_dim, in_chans, transition_layout, norm, dual_patch_norm, **dd
            )
        else:
            self.downsample_layers = _non_overlapped_downsampling(
                embed_dim, in_chans, transition_layout, norm, **dd
            )

        n = sum(depth)
        dp_rates = [drop_path_rate * i / max(1, n - 1) for i in range(n)]  # torch.linspace, without a tensor
        local_dw_ks = (local_dw_ks,) * 4 if isinstance(local_dw_ks, int) else tuple(local_dw_ks)
        self.stages = nn.ModuleList()
        self.feature_info = []
        reduction = 4
        for i in range(4):
            self.stages.append(
                GLNetStage(
                    dim=embed_dim[i],
                    num_heads=embed_dim[i] // head_dim,
                    depth=depth[i],
                    mlp_ratio=mlp_ratios[i],
                    drop_path=dp_rates[sum(depth[:i]) : sum(depth[: i + 1])],
                    mixing_mode=mixing_modes[i],
                    local_dw_ks=local_dw_ks[i],
                    slot_init=slot_init,
                    num_slots=num_slots,
                    cpe_ks=cpe_ks,
                    mlp_dw=mlp_dw,
                    layerscale=layerscale,
                    slot_scale=slot_scale,
                    **dd,
                )
            )
            self.feature_info.append(dict(num_chs=embed_dim[i], reduction=reduction, module=f"stages.{i}"))
            reduction *= 2
        for i in use_checkpoint_stages:
            self.stages[i].grad_checkpointing = True

        self.norm = _resolve_norm(pre_head_norm_layer or norm_layer)(embed_dim[-1], **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        self.fused_inference = FusedInference()
        fuse_for_inference(self, self.fused_inference.enabled)  # one switch for all the model's modules

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -- timm model API -----------------------------------------------------------------

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {"slot_scale", "init_slots"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^downsample_layers\.0",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
                (r"^downsample_layers\.(\d+)", (0,)),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier with a fresh ``nn.Linear`` (or ``nn.Identity`` for 0 classes) on the
        model's device and dtype; ``global_pool`` (``"avg"`` or ``""``) stays unless given."""
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool={global_pool!r}; expected 'avg' or ''")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.head = self._new_head(num_classes)

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        ref = next(self.parameters())
        head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
        self._init_weights(head)
        return head.train(self.training)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample_layers[0](x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features.

        Shape:
            ``(B, in_chans, H, W) -> (B, C, H/32, W/32)`` (normalised; after
            :meth:`prune_intermediate_layers`, the last kept stage's output).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        for transition, stage in zip(self.downsample_layers, self.stages):
            x = stage(transition(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Classify ``(B, C, h, w)`` features.

        Shape:
            ``(B, C, h, w) -> (B, num_classes)`` (``(B, C)`` with ``pre_logits``
            or no classifier); without pooling (``global_pool=""``) the
            classifier runs at every position: ``(B, num_classes, h, w)``
            (``(B, C, h, w)``).
        """
        if self.global_pool == "avg":
            x = self.head_drop(x.mean((2, 3)))
            return x if pre_logits else self.head(x)
        x = self.head_drop(x)
        if pre_logits or self.num_classes <= 0:
            return x
        return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs, timm style.

        Args:
            x: images ``(B, in_chans, H, W)``.
            indices: last n stages if int, all if None, else the stage indices to return.
            norm: apply the final norm to the last stage's output if it is returned.
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of intermediates.

        Returns:
            ``(final_features, [stage outputs])`` or ``[stage outputs]``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}; GLNet only gives 'NCHW'")
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last = len(self.stages) - 1
        stop = max_index if stop_early else last
        intermediates = []
        x = x.contiguous(memory_format=torch.channels_last)
        for i in range(stop + 1):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in take_indices:
                intermediates.append(self.norm(x) if norm and i == last else x)
        if intermediates_only:
            return intermediates
        if stop == last:
            x = self.norm(x)  # the final norm follows the last stage only
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages after the last of ``indices``, timm style.

        Pruned before the last stage, the model ends at the last kept stage:
        the final norm (sized for, and applied after, the last stage only) and
        the classifier go, and ``num_features`` is that stage's width. The
        norm also goes with ``prune_norm``, the classifier with ``prune_head``.

        Returns:
            The stage indices kept for :meth:`forward_intermediates`.
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices


class GLNetTokenLabel(GLNet):
    """GLNet with the token-labelling auxiliary head (the release's ``GLNet_tklb``).

    Output: ``head(mean over tokens) + 0.5 * max over tokens of aux_head(tokens)``,
    the release's inference rule. The release's training-time CutMix inside
    ``forward`` is not reproduced: ``forward`` is the same in train and eval.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tklb_aux_head = self._new_head(self.num_classes)

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        super().reset_classifier(num_classes, global_pool)
        self.tklb_aux_head = self._new_head(num_classes)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The release's rule with ``global_pool="avg"``; without pooling, ``head + 0.5 * tklb_aux_head``
        at every position; no classifier (``num_classes=0``): the features, as :class:`GLNet`.

        Shape:
            as :meth:`GLNet.forward_head`.
        """
        if self.global_pool != "avg":
            x = self.head_drop(x)
            if pre_logits or self.num_classes <= 0:
                return x
            tokens = x.permute(0, 2, 3, 1)
            return (self.head(tokens) + 0.5 * self.tklb_aux_head(tokens)).permute(0, 3, 1, 2)
        pooled = self.head_drop(x.mean((2, 3)))
        if pre_logits or self.num_classes <= 0:
            return pooled
        aux = self.tklb_aux_head(x.flatten(2).transpose(1, 2))  # (B, N, num_classes)
        return self.head(pooled) + 0.5 * aux.amax(dim=1)


GLNet_tklb = GLNetTokenLabel  # the release's class name


# ----------------------------------------------------------------------------- builders


def checkpoint_filter_fn(state_dict: dict, model: nn.Module) -> dict:
    """Official checkpoints need no remapping; unwrap the release's file layout."""
    from ._checkpoint import unwrap_state_dict

    return unwrap_state_dict(state_dict, model_name=getattr(model, "pretrained_cfg", {}).get("architecture"))


def _create_glnet(variant: str, pretrained: bool = False, **kwargs) -> GLNet:
    model_cls: Type[GLNet] = GLNetTokenLabel if variant.endswith("_tklb") else GLNet
    checkpoint_path = kwargs.pop("checkpoint_path", None)
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    model = build_model_with_cfg(
        model_cls,
        variant,
        pretrained=False,  # weights are read from local files below, never downloaded
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )
    if pretrained:
        from ._checkpoint import load_checkpoint

        load_checkpoint(
            model, checkpoint_path or overlay.get("file"), name=variant, num_classes=model.num_classes
        )
    return model


def _cfg(**kwargs) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "downsample_layers.0.0",
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2411.14429",
        "origin_url": "https://github.com/rayleizhu/GLMix",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "glnet_stl.in1k": _cfg(),
        "glnet_stl_paramslot.in1k": _cfg(),
        "glnet_4g.in1k": _cfg(first_conv="downsample_layers.0.1"),
        "glnet_9g.in1k": _cfg(first_conv="downsample_layers.0.1"),
        "glnet_16g.in1k": _cfg(first_conv="downsample_layers.0.1"),
        "glnet_4g_tklb.in1k": _cfg(first_conv="downsample_layers.0.1", classifier=("head", "tklb_aux_head")),
        "glnet_9g_tklb.in1k": _cfg(first_conv="downsample_layers.0.1", classifier=("head", "tklb_aux_head")),
        "glnet_demo.emojivoc": _cfg(input_size=(3, 192, 192), pool_size=(6, 6), num_classes=20,
                                    origin_url=""),
        "test_glnet.untrained": _cfg(input_size=(3, 96, 96), pool_size=(3, 3), num_classes=10, origin_url=""),
    }
)

_STL = dict(
    depth=(2, 2, 6, 2), embed_dim=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4), head_dim=32,
    norm_layer=nn.BatchNorm2d, mixing_modes=("glmix", "glmix", "glmix", "mha"), local_dw_ks=5,
    num_slots=64, transition_layout="norm.proj",
)
_HYBRID = dict(
    depth=(4, 4, 18, 4), mlp_ratios=(3, 3, 3, 3), head_dim=32, norm_layer=nn.BatchNorm2d,
    mixing_modes=("glmix", "glmix", "glmix.mha_nchw", "mha_nchw"), local_dw_ks=5,
    slot_init="ada_avgpool", num_slots=64, cpe_ks=3, downsample_style="ovlp",
    transition_layout="proj.norm", mlp_dw=True,
)


@register_model
def glnet_stl(pretrained: bool = False, **kwargs) -> GLNet:
    """GLNet-STL: Swin-Tiny layout, pooled slots (30M params, 82.5% IN-1k)."""
    return _create_glnet("glnet_stl", pretrained, **{**_STL, "slot_init": "ada_avgpool", **kwargs})


@register_model
def glnet_stl_paramslot(pretrained: bool = False, **kwargs) -> GLNet:
    """GLNet-STL with learned slot initialisation (30M params, 82.1% IN-1k)."""
    return _create_glnet("glnet_stl_paramslot", pretrained, **{**_STL, "slot_init": "param", **kwargs})


@register_model
def glnet_4g(pretrained: bool = False, **kwargs) -> GLNet:
    """GLNet-4G (27M params, 83.7% IN-1k)."""
    return _create_glnet("glnet_4g", pretrained, **{**_HYBRID, "embed_dim": (64, 128, 256, 512), **kwargs})


@register_model
def glnet_9g(pretrained: bool = False, **kwargs) -> GLNet:
    """GLNet-9G (60M params, 84.5% IN-1k)."""
    return _create_glnet("glnet_9g", pretrained, **{**_HYBRID, "embed_dim": (96, 192, 384, 768), **kwargs})


@register_model
def glnet_16g(pretrained: bool = False, **kwargs) -> GLNet:
    """GLNet-16G, layer scale, EMA weights (106M params, 85.0% IN-1k)."""
    model_args = {**_HYBRID, "embed_dim": (128, 256, 512, 1024), "layerscale": 1e-4}
    return _create_glnet("glnet_16g", pretrained, **{**model_args, **kwargs})


@register_model
def glnet_4g_tklb(pretrained: bool = False, **kwargs) -> GLNetTokenLabel:
    """GLNet-4G trained with token labelling (27M params, 84.4% IN-1k)."""
    return _create_glnet(
        "glnet_4g_tklb", pretrained, **{**_HYBRID, "embed_dim": (64, 128, 256, 512), **kwargs}
    )


@register_model
def glnet_9g_tklb(pretrained: bool = False, **kwargs) -> GLNetTokenLabel:
    """GLNet-9G trained with token labelling (61M params, 85.3% IN-1k)."""
    return _create_glnet(
        "glnet_9g_tklb", pretrained, **{**_HYBRID, "embed_dim": (96, 192, 384, 768), **kwargs}
    )


@register_model
def glnet_demo(pretrained: bool = False, **kwargs) -> GLNet:
    """Reduced-width GLNet-STL layout (10 GLMix blocks, 3.4M params), 20 outputs (VOC classes).

    The bundled demo model (``glmix_viz.models.load_demo_model``) is this
    architecture trained on EmojiVOC with image-level labels. Its slot logits
    start at scale 10 (the release's ``embed_dim ** -0.5`` is about 0.18 here):
    trained briefly from scratch, the release's scale shrinks towards 0 and
    the slots become uniform averages that group nothing.
    """
    model_args = {**_STL, "embed_dim": (32, 64, 128, 256), "slot_init": "ada_avgpool", "num_classes": 20,
                  "slot_scale": 10.0}
    return _create_glnet("glnet_demo", pretrained, **{**model_args, **kwargs})


@register_model
def test_glnet(pretrained: bool = False, **kwargs) -> GLNet:
    """Tiny GLNet-STL layout (4 GLMix blocks) for fast tests; 10 classes."""
    model_args = {**_STL, "depth": (1, 1, 2, 1), "embed_dim": (32, 64, 128, 256), "slot_init": "ada_avgpool"}
    return _create_glnet("test_glnet", pretrained, **{**model_args, **kwargs})
