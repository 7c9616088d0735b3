"""The bundled demo model: runs anywhere with no download.

``glnet_demo`` (reduced-width GLNet-STL layout, 10 GLMix blocks) trained on
EmojiVOC with image-level labels; its weights ship inside the package in
float16 and load through the same loader as official checkpoints. Until they
are bundled, :func:`load_demo_model` falls back to an untrained tiny GLNet and
says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch
import torch.nn as nn

from .._names import DEMO_MODEL
from ._checkpoint import load_checkpoint, read_checkpoint

__all__ = ["DEMO_MODEL", "DEMO_WEIGHTS", "FALLBACK_MODEL", "load_demo_model"]

DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "glnet_demo_emojivoc.pth"
FALLBACK_MODEL = "test_glnet"


def load_demo_model(seed: int = 0) -> Tuple[nn.Module, str]:
    """The bundled demo model in eval mode, and a one-line description of what it is.

    Args:
        seed: initialises the untrained fallback when the weights are not bundled.

    Returns:
        ``(model, description)``.
    """
    import timm

    if DEMO_WEIGHTS.is_file():
        meta = read_checkpoint(DEMO_WEIGHTS)
        model = load_checkpoint(timm.create_model(DEMO_MODEL), DEMO_WEIGHTS, name=DEMO_MODEL, checkpoint=meta)
        status = meta.get("status", "trained")
        val_map = meta.get("val_map")
        score = f", EmojiVOC val mAP {val_map:.2f}" if isinstance(val_map, float) else ""
        return model.eval(), (
            f"the bundled demo model {DEMO_MODEL} ({status} on EmojiVOC, 20 VOC classes drawn as "
            f"emoji{score}), not a paper model: download the official weights (github.com/rayleizhu/GLMix) "
            "to ~/.cache/torch/hub/checkpoints/NAME.pth or pass --checkpoint"
        )
    torch.manual_seed(seed)
    model = timm.create_model(FALLBACK_MODEL)
    return model.eval(), (
        f"an UNTRAINED tiny GLNet ({FALLBACK_MODEL}): its slots show the pipeline, not learned groups "
        "(the trained demo model is not bundled in this version)"
    )
