"""Self-contained HTML pages (PNGs embedded as base64, numbers as JSON), and the figures and page of
``glmix-viz evaluate``.

The HTML helpers (:func:`finite`, :func:`png_bytes`, :func:`png_from_array`, :func:`img_tag`,
:func:`swatch`, :func:`json_script`) are shared with ``glmix-wsss report``. Everything here returns
bytes, strings, uint8 arrays or matplotlib Figures; nothing is written (the CLI writes the files).
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..analysis.evaluation import method_numbers
from ..voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE
from .paper import render_captioned
from .slots import render_slot_labels

__all__ = [
    "finite", "png_bytes", "png_from_array", "img_tag", "swatch", "json_script",
    "DPI", "OVERLAY_ALPHA", "METHOD_LABELS", "METRIC_LABELS", "class_overlay", "metrics_across_depth",
    "gallery_row", "GalleryEntry", "render_evaluation_page",
]

DPI = 100
OVERLAY_ALPHA = 0.55
METHOD_LABELS = {
    "slots": "hard slots", "slic": "SLIC", "grid": "grid", "kmeans": "k-means of features",
    "groups": "k groups", "groups_slic": "SLIC (groups' count)", "groups_grid": "grid (groups' count)",
}
"""Every method of ``glmix-viz evaluate`` (:data:`glmix_viz.analysis.evaluation.METHODS`), as shown."""
METRIC_LABELS = {
    "oracle_miou": "oracle mIoU (%)", "purity": "purity (%)", "ari": "ARI", "fg_ari": "FG-ARI",
    "boundary_precision": "boundary precision (%)", "boundary_recall": "boundary recall (%)",
    "boundary_f": "boundary F (%)", "segments": "segments", "regions": "regions", "entropy": "entropy (bits)",
}
"""Every number of a method, as shown."""
_STYLE = {  # method -> (colour, line style, marker)
    "slots": ("black", "-", "o"), "slic": ("tab:orange", "-", "^"), "grid": ("tab:grey", "-", "s"),
    "kmeans": ("tab:purple", "-", "D"), "groups": ("tab:blue", "--", "o"),
    "groups_slic": ("tab:orange", ":", "^"), "groups_grid": ("tab:grey", ":", "s"),
}


# ----------------------------------------------------------------------------- HTML helpers


def finite(value):
    """JSON for browsers: NaN and infinities as ``None`` (null), recursively (``json.dumps`` writes
    ``NaN``, which ``JSON.parse`` refuses)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """A matplotlib Figure rendered by the Agg canvas (no pyplot state) as PNG bytes, cropped tight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return buf.getvalue()


def png_from_array(array: np.ndarray) -> bytes:
    """A uint8 ``(H, W, 3)`` (or ``(H, W)``) array as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` as a base64 data URL (the page needs no other file)."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def swatch(rgb: Sequence[int]) -> str:
    """A small square of colour ``rgb`` (CSS class ``swatch``)."""
    r, g, b = (int(v) for v in rgb)
    return f'<span class="swatch" style="background: rgb({r}, {g}, {b})"></span>'


def json_script(data, element_id: str) -> str:
    """``data`` as ``<script type="application/json" id=...>``: NaN as null; ``<`` escaped, so nothing in it
    can end the element."""
    blob = json.dumps(finite(data), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{html.escape(element_id)}">{blob}</script>'


# ----------------------------------------------------------------------------- evaluate: figures


def class_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 blended with the VOC palette colours of ``mask`` ``(H, W)`` (255: the
    palette's void colour)."""
    colours = VOC_PALETTE[np.asarray(mask, np.uint8)].astype(np.float32)
    return np.round((1 - alpha) * np.asarray(image, np.float32) + alpha * colours).astype(np.uint8)


def _method_values(blocks: Sequence[Mapping], method: str, metric: str) -> List[float]:
    values = []
    for block in blocks:
        v = method_numbers(block, method).get(metric)
        values.append(float("nan") if v is None else float(v))
    return values


def metrics_across_depth(blocks: Sequence[Mapping], *, title: Optional[str] = None):
    """Every number of ``glmix-viz evaluate`` across depth: one panel per metric, the block ordinal on x,
    one line per method (slots and groups in blue-black, the baselines in their colours; the groups' and
    their baselines' dashed or dotted).

    Args:
        blocks: ``metrics.json``'s ``blocks`` (:meth:`~glmix_viz.analysis.SlotEvaluation.blocks`).
        title: a line over the panels.

    Returns:
        a matplotlib ``Figure`` (Agg canvas, no pyplot state).
    """
    from matplotlib.figure import Figure

    if not blocks:
        raise ValueError("blocks is empty: nothing to plot")
    x = [int(b["ordinal"]) for b in blocks]
    metrics = list(METRIC_LABELS)
    cols = 5
    rows = -(-len(metrics) // cols)
    fig = Figure(figsize=(3.0 * cols, 2.5 * rows + 0.9), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, metric in zip(axes.ravel(), metrics):
        methods = ("slots",) if metric == "entropy" else tuple(METHOD_LABELS)
        plotted = False
        for method in methods:
            values = _method_values(blocks, method, metric)
            if not any(math.isfinite(v) for v in values):
                continue
            colour, style, marker = _STYLE[method]
            ax.plot(x, values, linestyle=style, marker=marker, color=colour, markersize=4,
                    linewidth=2.0 if method == "slots" else 1.2, label=METHOD_LABELS[method])
            plotted = True
        if not plotted:
            ax.text(0.5, 0.5, "no instance masks" if metric == "fg_ari" else "no value", ha="center",
                    va="center", transform=ax.transAxes, color="grey")
        ax.set_title(METRIC_LABELS[metric], fontsize=10)
        ax.set_xticks(x)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        ax.set_xlabel("GLMix block", fontsize=8)
    for ax in axes.ravel()[len(metrics):]:
        ax.set_axis_off()
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _fit(array: np.ndarray, side: int, nearest: bool) -> np.ndarray:
    """An image or label map with its longer side ``side`` px (or less: never enlarged)."""
    from PIL import Image

    h, w = array.shape[:2]
    f = min(1.0, side / max(h, w))
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):
        return np.asarray(array)
    if nearest:
        rows = np.minimum((np.arange(size[1]) * h) // size[1], h - 1)
        cols = np.minimum((np.arange(size[0]) * w) // size[0], w - 1)
        return np.asarray(array)[rows[:, None], cols[None, :]]
    return np.asarray(Image.fromarray(np.asarray(array, np.uint8)).resize(size, Image.Resampling.LANCZOS))


def gallery_row(
    image: np.ndarray,
    mask: np.ndarray,
    slot_maps: Sequence[Tuple[str, np.ndarray, int]],
    oracle: np.ndarray,
    *,
    oracle_caption: str = "oracle labels",
    side: int = 200,
    seed: int = 0,
    font_size: int = 12,
) -> np.ndarray:
    """One gallery row: image | ground truth | hard slot maps | oracle labels, each panel's longer side
    ``side`` px, under its caption.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` ground truth (VOC palette; 255 void).
        slot_maps: ``(caption, (H, W) slot indices, K)`` per block, drawn as the ``hard`` figure
            (:func:`~glmix_viz.figures.render_slot_labels`, slot colours from ``seed``).
        oracle: ``(H, W)`` oracle labels (VOC palette; 255 unlabelled).

    Returns:
        uint8 ``(h, w, 3)`` on white.
    """
    small = _fit(image, side, nearest=False)
    panels = [small, class_overlay(small, _fit(mask, side, nearest=True))]
    captions = ["image", "ground truth"]
    for caption, labels, k in slot_maps:
        panels.append(render_slot_labels(small, _fit(labels, side, nearest=True), k, seed=seed))
        captions.append(caption)
    panels.append(class_overlay(small, _fit(oracle, side, nearest=True)))
    captions.append(oracle_caption)
    return render_captioned(panels, captions, gap=6, font_size=font_size)


# ----------------------------------------------------------------------------- evaluate: the page


@dataclass(frozen=True)
class GalleryEntry:
    """One image of the gallery.

    Attributes:
        image_id: the VOC id.
        kind: ``"worst"`` or ``"best"``.
        rank: 1-based within its kind.
        oracle_miou: the image's oracle mIoU (percent) at the gallery's block.
        row: uint8 ``(h, w, 3)`` (:func:`gallery_row`).
        classes: the classes in its ground truth (0..20).
    """

    image_id: str
    kind: str
    rank: int
    oracle_miou: float
    row: np.ndarray
    classes: Tuple[int, ...]


def _num(value, digits: int = 2) -> str:
    if value is None or not math.isfinite(float(value)):
        return "&ndash;"
    return f"{float(value):.{digits}f}"


_TABLE_COLUMNS = (("segments", 1), ("regions", 1), ("oracle_miou", 2), ("purity", 2), ("ari", 3),
                  ("fg_ari", 3), ("boundary_precision", 2), ("boundary_recall", 2), ("boundary_f", 2),
                  ("entropy", 2))


def _block_table(blocks: Sequence[Mapping]) -> str:
    head = "".join(f"<th>{html.escape(METRIC_LABELS[m])}</th>" for m, _ in _TABLE_COLUMNS)
    rows = [f'<table class="metrics">\n<tr><th>block</th><th class="method">method</th>{head}</tr>']
    for block in blocks:
        for i, method in enumerate(METHOD_LABELS):
            numbers = method_numbers(block, method)
            first = (f'<td rowspan="{len(METHOD_LABELS)}">{int(block["ordinal"])}<br><span class="note">'
                     f'{html.escape(str(block["name"]))}</span></td>' if i == 0 else "")
            cells = "".join(f"<td>{_num(numbers.get(m), d)}</td>" for m, d in _TABLE_COLUMNS)
            css = ' class="ours"' if method in ("slots", "groups") else ""
            rows.append(f'<tr{css} data-block="{int(block["ordinal"])}" data-method="{method}">{first}'
                        f'<td class="method">{html.escape(METHOD_LABELS[method])}</td>{cells}</tr>')
    return "\n".join(rows) + "\n</table>"


def _class_table(block: Mapping) -> str:
    head = "".join(f"<th>{html.escape(METHOD_LABELS[m])}</th>" for m in METHOD_LABELS)
    rows = [f'<table class="classes">\n<tr><th>class</th>{head}</tr>']
    for c, name in enumerate(VOC_CLASSES):
        values = [method_numbers(block, m)["iou"].get(name) for m in METHOD_LABELS]
        if all(v is None or not math.isfinite(v) for v in values):
            continue  # in no mask and no labelling
        cells = "".join(f"<td>{_num(v)}</td>" for v in values)
        rows.append(f"<tr><td>{swatch(VOC_PALETTE[c])}{html.escape(name)}</td>{cells}</tr>")
    return "\n".join(rows) + "\n</table>"


def _headline(block: Mapping) -> str:
    rows = ["<tr><th>method</th><th>segments</th><th>oracle mIoU (%)</th><th>purity (%)</th>"
            "<th>boundary F (%)</th><th>ARI</th></tr>"]
    for method, label in METHOD_LABELS.items():
        n = method_numbers(block, method)
        css = ' class="ours"' if method in ("slots", "groups") else ""
        rows.append(f"<tr{css}><td>{html.escape(label)}</td><td>{_num(n['segments'], 1)}</td>"
                    f"<td>{_num(n['oracle_miou'])}</td><td>{_num(n['purity'])}</td>"
                    f"<td>{_num(n['boundary_f'])}</td><td>{_num(n['ari'], 3)}</td></tr>")
    return "\n".join(rows)


def _legend() -> str:
    items = [f'<span class="item">{swatch(VOC_PALETTE[c])}{html.escape(name)}</span>'
             for c, name in enumerate(VOC_CLASSES)]
    items.append(f'<span class="item">{swatch(VOC_PALETTE[IGNORE_INDEX])}void / unlabelled (255)</span>')
    return "\n".join(items)


def _gallery(entries: Sequence[GalleryEntry], block: Mapping) -> str:
    if not entries:
        return '<p class="note">No image to show (--gallery 0, or no image scored).</p>'
    parts = []
    for kind in ("worst", "best"):
        chosen = [e for e in entries if e.kind == kind]
        parts.append(f'<h3 id="{kind}">{kind.capitalize()} {len(chosen)} by oracle mIoU at block '
                     f'{int(block["ordinal"])}</h3>')
        for e in chosen:
            classes = ", ".join(f"{swatch(VOC_PALETTE[c])}{html.escape(VOC_CLASSES[c])}" for c in e.classes
                                if 0 <= c < len(VOC_CLASSES))
            alt = f"{e.image_id}: image, ground truth, hard slots, oracle labels"
            parts.append(f'<figure class="{kind}" data-id="{html.escape(e.image_id)}">'
                         f"{img_tag(png_from_array(e.row), alt)}"
                         f"<figcaption>{kind} {e.rank}: {html.escape(e.image_id)}, oracle mIoU "
                         f"{_num(e.oracle_miou)}; classes: {classes or 'none'}</figcaption></figure>")
    return "\n".join(parts)


def render_evaluation_page(metrics: Mapping, *, depths_png: bytes, gallery: Sequence[GalleryEntry] = (),
                           gallery_block: Optional[int] = None) -> str:
    """``glmix-viz evaluate``'s report as one self-contained HTML page.

    Args:
        metrics: what ``metrics.json`` holds (``blocks``, ``model``, ``split``, ...); embedded as JSON
            (``<script type="application/json" id="evaluate-data">``).
        depths_png: the PNG of :func:`metrics_across_depth`.
        gallery: the worst and best images (:class:`GalleryEntry`).
        gallery_block: the block the gallery ranks by (default: the last).
    """
    blocks = list(metrics["blocks"])
    by_ordinal = {int(b["ordinal"]): b for b in blocks}
    last = by_ordinal.get(gallery_block, blocks[-1]) if gallery_block is not None else blocks[-1]
    split = metrics.get("split", "?")
    subtitle = (f"{metrics.get('model', '?')} ({metrics.get('checkpoint', '?')}); VOC split {split}, "
                f"{metrics.get('images', '?')} images; input: whole image, shorter side "
                f"{metrics.get('input_size', '?')} px; {metrics.get('groups_k', '?')} groups; "
                f"{metrics.get('tool', 'glmix-viz')}")
    page = Template(resources.files("glmix_viz").joinpath("templates/evaluate.html").read_text(
        encoding="utf-8"))
    return page.substitute(
        generator=html.escape(str(metrics.get("tool", "glmix-viz"))),
        title=html.escape(f"Slot segmentations of {split}"),
        subtitle=html.escape(subtitle),
        last_block=html.escape(f"{int(last['ordinal'])} ({last['name']})"),
        headline=_headline(last),
        depths_figure=img_tag(depths_png, "every metric across depth, slots and baselines"),
        block_table=_block_table(blocks),
        class_table=_class_table(last),
        legend=_legend(),
        gallery_section=_gallery(gallery, last),
        data=json_script(metrics, "evaluate-data"),
    )
