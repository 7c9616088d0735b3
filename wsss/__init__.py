"""Weakly-supervised semantic segmentation from GLNet slots (builds on glmix_viz, never on its figures)."""
