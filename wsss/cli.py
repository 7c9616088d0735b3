"""``glmix-wsss``: weakly-supervised semantic segmentation with GLNet slots.

    glmix-wsss make-emojivoc --out data/emojivoc --train 3000 --val 500 --seed 0
    glmix-wsss train --voc-root data/emojivoc --model glnet_demo --out runs/demo
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence, Set

from glmix_viz import __version__
from glmix_viz._clihelp import HelpFormatter
from glmix_viz.fields import FieldError
from glmix_viz.fileio import RunInterrupted, check_output_dir, sigterm_interrupts
from glmix_viz.memory import reuse_freed_memory

from .voc import LABEL_SOURCES

# The settings library errors name (glmix_viz.fields.FieldError), as the flags that set them.
FLAGS = {
    "EvidenceConfig.scales": "--scales",
    "EvidenceConfig.weights": "--scale-weights",
    "EvidenceConfig.stitch": "--stitch",
    "EvidenceConfig.fit": "--scales (m)",
    "EvidenceConfig.flip": "--no-flip",
    "SlotRefineParams.blocks": "--blocks",
    "SlotRefineParams.mix": "--slot-mix",
    "SlotRefineParams.sharpness": "--slot-sharpness",
    "SlotRefineParams.baseline": "--slot-baseline",
    "PseudoLabelConfig.slots": "--method",
    "PseudoLabelConfig.classifier": "--slot-classifier",
    "SlotClassifierParams.foreground": "--seed-fg",
    "SlotClassifierParams.background": "--seed-bg",
    "SlotClassifierParams.weight": "--classifier-weight",
    "PseudoLabelConfig.background": "--bg/--confident",
    "BackgroundParams.method": "--bg",
    "BackgroundParams.threshold": "--bg-threshold",
    "BackgroundParams.power": "--bg-power",
    "ConfidentRegions.foreground": "--confident FG",
    "ConfidentRegions.background": "--confident BG",
    "PseudoLabelConfig.crf": "--crf",
    "CRFParams.iterations": "--crf-iterations",
    "PseudoLabelConfig.regions": "--region-relabel",
    "RegionParams.margin": "--region-margin",
    "TrainConfig.mosaic": "--mosaic",
    "TrainConfig.input_size": "--input-size",
}

_EXAMPLES = {
    "glmix-wsss": """examples:
  glmix-wsss make-emojivoc --out data/emojivoc --train 240 --val 40
  glmix-wsss pseudo-labels --voc-root data/emojivoc --split train --out pl/
  glmix-wsss score --voc-root data/emojivoc --split train --pred pl/

COMMAND --help shows each command's options.""",
    "make-emojivoc": """examples:
  glmix-wsss make-emojivoc --out data/emojivoc --train 3000 --val 500 --seed 0 --workers 2""",
    "train": """examples:
  glmix-wsss train --voc-root data/emojivoc --model glnet_demo --out runs/demo
  glmix-wsss train --voc-root ~/data/VOC --train-split train_aug --model glnet_stl \\
      --init-checkpoint ~/.cache/torch/hub/checkpoints/glnet_stl.pth --out runs/stl
  glmix-wsss train --voc-root data/emojivoc --out runs/demo --resume      # after an interruption""",
    "pseudo-labels": """examples:
  glmix-wsss pseudo-labels --voc-root data/emojivoc --split train --out pl/     # bundled demo model
  glmix-wsss pseudo-labels --voc-root ~/data/VOC --split train --model glnet_stl --head imagenet --out pl_stl/
  glmix-wsss pseudo-labels --voc-root ~/data/VOC --checkpoint runs/stl/checkpoint-best.pth --out pl/ """
    """--save-evidence
  glmix-wsss pseudo-labels --voc-root ~/data/VOC --from-evidence pl/ --bg-threshold 0.3 --out pl_bg30/
  glmix-wsss pseudo-labels --show-config --checkpoint runs/stl/checkpoint-best.pth    # settings, sources
A rerun into the same --out resumes; with other settings it stops (--overwrite redoes everything).""",
    "score": """examples:
  glmix-wsss score --voc-root ~/data/VOC --split train --pred pl/
  glmix-wsss score --voc-root ~/data/VOC --split train --pred pl/ --sweep-bg --thresholds 0.10:0.40:0.05""",
    "report": """examples:
  glmix-wsss report --pred pl/ --voc-root data/emojivoc --split train --out report.html
  glmix-wsss report --from-json score.json --out report.html     # the summary only, without the masks
One HTML file, images embedded: it opens offline and can be sent as it is.""",
}


