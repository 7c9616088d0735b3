"""Array operations on dispatch maps: per-image normalisation, upsampling, hard grouping."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["normalize_per_image", "normalize_by_max", "upsample_maps", "hard_assignment"]

ArrayLike = Union[np.ndarray, torch.Tensor]


def _as_tensor(maps: ArrayLike) -> torch.Tensor:
    if isinstance(maps, torch.Tensor):
        return maps.detach().float().cpu()
    return torch.from_numpy(np.asarray(maps, np.float32))


def normalize_per_image(maps: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Min-max normalise all K maps of each image together, independently of other images.

    The release normalises over the whole batch, so one image's contrast
    depends on the others; here each image gets its own range.

    Shape:
        ``(B, K, H, W) -> (B, K, H, W)`` float32 in [0, 1] (also ``(K, H, W)``).
    """
    m = _as_tensor(maps)
    single = m.dim() == 3
    if single:
        m = m[None]
    flat = m.flatten(1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    hi = flat.max(1).values.view(-1, 1, 1, 1)
    out = ((m - lo) / (hi - lo).clamp_min(eps)).numpy()
    return out[0] if single else out


def normalize_by_max(maps: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divide each map by its own maximum (maps whose maximum is below ``eps`` are divided by ``eps``).

    Unlike :func:`normalize_per_image` each map keeps its zero and gets its own
    scale (class maps, which ``wsss`` compares against a background score).
    A tensor in, a tensor out, on its device.

    Shape:
        ``(n, H, W) -> (n, H, W)``.
    """
    return maps / maps.flatten(1).amax(1).clamp_min(eps).view(-1, *([1] * (maps.dim() - 1)))


def upsample_maps(maps: ArrayLike, size: Tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Resize maps to an image size ``(h, w)``.

    Shape:
        ``(B, K, H, W) -> (B, K, h, w)`` (also ``(K, H, W) -> (K, h, w)``).
    """
    m = _as_tensor(maps)
    single = m.dim() == 3
    if single:
        m = m[None]
    kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(m, size=tuple(size), mode=mode, **kw).numpy()
    return out[0] if single else out


def hard_assignment(maps: ArrayLike, size: Tuple[int, int] = None) -> np.ndarray:
    """Each pixel's most likely slot (argmax over K), after optional bilinear upsampling.

    Shape:
        ``(K, H, W) -> (h, w)`` int64 slot indices (``(B, K, H, W) -> (B, h, w)``).
    """
    m = upsample_maps(maps, size) if size is not None else np.asarray(_as_tensor(maps))
    return m.argmax(axis=-3)
