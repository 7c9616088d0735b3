"""What ``glmix-viz`` does once its arguments are read: build the model, capture slots, write figures.

Kept apart from :mod:`glmix_viz.cli` so that ``glmix-viz --help`` and
``--version`` import neither torch nor timm nor matplotlib.
"""
from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._clihelp import check_model_flag, weights_not_found
from ._names import DEFAULT_MODEL, FIGURES, FORMATS
from ._pool import TaskResult, WorkerPool
from ._render import (
    ImageArrays,
    RenderSettings,
    figures_per_image,
    output_names,
    render_image,
    worker_init,
    worker_task,
)
from .capture import SlotCapture, resolve_blocks
from .figures import default_depth_blocks
from .fileio import RunInterrupted
from .images import MIN_SIDE, Preprocess, load_image, preprocess
from .models import default_checkpoint_path
from .models.weights import Weights, WeightsNotFoundError, find_weights, load_model
from .untrusted import UntrustedPickleError

__all__ = ["ModelSource", "build_model", "select_blocks", "run"]

_logger = logging.getLogger("glmix_viz")


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


def _stems(paths: Sequence[Path]) -> List[str]:
    """Output names: file stems, made unique with the parent folder when they clash."""
    stems = [p.stem for p in paths]
    return [f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]


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
    workers: int = 0,
) -> Tuple[int, int, int, int]:
    """Render every image; returns ``(written, skipped, failed)`` image counts and the figure files written.

    ``provenance`` (e.g. ``{"model": ..., "checkpoint": ...}``) is recorded in
    every file written, with the image and block; PNG panels are ``scale``
    times the model input's height (see :func:`glmix_viz._render.render_image`).

    ``workers`` 0: each image's figures are rendered and written here, after
    its batch's forward. N > 0: this process loads the images and runs the
    forwards; N ``spawn``ed worker processes render and write the files
    (:mod:`glmix_viz._pool`, at most ``2 N`` images in flight), the same bytes.
    This process keeps the caller's torch threads (``glmix-viz`` gives it the
    cores the workers leave). A script calling this with workers needs the
    ``if __name__ == "__main__":`` guard.

    Unreadable files are skipped (logged by name); an image whose forward or
    figure fails counts as failed (logged by name); both make the command exit
    non-zero. Every file is written atomically (temporary file, then rename);
    an interrupt (:class:`~glmix_viz.fileio.RunInterrupted`) stops the workers
    and leaves no temporary file.
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
    if workers < 0:
        raise ValueError(f"workers={workers}: expected 0 (render in this process) or more")
    targets = select_blocks(model, blocks, figure)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    settings = RenderSettings(out, tuple((o, n) for o, n, _ in targets), figure=figure, fmt=fmt,
                              num_repr=num_repr, seed=seed, save_maps=save_maps,
                              provenance=dict(provenance or {}), scale=scale)
    per_image = figures_per_image(figure, len(targets))
    written = skipped = failed = figures = 0
    names = _stems(paths)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="glmix-viz")
    queue: List[Tuple[int, Path, torch.Tensor, np.ndarray]] = []  # (index in paths, path, input, view)
    held: Dict[int, Path] = {}  # submitted to the workers, not finished: index in paths -> path
    pool: Optional[WorkerPool] = None

    def finished(results: List[TaskResult]) -> None:
        nonlocal written, failed, figures
        for key, error in results:
            path = held.pop(key)
            if error is None:
                written += 1
                figures += per_image
            else:
                _logger.error("failed on %s: %s", path, error)
                failed += 1
            bar.update(1)

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
        batch_logits = {rec.ordinal: rec.logits.cpu().numpy() for rec in cap.records} if save_maps else None
        grids = {rec.ordinal: tuple(rec.grid) for rec in cap.records}
        for i, (index, path, _, view) in enumerate(queue):
            image = ImageArrays(names[index], view, {o: m[i] for o, m in batch_maps.items()}, grids,
                                None if batch_logits is None else {o: v[i] for o, v in batch_logits.items()})
            if pool is not None:
                held[index] = path
                pool.submit(index, image)  # waits while the workers are full
                finished(pool.results())
                continue
            try:
                figures += render_image(image, settings)
                written += 1
            except (ValueError, RuntimeError, OSError) as err:
                _logger.error("failed on %s: %s", path, err)
                failed += 1
            bar.update(1)
        queue.clear()

    try:
        if workers and paths:
            # started now, so that the workers import while this process loads images and runs the model
            pool = WorkerPool(min(workers, len(paths)), worker_init, (settings,), worker_task,
                              name="glmix-viz-worker")
        for index, path in enumerate(paths):
            try:
                x, view = preprocess(load_image(path, min_side=MIN_SIDE), config)
            except (ValueError, FileNotFoundError) as err:
                _logger.error("skipped %s", err)
                skipped += 1
                bar.update(1)
                continue
            if queue and (x.shape != queue[0][2].shape or len(queue) >= batch_size):
                flush()
            queue.append((index, path, x, view))
            if pool is not None:
                finished(pool.results())
        flush()
        if pool is not None:
            finished(pool.wait_all())
            pool.close()
    except KeyboardInterrupt:
        if pool is not None:
            _stop(pool, finished, [names[i] for i in held], settings)
        raise RunInterrupted(written, len(paths)) from None
    except BaseException:
        if pool is not None:
            _stop(pool, finished, [names[i] for i in held], settings)
        raise
    finally:
        bar.close()
    return written, skipped, failed, figures


def _stop(pool: WorkerPool, finished: Callable[[List[TaskResult]], None], held: Sequence[str],
          settings: RenderSettings) -> None:
    """Count what the workers finished, stop them, and remove the temporary files of the images they held
    (a worker killed without unwinding leaves its atomic write's ``.NAME.*`` file)."""
    try:
        finished(pool.results())
    finally:
        pool.terminate()
        for name in held:
            for file in output_names(name, settings):
                for tmp in settings.out.glob(f".{glob.escape(file)}.*"):
                    tmp.unlink(missing_ok=True)