def _add_label_args(parser: argparse.ArgumentParser) -> None:
    """``--labels`` and ``--labels-from``: where image-level labels come from."""
    parser.add_argument("--labels", type=Path, help="cls_labels.npy (default: VOC_ROOT/voc12/cls_labels.npy)")
    parser.add_argument("--labels-from", choices=LABEL_SOURCES, default="auto",
                        help="image-level labels: npy (--labels), masks, xml (Annotations/<id>.xml), or "
                             "auto: the npy file if there, else each image's mask, else its annotation")


def _make_emojivoc_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder to create (holds VOCdevkit/ and voc12/)")
    p.add_argument("--train", type=int, default=1000, help="training images")
    p.add_argument("--val", type=int, default=200, help="validation images")
    p.add_argument("--seed", type=int, default=0, help="random seed of the scenes (same seed, same bytes)")
    p.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (same bytes)")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc-root", type=Path, required=True,
                   help="folder holding VOCdevkit/ (and voc12/cls_labels.npy)")
    p.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, log.jsonl)")
    p.add_argument("--model", default="glnet_demo", help="architecture to train (a registered GLNet)")
    p.add_argument("--init-checkpoint", type=Path,
                   help="initialise from this (e.g. official) checkpoint; head replaced")
    p.add_argument("--train-split", default="train", help="e.g. train_aug on real VOC")
    p.add_argument("--val-split", default="val", help="split scored (mAP) after every epoch")
    _add_label_args(p)
    p.add_argument("--input-size", type=int, default=192, help="side of the square training crops, px")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=32, help="images per step")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate (cosine schedule)")
    p.add_argument("--clip-grad", type=float, default=1.0, help="gradient norm clipping (0: off)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--warmup-epochs", type=float, default=0.5, help="linear warm-up of the learning rate")
    p.add_argument("--drop-path", type=float, default=0.1, help="stochastic depth rate")
    p.add_argument("--min-scale", type=float, default=0.8,
                   help="smallest crop area of the random resized crop (small crops drop labelled objects)")
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, augmentation and order")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    p.add_argument("--ema-decay", type=float, default=0.0,
                   help="keep an exponential moving average of the weights (e.g. 0.999; 0: off); "
                        "it is what is evaluated and saved as best")
    p.add_argument("--mosaic", type=float, default=0.0,
                   help="fraction of training images replaced by mosaics of up to 3x3 training images, "
                        "each tile classified on its own: sharper CAMs (needs --input-size a multiple of "
                        "32; 0: off)")
    p.add_argument("--position-negatives", type=float, default=0.0,
                   help="weight of a per-position loss on classes absent from the image or mosaic tile "
                        "(0: off)")
    p.add_argument("--pos-weight", default="",
                   help="BCE weight of a class's positives, e.g. bird=4,person=2 (others 1): more loss "
                        "on classes the model finds hard")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint-last.pth")


