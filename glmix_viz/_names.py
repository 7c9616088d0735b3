"""Names the command-line tools need before any model is built (importing this loads neither torch nor
timm)."""
from __future__ import annotations

from pathlib import Path

__all__ = [
    "MODEL_CARD_URL",
    "OFFICIAL_MODELS",
    "DEMO_MODEL",
    "DEFAULT_MODEL",
    "FIGURES",
    "FORMATS",
    "DEMO_IMAGE",
]

MODEL_CARD_URL = "https://github.com/rayleizhu/GLMix#model-zoo"
OFFICIAL_MODELS = (
    "glnet_stl",
    "glnet_stl_paramslot",
    "glnet_4g",
    "glnet_9g",
    "glnet_16g",
    "glnet_4g_tklb",
    "glnet_9g_tklb",
)
DEMO_MODEL = "glnet_demo"
DEFAULT_MODEL = "glnet_stl"  # glmix-viz without --model: this one if its weights are in the hub cache
FIGURES = ("fig4", "depths", "hard")  # glmix-viz --figure
FORMATS = ("png", "pdf")  # glmix-viz --format
DEMO_IMAGE = Path(__file__).resolve().parent / "data" / "demo_cat.jpg"  # the bundled photo (glmix-viz --demo)
