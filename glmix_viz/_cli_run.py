"""What ``glmix-viz`` does once its arguments are read: build the model, capture slots, write figures.

Kept apart from :mod:`glmix_viz.cli` so that ``glmix-viz --help`` and
``--version`` import neither torch nor timm nor matplotlib.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import __version__
from ._clihelp import check_model_flag, weights_not_found
from ._names import DEFAULT_MODEL, FIGURES, FORMATS
from .analysis import select_representatives
from .capture import SlotCapture, resolve_blocks
from .figures import (
    array_figure,
    default_depth_blocks,
    depths_figure,
    fig4_figure,
    render_captioned,
    render_depths,
    render_fig4,
    render_hard_grouping,
    resize_to_height,
)
from .fileio import RunInterrupted, atomic_write
from .images import MIN_SIDE, Preprocess, load_image, preprocess
from .models import default_checkpoint_path
from .models.weights import Weights, WeightsNotFoundError, find_weights, load_model
from .untrusted import UntrustedPickleError

__all__ = ["ModelSource", "build_model", "select_blocks", "run"]

_logger = logging.getLogger("glmix_viz")
PNG_LEVEL = 1


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights came from.

    Attributes:
        description: one line for the log.
        weights: the model name and file (or the bundled demo weights);
            ``weights.fallback``: no model was named and ``glnet_stl`` has no
            weights here, so the bundled demo model stands in.
    """

    description: str
    weights: Weights

    @property
    def fallback(self) -> bool:
        return self.weights.fallback


def build_model(
    model_name: Optional[str], checkpoint: Optional[Path], *, trust: bool = False, seed: int = 0
) -> Tuple[torch.nn.Module, ModelSource]:
    """The model and where its weights came from (``model_name`` ``None``: ``glnet_stl``, else the demo)."""
    check_model_flag(model_name)
    try:
        weights = find_weights(model_name, checkpoint, default_model=DEFAULT_MODEL)
    except WeightsNotFoundError as err:
        raise weights_not_found(err, "--model glnet_demo (or --demo) runs the bundled demo model") from None
    try:
        model, weights, what = load_model(weights, weights_only=not trust, seed=seed)
    except UntrustedPickleError as err:
        raise ValueError(f"{err}. --trust-checkpoint reads it with full pickle, which lets it run any "
                         "code: only for a file you made or fully trust") from None
    if weights.fallback:
        hub_file = default_checkpoint_path(DEFAULT_MODEL)
        return model, ModelSource(f"no weights for {DEFAULT_MODEL} at {hub_file}: using {what}", weights)
    return model, ModelSource(what if weights.path is not None else f"using {what}", weights)


def select_blocks(model: torch.nn.Module, blocks: Optional[Sequence[str]], figure: str = "fig4"):
    """``--block`` values to ``(ordinal, name, block)``, in forward order.

    Default: the last GLMix block, or for ``figure="depths"`` the blocks of
    :func:`~glmix_viz.figures.default_depth_blocks`; ``all``: every block.
    """
    if not blocks:
        every = resolve_blocks(model)
        if figure == "depths":
            return resolve_blocks(model, default_depth_blocks(len(every)))
        return every[-1:]
    if "all" in blocks:
        return resolve_blocks(model)
    return resolve_blocks(model, list(blocks))


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


