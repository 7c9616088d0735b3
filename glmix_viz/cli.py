"""``glmix-viz``: what the GLMix blocks of a GLNet group, for your images.

    glmix-viz photo.jpg --block 10                # Fig. 4 for the 10th GLMix block
    glmix-viz photo.jpg --figure depths           # Fig. 5: blocks 2, 5, 10 (spread over any depth)
    glmix-viz photos/ "more/*.png" --block all --figure hard --save-maps --out slots/
    glmix-viz --demo --format pdf                 # bundled image and weights, no download
    glmix-viz photos/ --device cuda --workers 4   # figures drawn and written in 4 processes
    glmix-viz evaluate --voc-root data/ --out eval/   # slots scored on VOC masks (evaluate --help)

Figures (``--figure``): ``fig4`` (default), per image and block
``NAME_bNN_fig4.EXT``: the input, all dispatch maps with ``--num-repr``
representatives (medoids of a k-medoids clustering of the maps) outlined, and those
representatives over the image; ``depths``, per image ``NAME_depths.EXT``: one
Fig. 4 row per block; ``hard``, per image and block ``NAME_bNN_groups.EXT``:
pixels coloured by their most likely slot. ``--save-maps`` adds ``NAME.npz``:
per block ``bNN_logits``, ``bNN_dispatch``, ``bNN_grid``, ``bNN_representatives``,
and ``blocks``, ``image``.

Weights: ``--checkpoint PATH`` if given; else the official file for ``--model``
in the torch hub cache (``~/.cache/torch/hub/checkpoints/NAME.pth``). A named
model without weights is an error; without ``--model``, ``glnet_stl`` gives way to
the bundled demo model, announced in one line.

``glmix-viz evaluate``: the first argument ``evaluate`` (not an image: write ``./evaluate`` for a file of
that name) scores the slots of every GLMix block on a VOC split's masks against same-size baselines and
writes ``metrics.json``, ``metrics.csv``, ``depths.png`` and ``report.html`` (``glmix-viz evaluate
--help``; docs/slot-metrics.md).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from ._clihelp import HelpFormatter, device_from_flag
from ._names import DEFAULT_MODEL, DEMO_IMAGE, FIGURES, FORMATS, OFFICIAL_MODELS
from .fileio import RunInterrupted, check_output_dir, sigterm_interrupts
from .memory import reuse_freed_memory

_logger = logging.getLogger("glmix_viz")


EVALUATE_MAX_WORKERS = 8
DEVICE_HELP = "auto (CUDA when available), cpu, cuda, cuda:1, ..."


def _model_flags(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--checkpoint``, ``--trust-checkpoint``: the same in ``glmix-viz`` and ``evaluate``."""
    p.add_argument("--model", default=None,
                   help=f"model name ({', '.join(OFFICIAL_MODELS)}, glnet_demo); its weights must be in the "
                   f"torch hub cache or given by --checkpoint (default: {DEFAULT_MODEL} if its weights are "
                   "in the hub cache, else the bundled demo model)")
    p.add_argument("--checkpoint", type=Path,
                   help="weights file (default: --model's file in the torch hub cache)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="read the checkpoint with Python's full pickle, which lets the file run any code on "
                   "this machine: only for files you made or fully trust (by default only tensors, arrays "
                   "and plain data are read, and other objects are skipped)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="glmix-viz",
        description="Render the semantic slots of GLNet's GLMix blocks for images. "
        "'glmix-viz evaluate --help': score them on VOC masks against baselines.",
        formatter_class=HelpFormatter,
        epilog="examples:\n" + "\n".join(line.replace("    glmix-viz", "  glmix-viz", 1)
                                          for line in (__doc__ or "").splitlines()
                                          if line.startswith("    glmix-viz")),
    )
    p.add_argument("images", nargs="*", help="image files, folders or glob patterns")
    p.add_argument("--demo", action="store_true", help="run on the bundled image (no download needed)")
    p.add_argument(
        "--block", action="append", default=None, metavar="N",
        help="GLMix block: 1-based ordinal in forward order, a module name, or 'all'; repeatable "
        "(default: the last GLMix block; for --figure depths 2, 5, 10 of 10 blocks, spread alike "
        "otherwise)",
    )
    p.add_argument("--figure", choices=FIGURES, default="fig4",
                   help="fig4: the paper's Fig. 4 per block; depths: Fig. 5, one row per block; "
                   "hard: each pixel coloured by its most likely slot")
    p.add_argument("--num-repr", type=int, default=4, metavar="K",
                   help="representative slots per block (k-medoids on the dispatch maps)")
    p.add_argument("--format", choices=FORMATS, default="png", help="output format (pdf via matplotlib)")
    p.add_argument("--scale", type=float, default=2.0,
                   help="PNG size: panels this many times the model input's height (0.25 to 8)")
    _model_flags(p)
    p.add_argument("--out", type=Path, default=Path("glmix-viz-out"), help="output folder")
    p.add_argument("--input-size", type=int, default=224, help="crop side (crop) or shorter side (whole)")
    p.add_argument("--resize", choices=("crop", "whole"), default="crop",
                   help="crop: the paper's evaluation centre crop; whole: keep the whole image")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="render and write the figures in N worker processes (one thread each) while this "
                   "process runs the model on the cores they leave: the same files, byte for byte, as 0 at "
                   "the same model thread count (default: 0, one image after the other in this process, the "
                   "better choice on 2 cores; docs/speed.md, 'Figure workers')")
    p.add_argument("--seed", type=int, default=0,
                   help="random state of the representatives' k-medoids (its default BUILD start is "
                   "deterministic and does not draw from it), the slot colours of --figure hard, and the "
                   "weights of an untrained fallback model")
    p.add_argument("--save-maps", action="store_true",
                   help="also write an .npz of slot logits, dispatch maps and representatives")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


