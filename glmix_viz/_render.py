"""One image's ``glmix-viz`` files from its arrays: figures (PNG/PDF) and ``.npz``.

Shared by the main process (``--workers 0``) and the worker processes of
``--workers N`` (:func:`worker_init`, :func:`worker_task`), so both write the
same bytes. Everything here takes numpy arrays and plain records: what the
model computed travels to a worker pickled by value. Matplotlib is imported
by the figure functions only, when a PDF is drawn.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from . import __version__
from .analysis import select_representatives
from .figures import (
    array_figure,
    depths_figure,
    fig4_figure,
    render_captioned,
    render_depths,
    render_fig4,
    render_hard_grouping,
    resize_to_height,
)
from .fileio import atomic_write

__all__ = ["PNG_LEVEL", "RenderSettings", "ImageArrays", "render_image", "figures_per_image", "output_names",
           "worker_init", "worker_task"]

PNG_LEVEL = 1


@dataclass(frozen=True)
class RenderSettings:
    """What every image of a run shares (a worker's state).

    Attributes:
        out: output folder (exists).
        blocks: ``(ordinal, module name)`` of the captured blocks, in forward order.
        provenance: recorded in every file (e.g. ``{"model": ..., "checkpoint": ...}``).
    """

    out: Path
    blocks: Tuple[Tuple[int, str], ...]
    figure: str = "fig4"
    fmt: str = "png"
    num_repr: int = 4
    seed: int = 0
    save_maps: bool = False
    provenance: Dict[str, str] = field(default_factory=dict)
    scale: float = 2.0


@dataclass(frozen=True)
class ImageArrays:
    """One image, after the forward.

    Attributes:
        name: output name (``NAME_bNN_fig4.png``, ...).
        view: ``(h, w, 3)`` uint8, the image as the model saw it.
        maps: block ordinal -> ``(K, H, W)`` float32 dispatch maps, in forward order.
        grids: block ordinal -> ``(H, W)``, the token grid.
        logits: block ordinal -> ``(K, H*W)`` float32 slot logits (``--save-maps`` only, else ``None``).
    """

    name: str
    view: np.ndarray
    maps: Dict[int, np.ndarray]
    grids: Dict[int, Tuple[int, int]]
    logits: Optional[Dict[int, np.ndarray]] = None


def _save_png(path: Path, array: np.ndarray, meta: Dict[str, str]) -> None:
    """A PNG whose text chunks record what made it (``meta``: model, checkpoint, block...)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in {**meta, "Software": f"glmix-viz {__version__}"}.items():
        info.add_itxt(key, value)
    # zlib level 1: 4.5x faster than Pillow's default 6 on a --scale 2 Fig. 4 (41 vs 183 ms), 12% larger
    # (benchmarks/bench_figures.py)
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info,
                                                               compress_level=PNG_LEVEL))


def _save_figure(path: Path, fig, meta: Dict[str, str]) -> None:
    """A matplotlib figure; PDF metadata: ``Subject`` holds ``meta`` as ``key=value; ...``."""
    subject = "; ".join(f"{k}={v}" for k, v in meta.items())
    metadata = {"Subject": subject, "Creator": f"glmix-viz {__version__}"}
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix[1:], metadata=metadata))


def figures_per_image(figure: str, blocks: int) -> int:
    """Figure files :func:`render_image` writes for one image: one per block, one for ``depths``."""
    return 1 if figure == "depths" else blocks


def output_names(name: str, settings: RenderSettings) -> List[str]:
    """The file names :func:`render_image` writes for image ``name`` (in ``settings.out``)."""
    fmt = settings.fmt
    if settings.figure == "depths":
        files = [f"{name}_depths.{fmt}"]
    else:
        kind = "fig4" if settings.figure == "fig4" else "groups"
        files = [f"{name}_b{o:02d}_{kind}.{fmt}" for o, _ in settings.blocks]
    return files + ([f"{name}.npz"] if settings.save_maps else [])


