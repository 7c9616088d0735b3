"""Analysis of captured slots: arrays in, arrays out."""
from .maps import hard_assignment, normalize_per_image, upsample_maps

__all__ = ["hard_assignment", "normalize_per_image", "upsample_maps"]