EVALUATE = "evaluate"  # glmix-viz evaluate ...: the subcommand, when it comes first
_EVALUATE_EXAMPLES = """examples:
  glmix-viz evaluate --voc-root data/ --split val --out eval/            # every block, default model
  glmix-viz evaluate --voc-root data/ --demo --limit 50 --block 2,5,10   # bundled demo model, 50 images
  glmix-viz evaluate --voc-root data/ --model glnet_4g --device cuda --out eval-4g/
"""


def _evaluate_parser() -> argparse.ArgumentParser:
    """``glmix-viz evaluate``'s arguments (no image positionals)."""
    p = argparse.ArgumentParser(
        prog="glmix-viz evaluate",
        description="Score the hard slot maps (and their k representative groups) of GLMix blocks on a VOC "
        "split's masks: oracle mIoU, purity, ARI, FG-ARI, boundary precision/recall/F, segment and region "
        "counts, dispatch entropy, beside SLIC, a regular grid and k-means of the block's features with "
        "the same number of segments. Writes OUT/metrics.json, metrics.csv, depths.png and report.html "
        "(docs/slot-metrics.md).",
        formatter_class=HelpFormatter,
        epilog=_EVALUATE_EXAMPLES,
    )
    p.add_argument("--voc-root", type=Path, default=None, metavar="DIR",
                   help="VOC 2012 layout: the folder that holds VOCdevkit/ (required)")
    p.add_argument("--split", default="val", help="image list ImageSets/Segmentation/SPLIT.txt")
    p.add_argument("--limit", type=int, default=0, metavar="N",
                   help="the first N ids of the split (default: 0, every id)")
    p.add_argument("--demo", action="store_true", help="the bundled demo model (as --model glnet_demo)")
    _model_flags(p)
    p.add_argument("--block", action="append", default=None, metavar="N",
                   help="GLMix block: 1-based ordinal, a module name, or 'all'; repeatable or "
                   "comma-separated (default: all)")
    p.add_argument("--input-size", type=int, default=224,
                   help="the model sees the whole image, its shorter side this many px (as --resize whole)")
    p.add_argument("--groups", type=int, default=4, metavar="K",
                   help="representative groups per block (k-medoids of the slots)")
    p.add_argument("--gallery", type=int, default=6, metavar="N",
                   help="worst and best images each in the report's gallery (0: none)")
    p.add_argument("--seed", type=int, default=0,
                   help="random state of the groups' k-medoids, of k-means and of the slot colours "
                   "(default: 0)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="processes scoring the images while this one runs the model; the numbers do not "
                   f"depend on it (default: one per usable core, at most {EVALUATE_MAX_WORKERS}; 0 on one "
                   "core)")
    p.add_argument("--out", type=Path, default=Path("glmix-viz-eval"), help="output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, warnings only")
    p.add_argument("--version", action="version", version=f"glmix-viz {__version__}")
    return p