def _stems(paths: Sequence[Path]) -> List[str]:
    """Output names: file stems, made unique with the parent folder when they clash."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


def _render_one(
    name: str,
    view: np.ndarray,
    maps: Dict[int, np.ndarray],
    records: Sequence,
    index: int,
    *,
    out: Path,
    figure: str,
    fmt: str,
    num_repr: int,
    seed: int,
    save_maps: bool,
    provenance: Dict[str, str],
    scale: float = 2.0,
) -> int:
    """Write the figures (and the .npz) of one image; ``maps`` holds its dispatch maps by block ordinal.

    PNGs carry a title (image, model, checkpoint, block) and panel captions,
    their panels ``scale`` times the model input's height. Every file records
    ``provenance`` (model, checkpoint) and its blocks (``"ordinal:name"``): PNG
    text chunks, PDF metadata, ``.npz`` arrays.

    Returns:
        the number of figure files written.
    """
    names = {rec.ordinal: rec.name for rec in records}

    def meta(ordinals) -> Dict[str, str]:
        return {**provenance, "image": name, "block": ", ".join(f"{o}:{names[o]}" for o in ordinals)}

    need_reps = figure != "hard" or save_maps
    reps = {o: select_representatives(m, num_repr, seed=seed) for o, m in maps.items()} if need_reps else {}
    height = max(1, int(round(view.shape[0] * scale)))
    font = int(min(40, max(12, round(8 * scale))))
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
                groups = render_hard_grouping(view, m, seed=seed)
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
    if save_maps:
        arrays = {}
        for rec in records:
            tag = f"b{rec.ordinal:02d}"
            arrays[f"{tag}_logits"] = rec.logits[index].cpu().numpy()
            arrays[f"{tag}_dispatch"] = maps[rec.ordinal]
            arrays[f"{tag}_grid"] = np.array(rec.grid)
            arrays[f"{tag}_representatives"] = reps[rec.ordinal]
        arrays["blocks"] = np.array([f"{r.ordinal}:{r.name}" for r in records])
        arrays["image"] = view
        arrays.update({key: np.array(value) for key, value in provenance.items()})  # 0-d strings, no pickle

        def write_npz(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)

        atomic_write(out / f"{name}.npz", write_npz)
    return written


def run(
    paths: Sequence[Path],
    *,
    model: torch.nn.Module,
    blocks: Optional[List[str]],
    out: Path,
    config: Preprocess,
    device: torch.device,
    batch_size: int,
    seed: int,
    save_maps: bool,
    progress: bool,
    figure: str = "fig4",
    fmt: str = "png",
    num_repr: int = 4,
    provenance: Optional[Dict[str, str]] = None,
    scale: float = 2.0,
) -> Tuple[int, int, int, int]:
    """Render every image; returns ``(written, skipped, failed)`` image counts and the figure files written.

    ``provenance`` (e.g. ``{"model": ..., "checkpoint": ...}``) is recorded in
    every file written, with the image and block; PNG panels are ``scale``
    times the model input's height (see :func:`_render_one`).

    Unreadable files are skipped (logged by name); an image whose forward or
    figure fails counts as failed (logged by name); both make the command exit
    non-zero. Every file is written atomically (temporary file, then rename).
    """
    from tqdm import tqdm

    if figure not in FIGURES:
        raise ValueError(f"figure={figure!r}; choose one of {FIGURES}")
    if fmt not in FORMATS:
        raise ValueError(f"fmt={fmt!r}; choose one of {FORMATS}")
    if num_repr < 1:
        raise ValueError(f"num_repr={num_repr}: need at least 1 representative")
    if not 0.25 <= scale <= 8:
        raise ValueError(f"scale={scale}: expected 0.25 to 8 (times the model input's height)")
    targets = select_blocks(model, blocks, figure)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    written = skipped = failed = figures = 0
    names = _stems(paths)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="glmix-viz")
    queue: List[Tuple[str, Path, torch.Tensor, np.ndarray]] = []

    def flush() -> None:
        nonlocal written, failed, figures
        if not queue:
            return
        x = torch.stack([q[2] for q in queue]).to(device)
        try:
            with torch.inference_mode(), SlotCapture(model, [o for o, _, _ in targets]) as cap:
                model(x)
        except RuntimeError as err:
            _logger.error("failed on %s: %s", ", ".join(str(q[1]) for q in queue), err)
            failed += len(queue)
            bar.update(len(queue))
            queue.clear()
            return
        batch_maps = {rec.ordinal: rec.dispatch_maps().cpu().numpy() for rec in cap.records}
        for i, (name, path, _, view) in enumerate(queue):
            try:
                figures += _render_one(
                    name, view, {o: m[i] for o, m in batch_maps.items()}, cap.records, i, out=out,
                    figure=figure, fmt=fmt, num_repr=num_repr, seed=seed, save_maps=save_maps,
                    provenance=dict(provenance or {}), scale=scale,
                )
                written += 1
            except (ValueError, RuntimeError, OSError) as err:
                _logger.error("failed on %s: %s", path, err)
                failed += 1
            bar.update(1)
        queue.clear()

    try:
        for name, path in zip(names, paths):
            try:
                x, view = preprocess(load_image(path, min_side=MIN_SIDE), config)
            except (ValueError, FileNotFoundError) as err:
                _logger.error("skipped %s", err)
                skipped += 1
                bar.update(1)
                continue
            if queue and (x.shape != queue[0][2].shape or len(queue) >= batch_size):
                flush()
            queue.append((name, path, x, view))
        flush()
    except KeyboardInterrupt:
        raise RunInterrupted(written, len(paths)) from None
    finally:
        bar.close()
    return written, skipped, failed, figures