def _pseudo_labels_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--voc-root", type=Path,
                   help="folder holding VOCdevkit/VOC2012 (and voc12/cls_labels.npy); required unless "
                        "--show-config")
    p.add_argument("--split", default="train", help="image list: ImageSets/Segmentation/SPLIT.txt")
    p.add_argument("--checkpoint", type=Path,
                   help="weights file (default: --model's file in the torch hub cache, or the bundled "
                        "demo model)")
    p.add_argument("--model", default=None,
                   help="architecture; without --checkpoint its weights must be in the torch hub cache "
                        "(default: the checkpoint's best fit, or glnet_demo)")
    p.add_argument("--head", choices=("own", "imagenet"), default="own",
                   help="own: the model's 20-class VOC head; imagenet: an ImageNet head mapped to "
                        "VOC classes")
    p.add_argument("--out", type=Path,
                   help="folder of <id>.png palette masks and manifest.json (what made them); required "
                        "unless --show-config")
    _add_label_args(p)
    from .pipeline import FITTED_EVIDENCE, STANDARD_CAM, PseudoLabelConfig  # the defaults live there
    from .refine import BackgroundParams, SlotRefineParams
    from .regions import RegionParams
    from .slot_classifier import SlotClassifierParams

    def csv(values) -> str:
        return ",".join(f"{v:g}" for v in values)

    fitted = ",".join(f"{s:g}m" if f else f"{s:g}"
                      for s, f in zip(FITTED_EVIDENCE.scales, FITTED_EVIDENCE.fit))
    default, slots, seeds = PseudoLabelConfig(), SlotRefineParams(), SlotClassifierParams()
    bg = BackgroundParams()
    g = p.add_argument_group(
        "pipeline settings", "Unset, each comes from the model's preset when its checkpoint carries one (the "
        "bundled demo model does), else from the model-agnostic default shown, some derived from the model; "
        "--show-config lists them with their sources.")
    g.add_argument("--preset", choices=("auto", "none"), default="auto",
                   help="auto: the settings the checkpoint carries, if any; none: the model-agnostic "
                        "defaults")
    g.add_argument("--show-config", action="store_true",
                   help="print the resolved settings and where each came from (preset, default, derived, "
                        "flag), then exit")
    g.add_argument("--method", choices=("cam", "slots"),
                   help="cam: multi-scale CAM only (the standard protocol, no slots); slots: CAM refined by "
                        "GLMix slots (default)")
    g.add_argument("--scales",
                   help=f"CAM scales, the first also where slots are captured; a scale with m is relative to "
                        f"the model's training input size (1m: the image resized to the model's input area) "
                        f"(default: {fitted}; --method cam: {csv(STANDARD_CAM.scales)})")
    g.add_argument("--scale-weights",
                   help=f"weight of each scale's CAM in their sum, one per scale (default: "
                        f"{csv(FITTED_EVIDENCE.weights)}; 1 each with --scales or --method cam)")
    g.add_argument("--stitch",
                   help=f"shift-and-stitch factor of each scale: 1 plain, F (even) a CAM on a grid F times "
                        f"finer from F*F shifted passes (default: {csv(FITTED_EVIDENCE.stitch)}; 1 each with "
                        "--scales or --method cam)")
    g.add_argument("--no-flip", action="store_true", default=None, help="no horizontally flipped passes")
    g.add_argument("--blocks",
                   help="GLMix block ordinals whose slots refine the CAM (default: derived, the blocks at "
                        "0.2, 0.5 and 1 of the model's depth: 2,5,10 of 10); auto: as many blocks, those "
                        "whose slots score the highest oracle mIoU on --blocks-split's masks (--blocks-rule)")
    g.add_argument("--blocks-split", default="val", metavar="SPLIT",
                   help="--blocks auto: the split whose masks score the blocks (default: val)")
    g.add_argument("--blocks-images", type=int, default=32, metavar="N",
                   help="--blocks auto: its first N images with masks (default: 32)")
    g.add_argument("--blocks-rule", choices=("spread", "top"), default="spread",
                   help="--blocks auto: spread: the blocks cut into as many runs of consecutive blocks as "
                        "are chosen, the best of each; top: the best overall (default: spread)")
    g.add_argument("--slot-mix", type=float,
                   help=f"weight of slot-refined maps vs the CAM (default {slots.mix:g})")
    g.add_argument("--slot-sharpness", type=float,
                   help=f"factor on the slot logits before clustering and dispatch (>1: harder slots; "
                        f"default {slots.sharpness:g})")
    g.add_argument("--slot-baseline", type=float,
                   help=f"quantile of each slot-refined map subtracted before renormalising (0: off; default "
                        f"{slots.baseline:g})")
    g.add_argument("--slot-classifier", action=argparse.BooleanOptionalAction,
                   help="fit a per-image classifier on every GLMix block's slot memberships to the confident "
                        "pixels and average its probabilities with the scores' (default: on, off with "
                        "--method cam)")
    g.add_argument("--seed-fg", type=float,
                   help=f"best class score that makes a pixel a classifier seed of that class (default "
                        f"{seeds.foreground:g})")
    g.add_argument("--seed-bg", type=float,
                   help=f"best class score below which a pixel is a background seed (default "
                        f"{seeds.background:g})")
    g.add_argument("--classifier-weight", type=float,
                   help=f"weight of the classifier's probabilities against the scores' (1: classifier only; "
                        f"default {seeds.weight:g})")
    g.add_argument("--bg", choices=("constant", "power"),
                   help="background score: constant (--bg-threshold) or PSA's power of the foreground "
                        "(default constant)")
    g.add_argument("--bg-threshold", type=float,
                   help=f"constant background score (default {bg.threshold:g}; IRN uses 0.15 for CNN CAMs; "
                        "docs/wsss.md, 'Why each default')")
    g.add_argument("--bg-power", type=float, help=f"PSA's (1 - max fg) ** power (default {bg.power:g})")
    g.add_argument("--confident", metavar="FG,BG",
                   help="IRN's confident/ignore regions instead of a background score: label with "
                        "background FG and with BG (e.g. 0.30,0.05); pixels where the two disagree become "
                        "255")
    g.add_argument("--crf", action=argparse.BooleanOptionalAction,
                   help="refine the mask with a dense CRF (pydensecrf; default on)")
    g.add_argument("--crf-iterations", type=int, help="mean-field iterations of the CRF (default 10)")
    g.add_argument("--region-relabel", action=argparse.BooleanOptionalAction,
                   help="classify each labelled region of the finished mask with the rest of the image "
                        "masked out, and relabel it where another of the image's classes wins by "
                        "--region-margin (default off: measured in docs/wsss.md)")
    g.add_argument("--region-margin", type=float,
                   help=f"probability margin the best class needs over the region's class (default "
                        f"{RegionParams().margin:g})")
    assert default.regions is None  # the help texts above say so
    r = p.add_argument_group("run")
    r.add_argument("--max-side", type=int,
                   help="images with a longer side are shrunk to it first; masks are upsampled back (default "
                        "512; with --from-evidence, the evidence's)")
    r.add_argument("--save-scores", action="store_true", help="also keep score maps as OUT/scores/<id>.npz")
    r.add_argument("--save-evidence", action="store_true",
                   help="also keep what the model computed (CAMs, slot logits) as OUT/evidence/<id>.npz, so "
                        "that --from-evidence OUT labels the split again with other settings, without the "
                        "model")
    r.add_argument("--from-evidence", type=Path, metavar="RUN",
                   help="label from the evidence a --save-evidence run wrote to RUN instead of running the "
                        "model: flags change the later stages (slots, classifier, background, CRF), not the "
                        "CAM")
    r.add_argument("--overwrite", action="store_true",
                   help="redo every mask in OUT; without it a rerun resumes, and refuses a folder whose "
                   "manifest.json records other settings")
    r.add_argument("--limit", type=int, default=0, help="only the first N ids of the split")
    r.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    r.add_argument("--precision", choices=("float32", "bfloat16"),
                   help="the forwards' precision: bfloat16 runs them under autocast, faster on GPUs (the "
                        "masks change a little; recorded, and compared on resume) (default: float32)")
    r.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads of the model stage: of each worker when the workers run the model "
                        "(0: the cores shared out), else of this process (0: torch's default, or with "
                        "--workers the cores the workers leave)")
    r.add_argument("--workers", type=int,
                   help="worker processes: 0 one image after the other in this process. With the model on "
                        "the CPU each worker labels whole images on its share of the cores; on a GPU this "
                        "process runs the model and the workers post-process. The files are the same, byte "
                        "for byte (default: one per core on the CPU, cores-1 on a GPU, at most 8)")


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", type=Path, required=True, help="folder of <id>.png label maps")
    p.add_argument("--voc-root", type=Path, required=True,
                   help="folder holding VOCdevkit/VOC2012 (ground truth)")
    p.add_argument("--split", default="train", help="image list: ImageSets/Segmentation/SPLIT.txt")
    p.add_argument("--limit", type=int, default=0, help="only the first N ids of the split")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--sweep-bg", action="store_true",
                   help="instead, sweep the constant background threshold over PRED/scores/*.npz (from "
                        "pseudo-labels --save-scores): scores before the slot classifier and the CRF, so its "
                        "best value is not the full pipeline's")
    p.add_argument("--thresholds", default="0.05:0.60:0.05", help="start:stop:step for --sweep-bg")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", type=Path, help="folder of <id>.png label maps (with --voc-root)")
    p.add_argument("--voc-root", type=Path, help="folder holding VOCdevkit/VOC2012 (ground truth and images)")
    p.add_argument("--split", help="image list: ImageSets/Segmentation/SPLIT.txt (default: train)")
    p.add_argument("--limit", type=int, default=0, help="only the first N ids of the split")
    p.add_argument("--from-json", type=Path, metavar="FILE",
                   help="instead of --pred and --voc-root: the results score --json wrote (the summary "
                        "parts; no gallery)")
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--gallery", type=int, default=6,
                   help="images in each of the gallery's worst and best lists, by per-image mIoU")