def _evaluate_workers(requested: Optional[int], images: int) -> int:
    """``evaluate --workers`` (``None``: one per usable core, at most :data:`EVALUATE_MAX_WORKERS`, none on
    one core; none for a single image), with this process's threads as :func:`_share_cores` sets them (the
    scoring is nine tenths of the work; the forward waits less than it)."""
    from ._pool import usable_cores

    cores = usable_cores()
    workers = requested if requested is not None else (min(cores, EVALUATE_MAX_WORKERS) if cores > 1 else 0)
    workers = workers if images > 1 else 0
    _share_cores(workers, "score the images")
    return workers


def _evaluate_main(argv: Sequence[str]) -> int:
    """``glmix-viz evaluate``: exit 0 ok, 1 some ids skipped (or none evaluated), 2 bad usage, 130
    interrupted."""
    args = _evaluate_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="glmix-viz: %(message)s")
    try:
        # checks that need no torch first
        if args.voc_root is None:
            raise ValueError("--voc-root: required: the folder that holds VOCdevkit/ (a VOC 2012 layout)")
        if args.limit < 0:
            raise ValueError(f"--limit {args.limit}: expected 0 (every id) or more")
        if args.groups < 1:
            raise ValueError(f"--groups {args.groups}: expected 1 or more")
        if args.gallery < 0:
            raise ValueError(f"--gallery {args.gallery}: expected 0 (no gallery) or more")
        if args.input_size < 32:
            raise ValueError(f"--input-size {args.input_size}: expected 32 or more (the network's stride)")
        if args.workers is not None and args.workers < 0:
            raise ValueError(f"--workers {args.workers}: expected 0 (score in this process) or more")
        if args.demo and (args.model not in (None, "glnet_demo") or args.checkpoint is not None):
            raise ValueError("--demo runs the bundled demo model; give it or --model/--checkpoint, not both")
        try:
            check_output_dir(args.out)
        except ValueError as err:
            raise ValueError(f"--out {err}") from None
        from .voc import VOCLayout

        try:
            layout = VOCLayout(args.voc_root)
        except FileNotFoundError as err:
            raise ValueError(f"--voc-root: {err}") from None
        try:
            ids = layout.ids(args.split)
        except FileNotFoundError as err:
            raise ValueError(f"--split: {err}") from None
        if args.limit:
            ids = ids[: args.limit]
        if not ids:
            raise ValueError(f"--split {args.split}: {layout.split_file(args.split)} lists no id")
        # torch, timm, matplotlib: only now
        from ._cli_run import build_model, select_blocks
        from .images import Preprocess

        config = Preprocess(input_size=args.input_size, mode="whole")
        device = device_from_flag(args.device)
        model, source = build_model("glnet_demo" if args.demo else args.model, args.checkpoint,
                                    trust=args.trust_checkpoint, seed=args.seed)
        (_logger.warning if source.fallback else _logger.info)(source.description)
        blocks = [b for spec in (args.block or []) for b in spec.split(",") if b]
        try:
            targets = select_blocks(model, blocks or ["all"])
        except ValueError as err:
            raise ValueError(f"--block {','.join(blocks)}: {err}") from None
    except (ValueError, FileNotFoundError) as err:
        print(f"glmix-viz: error: {err}", file=sys.stderr)
        return 2
    from ._cli_evaluate import run_command

    args.workers = _evaluate_workers(args.workers, len(ids))
    return run_command(args, layout, ids, model=model, source=source, blocks=[(o, n) for o, n, _ in targets],
                       config=config, device=device)


