"""Analysis of captured slots: arrays in, arrays out."""
from .maps import hard_assignment, normalize_by_max, normalize_per_image, upsample_maps
from .medoids import METHODS, SlotClusters, cluster_slots, distance_matrix, select_representatives

__all__ = [
    "METHODS",
    "SlotClusters",
    "cluster_slots",
    "distance_matrix",
    "hard_assignment",
    "normalize_by_max",
    "normalize_per_image",
    "select_representatives",
    "upsample_maps",
]
