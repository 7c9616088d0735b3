"""glmix-viz: see and use what a GLMix vision backbone learned.

Importing the package registers the GLNet family with timm::

    import glmix_viz, timm
    model = timm.create_model("glnet_stl", pretrained=True)  # reads ~/.cache/torch/hub/checkpoints/glnet_stl.pth
"""
from .models import (
    OFFICIAL_MODELS,
    GLMixBlock,
    GLNet,
    GLNetTokenLabel,
    default_checkpoint_path,
    load_checkpoint,
)

__version__ = "0.1.0"

__all__ = [
    "GLNet",
    "GLNetTokenLabel",
    "GLMixBlock",
    "OFFICIAL_MODELS",
    "default_checkpoint_path",
    "load_checkpoint",
    "__version__",
]
