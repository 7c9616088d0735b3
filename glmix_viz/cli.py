"""``glmix-viz``: what the GLMix blocks of a GLNet group, for your images.

    glmix-viz photo.jpg --block 10                # slots of the 10th GLMix block
    glmix-viz photos/ "more/*.png" --block all --save-maps --out slots/
    glmix-viz --demo                              # bundled image and weights, no download

Weights: ``--checkpoint PATH`` if given; else the official file for ``--model``
in the torch hub cache (``~/.cache/torch/hub/checkpoints/NAME.pth``); else the
bundled fallback model, announced in one line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import __version__
from .capture import SlotCapture, resolve_blocks
from .figures import render_hard_grouping, render_slot_grid
from .images import Preprocess, expand_image_paths, load_image, preprocess
from .models import OFFICIAL_MODELS, default_checkpoint_path, load_checkpoint
from .models.demo import load_demo_model

_logger = logging.getLogger("glmix_viz")

DEMO_IMAGE = Path(__file__).parent / "data" / "demo_cat.jpg"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glmix-viz",
        description="Render the semantic slots of GLNet's GLMix blocks for images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("--demo", action="store_true", help="run on the bundled image (no download needed)")
    p.add_argument(
        "--block", action="append", default=None, metavar="N",
        help="GLMix block: 1-based ordinal in forward order, a module name, or 'all'; repeatable "
        "(default: the last GLMix block)",
    )
    p.add_argument("--model", default="glnet_stl", help=f"model name ({', '.join(OFFICIAL_MODELS)}, ...)")
    p.add_argument("--checkpoint", type=Path, help="weights file (default: the torch hub cache)")
    p.add_argument("--trust-checkpoint", action="store_true", help="fully unpickle the checkpoint (trusted files only)")
    p.add_argument("--out", type=Path, default=Path("glmix-viz-out"), help="output folder")
    p.add_argument("--input-size", type=int, default=224, help="crop side (crop) or shorter side (whole)")
    p.add_argument("--resize", choices=("crop", "whole"), default="crop",
                   help="crop: the paper's evaluation centre crop; whole: keep the whole image")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="seed for slot colours (and an untrained fallback model)")
    p.add_argument("--save-maps", action="store_true", help="also write an .npz of slot logits and dispatch maps")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    return device


def build_model(
    model_name: str, checkpoint: Optional[Path], *, trust: bool = False, seed: int = 0
) -> Tuple[torch.nn.Module, str]:
    """The model and a one-line description of where its weights came from."""
    import timm

    if model_name not in timm.list_models("*glnet*"):
        raise ValueError(f"--model {model_name!r} is not a GLNet; choose from {timm.list_models('*glnet*')}")
    if checkpoint is not None:
        model = timm.create_model(model_name)
        load_checkpoint(model, checkpoint, name=model_name, weights_only=not trust)
        return model, f"{model_name} from {checkpoint}"
    hub_file = default_checkpoint_path(model_name)
    if hub_file.is_file():
        model = timm.create_model(model_name)
        load_checkpoint(model, hub_file, name=model_name, weights_only=not trust)
        return model, f"{model_name} from {hub_file}"
    model, what = load_demo_model(seed=seed)
    return model, f"no weights for {model_name} at {hub_file}: using {what}"


def select_blocks(model: torch.nn.Module, blocks: Optional[Sequence[str]]):
    """``--block`` values to ``(ordinal, name, block)``: default the last GLMix block, ``all`` every one."""
    if not blocks:
        return resolve_blocks(model)[-1:]
    if "all" in blocks:
        return resolve_blocks(model)
    return resolve_blocks(model, list(blocks))


def _atomic_write(path: Path, write) -> None:
    """Write via a temporary file in the same folder, then rename: no half-written outputs."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    _atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


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
) -> Tuple[int, int, int]:
    """Render every image; returns ``(written, skipped, failed)`` image counts.

    Unreadable files are skipped (logged by name); a batch whose forward fails
    counts as failed; both make the command exit non-zero.
    """
    from tqdm import tqdm

    targets = select_blocks(model, blocks)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device).eval()
    written = skipped = failed = 0
    names = _stems(paths)
    bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="glmix-viz")
    queue: List[Tuple[str, Path, torch.Tensor, np.ndarray]] = []

    def flush() -> None:
        nonlocal written, failed
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
        for i, (name, _, _, view) in enumerate(queue):
            arrays = {}
            for rec in cap.records:
                maps = rec.dispatch_maps()[i].cpu().numpy()
                tag = f"b{rec.ordinal:02d}"
                _save_png(out / f"{name}_{tag}_slots.png", render_slot_grid(maps))
                _save_png(out / f"{name}_{tag}_groups.png", render_hard_grouping(view, maps, seed=seed))
                if save_maps:
                    arrays[f"{tag}_logits"] = rec.logits[i].cpu().numpy()
                    arrays[f"{tag}_dispatch"] = maps
                    arrays[f"{tag}_grid"] = np.array(rec.grid)
            if save_maps:
                arrays["blocks"] = np.array([f"{r.ordinal}:{r.name}" for r in cap.records])
                arrays["image"] = view
                _atomic_write(out / f"{name}.npz", lambda tmp: np.savez_compressed(open(tmp, "wb"), **arrays))
            written += 1
        bar.update(len(queue))
        queue.clear()

    for name, path in zip(names, paths):
        try:
            x, view = preprocess(load_image(path), config)
        except (ValueError, FileNotFoundError) as err:
            _logger.error("skipped %s", err)
            skipped += 1
            bar.update(1)
            continue
        if queue and (x.shape != queue[0][2].shape or len(queue) >= batch_size):
            flush()
        queue.append((name, path, x, view))
    flush()
    bar.close()
    return written, skipped, failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``glmix-viz``; returns the exit status (0 ok, 1 some images failed, 2 bad usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="glmix-viz: %(message)s")
    images = list(args.images) + ([str(DEMO_IMAGE)] if args.demo else [])
    if not images:
        parser.error("give at least one IMAGE (file, folder or glob), or --demo")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        config = Preprocess(input_size=args.input_size, mode=args.resize)
        device = _device(args.device)
        paths, unmatched = expand_image_paths(images)
        for item in unmatched:
            _logger.error("no image matches %s", item)
        model, origin = build_model(args.model, args.checkpoint, trust=args.trust_checkpoint, seed=args.seed)
        (_logger.warning if "UNTRAINED" in origin else _logger.info)(origin)
        blocks = [b for spec in (args.block or []) for b in spec.split(",") if b]
        select_blocks(model, blocks)  # validate before any work
    except (ValueError, FileNotFoundError) as err:
        print(f"glmix-viz: error: {err}", file=sys.stderr)
        return 2
    written, skipped, failed = run(
        paths, model=model, blocks=blocks or None, out=args.out, config=config, device=device,
        batch_size=args.batch_size, seed=args.seed, save_maps=args.save_maps,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    skipped += len(unmatched)
    _logger.info("%d written, %d skipped, %d failed -> %s", written, skipped, failed, args.out)
    return 1 if skipped or failed else 0


if __name__ == "__main__":
    sys.exit(main())
