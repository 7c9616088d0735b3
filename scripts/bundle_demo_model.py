"""Store a trained glnet_demo checkpoint inside the package as the bundled demo model, with its preset.

    python scripts/bundle_demo_model.py runs/demo/checkpoint-best.pth
    python scripts/bundle_demo_model.py glmix_viz/data/glnet_demo_emojivoc.pth   # only renew the preset

Writes ``glmix_viz/data/glnet_demo_emojivoc.pth``: ``{"model": float16 state dict,
"epoch", "val_map", "config", "status", "pseudo_labels"}`` (the loader casts
back to float32). ``pseudo_labels`` is the preset of pseudo-label settings
measured for these weights on EmojiVOC (:data:`DEMO_PRESET`; ``wsss.presets``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from glmix_viz.models import read_checkpoint, unwrap_state_dict
from glmix_viz.models.demo import DEMO_WEIGHTS
from wsss.evidence import EvidenceConfig
from wsss.pipeline import PseudoLabelConfig
from wsss.presets import make_preset
from wsss.refine import BackgroundParams, SlotRefineParams

#: The settings measured for the bundled weights (docs/wsss.md, "Presets"; docs/experiments.md): the CAM
#: at 1.0 plus 0.5 (weight 2) and 0.375 stitched 4x, slots of blocks 2, 5, 10 at sharpness 16, mix 0.5 and a
#: median baseline, the slot classifier on every block, background 0.25, dense CRF.
DEMO_PRESET = make_preset(
    "glnet_demo-emojivoc",
    PseudoLabelConfig(
        evidence=EvidenceConfig(scales=(1.0, 0.5, 0.375), weights=(1.0, 2.0, 1.0), stitch=(1, 4, 4)),
        slots=SlotRefineParams(blocks=(2, 5, 10), mix=0.5, sharpness=16.0, baseline=0.5),
        background=BackgroundParams("constant", 0.25),
    ),
    measured="EmojiVOC train images, choices made on seeds 31415 and 2718, checked on held-out seeds 2024, "
             "2025, 777 and 4711 (docs/experiments.md)",
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--out", type=Path, default=DEMO_WEIGHTS)
    p.add_argument("--status", default="trained", help='e.g. "interim: partly trained"')
    args = p.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    sd = unwrap_state_dict(ckpt)
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = {k: ckpt[k] for k in ("epoch", "val_map", "config") if k in ckpt}
    meta["status"] = args.status
    meta["pseudo_labels"] = DEMO_PRESET
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save({"model": half, **meta}, tmp)
    tmp.replace(args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, epoch {meta.get('epoch')}, "
          f"val mAP {meta.get('val_map')}, preset {DEMO_PRESET['name']}")


if __name__ == "__main__":
    main()
