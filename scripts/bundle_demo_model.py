"""Store a trained glnet_demo checkpoint inside the package as the bundled demo model.

    python scripts/bundle_demo_model.py runs/demo/checkpoint-best.pth

Writes ``glmix_viz/data/glnet_demo_emojivoc.pth``: ``{"model": float16 state dict,
"epoch", "val_map", "config"}`` (the loader casts back to float32).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from glmix_viz.models import read_checkpoint, unwrap_state_dict
from glmix_viz.models.demo import DEMO_WEIGHTS


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
    torch.save({"model": half, **meta}, args.out)
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, epoch {meta.get('epoch')}, "
          f"val mAP {meta.get('val_map')}")


if __name__ == "__main__":
    main()