def render_image(image: ImageArrays, settings: RenderSettings) -> int:
    """Write the figures (and with ``save_maps`` the ``.npz``) of one image.

    PNGs carry a title (image, model, checkpoint, block) and panel captions,
    their panels ``scale`` times the model input's height. Every file records
    ``provenance`` (model, checkpoint) and its blocks (``"ordinal:name"``): PNG
    text chunks, PDF metadata, ``.npz`` arrays. Each file is written
    atomically (a temporary ``.NAME...`` file beside it, then renamed).

    Returns:
        the number of figure files written (:func:`figures_per_image`).
    """
    name, view, maps = image.name, image.view, image.maps
    s = settings
    out, figure, fmt, provenance = s.out, s.figure, s.fmt, s.provenance
    names = dict(s.blocks)

    def meta(ordinals) -> Dict[str, str]:
        return {**provenance, "image": name, "block": ", ".join(f"{o}:{names[o]}" for o in ordinals)}

    reps: Dict[int, np.ndarray] = {}
    if figure != "hard" or s.save_maps:
        reps = {o: select_representatives(m, s.num_repr, seed=s.seed) for o, m in maps.items()}
    height = max(1, int(round(view.shape[0] * s.scale)))
    font = int(min(40, max(12, round(8 * s.scale))))
    who = f"{provenance.get('model', '?')} ({provenance.get('checkpoint', '?')})"
    written = 0
    if figure == "depths":
        ordinals = sorted(maps)
        labels = [f"block {o}" for o in ordinals]
        path = out / f"{name}_depths.{fmt}"
        block_maps, block_reps = [maps[o] for o in ordinals], [reps[o] for o in ordinals]
        if fmt == "png":
            title = f"{name} | {who} | blocks " + ", ".join(f"{o} ({names[o]})" for o in ordinals)
            _save_png(path, render_depths(view, block_maps, block_reps, labels, captions=True, title=title,
                                          height=height, font_size=font), meta(ordinals))
        else:
            _save_figure(path, depths_figure(view, block_maps, block_reps, labels, title=name),
                         meta(ordinals))
        written += 1
    else:
        for o, m in maps.items():
            title = f"{name} | {who} | block {o} ({names[o]})"
            if figure == "fig4":
                path = out / f"{name}_b{o:02d}_fig4.{fmt}"
                if fmt == "png":
                    _save_png(path, render_fig4(view, m, reps[o], captions=True, title=title, height=height,
                                                font_size=font), meta([o]))
                else:
                    _save_figure(path, fig4_figure(view, m, reps[o], title=title), meta([o]))
            else:
                path = out / f"{name}_b{o:02d}_groups.{fmt}"
                groups = render_hard_grouping(view, m, seed=s.seed)
                panels = [resize_to_height(view, height),
                          resize_to_height(groups, height, nearest=True)]
                captions = ["input", f"each pixel's most likely of {m.shape[0]} slots"]
                if fmt == "png":
                    _save_png(path, render_captioned(panels, captions, title=title, font_size=font),
                              meta([o]))
                else:
                    _save_figure(path, array_figure(render_captioned(panels, captions), title=title),
                                 meta([o]))
            written += 1
    if s.save_maps:
        if image.logits is None:
            raise ValueError(f"{name}: save_maps needs the slot logits")
        arrays = {}
        for o in maps:  # forward order
            tag = f"b{o:02d}"
            arrays[f"{tag}_logits"] = image.logits[o]
            arrays[f"{tag}_dispatch"] = maps[o]
            arrays[f"{tag}_grid"] = np.array(image.grids[o])
            arrays[f"{tag}_representatives"] = reps[o]
        arrays["blocks"] = np.array([f"{o}:{names[o]}" for o in maps])
        arrays["image"] = view
        arrays.update({key: np.array(value) for key, value in provenance.items()})  # 0-d strings, no pickle

        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        atomic_write(out / f"{name}.npz", write_npz)
    return written


def worker_init(settings: RenderSettings) -> RenderSettings:
    """A ``--workers`` process's start: one thread for torch and the BLAS (the run shares out the cores)."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        pass
    else:
        threadpool_limits(1)
    logging.basicConfig(level=logging.WARNING, format="glmix-viz worker: %(message)s")
    return settings


def worker_task(settings: RenderSettings, image: ImageArrays) -> None:
    """One image's files in a worker (:class:`glmix_viz._pool.WorkerPool` reports its error, if any)."""
    render_image(image, settings)