def _share_cores(workers: int, doing: str) -> None:
    """With workers (one thread each), this process's torch threads are the cores they leave (at least 1),
    so that the run never has more busy threads than cores; logged. Without workers torch's default stays."""
    import torch

    from ._pool import usable_cores

    if workers:
        torch.set_num_threads(max(1, usable_cores() - workers))
        threads = torch.get_num_threads()
        _logger.info("%d worker process%s %s; the model has %d torch thread%s", workers,
                     "es" * (workers != 1), doing, threads, "s" * (threads != 1))


def _workers(requested: int, images: int) -> int:
    """``--workers`` for ``images`` images (at most one per image), with this process's threads as
    :func:`_share_cores` sets them."""
    workers = min(requested, images)
    _share_cores(workers, "render and write the figures")
    return workers


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``glmix-viz``; returns the exit status (0 ok, 1 some images failed, 2 bad usage,
    130 interrupted: Ctrl-C or SIGTERM)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    reuse_freed_memory()
    try:
        with sigterm_interrupts():
            if argv[:1] == [EVALUATE]:
                return _evaluate_main(argv[1:])
            return _main(argv)
    except KeyboardInterrupt:
        print("glmix-viz: interrupted", file=sys.stderr)
        return 130


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="glmix-viz: %(message)s")
    images = list(args.images) + ([str(DEMO_IMAGE)] if args.demo else [])
    if not images:
        parser.error("give at least one IMAGE (file, folder or glob), or --demo")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.num_repr < 1:
        parser.error(f"--num-repr must be at least 1, got {args.num_repr}")
    if not 0.25 <= args.scale <= 8:
        parser.error(f"--scale must be between 0.25 and 8, got {args.scale}")
    if args.workers < 0:
        parser.error(f"--workers must be 0 (this process) or more, got {args.workers}")
    # torch, timm, matplotlib: only now
    from ._cli_run import build_model, run, select_blocks
    from ._pool import PoolStartError
    from .images import Preprocess, expand_image_paths

    try:
        config = Preprocess(input_size=args.input_size, mode=args.resize)
        device = device_from_flag(args.device)
        try:
            check_output_dir(args.out)
        except ValueError as err:
            raise ValueError(f"--out {err}") from None
        paths, unmatched = expand_image_paths(images)
        for item in unmatched:
            _logger.error("no image matches %s", item)
        model, source = build_model(args.model, args.checkpoint, trust=args.trust_checkpoint, seed=args.seed)
        (_logger.warning if source.fallback else _logger.info)(source.description)  # fallbacks always show
        blocks = [b for spec in (args.block or []) for b in spec.split(",") if b]
        select_blocks(model, blocks, args.figure)  # validate before any work
    except (ValueError, FileNotFoundError) as err:
        print(f"glmix-viz: error: {err}", file=sys.stderr)
        return 2
    import torch

    threads = torch.get_num_threads()
    workers = _workers(args.workers, len(paths))  # sets this process's torch threads, restored after
    try:
        written, skipped, failed, figures = run(
            paths, model=model, blocks=blocks or None, out=args.out, config=config, device=device,
            batch_size=args.batch_size, seed=args.seed, save_maps=args.save_maps,
            progress=not args.quiet and sys.stderr.isatty(), figure=args.figure, fmt=args.format,
            num_repr=args.num_repr,
            provenance={"model": source.weights.model, "checkpoint": source.weights.label},
            scale=args.scale, workers=workers,
        )
    except PoolStartError as err:
        print(f"glmix-viz: error: --workers {args.workers}: {err}", file=sys.stderr)
        return 1
    except RunInterrupted as stop:
        print(f"glmix-viz: interrupted after {stop.done} of {stop.total} images; the files written are "
              "complete (rerun to redo the rest)", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)
    skipped += len(unmatched)
    (_logger.warning if skipped or failed else _logger.info)(
        "%d figure%s written for %d image%s (%d skipped, %d failed) -> %s", figures, "s" * (figures != 1),
        written, "s" * (written != 1), skipped, failed, args.out,
    )
    return 1 if skipped or failed else 0


if __name__ == "__main__":
    sys.exit(main())
