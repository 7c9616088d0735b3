"""The paper's slot figures: Fig. 4 (one block), Fig. 5 (depths), supplementary Figs. 6-8 (checkpoints).

Every figure exists twice, built from the same panels:

* ``render_*`` functions draw straight into a uint8 ``(h, w, 3)`` array
  (numpy and Pillow only; no matplotlib subplots, no PNG round trip), fast
  enough for thousands of images;
* ``*_figure`` functions put those panels on a :class:`matplotlib.figure.Figure`
  with titles and labels (for notebooks and vector output such as PDF).

A Fig. 4 panel is: the input image | all K dispatch maps of one block in a
grid, the representatives outlined in distinct colours | each representative
blended over the image, its own value as the image's opacity (the release's
``blend_heatmap_and_img(..., auto_alpha=True)``), outlined in the same colour.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..analysis import upsample_maps
from .slots import colormap_lut, render_slot_grid, slot_palette

__all__ = [
    "RELEASE_COLORS",
    "REPRESENTATIVE_COLORS",
    "fig4_captions",
    "render_captioned",
    "resize_to_height",
    "array_figure",
    "blend_heatmap",
    "checkpoints_figure",
    "default_depth_blocks",
    "depths_figure",
    "fig4_figure",
    "fig4_panels",
    "render_checkpoints",
    "render_depths",
    "render_fig4",
    "render_label",
    "render_representatives",
    "render_slot_panel",
    "representative_colors",
]

RELEASE_COLORS = ("red", "orange", "brown", "deeppink")
"""Outline colours of the release's four representatives (orange, brown and red run together for
colour-blind readers and orange against viridis' yellow: pass ``colors=RELEASE_COLORS`` for the \
paper's look)."""

REPRESENTATIVE_COLORS = ("red", "cyan", "magenta", "black")
"""Default outline colours: of the Okabe-Ito and primary colours, the four whose CIEDE2000 distances, to each
other and to every viridis colour, stay largest under normal vision and simulated protanopia, deuteranopia
and tritanopia (tests/test_figures.py measures them)."""

WHITE = 255
ArrayLike = Union[np.ndarray, torch.Tensor]


# ----------------------------------------------------------------------------- helpers


def _as_image(image: ArrayLike) -> np.ndarray:
    image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 (h, w, 3), got {image.dtype} {image.shape}; "
            "use the `view` returned by glmix_viz.images.preprocess"
        )
    return image


def _as_maps(maps: ArrayLike) -> np.ndarray:
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        hint = " (one image of a batch: pass maps[i])" if maps.ndim == 4 else ""
        raise ValueError(f"maps must be (K, H, W) for one image and block, got shape {maps.shape}{hint}")
    return maps.astype(np.float32, copy=False)


def _as_reps(representatives: Sequence[int], num_slots: int) -> List[int]:
    reps = [int(r) for r in np.asarray(representatives, dtype=np.int64).ravel()]
    bad = [r for r in reps if not 0 <= r < num_slots]
    if bad:
        raise ValueError(f"representatives {bad} are not slot indices 0..{num_slots - 1}")
    if len(set(reps)) != len(reps):
        raise ValueError(f"representatives {reps} repeat a slot; pass distinct indices")
    return reps


def _colors(colors: Optional[ArrayLike], k: int) -> np.ndarray:
    if colors is None:
        return representative_colors(k)
    arr = np.asarray(colors)
    if arr.dtype.kind in "US" or arr.dtype == object:  # names such as "red"
        import matplotlib.colors as mcolors

        arr = (np.array([mcolors.to_rgb(c) for c in colors]) * 255 + 0.5).astype(np.uint8)
    arr = np.asarray(arr, dtype=np.uint8).reshape(-1, 3)
    if len(arr) < k:
        raise ValueError(f"{len(arr)} colours for {k} representatives; give at least {k}")
    return arr[:k]


def _resize(array: np.ndarray, size: Tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """uint8 ``(h, w, 3)`` to ``size = (h, w)`` with Pillow (bicubic, or nearest)."""
    from PIL import Image

    h, w = size
    if array.shape[:2] == (h, w):
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(array).resize((w, h), resample), dtype=np.uint8)


def resize_to_height(image: np.ndarray, height: int, *, nearest: bool = False) -> np.ndarray:
    """uint8 ``(h, w, 3)`` resized to ``height`` rows, aspect kept (bicubic; ``nearest``: label colours)."""
    h, w = image.shape[:2]
    return _resize(image, (height, max(1, int(round(w * height / h)))), nearest=nearest)


def _outline(tile: np.ndarray, color: np.ndarray, width: int) -> None:
    """Draw a ``width``-pixel frame inside ``tile`` (in place)."""
    width = max(1, min(width, tile.shape[0] // 2, tile.shape[1] // 2))
    tile[:width] = color
    tile[-width:] = color
    tile[:, :width] = color
    tile[:, -width:] = color


def _stack(panels: Sequence[np.ndarray], *, axis: int, gap: int, align: str = "start") -> np.ndarray:
    """Place panels side by side (``axis=1``) or one under the other (``axis=0``) on white."""
    panels = [p for p in panels if p is not None]
    other = 1 - axis
    length = sum(p.shape[axis] for p in panels) + gap * (len(panels) - 1)
    breadth = max(p.shape[other] for p in panels)
    shape = (length, breadth, 3) if axis == 0 else (breadth, length, 3)
    out = np.full(shape, WHITE, np.uint8)
    at = 0
    for p in panels:
        off = (breadth - p.shape[other]) // 2 if align == "center" else 0
        if axis == 0:
            out[at : at + p.shape[0], off : off + p.shape[1]] = p
        else:
            out[off : off + p.shape[0], at : at + p.shape[1]] = p
        at += p.shape[axis] + gap
    return out


@lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_label(text: str, *, size: int = 14, margin: int = 4) -> np.ndarray:
    """A line of black text on white, tight with ``margin`` pixels around.

    Returns:
        uint8 ``(h, w, 3)``.
    """
    from PIL import Image, ImageDraw

    font = _font(size)
    left, top, right, bottom = font.getbbox(text or " ")
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (bottom, 0)
    w, h = max(1, right - left) + 2 * margin, ascent + descent + 2 * margin
    canvas = Image.new("RGB", (w, h), (WHITE,) * 3)
    ImageDraw.Draw(canvas).text((margin - left, margin), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas, dtype=np.uint8)


@lru_cache(maxsize=1)
def _dark_lut() -> np.ndarray:
    """The release's backdrop: a near-black grey ramp (0..16), as a ``(256, 3)`` uint8 LUT."""
    return np.repeat((np.arange(256) * 16.0 / 255.0 + 0.5).astype(np.uint8)[:, None], 3, axis=1)


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    return np.minimum((np.arange(n_out) * n_in) // n_out, n_in - 1)


# ----------------------------------------------------------------------------- public API


def representative_colors(k: int) -> np.ndarray:
    """Outline colours for ``k`` representatives: :data:`REPRESENTATIVE_COLORS`, then distinct hues.

    Shape:
        ``(k, 3)`` uint8.
    """
    import matplotlib.colors as mcolors

    base = (np.array([mcolors.to_rgb(c) for c in REPRESENTATIVE_COLORS]) * 255 + 0.5).astype(np.uint8)
    if k <= len(base):
        return base[:k].copy()
    return np.concatenate([base, slot_palette(k - len(base), 3)], axis=0)


def default_depth_blocks(num_blocks: int) -> List[int]:
    """Block ordinals (1-based) for a figure across depth, spread like the paper's Fig. 5.

    The paper shows blocks 2, 5 and 10 of a 10-block model, i.e. at 20 %, 50 %
    and 100 % of the depth; other depths get the same fractions, rounded half
    up, at least 1, without duplicates (``4 -> [1, 2, 4]``, ``1 -> [1]``).
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, (int, np.integer)) or num_blocks < 1:
        raise ValueError(f"num_blocks={num_blocks!r} must be a positive integer (the model's GLMix blocks)")
    picks = {max(1, int(math.floor(num_blocks * f + 0.5))) for f in (0.2, 0.5, 1.0)}
    return sorted(picks)


def blend_heatmap(
    image: ArrayLike, heat: ArrayLike, *, cmap: Optional[str] = None, normalize: bool = True
) -> np.ndarray:
    """Show the image through a heat map: the map's own value is the image's opacity.

    ``out = a * image + (1 - a) * colour(a)`` where ``a`` is the heat map,
    min-max normalised (``normalize``) and upsampled to the image by nearest
    neighbour (each map cell is a block of pixels), as the release does with
    ``auto_alpha=True``. Where a slot does not claim the pixel, the backdrop
    colour shows.

    Args:
        image: uint8 ``(h, w, 3)``.
        heat: ``(H, W)`` map (e.g. one dispatch map).
        cmap: matplotlib colormap of the backdrop; ``None`` is the release's
            near-black grey (a plain 0..16 ramp here; the release's LUT repeats
            that ramp twice).
        normalize: min-max normalise ``heat`` (a constant map becomes 0);
            otherwise it is clipped to [0, 1].

    Returns:
        uint8 ``(h, w, 3)``.
    """
    image = _as_image(image)
    if isinstance(heat, torch.Tensor):
        heat = heat.detach().float().cpu().numpy()
    heat = np.asarray(heat, np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heat must be (H, W), got shape {heat.shape}")
    if normalize:
        lo, hi = float(heat.min()), float(heat.max())
        heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    else:
        heat = np.clip(heat, 0.0, 1.0)
    h, w = image.shape[:2]
    a = heat[_nearest_index(h, heat.shape[0])][:, _nearest_index(w, heat.shape[1])]
    lut = _dark_lut() if cmap is None else colormap_lut(cmap)
    backdrop = lut[(a * 255 + 0.5).astype(np.uint8)].astype(np.float32)
    a = a[..., None]
    return (a * image + (1.0 - a) * backdrop + 0.5).astype(np.uint8)


def render_representatives(
    image: ArrayLike,
    maps: ArrayLike,
    representatives: Sequence[int],
    *,
    colors: Optional[ArrayLike] = None,
    cols: Optional[int] = None,
    tile_height: Optional[int] = None,
    pad: int = 2,
    border: int = 3,
    heat_cmap: Optional[str] = None,
) -> np.ndarray:
    """Each representative blended over the image (:func:`blend_heatmap`), outlined in its colour.

    Args:
        image: uint8 ``(h, w, 3)``.
        maps: ``(K, H, W)`` dispatch maps of that image.
        representatives: slot indices (e.g. from ``select_representatives``).
        colors: ``(k, 3)`` uint8 or colour names (default :func:`representative_colors`).
        cols: tiles per row (default ``ceil(sqrt(k))``: 2 x 2 for 4).
        tile_height: height of one tile (default: the image's); the width keeps
            the image's aspect ratio.
        pad: white gap between tiles; border: outline width.
        heat_cmap: backdrop colormap (see :func:`blend_heatmap`).

    Returns:
        uint8 ``(rows * (th + pad) + pad, cols * (tw + pad) + pad, 3)``.
    """
    image, maps = _as_image(image), _as_maps(maps)
    reps = _as_reps(representatives, maps.shape[0])
    if not reps:
        raise ValueError("representatives is empty; pass at least one slot index")
    colors = _colors(colors, len(reps))
    cols = cols or math.ceil(math.sqrt(len(reps)))
    rows = -(-len(reps) // cols)
    h, w = image.shape[:2]
    th = max(1, int(tile_height or h))
    tw = max(1, int(round(th * w / h)))
    out = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), WHITE, np.uint8)
    small = _resize(image, (th, tw))  # blend at tile size: the same picture, a fraction of the work
    for j, slot in enumerate(reps):
        tile = blend_heatmap(small, maps[slot], cmap=heat_cmap)
        _outline(tile, colors[j], border)
        r, c = divmod(j, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        out[y : y + th, x : x + tw] = tile
    return out


def render_slot_panel(
    maps: ArrayLike,
    representatives: Sequence[int] = (),
    *,
    colors: Optional[ArrayLike] = None,
    height: Optional[int] = None,
    cols: Optional[int] = None,
    pad: int = 2,
    cmap: str = "viridis",
    normalize: str = "map",
) -> np.ndarray:
    """All K dispatch maps in a grid at most ``height`` pixels tall, representatives outlined.

    Tiles fill the height; maps are enlarged by nearest neighbour (each map
    cell a block of pixels) or, when larger than a tile, area-averaged down.
    Tiles keep the maps' aspect ratio.

    Args:
        maps: ``(K, H, W)`` dispatch maps of one image.
        representatives: slots to outline, in ``colors`` order.
        colors: outline colours (default :func:`representative_colors`).
        height: panel height budget (default: 8 rows of at least 48 px).
        cols: maps per row (default ``ceil(sqrt(K))``: 8 for 64 slots).
        pad: white gap between tiles.
        cmap: matplotlib colormap of the maps.
        normalize: ``"map"`` (default): each map stretched to its own range, as
            in the paper's figures (the release's per-panel ``imshow`` does it);
            ``"image"``: all K maps share one range, so weak slots look dark.

    Returns:
        uint8 ``(rows * (th + pad) + pad, cols * (tw + pad) + pad, 3)``.
    """
    maps = _as_maps(maps)
    K, H, W = maps.shape
    reps = _as_reps(representatives, K)
    cols = cols or math.ceil(math.sqrt(K))
    rows = -(-K // cols)
    if height is None:
        cell = max(48, H)
    else:
        cell = max(1, (int(height) - pad) // rows - pad)
        size = (cell, max(1, int(round(cell * W / H))))
        if cell % H or size[1] % W:  # tiles that are not whole multiples of the maps: resample once
            # nearest keeps map cells as blocks; maps larger than a tile are averaged down
            if cell >= H:
                maps = maps[:, _nearest_index(size[0], H)][:, :, _nearest_index(size[1], W)]
            else:
                maps = upsample_maps(maps, size, mode="area")
            H, W = maps.shape[1:]
    return render_slot_grid(
        maps, cols=cols, cell=cell, pad=pad, cmap=cmap, normalize=normalize,
        highlight=reps, highlight_colors=_colors(colors, len(reps)) if reps else None,
    )


def fig4_panels(
    image: ArrayLike,
    maps: ArrayLike,
    representatives: Sequence[int],
    *,
    colors: Optional[ArrayLike] = None,
    height: Optional[int] = None,
    cols: Optional[int] = None,
    pad: int = 2,
    cmap: str = "viridis",
    heat_cmap: Optional[str] = None,
    normalize: str = "map",
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """The three panels of Fig. 4, each ``height`` pixels tall or less (default: the image's height).

    Returns:
        ``(image, slot grid, representatives)`` uint8 arrays; the last is
        ``None`` when ``representatives`` is empty.
    """
    image, maps = _as_image(image), _as_maps(maps)
    reps = _as_reps(representatives, maps.shape[0])
    colors = _colors(colors, len(reps)) if reps else None
    if height is not None and int(height) != image.shape[0]:
        view = resize_to_height(image, int(height))
    else:
        view = image
    ht = view.shape[0]
    grid = render_slot_panel(maps, reps, colors=colors, height=ht, cols=cols, pad=pad, cmap=cmap,
                             normalize=normalize)
    blends = None
    if reps:
        rcols = math.ceil(math.sqrt(len(reps)))
        rrows = -(-len(reps) // rcols)
        th = max(1, (ht - pad) // rrows - pad)
        blends = render_representatives(image, maps, reps, colors=colors, cols=rcols, tile_height=th, pad=pad,
                                        heat_cmap=heat_cmap)
    return view, grid, blends


def render_captioned(
    panels: Sequence[Optional[np.ndarray]], captions: Sequence[str], *, title: Optional[str] = None,
    gap: int = 8,
    font_size: int = 14,
) -> np.ndarray:
    """Panels side by side, each under its caption, with an optional title line over them all.

    Args:
        panels: uint8 ``(h, w, 3)`` arrays (``None`` entries are left out, with their caption).
        captions: one per panel.
        title: a line above everything (e.g. image, model and block).

    Returns:
        uint8 ``(H, W, 3)`` on white.
    """
    pairs = [(p, c) for p, c in zip(panels, captions) if p is not None]
    columns = [_stack([render_label(c, size=font_size), p], axis=0, gap=0, align="center") for p, c in pairs]
    row = _stack(columns, axis=1, gap=gap, align="start")
    if not title:
        return row
    return _stack([render_label(title, size=font_size + 2), row], axis=0, gap=gap // 2)


def fig4_captions(num_slots: int, num_representatives: int) -> Tuple[str, str, str]:
    """The panel captions of Fig. 4: ``("input", "64 dispatch maps", "4 representatives")``."""
    return ("input", f"{num_slots} dispatch maps", f"{num_representatives} representatives")


def render_fig4(
    image: ArrayLike,
    maps: ArrayLike,
    representatives: Sequence[int],
    *,
    gap: int = 8,
    captions: bool = False,
    title: Optional[str] = None,
    font_size: int = 14,
    **panel_kw,
) -> np.ndarray:
    """The paper's Fig. 4 for one image and block, as one uint8 array.

    input | K dispatch maps (representatives outlined) | representatives over the image.

    Args:
        image: uint8 ``(h, w, 3)`` pixels the model saw (any aspect ratio).
        maps: ``(K, H, W)`` dispatch maps of that image (``SlotRecord.dispatch_maps()[i]``).
        representatives: slot indices to outline, e.g. ``select_representatives(maps)``.
        gap: white pixels between panels.
        captions: a caption over each panel (:func:`fig4_captions`).
        title: a line over the figure; ``font_size``: of the captions (the title is 2 px larger).
        **panel_kw: ``colors``, ``height``, ``cols``, ``pad``, ``cmap``,
            ``heat_cmap``, ``normalize`` (see :func:`fig4_panels`).

    Returns:
        uint8 ``(height, width, 3)``; the height is the image's (or ``height``), plus
        the caption and title lines.
    """
    panels = fig4_panels(image, maps, representatives, **panel_kw)
    if not captions and not title:
        return _stack(panels, axis=1, gap=gap, align="center")
    names = fig4_captions(_as_maps(maps).shape[0], len(representatives)) if captions else ("", "", "")
    return render_captioned(panels, names, title=title, gap=gap, font_size=font_size)


def _check_series(maps_list: Sequence, representatives_list: Sequence, labels: Sequence, what: str) -> None:
    if not len(maps_list):
        raise ValueError(f"no maps given: pass one (K, H, W) array per {what}")
    if not (len(maps_list) == len(representatives_list) == len(labels)):
        raise ValueError(
            f"{len(maps_list)} maps, {len(representatives_list)} representative lists and "
            f"{len(labels)} labels; "
            f"give one of each per {what}"
        )


def render_depths(
    image: ArrayLike,
    maps_list: Sequence[ArrayLike],
    representatives_list: Sequence[Sequence[int]],
    labels: Sequence[str],
    *,
    gap: int = 8,
    font_size: int = 14,
    captions: bool = False,
    title: Optional[str] = None,
    **panel_kw,
) -> np.ndarray:
    """The paper's Fig. 5: one image, one Fig. 4 row per block, each row labelled on the left.

    Args:
        image: uint8 ``(h, w, 3)``.
        maps_list: one ``(K, H, W)`` array per block (grids may differ between blocks).
        representatives_list: one list of slot indices per block.
        labels: one label per row, e.g. ``"block 5"``.
        gap: white pixels between panels and rows.
        font_size: label size in pixels.
        captions: panel captions over the first row (:func:`fig4_captions`).
        title: a line over the figure.
        **panel_kw: see :func:`fig4_panels`.

    Returns:
        uint8 ``(rows * (height + gap) - gap, width, 3)``, plus the caption and title lines.
    """
    _check_series(maps_list, representatives_list, labels, "block")
    texts = [render_label(str(t), size=font_size) for t in labels]
    label_w = max(t.shape[1] for t in texts)
    rows = []
    for i, (maps, reps, text) in enumerate(zip(maps_list, representatives_list, texts)):
        row = render_fig4(image, maps, reps, gap=gap, captions=captions and i == 0, font_size=font_size,
                          **panel_kw)
        column = np.full((row.shape[0], label_w, 3), WHITE, np.uint8)
        y = max(0, (row.shape[0] - text.shape[0]) // 2)
        th = min(text.shape[0], row.shape[0])
        column[y : y + th, : text.shape[1]] = text[:th]
        rows.append(_stack([column, row], axis=1, gap=gap // 2))
    if title:
        rows.insert(0, render_label(title, size=font_size + 2))
    return _stack(rows, axis=0, gap=gap)


def _checkpoint_column(
    image: np.ndarray, maps: np.ndarray, reps: Sequence[int], *, height: int, show_representatives: bool,
    pad: int, cmap: str, heat_cmap: Optional[str], normalize: str, colors: Optional[ArrayLike], gap: int,
) -> np.ndarray:
    reps = _as_reps(reps, maps.shape[0])
    grid = render_slot_panel(maps, reps, colors=colors, height=height, pad=pad, cmap=cmap,
                             normalize=normalize)
    if not (show_representatives and reps):
        return grid
    h, w = image.shape[:2]
    tw = max(1, (grid.shape[1] - pad) // len(reps) - pad)
    th = max(1, int(round(tw * h / w)))
    strip = render_representatives(image, maps, reps, colors=colors, cols=len(reps), tile_height=th, pad=pad,
                                   heat_cmap=heat_cmap)
    return _stack([grid, strip], axis=0, gap=gap // 2)


def render_checkpoints(
    image: ArrayLike,
    maps_list: Sequence[ArrayLike],
    representatives_list: Sequence[Sequence[int]],
    labels: Sequence[str],
    *,
    show_representatives: bool = True,
    height: Optional[int] = None,
    gap: int = 8,
    font_size: int = 14,
    colors: Optional[ArrayLike] = None,
    pad: int = 2,
    cmap: str = "viridis",
    heat_cmap: Optional[str] = None,
    normalize: str = "map",
) -> np.ndarray:
    """Supplementary Figs. 6-8: one image's slots across checkpoints (e.g. epochs), in one labelled row.

    input | per checkpoint: its label above its slot grid (representatives
    outlined) and, with ``show_representatives``, a strip of the
    representatives over the image under it.

    Args:
        image: uint8 ``(h, w, 3)``.
        maps_list: one ``(K, H, W)`` array per checkpoint (same block).
        representatives_list: one list of slot indices per checkpoint.
        labels: one label per checkpoint, e.g. ``"epoch 10"``.
        show_representatives: add the blended representatives under each grid.
        height: height of the image and of each grid (default: the image's).
        gap: white pixels between columns; font_size: label size in pixels.
        colors, pad, cmap, heat_cmap, normalize: see :func:`fig4_panels`.

    Returns:
        uint8 ``(h', w', 3)``.
    """
    _check_series(maps_list, representatives_list, labels, "checkpoint")
    image = _as_image(image)
    view = resize_to_height(image, int(height)) if height else image
    ht = view.shape[0]
    columns = [_stack([render_label("input", size=font_size), view], axis=0, gap=0)]
    for maps, reps, label in zip(maps_list, representatives_list, labels):
        body = _checkpoint_column(
            image, _as_maps(maps), reps, height=ht, show_representatives=show_representatives, pad=pad,
            cmap=cmap, heat_cmap=heat_cmap, normalize=normalize, colors=colors, gap=gap,
        )
        columns.append(_stack([render_label(str(label), size=font_size), body], axis=0, gap=0))
    return _stack(columns, axis=1, gap=gap)


# ----------------------------------------------------------------------------- matplotlib versions


def _bare(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def array_figure(array: np.ndarray, *, title: Optional[str] = None, dpi: int = 100):
    """A uint8 image on a :class:`~matplotlib.figure.Figure` at its pixel size (e.g. to save as PDF).

    Shape:
        ``(h, w, 3)`` uint8 -> a Figure of ``w x h`` pixels at ``dpi`` (plus a title line).
    """
    from matplotlib.figure import Figure

    array = _as_image(array)
    h, w = array.shape[:2]
    extra = 0.3 if title else 0.0
    fig = Figure(figsize=(w / dpi, h / dpi + extra), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, h / dpi / (h / dpi + extra)))
    ax.imshow(array, interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, y=1 - 0.05 * extra / (h / dpi + extra), va="top", fontsize=10)
    return fig


def fig4_figure(
    image: ArrayLike,
    maps: ArrayLike,
    representatives: Sequence[int],
    *,
    title: Optional[str] = None,
    panel_height: float = 3.0,
    dpi: int = 100,
    **panel_kw,
):
    """The paper's Fig. 4 on a matplotlib Figure, with panel titles.

    Args:
        image, maps, representatives, **panel_kw: as :func:`render_fig4`.
        title: figure title (e.g. ``"block 10"``).
        panel_height: height of the panels in inches.
        dpi: figure resolution.

    Returns:
        :class:`matplotlib.figure.Figure` (not registered with pyplot).

    Shape:
        image ``(h, w, 3)``, maps ``(K, H, W)``.
    """
    from matplotlib.figure import Figure

    panels = [p for p in fig4_panels(image, maps, representatives, **panel_kw) if p is not None]
    ratios = [p.shape[1] / p.shape[0] for p in panels]
    K = _as_maps(maps).shape[0]
    names = ["input", f"{K} dispatch maps", f"{len(list(representatives))} representatives"][: len(panels)]
    size = (panel_height * sum(ratios) + 0.2 * len(panels), panel_height + 0.6 + (0.3 if title else 0))
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": ratios}, squeeze=False)[0]
    for ax, panel, name in zip(axes, panels, names):
        ax.imshow(panel, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        _bare(ax)
    if title:
        fig.suptitle(title)
    return fig


def depths_figure(
    image: ArrayLike,
    maps_list: Sequence[ArrayLike],
    representatives_list: Sequence[Sequence[int]],
    labels: Sequence[str],
    *,
    title: Optional[str] = None,
    panel_height: float = 2.5,
    dpi: int = 100,
    **panel_kw,
):
    """The paper's Fig. 5 on a matplotlib Figure: one row per block, labelled on the left.

    Args:
        image, maps_list, representatives_list, labels, **panel_kw: as :func:`render_depths`.
        title: figure title; panel_height: row height in inches; dpi: resolution.

    Returns:
        :class:`matplotlib.figure.Figure`.

    Shape:
        image ``(h, w, 3)``, each maps ``(K, H, W)``.
    """
    from matplotlib.figure import Figure

    _check_series(maps_list, representatives_list, labels, "block")
    rows = [[p for p in fig4_panels(image, m, r, **panel_kw) if p is not None]
            for m, r in zip(maps_list, representatives_list)]
    ncols = max(len(r) for r in rows)
    ratios = [max(r[j].shape[1] / r[j].shape[0] for r in rows if j < len(r)) for j in range(ncols)]
    size = (panel_height * sum(ratios) + 1.0, panel_height * len(rows) + 0.6 + (0.3 if title else 0))
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    axes = fig.subplots(len(rows), ncols, gridspec_kw={"width_ratios": ratios}, squeeze=False)
    names = ["input", "dispatch maps", "representatives"]
    for i, (panels, label) in enumerate(zip(rows, labels)):
        for j in range(ncols):
            ax = axes[i, j]
            _bare(ax)
            if j < len(panels):
                ax.imshow(panels[j], interpolation="nearest")
            if i == 0:
                ax.set_title(names[j], fontsize=10)
        axes[i, 0].set_ylabel(str(label), fontsize=11)
    if title:
        fig.suptitle(title)
    return fig


def checkpoints_figure(
    image: ArrayLike,
    maps_list: Sequence[ArrayLike],
    representatives_list: Sequence[Sequence[int]],
    labels: Sequence[str],
    *,
    title: Optional[str] = None,
    show_representatives: bool = True,
    panel_height: float = 2.5,
    dpi: int = 100,
    colors: Optional[ArrayLike] = None,
    pad: int = 2,
    cmap: str = "viridis",
    heat_cmap: Optional[str] = None,
    normalize: str = "map",
):
    """Supplementary Figs. 6-8 on a matplotlib Figure: input, then one titled column per checkpoint.

    Args:
        image, maps_list, representatives_list, labels, show_representatives,
        colors, pad, cmap, heat_cmap, normalize: as :func:`render_checkpoints`.
        title: figure title; panel_height: height of the grids in inches; dpi: resolution.

    Returns:
        :class:`matplotlib.figure.Figure`.

    Shape:
        image ``(h, w, 3)``, each maps ``(K, H, W)``.
    """
    from matplotlib.figure import Figure

    _check_series(maps_list, representatives_list, labels, "checkpoint")
    image = _as_image(image)
    panels = [image] + [
        _checkpoint_column(image, _as_maps(m), r, height=image.shape[0],
                           show_representatives=show_representatives, pad=pad, cmap=cmap,
                           heat_cmap=heat_cmap, normalize=normalize, colors=colors, gap=8)
        for m, r in zip(maps_list, representatives_list)
    ]
    tallest = max(p.shape[0] for p in panels)
    ratios = [p.shape[1] / tallest for p in panels]
    fig = Figure(figsize=(panel_height * sum(ratios) * tallest / image.shape[0] + 0.3 * len(panels),
                          panel_height * tallest / image.shape[0] + 0.6 + (0.3 if title else 0)),
                 dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), gridspec_kw={"width_ratios": ratios}, squeeze=False)[0]
    for ax, panel, name in zip(axes, panels, ["input"] + [str(t) for t in labels]):
        padded = np.full((tallest, panel.shape[1], 3), WHITE, np.uint8)
        padded[: panel.shape[0]] = panel
        ax.imshow(padded, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        _bare(ax)
    if title:
        fig.suptitle(title)
    return fig
