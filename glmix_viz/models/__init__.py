"""GLNet models, registered with timm on import."""
from ._checkpoint import (
    MODEL_CARD_URL,
    OFFICIAL_MODELS,
    best_matching_model,
    checkpoint_num_classes,
    default_checkpoint_path,
    load_checkpoint,
    read_checkpoint,
    unwrap_state_dict,
)
from .demo import DEMO_MODEL, DEMO_WEIGHTS, load_demo_model
from .glnet import (
    MIXING_MODES,
    GLMixBlock,
    GLNet,
    GLNetTokenLabel,
    MHSABlock,
    MHSANCHWBlock,
    MultiheadSelfAttention,
    fuse_for_inference,
)

__all__ = [
    "GLNet",
    "GLNetTokenLabel",
    "GLMixBlock",
    "MHSABlock",
    "MHSANCHWBlock",
    "MultiheadSelfAttention",
    "MIXING_MODES",
    "fuse_for_inference",
    "OFFICIAL_MODELS",
    "MODEL_CARD_URL",
    "best_matching_model",
    "checkpoint_num_classes",
    "default_checkpoint_path",
    "load_checkpoint",
    "read_checkpoint",
    "unwrap_state_dict",
    "DEMO_MODEL",
    "DEMO_WEIGHTS",
    "load_demo_model",
]