def _parser(wanted: Optional[Set[str]] = None) -> argparse.ArgumentParser:
    """The parser; ``wanted``: the commands whose options are added (``None``: all). ``glmix-wsss --help``
    and ``--version`` need none, and then import no torch."""
    p = argparse.ArgumentParser(prog="glmix-wsss",
                                description="Weakly-supervised segmentation with GLNet slots.",
                                formatter_class=HelpFormatter, epilog=_EXAMPLES["glmix-wsss"])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    commands = (
        ("make-emojivoc", "generate EmojiVOC (VOC classes as emoji, exact masks, VOC layout)",
         _make_emojivoc_args),
        ("train", "image-level multi-label training of a GLNet on a VOC-format dataset", _train_args),
        ("pseudo-labels", "pseudo-masks of a split from image-level labels (palette PNGs)",
         _pseudo_labels_args),
        ("score", "mIoU of predicted masks against a split's ground truth", _score_args),
        ("report", "predicted masks against a split's ground truth as one HTML page: IoU, confusion, "
         "precision, recall, worst and best images", _report_args),
    )
    for name, text, add_options in commands:
        command = sub.add_parser(name, help=text, formatter_class=HelpFormatter, epilog=_EXAMPLES[name])
        if wanted is None or name in wanted:
            add_options(command)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``glmix-wsss``; returns the exit status (0 ok, 1 failed, 2 bad usage,
    130 interrupted: Ctrl-C or SIGTERM)."""
    reuse_freed_memory()
    try:
        with sigterm_interrupts():
            return _main(argv)
    except RunInterrupted as stop:
        print(f"glmix-wsss: interrupted after {stop.done} of {stop.total} images; rerun the same command to "
              "resume", file=sys.stderr)
    except KeyboardInterrupt:
        print("glmix-wsss: interrupted", file=sys.stderr)
    return 130


def _main(argv: Optional[Sequence[str]]) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(wanted=set(argv) & set(_EXAMPLES))  # only the named command's options (and imports)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="glmix-wsss: %(message)s")
    progress = not args.quiet and sys.stderr.isatty()
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "pseudo-labels" and not args.show_config:
            given = (("--voc-root", args.voc_root), ("--out", args.out))
            missing = [flag for flag, value in given if value is None]
            if missing:
                raise ValueError(f"pseudo-labels: the following arguments are required: {', '.join(missing)} "
                                 "(all but --show-config)")
        if getattr(args, "out", None) is not None and args.command != "report":  # checked before any work
            try:
                check_output_dir(args.out)
            except ValueError as err:
                raise ValueError(f"--out {err}") from None
        if args.command == "make-emojivoc":
            from .emojivoc import make_emojivoc

            make_emojivoc(args.out, train=args.train, val=args.val, seed=args.seed, workers=args.workers,
                          progress=progress)
        elif args.command == "train":
            from .commands import train_command

            return train_command(args, progress=progress)
        elif args.command == "pseudo-labels":
            from .commands import pseudo_labels_command

            return pseudo_labels_command(args, progress=progress)
        elif args.command == "score":
            from .commands import score_command

            return score_command(args)
        elif args.command == "report":
            from .commands import report_command

            return report_command(args, progress=progress)
    except FieldError as err:  # the library names the setting, the CLI its flag
        print(f"glmix-wsss: error: {err.with_names(FLAGS)}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as err:
        print(f"glmix-wsss: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
