"""Slot images rendered straight into uint8 arrays (no subplots, no PNG round trip)."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np

from ..analysis import hard_assignment

__all__ = ["colormap_lut", "slot_palette", "render_slot_grid", "render_hard_grouping", "render_slot_labels"]


@lru_cache(maxsize=8)
def colormap_lut(name: str = "viridis") -> np.ndarray:
    """A matplotlib colormap as a ``(256, 3)`` uint8 look-up table."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


@lru_cache(maxsize=8)
def slot_palette(k: int, seed: int = 0) -> np.ndarray:
    """``(k, 3)`` uint8 distinct colours (evenly spaced hues, shuffled with ``seed``)."""
    import matplotlib.colors as mcolors

    hues = np.linspace(0, 1, k, endpoint=False)
    sat = np.where(np.arange(k) % 2 == 0, 0.85, 0.55)
    val = np.where(np.arange(k) % 3 == 0, 0.95, 0.75)
    rgb = mcolors.hsv_to_rgb(np.stack([hues, sat, val], axis=1))
    order = np.random.default_rng(seed).permutation(k)
    return (rgb[order] * 255 + 0.5).astype(np.uint8)


def render_slot_grid(
    maps: np.ndarray,
    *,
    cols: int = 8,
    cell: Optional[int] = None,
    pad: int = 2,
    cmap: str = "viridis",
    normalize: str = "image",
    highlight: Sequence[int] = (),
    highlight_colors: Optional[np.ndarray] = None,
) -> np.ndarray:
    """All K dispatch maps of one image as a mosaic (``cols`` per row).

    Args:
        maps: ``(K, H, W)`` dispatch maps of one image (normalised here, see ``normalize``).
        cols: maps per row.
        cell: height of one tile in pixels (default: H scaled to at least 48).
        pad: gap between tiles, in pixels (white).
        cmap: matplotlib colormap name.
        normalize: ``"image"``: all K maps share one min-max range (default);
            ``"map"``: each map is stretched to its own range (what the
            release's per-panel ``imshow`` does; amplifies near-empty slots).
        highlight: slot indices to outline (e.g. representatives).
        highlight_colors: ``(len(highlight), 3)`` uint8 outline colours.

    Returns:
        uint8 ``(rows * (cell + pad) + pad, cols * (cell_w + pad) + pad, 3)``.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (K, H, W), got shape {maps.shape}")
    K, H, W = maps.shape
    cell = cell or max(48, H)
    rep = max(1, int(round(cell / H)))
    th, tw = H * rep, W * rep
    rows = -(-K // cols)
    flat = maps.reshape(K, -1).astype(np.float32)
    if normalize == "image":  # as analysis.normalize_per_image, in numpy (no torch overhead per call)
        lo, hi = flat.min(), flat.max()
    elif normalize == "map":
        lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    else:
        raise ValueError(
            f"normalize={normalize!r}; use 'image' (one range for all maps) or 'map' (one range per map)"
        )
    scaled = ((flat - lo) / np.maximum(hi - lo, 1e-12)).reshape(K, H, W)
    lut = colormap_lut(cmap)
    tiles = lut[(scaled * 255 + 0.5).astype(np.uint8)]  # (K, H, W, 3)
    tiles = tiles.repeat(rep, axis=1).repeat(rep, axis=2)  # nearest upsampling: slots are cells
    out = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    colors = highlight_colors if highlight_colors is not None else slot_palette(max(1, len(highlight)), 1)
    border = max(2, pad)
    for k in range(K):
        r, c = divmod(k, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        out[y : y + th, x : x + tw] = tiles[k]
        if k in highlight:
            color = colors[list(highlight).index(k)]
            out[y : y + border, x : x + tw] = color
            out[y + th - border : y + th, x : x + tw] = color
            out[y : y + th, x : x + border] = color
            out[y : y + th, x + tw - border : x + tw] = color
    return out


def render_hard_grouping(
    image: np.ndarray,
    maps: np.ndarray,
    *,
    alpha: float = 0.55,
    mean_color: bool = False,
    boundary_color: Tuple[int, int, int] = (255, 255, 255),
    seed: int = 0,
) -> np.ndarray:
    """Every pixel coloured by its argmax slot, group boundaries drawn.

    Args:
        image: uint8 ``(h, w, 3)`` image the model saw.
        maps: ``(K, H, W)`` dispatch maps (bilinearly upsampled to ``(h, w)``).
        alpha: opacity of the slot colours over the image.
        mean_color: fill each group with its mean image colour instead.
        boundary_color: RGB of the one-pixel boundaries.
        seed: shuffles the slot colours.

    Returns:
        uint8 ``(h, w, 3)``.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (h, w, 3) uint8, got shape {image.shape}")
    h, w = image.shape[:2]
    groups = hard_assignment(np.asarray(maps), (h, w))  # (h, w)
    return render_slot_labels(image, groups, np.asarray(maps).shape[0], alpha=alpha, mean_color=mean_color,
                              boundary_color=boundary_color, seed=seed)


def render_slot_labels(
    image: np.ndarray,
    groups: np.ndarray,
    num_slots: int,
    *,
    alpha: float = 0.55,
    mean_color: bool = False,
    boundary_color: Tuple[int, int, int] = (255, 255, 255),
    seed: int = 0,
) -> np.ndarray:
    """A hard slot map drawn as :func:`render_hard_grouping` draws it: slot ``s`` in
    ``slot_palette(num_slots, seed)[s]`` over the image, boundaries between slots.

    Args:
        image: uint8 ``(h, w, 3)``.
        groups: ``(h, w)`` slot indices in ``0..num_slots-1`` (e.g. a hard slot map).
        num_slots: K, the palette's size.

    Returns:
        uint8 ``(h, w, 3)``.
    """
    image = np.asarray(image)
    groups = np.asarray(groups)
    if image.ndim != 3 or image.shape[2] != 3 or groups.shape != image.shape[:2]:
        raise ValueError(f"image must be (h, w, 3) and groups (h, w), got shapes {image.shape}, "
                         f"{groups.shape}")
    if groups.size and (groups.min() < 0 or groups.max() >= num_slots):
        raise ValueError(f"groups must be slot indices in 0..{num_slots - 1}")
    h, w = groups.shape
    K = int(num_slots)
    if mean_color:
        counts = np.bincount(groups.ravel(), minlength=K).clip(min=1)[:, None]
        sums = np.stack([np.bincount(groups.ravel(), image[..., c].ravel(), K) for c in range(3)], 1)
        out = (sums / counts + 0.5).astype(np.uint8)[groups]
    else:
        colors = slot_palette(K, seed)[groups].astype(np.float32)
        out = (image * (1 - alpha) + colors * alpha + 0.5).astype(np.uint8)
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= groups[:, 1:] != groups[:, :-1]
    edge[1:, :] |= groups[1:, :] != groups[:-1, :]
    out[edge] = boundary_color
    return out
